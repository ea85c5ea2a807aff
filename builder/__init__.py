"""cleanset: clean-licensed image datasets as WebDataset shards with provenance."""

__version__ = "0.1.0"
