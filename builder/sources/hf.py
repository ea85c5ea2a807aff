"""`hf` source: image URLs with licence columns from a dataset read by Hugging Face `datasets`.

Either a local `path` (a Parquet / JSONL / CSV file, a folder of them, or a folder written
by `Dataset.save_to_disk`) or a hub `dataset` name such as "Spawning/PD12M" with `split`
(and optionally `subset` and `revision`). Hub datasets are streamed by default
(`streaming = true`): rows arrive as they are read and nothing is downloaded whole. The
`datasets` library is imported only when this source is used (`pip install 'cleanset[hf]'`).

Columns are understood exactly as the `table` source understands them
(builder.sources.columns: img2dataset, PD12M and CommonCatalog layouts out of the box) plus
the recipe's `columns = { url = "...", license = "..." }` mapping; `license` gives a fixed
licence URL for datasets whose every row shares one, `keep_columns` keeps more columns in
extra. Rows carry URLs to fetch; datasets of embedded image bytes are not read by this source.

Resume state after each candidate: `{"row": n}` rows consumed; a resumed build continues
with `.skip(n)` (on a stream, `datasets` skips without decoding the rows it passes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from builder.config import resolve_path
from builder.errors import UserError
from builder.records import Candidate
from builder.sources._failures import api_failed
from builder.sources._recheck import HeadRechecker
from builder.sources.base import SourceContext
from builder.sources.columns import (
    TABLE_ALIASES,
    TABLE_EXTRA,
    ColumnPlan,
    check_table_keys,
    missing_mapped,
    plan_columns,
    row_to_candidate,
)

# file suffix -> the `datasets` packaged builder that reads it
BUILDERS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".json": "json",
            ".ndjson": "json", ".csv": "csv", ".tsv": "csv"}
INSTALL_HINT = "pip install 'cleanset[hf]' (or pip install datasets)"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass(frozen=True)
class Config:
    path: str | None = None
    dataset: str | None = None
    subset: str | None = None
    split: str = "train"
    revision: str | None = None
    streaming: bool = True
    columns: dict[str, str] = field(default_factory=dict)
    license: str | None = None
    id_column: str | None = None
    keep_columns: tuple[str, ...] = ()

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        if (self.path is None) == (self.dataset is None):
            raise UserError(
                f"{file}: {where}: give exactly one of path = \"<local file or folder>\" or "
                'dataset = "<hub name>", e.g. dataset = "Spawning/PD12M".'
            )
        path = self.path
        if path is not None:
            path = str(resolve_path(path, base=base, file=file, key=f"{where}.path").absolute())
        if self.dataset is not None and not self.dataset.strip():
            raise UserError(f"{file}: {where}.dataset is empty; give a hub name such as "
                            '"Spawning/PD12M".')
        mapping = check_table_keys(self.columns, self.id_column, self.license, file=file,
                                   where=where)
        return replace(self, path=path, columns=mapping)


class HfSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.where = config.path or config.dataset or "?"

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        start = max(0, int((resume or {}).get("row", 0)))
        stream = self._open()
        plan: ColumnPlan | None = None
        names = getattr(stream, "column_names", None)
        if names:
            plan = self._plan(list(names))
        rows = stream.skip(start) if start else stream
        index = start
        for row in self._streamed(rows):
            if plan is None:
                plan = self._plan(list(row))
            index += 1
            yield row_to_candidate(
                row, plan, source=self.name, fallback_id=f"row-{index - 1}",
                fixed_license=self.config.license, resume={"row": index},
            )

    def _streamed(self, rows: Any) -> Iterator[Any]:
        """The rows; a hub that fails part-way (a file of the dataset still answering 5xx, or
        the connection lost, after huggingface_hub's own retries) stops the build as a
        failing API does: exit 1, the rows handed out kept, the rerun reading on from the
        row it reached. Raised as it came, it was a `fatal` naming no source (an OSError)
        or a traceback (httpx's errors are no OSError)."""
        dataset = self.config.dataset
        iterator = iter(rows)
        while True:
            try:
                row = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - whatever the hub client raised, named
                if dataset is None:
                    raise  # a local copy: not the network's doing
                said = (str(exc).strip().splitlines() or [""])[0]
                raise api_failed(self.name, f"the Hugging Face hub failed while streaming "
                                 f"({type(exc).__name__}: {said})",
                                 _hub_url(dataset)) from None
            yield row

    # -- loading -------------------------------------------------------------

    def _open(self) -> Any:
        try:
            import datasets
        except ImportError:
            raise UserError(
                f"source {self.name!r} (kind hf) needs the `datasets` library: {INSTALL_HINT}."
            ) from None
        c = self.config
        try:
            if c.path is not None:
                return self._open_local(datasets, Path(c.path))
            return datasets.load_dataset(c.dataset, c.subset, split=c.split,
                                         revision=c.revision, streaming=c.streaming)
        except UserError:
            raise
        except ConnectionError as exc:
            if c.dataset is None:
                raise
            # The hub is down, unreachable or switched off: not the recipe's fault (exit 1).
            raise api_failed(self.name, _hub_cause(exc), _hub_url(c.dataset)) from None
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise UserError(
                f"source {self.name!r}: cannot open dataset {self.where!r} split {c.split!r} "
                f"({type(exc).__name__}: {exc}). Check path/dataset/subset/split in "
                f"{self.context.recipe_file}; hub datasets need network access (or a "
                "local copy given as path)."
            ) from None

    def _open_local(self, datasets: Any, path: Path) -> Any:
        c = self.config
        if not path.exists():
            raise UserError(f"{path}: dataset of source {self.name!r} is gone (named in "
                            f"{self.context.recipe_file}). Restore it or fix the path.")
        if path.is_dir() and ((path / "state.json").exists() or
                              (path / "dataset_dict.json").exists()):
            saved = datasets.load_from_disk(str(path))
            if isinstance(saved, datasets.DatasetDict):
                if c.split not in saved:
                    raise UserError(
                        f"{path}: has no split {c.split!r}; its splits are "
                        f"{', '.join(sorted(saved))}. Set split in {self.context.recipe_file}."
                    )
                saved = saved[c.split]
            return saved.to_iterable_dataset()
        if path.is_file():
            suffix = path.suffix.lower() if path.suffix.lower() != ".gz" else \
                Path(path.stem).suffix.lower()
            builder = BUILDERS.get(suffix)
            if builder is None:
                raise UserError(f"{path}: cannot tell the format from {suffix!r}; give a "
                                ".parquet, .jsonl or .csv file, or a folder of them.")
            kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
            return datasets.load_dataset(builder, data_files=str(path), split="train",
                                         streaming=True, **kwargs)
        return datasets.load_dataset(str(path), c.subset, split=c.split, streaming=True)

    # -- columns -------------------------------------------------------------

    def _plan(self, names: list[str]) -> ColumnPlan:
        mapping = dict(self.config.columns)
        keep = tuple(self.config.keep_columns)
        plan = plan_columns(names, mapping, extra=TABLE_EXTRA + keep)
        wanted = {**mapping, **{f"keep:{k}": k for k in keep}}
        missing = missing_mapped(wanted, names)
        if missing:
            raise UserError(
                f"{self.where}: has no column for {', '.join(missing)} (mapped in source "
                f"{self.name!r} of {self.context.recipe_file}). Its columns are: "
                f"{', '.join(repr(n) for n in names[:30])}. Fix the column name in `columns`."
            )
        if not plan.has_url:
            raise UserError(
                f"{self.where}: has no image URL column (looked for "
                f"{', '.join(TABLE_ALIASES['url'])}). Its columns are: "
                f"{', '.join(repr(n) for n in names[:30])}. Map yours in source {self.name!r} "
                f'of {self.context.recipe_file}: columns = {{ url = "<column name>" }}.'
            )
        return plan


def _hub_url(dataset: str) -> str:
    from huggingface_hub import constants  # installed with `datasets`; honours HF_ENDPOINT

    return f"{constants.ENDPOINT.rstrip('/')}/datasets/{dataset}"


def _hub_cause(exc: ConnectionError) -> str:
    offline = [name for name in OFFLINE_VARIABLES
               if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")]
    if offline:
        return (f"cannot reach the Hugging Face hub: offline mode is on ({', '.join(offline)} "
                "set; unset it, or give a local copy of the dataset as path)")
    return f"cannot reach the Hugging Face hub ({exc})"


def rechecker(name: str, config: Config, context: SourceContext) -> HeadRechecker:
    """A HEAD on each sample's file URL (the dataset rows themselves are not read again)."""
    return HeadRechecker(context.fetch)


SOURCE = HfSource
