"""Timestamps for provenance. SOURCE_DATE_EPOCH (the reproducible-builds convention) pins them,
so a rebuild over the same responses can be byte-identical even though fetches happen later."""

from __future__ import annotations

import os
from datetime import UTC, datetime


def now_iso() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (datetime.fromtimestamp(int(epoch), UTC) if epoch and epoch.isdigit()
              else datetime.now(UTC))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_iso() -> str:
    """The real time, for the ledger's own bookkeeping (never written into shards)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
