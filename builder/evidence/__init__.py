"""The evidence archive: what every source, host and image server answered, kept as WARC.

    warc.py      exchanges -> WARC records (redaction, stable ids, digests); reading back
    archive.py   the build's files in DIR/evidence/: written in source order, synced before
                 each ledger commit, truncated to the committed size on resume
    show.py      `cleanset evidence DIR KEY|URL`: the records that decided a candidate, and
                 a recheck's finding, as data; show_text.py and show_json.py
                 (--json) render them
    shown.py     one record read back at its offset, held to its digest and id
    check.py     `cleanset verify`: every record's digests, every sample's pointers

The fetcher notes each exchange (builder/fetch.py, `recording`); see docs/evidence.md.
"""
