"""C2PA / CAWG training-and-data-mining assertions, via the optional `c2pa-python` extra.

Imported lazily: without the extra the gate records "not checked" in every trail and the
build summary says so. The manifest store is read only when the bytes carry a C2PA marker
(JUMBF `c2pa` label), so images without one cost a substring search.

Refused: any `cawg.training-mining` or legacy `c2pa.training-mining` entry for training or
data mining whose `use` is `notAllowed` or `constrained` (constrained = "ask first", which a
batch build cannot do), and `c2pa.actions` naming trained-algorithmic media as the digital
source type (AI-generated).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

INSTALL_HINT = "install cleanset[c2pa]"
TRAINING_LABELS = ("cawg.training-mining", "c2pa.training-mining")
TRAINING_ENTRIES = frozenset({
    "cawg.ai_training", "cawg.ai_generative_training", "cawg.data_mining",
    "c2pa.ai_training", "c2pa.ai_generative_training", "c2pa.data_mining",
})
REFUSED_USES = frozenset({"notallowed", "constrained"})
# A training entry refused, as its bytes read in the store whether it is CBOR (`pcawg.
# ai_training\xa1cusejnotAllowed`) or JSON: what a manifest that cannot be read (damaged,
# or c2pa-python missing) still says, as an unparseable XMP packet is searched as text.
_TEXT_REFUSAL = re.compile(
    rb"((?:cawg|c2pa)\.(?:ai_training|ai_generative_training|data_mining))"
    rb"(?:(?!(?:cawg|c2pa)\.).){0,400}?use.{1,4}?(notAllowed|constrained)", re.DOTALL)
MIME_FORMATS = {"image/jpeg": "image/jpeg", "image/png": "image/png", "image/webp": "image/webp",
                "image/tiff": "image/tiff", "image/gif": "image/gif"}


def available() -> bool:
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return False
    return True


def has_marker(data: bytes) -> bool:
    """Whether the container has a place a C2PA manifest store lives (cheap: headers only).

    JPEG: an APP11 JUMBF segment; PNG: a `caBX` chunk; WebP: a `C2PA` chunk. Other formats
    fall back to a search for the JUMBF label."""
    from builder.optout.embedded import chunk_kinds, jpeg_segments

    if data[:2] == b"\xff\xd8":
        return any(marker == 0xEB and b"c2pa" in data[start:end]
                   for marker, start, end in jpeg_segments(data))
    kinds = chunk_kinds(data)
    if kinds:
        return b"caBX" in kinds or b"C2PA" in kinds
    return b"c2pa" in data


@dataclass
class C2paFacts:
    manifests: int = 0
    refusals: list[str] = field(default_factory=list)  # "label entry=use in manifest"
    source_types: list[str] = field(default_factory=list)
    problem: str | None = None


def read(data: bytes, mime: str) -> C2paFacts:
    import c2pa

    facts = C2paFacts()
    fmt = MIME_FORMATS.get(mime)
    if fmt is None:
        facts.problem = f"format {mime} not readable by c2pa"
        return facts
    try:
        with c2pa.Reader(fmt, io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
    except Exception as exc:  # noqa: BLE001 - the library raises its own error family
        if "ManifestNotFound" in type(exc).__name__:  # the marker bytes were a coincidence
            facts.problem = "absent (no manifest store)"
        else:
            facts.problem = f"manifest unreadable ({type(exc).__name__}: {str(exc)[:120]})"
            facts.refusals = text_refusals(data, "a manifest store that cannot be read")
        return facts
    manifests = store.get("manifests") or {}
    facts.manifests = len(manifests)
    for label, manifest in manifests.items():
        for assertion in manifest.get("assertions") or []:
            _read_assertion(label, assertion, facts)
    return facts


def text_refusals(data: bytes, why: str) -> list[str]:
    """Training refusals found in the bytes as text, for a store that was not parsed."""
    return [f"{m.group(1).decode()}={m.group(2).decode()} (found as text in {why})"
            for m in _TEXT_REFUSAL.finditer(data)]


def _read_assertion(manifest: str, assertion: dict[str, Any], facts: C2paFacts) -> None:
    label = str(assertion.get("label", ""))
    data = assertion.get("data") or {}
    if label.split(".v", 1)[0] in TRAINING_LABELS or label in TRAINING_LABELS:
        entries = data.get("entries") or {}
        for name, entry in entries.items():
            use = str((entry or {}).get("use", "")).lower()
            if name in TRAINING_ENTRIES and use in REFUSED_USES:
                facts.refusals.append(f"{label} {name}={entry.get('use')} in manifest {manifest}")
    elif label.startswith("c2pa.actions"):
        for action in data.get("actions") or []:
            source = action.get("digitalSourceType") if isinstance(action, dict) else None
            if isinstance(source, str):
                facts.source_types.append(source)
