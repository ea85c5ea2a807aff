"""Input cannot escape: hostile ids, file names and XML never reach keys, tar names or paths.

Keys are ours (ten digits, in source order); source ids and file names only ever appear as
data inside KEY.json and the ledger. Links out of a source folder are not followed, and XMP
is parsed without DTDs or entities.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from pytest_httpserver import HTTPServer

from builder.optout.embedded import scan
from tests.conftest import make_image, run_cli, table_recipe, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
MEMBER_RE = re.compile(r"^[0-9]{10}\.(jpg|png|json|txt)$")
HOSTILE_IDS = [
    "../../../../etc/passwd", "/etc/shadow", ".", "..", "a/b/../../c", "nul\x00byte", "x" * 5000,
    "\u202egpj.exe", "e\u0301t\u00e9", "back\\slash", "new\nline", "-rf --no-preserve-root",
    "0000000000", "tab\tand space", "\ud7ff\ufffd", "CON", "a" * 255 + ".jpg",
]
ODD_FILE_NAMES = [
    "a b.png", "ünïcödé.png", "\u202egnp.exe.png", "x" * 240 + ".png", "new\nline.png",
    "back\\slash.png", "semi;colon&$(touch pwned).png", "dots...in..middle.png", "-dash.png",
]


def tar_names(out: Path) -> list[str]:
    names = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                assert info.isfile() and info.mode == 0o444, info
                names.append(info.name)
    return names


def assert_contained(out: Path, accepted: int) -> None:
    names = tar_names(out)
    assert all(MEMBER_RE.match(n) for n in names), [n for n in names if not MEMBER_RE.match(n)]
    assert len(names) == 3 * accepted
    assert not list(out.rglob("*passwd*")) and not list(out.rglob("*pwned*"))
    assert not (out.parent / "pwned").exists()


def test_hostile_source_ids_become_ten_digit_keys_and_stay_data(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/robots.txt").respond_with_data("", status=404)
    rows = []
    for i, sid in enumerate(HOSTILE_IDS):
        httpserver.expect_request(f"/{i}.jpg").respond_with_data(make_image(300 + i),
                                                                  content_type="image/jpeg")
        rows.append({"id": sid, "url": httpserver.url_for(f"/{i}.jpg"), "license": CC0,
                     "caption": sid, "title": sid})
    recipe = table_recipe(tmp_path, rows, 'name = "hostile-ids"\nsamples_per_shard = 5')
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    assert_contained(out, len(HOSTILE_IDS))
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [m["key"] for m in manifest] == [f"{i:010d}" for i in range(len(HOSTILE_IDS))]
    assert [m["source_id"] for m in manifest] == HOSTILE_IDS  # kept verbatim, as data
    assert run_cli("verify", str(out)).returncode == 0


def test_odd_file_names_are_data_and_links_out_of_the_folder_are_not_followed(
        tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(ODD_FILE_NAMES):
        (images / name).write_bytes(make_image(400 + i, fmt="PNG"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(make_image(499, fmt="PNG"))
    os.symlink(outside / "secret.png", images / "escape.png")
    os.symlink(outside, images / "linked-dir")
    os.symlink("../outside/secret.png", images / "relative-escape.png")
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "odd-names"
samples_per_shard = 4
[[sources]]
kind = "folder"
path = "images"
license = "{CC0}"
""")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    # Every name was read; some may be refused on content (near duplicates), never on name.
    assert_contained(out, len(pq.read_table(out / "manifest.parquet")))
    ids = {c["candidate_id"].split(":", 1)[1]
           for c in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert ids == set(ODD_FILE_NAMES)  # nothing from outside, not even as a rejection


def jpeg_with_xmp(packet: bytes) -> bytes:
    app1 = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    body = make_image(7)
    return body[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + body[2:]


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF
 xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description
 xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>&lol9;</dc:title>
</rdf:Description></rdf:RDF></x:xmpmeta>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF
 xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description
 xmlns:cc="http://creativecommons.org/ns#" cc:license="&secret;"/></rdf:RDF></x:xmpmeta>"""


def test_xmp_entity_expansion_and_external_entities_are_refused_not_expanded() -> None:
    for packet in (BILLION_LAUGHS, XXE):
        facts = scan(jpeg_with_xmp(packet))
        text = json.dumps([facts.licenses, facts.data_mining, facts.source_types])
        assert "lollol" not in text and "root:" not in text
        assert len(text) < 10_000


def test_a_build_over_images_carrying_xml_bombs_finishes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "laughs.jpg").write_bytes(jpeg_with_xmp(BILLION_LAUGHS))
    (images / "xxe.jpg").write_bytes(jpeg_with_xmp(XXE))
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "xml-bombs"
[[sources]]
kind = "folder"
path = "images"
license = "{CC0}"
""")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    cands = pq.read_table(out / "candidates.parquet").to_pylist()
    assert len(cands) == 2
    assert "root:" not in json.dumps(cands)
    for shard in (out / "shards").glob("*.tar"):
        assert b"root:x:0:0" not in shard.read_bytes()
