"""The dataset's papers, all generated from the ledger (never from memory of a run)."""
