"""Registry of source kinds. Adding a source is one module plus one line here."""

from __future__ import annotations

import importlib
from types import ModuleType

from builder.config import did_you_mean
from builder.errors import UserError

# kind -> module under builder.sources exposing `Config` and `SOURCE` (the class)
REGISTRY: dict[str, str] = {
    "table": "builder.sources.table",
    "folder": "builder.sources.folder",
    "wikimedia": "builder.sources.wikimedia",
    "met": "builder.sources.met",
    "aic": "builder.sources.aic",
    "cleveland": "builder.sources.cleveland",
    "smithsonian": "builder.sources.smithsonian",
    "europeana": "builder.sources.europeana",
    "openverse": "builder.sources.openverse",
    "hf": "builder.sources.hf",
}


# The kinds that read a remote API. Each takes the same common keys besides `kind` and
# `name` (which every kind takes): `api` (the API root, so a mirror or a local replay
# works), `limit` (the most candidates to take from it) and `rps` (requests a second).
API_KINDS = frozenset({"wikimedia", "met", "aic", "cleveland", "smithsonian", "europeana",
                       "openverse"})
COMMON_API_KEYS = ("api", "limit", "rps")


def source_module(kind: str, *, file: str, where: str) -> ModuleType:
    if kind not in REGISTRY:
        raise UserError(
            f"{file}: {where}.kind = {kind!r} is not a known source kind."
            f"{did_you_mean(kind, REGISTRY)} Known kinds: {', '.join(sorted(REGISTRY))}."
        )
    return importlib.import_module(REGISTRY[kind])
