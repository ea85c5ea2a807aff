"""Timestamps for provenance. SOURCE_DATE_EPOCH (the reproducible-builds convention) pins them,
so a rebuild over the same responses can be byte-identical even though fetches happen later."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime


def now_iso() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (datetime.fromtimestamp(int(epoch), UTC) if epoch and epoch.isdigit()
              else datetime.now(UTC))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_iso() -> str:
    """The real time, for the ledger's own bookkeeping (never written into shards)."""
    global _wall_second, _wall_text
    second = int(time.time())
    if second != _wall_second:  # the build's writer asks once per candidate: format once a second
        _wall_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _wall_second = second
    return _wall_text


_wall_second = -1
_wall_text = ""
