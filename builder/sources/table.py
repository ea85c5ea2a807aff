"""`table` source: a CSV, TSV, JSONL or Parquet file of image URLs with licence columns.

The file is streamed, never loaded whole: Parquet batch by batch within row groups, CSV and
JSONL line by line (optionally gzip-compressed: `.csv.gz`, `.jsonl.gz`). Columns are
understood through builder.sources.columns (img2dataset, PD12M and CommonCatalog layouts
out of the box) plus the recipe's `columns = { url = "...", ... }` mapping.

Resume state after each candidate: `{"row": n}` data rows consumed, plus for the text
formats the byte `offset` just past that row, its `line` and the byte `start` of that row,
so a resumed build seeks straight there; Parquet skips whole row groups from the file footer
and only slices the one it stopped in. Each state also holds a `digest` of the row it
follows (its bytes, or for Parquet its cells): a resumed build first checks that this row
is still where the build left it. A table edited since (rows removed, inserted or reordered
before that point) would otherwise be resumed at a place that silently skips rows, with no
ledger row for them, or reads rows twice under other row numbers: that stops the build
with a UserError instead. Rows added at the end, and edits that keep the rows before the
resume point where they were (a fixed cell, when the offset no longer fits: counting rows
finds the same row), resume as before.

A JSONL line that is not a JSON object stops the build with a UserError naming the file and
line. We refuse rather than yield a placeholder: a row we cannot read has no licence we can
audit, skipping it would break "every input row is accounted for", and a placeholder would be
rejected under a misleading reason (license_missing). Fixing the line and running the same
command resumes at that line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

from builder.config import resolve_path
from builder.errors import UserError
from builder.records import Candidate
from builder.sources._recheck import HeadRechecker
from builder.sources.base import SourceContext
from builder.sources.columns import (
    TABLE_ALIASES,
    TABLE_EXTRA,
    ColumnPlan,
    KeyGivenTwice,
    check_named_once,
    check_table_keys,
    missing_mapped,
    one_value_per_key,
    plan_columns,
    row_to_candidate,
)

Format = Literal["csv", "tsv", "jsonl", "parquet"]

SUFFIXES: dict[str, str] = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}
CSV_FIELD_LIMIT = 16 * 1024 * 1024  # long captions exceed the csv module's 128 KiB default


@dataclass(frozen=True)
class Config:
    path: str
    format: Format | None = None
    columns: dict[str, str] = field(default_factory=dict)
    license: str | None = None
    id_column: str | None = None
    keep_columns: tuple[str, ...] = ()
    batch_size: int = 4096

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        path = resolve_path(self.path, base=base, file=file, key=f"{where}.path", kind="file")
        fmt = self.format or detect_format(path, file=file, key=f"{where}.path")
        if fmt == "parquet" and path.name.lower().endswith(".gz"):
            raise UserError(
                f"{file}: {where}.path = {self.path!r}: Parquet compresses internally; "
                "give the uncompressed .parquet file."
            )
        mapping = check_table_keys(self.columns, self.id_column, self.license, file=file,
                                   where=where)
        if self.batch_size < 1:
            raise UserError(f"{file}: {where}.batch_size must be at least 1.")
        return replace(self, path=str(path.absolute()), format=fmt, columns=mapping)


def detect_format(path: Path, *, file: Path | str, key: str) -> Format:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix not in SUFFIXES:
        raise UserError(
            f"{file}: {key} = {str(path)!r}: cannot tell the format from the extension "
            f"{suffix or '(none)'!r}. Use .csv, .tsv, .jsonl or .parquet (optionally .gz for "
            'the text formats), or say format = "csv" | "tsv" | "jsonl" | "parquet".'
        )
    return SUFFIXES[suffix]  # type: ignore[return-value]


# (0-based data row, its cells, the plan for its columns, resume state after it)
Row = tuple[int, dict[str, Any], ColumnPlan, dict[str, Any]]


def expected_candidates(config: Config) -> int:
    """A cheap estimate of the table's rows, for planning (not a count): a Parquet file's
    metadata says; a text table is guessed from its size (a row with a URL and a licence
    takes ~100-200 bytes)."""
    path = Path(config.path)
    try:
        if config.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        return path.stat().st_size // 128
    except (OSError, ValueError):  # unreadable here: the source itself will say so
        return 0


class TableSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        path = Path(config.path)
        self.path = path if path.is_absolute() else context.base_dir / path
        self.format: Format = config.format or detect_format(
            self.path, file=context.recipe_file, key="path"
        )
        self.mapping = dict(config.columns)
        if config.id_column:
            self.mapping.setdefault("id", config.id_column)

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        for index, row, plan, state in self._rows(resume or {}):
            yield row_to_candidate(
                row, plan, source=self.name, fallback_id=f"row-{index}",
                fixed_license=self.config.license, resume=state,
            )

    def preflight(self) -> None:
        """Read the header (or schema) and the first row: a file whose columns cannot be
        understood, or that holds no row at all, is refused before the build starts."""
        with closing(self._rows({})) as rows:
            if next(rows, None) is not None:
                return
        raise UserError(
            f"{self.path}: has no data rows (it is empty, or holds only a header), so source "
            f"{self.name!r} of {self.context.recipe_file} would yield nothing. Give a table "
            "with a header line and at least one row, or remove the source."
        )

    def _rows(self, resume: dict[str, Any]) -> Iterator[Row]:
        if not self.path.is_file():
            raise UserError(
                f"{self.path}: table file of source {self.name!r} is gone "
                f"(named in {self.context.recipe_file}). Restore it or fix the path."
            )
        rows = {"csv": self._csv_rows, "tsv": self._csv_rows, "jsonl": self._jsonl_rows,
                "parquet": self._parquet_rows}[self.format]
        try:
            yield from rows(resume)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # a .gz name on other bytes
            raise UserError(
                f"{self.path}: is not a complete gzip file ({exc}). Re-compress it, or drop "
                "the .gz from its name if it is plain text."
            ) from None

    # -- columns -------------------------------------------------------------

    def _plan(self, names: list[str], *, where: str) -> ColumnPlan:
        self._check_delimiter(names, where=where)
        plan = plan_columns(names, self.mapping,
                            extra=TABLE_EXTRA + tuple(self.config.keep_columns))
        check_named_once(names, f"{self.path}: {where}", plan)
        wanted = {**self.mapping, **{f"keep:{c}": c for c in self.config.keep_columns}}
        missing = missing_mapped(wanted, names)
        if missing:
            raise UserError(
                f"{self.path}: {where} has no column for {', '.join(missing)} (mapped in "
                f"source {self.name!r} of {self.context.recipe_file}). Its columns are: "
                f"{_show(names)}. Fix the column name in the recipe's `columns`."
            )
        if not plan.has_url:
            raise UserError(
                f"{self.path}: {where} has no image URL column (looked for "
                f"{', '.join(TABLE_ALIASES['url'])}). Its columns are: {_show(names)}. "
                f"Map yours in source {self.name!r} of {self.context.recipe_file}: "
                'columns = { url = "<column name>" }.'
            )
        return plan

    def _check_delimiter(self, names: list[str], *, where: str) -> None:
        """A header read as one column that holds the other delimiter: the format is wrong
        (a tab-separated file named .csv is common), and no column mapping would fix it."""
        if self.format not in ("csv", "tsv") or len(names) != 1:
            return
        if ";" in names[0] and "," not in names[0] and "\t" not in names[0] \
                and names[0] not in self.mapping.values():
            # Spreadsheets in locales with a decimal comma (Excel in much of Europe) save
            # "CSV" separated by semicolons; no `format` reads that, so say how to re-save.
            fields = [n.strip() for n in names[0].split(";")]
            raise UserError(
                f"{self.path}: {where} is semicolon-separated ({_show(fields)}); cleanset "
                "reads comma-separated (CSV) or tab-separated (TSV) tables. Re-save it "
                "comma-separated (in a spreadsheet: CSV UTF-8, comma-delimited) or "
                "tab-separated (then say format = \"tsv\" in source "
                f"{self.name!r} of {self.context.recipe_file})."
            )
        other, other_format = ("\t", "tsv") if self.format == "csv" else (",", "csv")
        if other not in names[0]:
            return
        fields = [n.strip() for n in names[0].split(other)]
        raise UserError(
            f"{self.path}: {where} is {'tab' if other_format == 'tsv' else 'comma'}-separated "
            f"({_show(fields)}), but source {self.name!r} reads it as {self.format.upper()}. "
            f'Add format = "{other_format}" to that source in {self.context.recipe_file}.'
        )

    # -- CSV / TSV -----------------------------------------------------------

    def _csv_rows(self, resume: dict[str, Any]) -> Iterator[Row]:
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        delimiter = "\t" if self.format == "tsv" else ","
        with _open_binary(self.path) as fh:
            lines = _Lines(fh, self.path)
            reader = csv.reader(lines, delimiter=delimiter)
            header = self._csv_next(reader, lines)
            while header is not None and not any(h.strip() for h in header):
                header = self._csv_next(reader, lines)  # blank lines before the header
            if header is None:
                return
            header = [h.strip() for h in header]
            plan = self._plan(header, where="the header line")
            target = int(resume.get("row", 0))
            row = target if self._seek(fh, lines, resume, after=lines.offset) else 0
            lines.take()
            while (fields := self._csv_next(reader, lines)) is not None:
                record = lines.take()
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line: not a data row
                if len(fields) != len(header):
                    raise UserError(
                        f"{self.path}: line {lines.line}: {len(fields)} fields where the "
                        f"header has {len(header)}. Quote values that contain "
                        f"{delimiter!r} or line breaks, or fix that line."
                    )
                if row < target:  # no usable offset: re-read consumed rows, build nothing
                    row += 1
                    if row == target:
                        self._check_resumed_row(resume, _digest(record))
                    continue
                state = self._text_state(row, lines, record)
                yield row, dict(zip(header, fields, strict=True)), plan, state
                row += 1
            self._check_not_shorter(resume, row)

    def _csv_next(self, reader: Any, lines: _Lines) -> list[str] | None:
        try:
            return next(reader, None)
        except csv.Error as exc:
            raise UserError(
                f"{self.path}: line {lines.line}: malformed CSV ({exc}). Fix that line."
            ) from None

    @staticmethod
    def _text_state(row: int, lines: _Lines, record: bytes) -> dict[str, Any]:
        return {"row": row + 1, "offset": lines.offset, "line": lines.line,
                "start": lines.offset - len(record), "digest": _digest(record)}

    @staticmethod
    def _seek(fh: IO[bytes], lines: _Lines, resume: dict[str, Any], *, after: int) -> bool:
        """Jump to the stored byte offset when it is still plausible, and (when the state
        has them) the row just before it still has the bytes the build read there; False
        to re-read the rows from the top, counting them."""
        offset, line = resume.get("offset"), resume.get("line")
        if int(resume.get("row", 0)) <= 0 or not isinstance(offset, int) \
                or not isinstance(line, int) or offset < max(after, 1):
            return False
        start, digest = resume.get("start"), resume.get("digest")
        if isinstance(start, int) and isinstance(digest, str):
            record = _read_at(fh, start, offset - start) if after <= start < offset else None
            fits = record is not None and _digest(record) == digest
        else:
            fits = _at_line_start(fh, offset)
        if not fits:
            fh.seek(lines.offset)
            return False
        fh.seek(offset)
        lines.offset, lines.line = offset, line
        return True

    def _check_resumed_row(self, resume: dict[str, Any], digest: str) -> None:
        """The row a resumed build counted its way to must be the one it decided last."""
        expected = resume.get("digest")
        if isinstance(expected, str) and expected != digest:
            self._changed(resume, "that row is no longer there as it was")

    def _check_not_shorter(self, resume: dict[str, Any], rows: int) -> None:
        if rows < int(resume.get("row", 0)):
            self._changed(resume, f"the file now has only {rows} data rows")

    def _changed(self, resume: dict[str, Any], why: str) -> NoReturn:
        line = resume.get("line")
        at = f", the last on line {line}" if isinstance(line, int) else ""
        raise UserError(
            f"{self.path}: changed since the build being resumed read it: it had decided "
            f"the first {int(resume.get('row', 0))} data rows{at}, and {why}. Going on would skip rows without a ledger row or decide rows "
            "twice under other row numbers. Put the table back as it was when the build "
            "started (rows added at its end are fine) and run the same command again, or "
            "build the edited table into another --out."
        )

    # -- JSONL ---------------------------------------------------------------

    def _jsonl_rows(self, resume: dict[str, Any]) -> Iterator[Row]:
        plans: dict[tuple[str, ...], ColumnPlan] = {}
        with _open_binary(self.path) as fh:
            lines = _Lines(fh, self.path)
            target = int(resume.get("row", 0))
            row = target if self._seek(fh, lines, resume, after=0) else 0
            first = True
            for text in lines:
                record = lines.take()
                if not text.strip():
                    continue
                if row < target:
                    row += 1
                    if row == target:
                        self._check_resumed_row(resume, _digest(record))
                    continue
                obj = self._json_object(text, lines.line)
                keys = tuple(obj)
                plan = plans.get(keys)
                if plan is None:
                    if first:
                        plan = self._plan(list(keys), where=f"line {lines.line}")
                    else:
                        plan = plan_columns(keys, self.mapping,
                                            extra=TABLE_EXTRA + tuple(self.config.keep_columns))
                    if len(plans) < 1024:  # rows with ragged keys must not grow this forever
                        plans[keys] = plan
                first = False
                yield row, obj, plan, self._text_state(row, lines, record)
                row += 1
            self._check_not_shorter(resume, row)

    def _json_object(self, text: str, line: int) -> dict[str, Any]:
        try:
            obj = json.loads(text, object_pairs_hook=one_value_per_key)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{self.path}: line {line}: not valid JSON ({exc.msg} at column {exc.colno}). "
                "Each line of a JSONL file must be one JSON object; fix or delete that line "
                "and run the same command again (the build resumes at that line)."
            ) from None
        except KeyGivenTwice as exc:
            raise UserError(
                f"{self.path}: line {line}: {exc} Fix that line and run the same command again "
                "(the build resumes at that line)."
            ) from None
        if not isinstance(obj, dict):
            raise UserError(
                f"{self.path}: line {line}: a JSON {type(obj).__name__}, not an object. "
                'Each line must be one object such as {"url": "...", "license": "..."}.'
            )
        return obj

    # -- Parquet -------------------------------------------------------------

    def _parquet_rows(self, resume: dict[str, Any]) -> Iterator[Row]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(
                f"{self.path}: not a readable Parquet file ({exc}). Re-export or re-download it."
            ) from None
        names = list(pf.schema_arrow.names)
        plan = self._plan(names, where="the Parquet schema")
        needed = sorted({c for cols in plan.fields.values() for c in cols}
                        | set(plan.evidence) | set(plan.extra))
        meta = pf.metadata
        resumed = max(0, int(resume.get("row", 0)))
        if resumed > meta.num_rows:
            self._changed(resume, f"the file now has only {meta.num_rows} rows")
        # With a digest, read from the row decided last, to check it is still that row.
        check = isinstance(resume.get("digest"), str) and resumed > 0
        start = resumed - 1 if check else resumed
        first_group, group_start = 0, 0
        while first_group < meta.num_row_groups and \
                group_start + meta.row_group(first_group).num_rows <= start:
            group_start += meta.row_group(first_group).num_rows
            first_group += 1
        if first_group >= meta.num_row_groups:
            return
        row = group_start
        batches = pf.iter_batches(batch_size=self.config.batch_size, columns=needed,
                                  row_groups=range(first_group, meta.num_row_groups))
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:
                raise UserError(
                    f"{self.path}: unreadable Parquet data after row {row} ({exc}). "
                    "The file is damaged; re-export or re-download it."
                ) from None
            if batch is None:
                return
            skip = max(0, min(start - row, batch.num_rows))
            if skip:
                batch = batch.slice(skip)
                row += skip
            for cells in batch.to_pylist():
                digest = _cells_digest(cells)
                if check:
                    check = False
                    self._check_resumed_row(resume, digest)
                    row += 1
                    continue
                yield row, cells, plan, {"row": row + 1, "digest": digest}
                row += 1


def _digest(record: bytes) -> str:
    """A short fingerprint of one row, kept in the resume state to recognise it later."""
    return hashlib.blake2b(record, digest_size=8).hexdigest()


def _cells_digest(cells: dict[str, Any]) -> str:
    return _digest(json.dumps(cells, sort_keys=True, default=str).encode("utf-8",
                                                                         "surrogatepass"))


def _read_at(fh: IO[bytes], offset: int, size: int) -> bytes | None:
    try:
        fh.seek(offset)
        data = fh.read(size)
    except OSError:
        return None
    return data if len(data) == size else None


def _at_line_start(fh: IO[bytes], offset: int) -> bool:
    """A stored offset is trusted only if it still sits just after a newline."""
    if offset <= 0:
        return False
    try:
        fh.seek(offset - 1)
        return fh.read(1) == b"\n"
    except OSError:
        return False


class _Lines:
    """Decoded lines of a binary file, counting the bytes and lines handed out.

    csv.reader pulls exactly the lines of one record before returning it, so after each
    record `offset` is the byte just past it: a resume point we can seek to.
    """

    def __init__(self, fh: IO[bytes], path: Path) -> None:
        self.fh, self.path = fh, path
        self.offset = 0
        self.line = 0
        self._raw: list[bytes] = []  # the lines handed out since the last take()

    def take(self) -> bytes:
        """The bytes of the lines handed out since the last call: one record's."""
        record = b"".join(self._raw)
        self._raw.clear()
        return record

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.fh.readline()
        if not raw:
            raise StopIteration
        self.offset += len(raw)
        self.line += 1
        self._raw.append(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(
                f"{self.path}: line {self.line} is not UTF-8 text.{_binary_hint(raw, self.line)}"
            ) from None
        if self.line == 1:
            text = text.removeprefix("\ufeff")
        return text


def _binary_hint(raw: bytes, line: int) -> str:
    """What to do about bytes that are not text: a compressed or Parquet file under a text
    name is common (a download saved as `.csv`), and "re-save as UTF-8" would not help."""
    if line == 1 and raw.startswith(b"\x1f\x8b"):
        return " It is gzip-compressed: name it .csv.gz / .tsv.gz / .jsonl.gz, or decompress it."
    if line == 1 and raw.startswith(b"PAR1"):
        return ' It is a Parquet file: name it .parquet, or say format = "parquet".'
    return " Re-save the file as UTF-8."


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 - the caller closes it with `with`


def _show(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:30])
    return shown + (f" and {len(names) - 30} more" if len(names) > 30 else "")


def rechecker(name: str, config: Config, context: SourceContext) -> HeadRechecker:
    """A HEAD on each sample's file URL: the table itself is the user's own file."""
    return HeadRechecker(context.fetch)


SOURCE = TableSource
