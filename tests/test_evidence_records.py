"""An image's evidence records are laid out directly (the hot path of every build); they must
be byte for byte what warcio's record builder and writer make of the same exchange."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import re

import pytest
from warcio.archiveiterator import ArchiveIterator

from builder.evidence import warc
from builder.records import Exchange

SECRET = "k3y-s3cr3t-value"


def scrub(text: str) -> str:
    return text.replace(SECRET, "***")


def exchange(url: str, headers: tuple[tuple[str, str], ...], *, status: int = 200,
             reason: str = "OK", protocol: str = "HTTP/1.1",
             request: tuple[tuple[str, str], ...] | None = None) -> Exchange:
    return Exchange(
        kind="image", url=url,
        request=request or (("Host", "img.example.org"), ("Accept-Encoding", "identity"),
                            ("User-Agent", "cleanset/0.1 (+mailto:team@example.org)")),
        protocol=protocol, status=status, reason=reason, headers=headers, body=None,
        payload_sha256=hashlib.sha256(url.encode()).hexdigest(), truncated=False,
        retrieved_at="2023-11-14T22:13:20Z")


HEADERS = [
    (("Content-Type", "image/jpeg"), ("Content-Length", "172345")),
    (("Server", "nginx/1.22.1"), ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"),
     ("Content-Type", "image/png"), ("Content-Length", "9"), ("ETag", '"65a-5f3"'),
     ("X-Robots-Tag", "noai, noimageai"), ("Cache-Control", "max-age=86400, public")),
    (("Content-Encoding", "gzip"), ("Content-Length", "77"), ("Content-Type", "image/webp")),
    (("X-Echo", f"asked with {SECRET}"), ("Set-Cookie", "a=b; Path=/")),
    (),
]
URLS = [
    "http://127.0.0.1:8080/a.jpg",
    "https://upload.example.org/w/images/1/1a/Caf%C3%A9.jpg",
    "https://api.example.org/img?id=7&wskey=abcdef&size=large",
    f"https://cdn.example.org/{SECRET}/b.png",
    "https://cdn.example.org",
]


def warcio_bytes(ex: Exchange) -> tuple[str, bytes]:
    pair = warc.make_pair(3, ex, scrub)
    out = b""
    for record in (pair.response, pair.request):
        raw = io.BytesIO()
        warc._Sha256Writer(raw, gzip=False, warc_version="1.1").write_record(record)
        out += raw.getvalue()
    return pair.record_id, out


@pytest.mark.parametrize(("url", "headers"), list(itertools.product(URLS, HEADERS)))
def test_an_images_records_are_byte_for_byte_warcios(url: str, headers: tuple) -> None:
    ex = exchange(url, headers)
    fast = warc._revisit_pair_bytes(3, ex, scrub)
    assert fast is not None
    rid, target, records = fast
    expected_rid, expected = warcio_bytes(ex)
    assert rid == expected_rid
    assert records[0] + records[1] == expected
    prepared = warc.prepare(3, ex, scrub)
    assert gzip.decompress(prepared.records) == expected
    assert SECRET not in gzip.decompress(prepared.records).decode()
    read = list(ArchiveIterator(io.BytesIO(prepared.records), check_digests=True))
    assert [r.rec_type for r in read] == ["revisit", "request"]


@pytest.mark.parametrize("ex", [
    exchange("https://example.org/a.jpg", (("Content-Disposition", "inline; filename=café.jpg"),)),
    exchange("https://example.org/ü.jpg", ()),
    exchange("https://example.org/a.jpg", (("X-Odd", "line\r\nInjected: 1"),)),
    exchange("https://example.org/a.jpg", (), reason=""),
    exchange("https://example.org/a.jpg", (), protocol="HTTP/1.0", status=203,
             reason="Non-Authoritative Information"),
])
def test_what_warcio_would_encode_goes_through_warcio_and_still_matches(ex: Exchange) -> None:
    """Non-ASCII is percent-encoded by warcio; line breaks are left to it too. The result of
    prepare is warcio's either way."""
    expected_rid, expected = warcio_bytes(ex)
    prepared = warc.prepare(3, ex, scrub)
    assert prepared.record_id == expected_rid
    assert gzip.decompress(prepared.records) == expected


def test_a_url_list_holding_an_iri_builds_and_archives_the_uri_that_was_asked(
        httpserver, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`/wiki/Datei:Müller.jpg` as a browser shows it: the build used to stop with a
    traceback writing its evidence (warcio cannot put a non-ASCII request line in a WARC)."""
    from tests.conftest import make_image, run_cli, serve_no_site_policies, table_recipe

    serve_no_site_policies(httpserver)
    httpserver.expect_request(re.compile(r"^/Datei:M.*ller.*\.jpg$")).respond_with_data(
        make_image(5, (64, 48)), content_type="image/jpeg")
    url = httpserver.url_for("/Datei:Müller_1.jpg")
    recipe = table_recipe(tmp_path, [
        {"id": "m", "url": url,
         "license": "https://creativecommons.org/publicdomain/zero/1.0/"}], 'name = "iri"')
    out = tmp_path / "out"
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert run_cli("verify", str(out)).returncode == 0
    shown = run_cli("evidence", str(out), "0000000000")
    assert shown.returncode == 0, proc.stdout
    shown = shown.stdout
    assert f"url: {url}" in shown  # provenance keeps the URL as the source gave it
    assert "GET /Datei:M%C3%BCller_1.jpg HTTP/1.1" in shown
    assert "target: http://" in shown and "/Datei:M%C3%BCller_1.jpg" in shown
