"""A sample's provenance JSON is the standard library's compact, key-sorted spelling, byte for
byte, whichever encoder wrote it (builder.provenance.dumps uses orjson for speed)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from builder.provenance import dumps


def stdlib(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


# What a provenance holds: text from any source (control characters, quotes, backslashes,
# non-ASCII, astral characters; no lone surrogates, which no UTF-8 input can carry), 64-bit
# integers, booleans, nulls, lists and objects.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
LEAVES = (TEXT | st.integers(-(2**63), 2**63 - 1) | st.booleans() | st.none())
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TEXT, inner, max_size=5), max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(TEXT, VALUES, max_size=8))
def test_provenance_json_is_the_standard_library_s_bytes(provenance: dict[str, Any]) -> None:
    assert dumps(provenance) == stdlib(provenance)


def test_awkward_text_and_an_integer_past_64_bits_come_out_as_the_standard_library_writes() -> None:
    text = 'q"b\\s/\n\r\t\b\f\x00\x1f\x7f é \u2028\u2029 \ufeff 😀 \U0010ffff'
    assert dumps({"caption": text, "n": [2**63 - 1, -(2**63)]}) == stdlib(
        {"caption": text, "n": [2**63 - 1, -(2**63)]})
    huge = {"source": {"id": 2**70}, "key": "0000000001"}
    assert dumps(huge) == stdlib(huge)  # orjson refuses it; the standard encoder writes it
