"""Fuzzing the parsers that meet untrusted input: nothing but our clear UserError escapes.

Four targets: the licence normaliser and gate (strings from any source's metadata), the XMP
reader (bytes from any server), the recipe loader (a user's TOML), the table reader (a user's
CSV/JSONL). A few hundred examples each by default; `-m slow` runs 10,000 each.
"""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import UserError
from builder.licensing import decide, load_policy, normalise
from builder.optout.embedded import EmbeddedFacts, read_packet, scan
from builder.recipe import load_recipe
from builder.records import Evidence, Rejection
from builder.sources.base import SourceContext
from builder.sources.table import SOURCE as TableSource

DEFAULT = settings(max_examples=200, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(DEFAULT, max_examples=10_000)
_counter = itertools.count()


def both(check: Callable[..., None], *strategies: st.SearchStrategy[Any]
         ) -> tuple[Callable[[], None], Callable[[], None]]:
    """The same property as a default-size test and a `slow` 10,000-example test."""
    fast = DEFAULT(given(*strategies)(check))
    slow = pytest.mark.slow(SLOW(given(*strategies)(check)))
    return fast, slow


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- licences ------------------------------------------------------------------------------

LICENCE_WORDS = st.sampled_from([
    "CC BY 4.0", "cc-by-sa", "https://creativecommons.org/licenses/by/4.0/", "CC0", "public domain",
    "http://creativecommons.org/publicdomain/zero/1.0/deed.en", "MIT", " OR ", " AND ", " WITH ",
    "(", ")", "by-nc-nd", "/", "4.0", "3.0/de", "GPL-3.0-or-later", "LicenseRef-x", "\x00", "\u202e",
    "%2F", "?ref=x", "#frag", "all rights reserved", "Attribution", "NoDerivatives", "",
])
LICENCE_TEXT = st.one_of(st.text(max_size=200),
                         st.lists(LICENCE_WORDS, max_size=12).map("".join))
EVIDENCE = st.lists(st.tuples(st.sampled_from(["license", "license_url", "rights", "LicenseUrl",
                                               "xmp:cc:license", "x"]), LICENCE_TEXT),
                    max_size=5)
POLICY = load_policy("commercial")


def check_licence(text: str, evidence: list[tuple[str, str]]) -> None:
    spdx = normalise(text)
    assert spdx is None or (isinstance(spdx, str) and normalise(spdx) == spdx)
    decision = decide(tuple(Evidence(field=f, value=v) for f, v in evidence), POLICY)
    assert isinstance(decision, Rejection) or decision.spdx


test_licence_normaliser_and_gate_never_raise, test_licence_normaliser_and_gate_never_raise_slow \
    = both(check_licence, LICENCE_TEXT, EVIDENCE)


# --- XMP -----------------------------------------------------------------------------------

XMP_PIECES = st.sampled_from([
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>', b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>",
    b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>", b"<rdf:Description ",
    b"xmlns:plus='http://ns.useplus.org/ldf/xmp/1.0/' ", b"plus:DataMining='DMI-PROHIBITED'",
    b"<Iptc4xmpExt:DigitalSourceType>", b"trainedAlgorithmicMedia", b"</rdf:Description>",
    b"<!DOCTYPE x [<!ENTITY a 'aaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>", b"&b;", b"&#0;",
    b"<![CDATA[", b"]]>", b">", b"/>", b"</x:xmpmeta>", b'<?xpacket end="w"?>', b"\x00", b"\xff",
    b"<!ENTITY x SYSTEM 'file:///etc/passwd'>", b"&x;", b"xmlns:a='", b"'",
])
PACKET = st.one_of(st.binary(max_size=400), st.lists(XMP_PIECES, max_size=16).map(b"".join))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def containers(packet: bytes) -> list[bytes]:
    """The packet in each container the reader walks, plus a few lies about lengths."""
    app1 = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    jpeg = b"\xff\xd8\xff\xe1" + struct.pack(">H", min(len(app1) + 2, 0xFFFF)) + app1 + b"\xff\xd9"
    itxt = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + packet
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"iTXt", itxt) + _png_chunk(b"IEND", b"")
    webp_chunk = b"XMP " + struct.pack("<I", len(packet)) + packet
    webp = b"RIFF" + struct.pack("<I", 4 + len(webp_chunk)) + b"WEBP" + webp_chunk
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHII", 700, 1, len(packet), 26) + struct.pack("<I", 0) + packet)
    lying = b"\xff\xd8\xff\xe1\xff\xff" + app1[:50]
    return [jpeg, png, webp, tiff, lying, packet]


def check_xmp(packet: bytes, cut: int) -> None:
    read_packet(packet, "fuzz", EmbeddedFacts())
    for data in containers(packet):
        facts = scan(data[: len(data) - cut] if cut else data)
        assert isinstance(facts, EmbeddedFacts)


test_xmp_reader_never_raises, test_xmp_reader_never_raises_slow = both(
    check_xmp, PACKET, st.integers(0, 40))


# --- recipes -------------------------------------------------------------------------------

