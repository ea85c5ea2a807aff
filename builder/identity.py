"""Which cleanset made a build: the package's version and a digest of its code.

Every release so far has said 0.1.0, so a ledger, a dataset card or a sample's provenance
could not tell which cleanset decided it, years later. The digest is of the package's own
source files and the licence catalogue it decides by, so two installations of the same code
(a wheel, a checkout) say the same, and any change to either says otherwise. It is written
as a PEP 440 local version label: `0.1.0+src.1a2b3c4d5e6f`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

from builder import __version__


@functools.cache
def tool_version() -> str:
    from builder.licensing.catalogue import licenses_dir

    package = Path(__file__).resolve().parent
    catalogue = licenses_dir()
    digest = hashlib.sha256()
    for root, pattern in ((package, "*.py"), (catalogue, "*.toml")):
        for path in sorted(root.rglob(pattern)):
            name = f"{root.name}/{path.relative_to(root).as_posix()}"
            digest.update(name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+src.{digest.hexdigest()[:12]}"


def describe_tools(tool_version: str | None, resumed_by: Sequence[str] = ()) -> str | None:
    """The cleansets that ran a build or a recheck, the one that started it first: "cleanset
    A, then cleanset B"; None when a cleanset too old to record its version started it and
    none resumed it (nothing is known)."""
    if tool_version is None and not resumed_by:
        return None
    first = (f"cleanset {tool_version}" if tool_version is not None
             else "a cleanset that did not record its version")
    return first + "".join(f", then cleanset {version}" for version in resumed_by)
