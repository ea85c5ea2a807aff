"""`manifest.parquet` (one row per sample) and `candidates.parquet` (the ledger, exported)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from builder.exports.papers import Facts, replacing
from builder.ledger import Ledger
from builder.shards import shard_name

WARC_RECORD = pa.struct([("file", pa.string()), ("record_id", pa.string()),
                         ("offset", pa.int64())])
DATASET_NAME_KEY = "cleanset.dataset_name"
MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("shard", pa.string()),
    ("sha256", pa.string()),
    ("sha1", pa.string()),
    ("pdq", pa.string()),
    ("pdq_quality", pa.int32()),
    ("phash", pa.string()),
    ("hash_pipeline", pa.string()),
    ("license", pa.string()),
    ("license_url", pa.string()),
    ("source", pa.string()),
    ("source_id", pa.string()),
    ("file_url", pa.string()),
    ("landing_url", pa.string()),
    ("creator", pa.string()),
    ("title", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mime", pa.string()),
    ("ext", pa.string()),
    ("bytes", pa.int64()),
    ("build", pa.int32()),
    # Later copies of this work the build refused as duplicates (builder/clusters.py).
    ("duplicates", pa.int32()),
    ("also_found_as", pa.list_(pa.struct([("source", pa.string()), ("license", pa.string()),
                                          ("url", pa.string()), ("exact", pa.bool_())]))),
    # The WARC records the sample was decided from (provenance `evidence`, builder/evidence).
    ("evidence", pa.struct([("api", pa.list_(WARC_RECORD)), ("signals", pa.list_(WARC_RECORD)),
                            ("image", WARC_RECORD)])),
])
_DERIVED = {"shard", "hash_pipeline", "duplicates", "also_found_as", "evidence"}

CANDIDATES_SCHEMA = pa.schema([
    ("candidate_id", pa.string()),
    ("build", pa.int32()),
    ("seq", pa.int64()),
    ("source", pa.string()),
    ("url", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("key", pa.string()),
    ("license", pa.string()),
    ("decided_at", pa.string()),
])

BATCH = 10_000


def _write_atomically(path: Path, schema: pa.Schema, rows_iter) -> int:  # type: ignore[no-untyped-def]
    count = 0
    with replacing(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        batch: list[bytes] = []
        for row in rows_iter:
            batch.append(orjson.dumps(row))
            if len(batch) >= BATCH:
                writer.write_table(_table(batch, schema))
                count += len(batch)
                batch = []
        if batch or count == 0:
            writer.write_table(_table(batch, schema))
            count += len(batch)
    return count


def _table(lines: list[bytes], schema: pa.Schema) -> pa.Table:
    """Rows (one JSON object per line) as a table of exactly `schema`.

    Through Arrow's JSON reader rather than Table.from_pylist: the rows are read in C++
    (~4x faster), and from_pylist imports pandas when it is installed (0.25 s at every
    build's end, to find out that a list is not a pandas object)."""
    if not lines:
        return schema.empty_table()
    data = b"\n".join(lines)
    return pa_json.read_json(
        pa.BufferReader(data),
        # One block: a row may be larger than the default block of 1 MiB.
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
        parse_options=pa_json.ParseOptions(explicit_schema=schema,
                                           unexpected_field_behavior="error"))


def write_manifest(ledger: Ledger, path: Path) -> int:
    from builder.clusters import all_duplicates

    copies = all_duplicates(ledger.db)
    pipeline = ledger.get_meta("hash_pipeline")

    def rows():  # type: ignore[no-untyped-def]
        for r in ledger.iter_samples():
            row = {name: r[name] for name in MANIFEST_SCHEMA.names if name not in _DERIVED}
            row["shard"] = f"shards/{shard_name(r['shard'])}"
            row["hash_pipeline"] = pipeline
            found = copies.get(r["key"], [])
            row["duplicates"] = len(found)
            row["also_found_as"] = [
                {"source": d.source, "license": d.license,
                 "url": d.landing_url or d.file_url, "exact": d.exact} for d in found]
            # Samples built before the archive existed (provenance_version 1) have none.
            row["evidence"] = orjson.loads(r["provenance"]).get("evidence")
            yield row

    # The dataset's name rides in the file's own metadata: `cleanset diff` of two copies
    # reads only their manifests, and keys are numbered by each dataset on its own.
    name = ledger.get_meta("dataset_name") or ""
    schema = MANIFEST_SCHEMA.with_metadata({DATASET_NAME_KEY: name.encode("utf-8")})
    return _write_atomically(path, schema, rows())


def read_columns(path: Path, columns: list[str]) -> pa.Table:
    """`columns` of one Parquet file, read without pyarrow.dataset (what `pq.read_table`
    goes through: with pandas installed, ~0.3 s of imports on every command that reads a
    manifest). A column the file lacks is an error naming the file's columns, as
    read_table's is (ParquetFile.read would leave it out without a word)."""
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise pa.ArrowInvalid(f"no column {', '.join(missing)} among {', '.join(names)}")
    return parquet.read(columns=columns)


def manifest_dataset_name(schema: pa.Schema) -> str | None:
    """The dataset a manifest was written for; None for one written before it said."""
    value = (schema.metadata or {}).get(DATASET_NAME_KEY.encode())
    return value.decode("utf-8", "replace") if value is not None else None


def check_candidates(out: Path, ledger: Ledger, facts: Facts,
                     samples: dict[str, tuple[str, str]]) -> list[str]:
    """candidates.parquet readable, one row for each candidate the ledger holds."""
    path = out / "candidates.parquet"
    if not path.exists():
        return ["candidates.parquet is missing"]
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        return [f"candidates.parquet cannot be read: {exc}"]
    held = ledger.db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    if rows != held:
        return [f"candidates.parquet lists {rows} candidates; the ledger holds {held}"]
    return []


def write_candidates(ledger: Ledger, path: Path) -> int:
    def rows():  # type: ignore[no-untyped-def]
        for r in ledger.iter_candidates():
            yield {name: r[name] for name in CANDIDATES_SCHEMA.names}

    return _write_atomically(path, CANDIDATES_SCHEMA, rows())