TOML_PIECES = st.sampled_from([
    "[dataset]\n", "name = \"x\"\n", "name = 3\n", "[[sources]]\n", "kind = \"table\"\n",
    "kind = \"folder\"\n", "path = \"nope.csv\"\n", "path = \"..\"\n", "[fetch]\n",
    "timeout_s = -1\n", "workers = 1e9\n", "max_bytes = \"big\"\n", "[image]\n",
    "formats = [\"jpeg\", 3]\n", "[dedup]\n", "exclude = [\"/etc\"]\n", "[policy]\n",
    "use = \"../../etc/passwd\"\n", "use = \"commercial\"\n", "[optout]\n", "[bogus]\n",
    "samples_per_shard = 0\n", "samples_per_shard = 10\n", "x = {a = 1}\n", "= \n", "[[\n",
    "trusted_hosts = [\"localhost\"]\n", "columns = {url = 1}\n", "\x00", "\ufeff",
    "sources = 5\n", "[[dataset]]\n", "name = \"" + "a" * 100 + "\"\n",
])
TOML_TEXT = st.one_of(st.text(max_size=300), st.lists(TOML_PIECES, max_size=14).map("".join))
SCALARS = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.text(max_size=20), st.lists(st.text(max_size=5), max_size=3))
KEYS = st.sampled_from(["name", "kind", "path", "use", "timeout_s", "workers", "max_bytes",
                        "samples_per_shard", "formats", "exact", "near", "license", "recursive",
                        "retries", "trusted_hosts", "jurisdiction", "image_ext", "bogus"])
TABLES = st.dictionaries(st.sampled_from(["dataset", "policy", "fetch", "image", "dedup",
                                          "sources", "optout"]),
                         st.dictionaries(KEYS, SCALARS, max_size=6), max_size=6)


def toml_value(value: Any) -> str:
    return json.dumps(value)  # JSON scalars and string arrays are valid TOML values


def to_toml(tables: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, table in tables.items():
        out.append(f"[[{name}]]" if name == "sources" else f"[{name}]")
        out.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
    return "\n".join(out) + "\n"


def check_recipe_text(scratch: Path, text: str) -> None:
    path = scratch / f"recipe{next(_counter)}.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_recipe(path)
    except UserError:
        pass
    finally:
        path.unlink()


def test_recipe_loader_refuses_any_text_with_a_user_error(scratch: Path) -> None:
    DEFAULT(given(TOML_TEXT)(lambda text: check_recipe_text(scratch, text)))()


def test_recipe_loader_refuses_any_table_with_a_user_error(scratch: Path) -> None:
    DEFAULT(given(TABLES)(lambda tables: check_recipe_text(scratch, to_toml(tables))))()


@pytest.mark.slow
def test_recipe_loader_refuses_any_text_or_table_with_a_user_error_slow(scratch: Path) -> None:
    SLOW(given(TOML_TEXT)(lambda text: check_recipe_text(scratch, text)))()
    SLOW(given(TABLES)(lambda tables: check_recipe_text(scratch, to_toml(tables))))()


# --- tables --------------------------------------------------------------------------------

CSV_PIECES = st.sampled_from([
    b"url,license,id\n", b"url\tlicense\n", b"http://x/a.jpg", b",", b"\"", b"\"\"", b"\n", b"\r\n",
    b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"https://creativecommons.org/licenses/by/4.0/",
    b"../../etc/passwd", b"\t", b"a" * 300, b"{\"url\": \"http://x/a.jpg\"}\n", b"[1]\n", b"null\n",
    b"{\"url\": 5, \"license\": [1]}\n", b"{", b"}\n", b"\"url\": ",
])
TABLE_BYTES = st.one_of(st.binary(max_size=500), st.lists(CSV_PIECES, max_size=30).map(b"".join))


def check_table(scratch: Path, data: bytes, suffix: str) -> None:
    n = next(_counter)
    table = scratch / f"table{n}{suffix}"
    table.write_bytes(data)
    recipe = scratch / f"table{n}.toml"
    recipe.write_text(f'[dataset]\nname = "fuzz"\n[[sources]]\nkind = "table"\n'
                      f'path = "{table.name}"\n', encoding="utf-8")
    try:
        spec = load_recipe(recipe).sources[0]
        context = SourceContext(recipe_file=recipe, base_dir=scratch, fetch=None)
        for _ in TableSource(spec.name, spec.config, context).candidates(None):
            pass
    except UserError:
        pass
    finally:
        table.unlink()
        recipe.unlink()


SUFFIX = st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet", ".csv.gz", ".jsonl.gz"])


def test_table_reader_reads_or_refuses_any_bytes_with_a_user_error(scratch: Path) -> None:
    DEFAULT(given(TABLE_BYTES, SUFFIX)(lambda data, sfx: check_table(scratch, data, sfx)))()


@pytest.mark.slow
def test_table_reader_reads_or_refuses_any_bytes_with_a_user_error_slow(scratch: Path) -> None:
    SLOW(given(TABLE_BYTES, SUFFIX)(lambda data, sfx: check_table(scratch, data, sfx)))()
