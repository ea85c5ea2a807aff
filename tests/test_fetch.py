"""builder.fetch against a real HTTP server on 127.0.0.1 (pytest-httpserver, threaded)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response as WResponse

from builder.fetch import (
    Fetcher,
    FetchError,
    HostGate,
    Response,
    blocked_kind,
    parse_retry_after,
)
from builder.recipe import FetchConfig
from builder.records import Reason, Rejection
from tests.conftest import REPO
from tests.faultserver import fault_server
from tests.faultserver import redirect as redirect_to

UA = "cleanset-test/1.0 (+https://example.org/contact)"


def served(httpserver, path: str) -> int:  # type: ignore[no-untyped-def]
    """Requests the server answered for `path`. The server is shared by the whole session,
    and a stalled request of an earlier test can finish during a later one: count by path."""
    return sum(1 for request, _ in httpserver.log if request.path == path)


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    # Our own threaded server: the concurrency test needs handlers to overlap, and a
    # handler blocked on purpose must not stall other test modules' shared server.
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def httpserver(server: HTTPServer) -> HTTPServer:
    server.clear()
    return server


def config(**overrides: object) -> FetchConfig:
    base = FetchConfig(
        user_agent=UA,
        allow_private_addresses=True,
        timeout_s=5.0,
        retries=3,
        backoff_s=0.01,
        max_retry_after_s=5.0,
    )
    return replace(base, **overrides)


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    f = Fetcher(config())
    yield f
    f.close()


def paths_seen(server: HTTPServer) -> list[str]:
    return [request.path for request, _ in server.log]


# --- plain fetching ---------------------------------------------------------------------------


def test_ok_response_returns_body_status_headers_and_utc_timestamp(httpserver, fetcher):
    httpserver.expect_request("/a.png").respond_with_data(
        b"\x89PNG-bytes",
        content_type="image/png",
        headers={"ETag": '"abc"', "X-Robots-Tag": "noai"},
    )
    result = fetcher.fetch(httpserver.url_for("/a.png"))
    assert isinstance(result, Response)
    assert result.status == 200
    assert result.data == b"\x89PNG-bytes"
    assert result.url == httpserver.url_for("/a.png")
    assert result.header("Content-Type") == "image/png"
    assert result.header("etag") == '"abc"'
    assert result.header("x-robots-tag") == "noai"
    assert all(name == name.lower() for name, _ in result.headers)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result.retrieved_at)


def test_user_agent_from_config_is_sent_on_every_request(httpserver, fetcher):
    httpserver.expect_request("/ua", headers={"User-Agent": UA}).respond_with_data(b"ok")
    assert isinstance(fetcher.fetch(httpserver.url_for("/ua")), Response)
    assert isinstance(fetcher.get_text(httpserver.url_for("/ua")), Response)
    httpserver.expect_request("/ua.json", headers={"User-Agent": UA}).respond_with_json({})
    assert fetcher.get_json(httpserver.url_for("/ua.json")) == {}
    assert [r.headers["User-Agent"] for r, _ in httpserver.log] == [UA, UA, UA]


def test_repeated_headers_are_all_kept_and_joined(httpserver, fetcher):
    def handler(request: Request) -> WResponse:
        resp = WResponse(b"x")
        resp.headers.add("X-Robots-Tag", "noimageai")
        resp.headers.add("X-Robots-Tag", "otherbot: noai")
        return resp

    httpserver.expect_request("/h").respond_with_handler(handler)
    result = fetcher.fetch(httpserver.url_for("/h"))
    assert isinstance(result, Response)
    assert result.header_all("x-robots-tag") == ["noimageai", "otherbot: noai"]
    assert result.header("X-Robots-Tag") == "noimageai, otherbot: noai"


def test_404_is_an_http_error_naming_the_status(httpserver, fetcher):
    httpserver.expect_request("/missing").respond_with_data(b"nope", status=404)
    result = fetcher.fetch(httpserver.url_for("/missing"))
    assert result == Rejection(Reason.HTTP_ERROR, f"HTTP 404 from {httpserver.url_for('/missing')}")
    assert served(httpserver, "/missing") == 1  # a 404 is not retried


def test_get_text_returns_error_statuses_for_the_caller_to_interpret(httpserver, fetcher):
    httpserver.expect_request("/robots.txt").respond_with_data(b"gone", status=404)
    result = fetcher.get_text(httpserver.url_for("/robots.txt"))
    assert isinstance(result, Response)
    assert result.status == 404 and not result.ok


def test_get_text_decodes_by_declared_charset(httpserver, fetcher):
    httpserver.expect_request("/ai.txt").respond_with_data(
        "Disallow: *.jpg # café".encode("latin-1"), content_type="text/plain; charset=latin-1"
    )
    result = fetcher.get_text(httpserver.url_for("/ai.txt"))
    assert isinstance(result, Response)
    assert result.text() == "Disallow: *.jpg # café"


# --- retries ----------------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured_then_succeeds(httpserver, fetcher):
    httpserver.expect_ordered_request("/busy").respond_with_data(
        b"slow down", status=429, headers={"Retry-After": "1"}
    )
    httpserver.expect_ordered_request("/busy").respond_with_data(b"image")
    result = fetcher.fetch(httpserver.url_for("/busy"))
    assert isinstance(result, Response)
    assert result.data == b"image"
    assert paths_seen(httpserver) == ["/busy", "/busy"]


def test_503_burst_exhausting_retries_is_http_unavailable_a_transient_reason(httpserver,
                                                                             fetcher):
    httpserver.expect_request("/down").respond_with_data(b"down", status=503)
    result = fetcher.fetch(httpserver.url_for("/down"))
    assert isinstance(result, Rejection)
    assert result.reason == Reason.HTTP_UNAVAILABLE and result.transient
    assert "HTTP 503" in result.detail
    assert served(httpserver, "/down") == 4  # 1 try + retries = 3


def test_503_then_recovery_succeeds(httpserver, fetcher):
    for _ in range(2):
        httpserver.expect_ordered_request("/flaky").respond_with_data(b"", status=503)
    httpserver.expect_ordered_request("/flaky").respond_with_data(b"fine")
    result = fetcher.fetch(httpserver.url_for("/flaky"))
    assert isinstance(result, Response) and result.data == b"fine"
    assert served(httpserver, "/flaky") == 3


def test_retry_after_longer_than_the_cap_gives_up_at_once_naming_it(httpserver, fetcher):
    httpserver.expect_request("/later").respond_with_data(
        b"", status=429, headers={"Retry-After": "3600"}
    )
    result = fetcher.fetch(httpserver.url_for("/later"))
    assert isinstance(result, Rejection)
    assert result.reason == Reason.HTTP_UNAVAILABLE
    assert "Retry-After 3600s" in result.detail and "max_retry_after_s" in result.detail
    assert served(httpserver, "/later") == 1


def test_500_is_not_retried(httpserver, fetcher):
    httpserver.expect_request("/boom").respond_with_data(b"", status=500)
    result = fetcher.fetch(httpserver.url_for("/boom"))
    assert isinstance(result, Rejection) and "HTTP 500" in result.detail
    assert served(httpserver, "/boom") == 1


def test_retry_after_accepts_seconds_and_http_dates():
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now=now) == 30.0
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_connection_refused_is_retried_then_a_transient_connection_error():
    # A port that was just free: nothing listens there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Fetcher(config(retries=1)) as f:
        result = f.fetch(f"http://127.0.0.1:{port}/x.jpg")
    assert isinstance(result, Rejection)
    assert result.reason == Reason.CONNECTION_ERROR and result.transient
    assert "connection error" in result.detail and "after 2 attempts" in result.detail


# --- size cap ---------------------------------------------------------------------------------


def test_content_length_over_cap_is_refused_as_too_large(httpserver, fetcher):
    httpserver.expect_request("/big").respond_with_data(b"x" * 5000)
    result = fetcher.fetch(httpserver.url_for("/big"), max_bytes=1000)
    assert isinstance(result, Rejection)
    assert result.reason == Reason.TOO_LARGE
    assert "Content-Length 5000" in result.detail


def test_body_at_exactly_the_cap_is_accepted(httpserver, fetcher):
    httpserver.expect_request("/exact").respond_with_data(b"x" * 1000)
    result = fetcher.fetch(httpserver.url_for("/exact"), max_bytes=1000)
    assert isinstance(result, Response) and len(result.data) == 1000


class _EndlessChunks(BaseHTTPRequestHandler):
    """Streams chunked zeros and counts what it managed to send; allocates one chunk at a
    time, so tracemalloc's peak below is the client's (werkzeug buffers on its side)."""

    protocol_version = "HTTP/1.1"
    sent = 0
    total = 64 << 20

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"%x\r\n" % (16 << 10) + b"\0" * (16 << 10) + b"\r\n"
        try:
            while type(self).sent < self.total:
                self.wfile.write(chunk)
                type(self).sent += 16 << 10
        except OSError:
            pass  # the client hung up, as it should

    def log_message(self, *args: object) -> None:
        pass


def test_chunked_body_over_cap_stops_reading_without_buffering_it_whole():
    """The fetch runs in a process of its own: tracemalloc counts every thread's
    allocations, and a pytest-xdist worker may hold other tests' threads (a module's Ray
    head, its servers), which once put 10 MB on this test's peak."""
    cap = 1 << 20
    _EndlessChunks.sent = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EndlessChunks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    probe = (
        "import json, sys, tracemalloc\n"
        "from builder.fetch import Fetcher\n"
        "from builder.recipe import FetchConfig\n"
        "f = Fetcher(FetchConfig(user_agent=sys.argv[3], allow_private_addresses=True,"
        " timeout_s=5.0, retries=3, backoff_s=0.01, max_retry_after_s=5.0))\n"
        "tracemalloc.start()\n"
        "r = f.fetch(sys.argv[1], max_bytes=int(sys.argv[2]))\n"
        "_, peak = tracemalloc.get_traced_memory()\n"
        "print(json.dumps({'rejected': hasattr(r, 'reason') and not hasattr(r, 'data'),"
        " 'reason': getattr(getattr(r, 'reason', None), 'value', None),"
        " 'detail': getattr(r, 'detail', ''), 'peak': peak}))\n")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", probe, f"http://127.0.0.1:{server.server_port}/big",
             str(cap), UA], capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rejected"]
    assert result["reason"] == Reason.TOO_LARGE.value
    assert f"stopped reading at {cap + 1}" in result["detail"]
    assert result["peak"] < cap + (256 << 10)  # the cap plus a few chunks, never the 64 MiB body
    assert _EndlessChunks.sent < _EndlessChunks.total  # we hung up long before the end


def test_get_text_cut_keeps_a_longer_body_up_to_the_cap_and_says_so(httpserver, fetcher):
    """For the policy files (RFC 9309 2.5: parse the first 500 KiB of a longer robots.txt);
    without `cut` the same body is too_large, as before."""
    httpserver.expect_request("/long.txt").respond_with_data(b"x" * 5000)
    cut = fetcher.get_text(httpserver.url_for("/long.txt"), max_bytes=1000, cut=True)
    assert isinstance(cut, Response) and cut.truncated and cut.data == b"x" * 1000
    whole = fetcher.get_text(httpserver.url_for("/long.txt"), max_bytes=1000)
    assert isinstance(whole, Rejection) and whole.reason == Reason.TOO_LARGE


def test_error_page_body_is_not_read_beyond_a_small_cap(httpserver, fetcher):
    httpserver.expect_request("/huge404").respond_with_data(b"x" * (4 << 20), status=404)
    result = fetcher.get_text(httpserver.url_for("/huge404"))
    assert isinstance(result, Response)
    assert result.status == 404 and len(result.data) == 64 * 1024


# --- timeouts ---------------------------------------------------------------------------------


def test_response_slower_than_timeout_is_a_timeout(httpserver):
    release = threading.Event()

    def stall(request: Request) -> WResponse:
        release.wait(30)  # held until the test is done with it
        return WResponse(b"late")

    httpserver.expect_request("/slow").respond_with_handler(stall)
    try:
        with Fetcher(config(timeout_s=0.5)) as f:
            result = f.fetch(httpserver.url_for("/slow"))
    finally:
        release.set()
    assert isinstance(result, Rejection)
    assert result.reason == Reason.TIMEOUT
    assert served(httpserver, "/slow") <= 1  # a read timeout is not retried


def test_server_dripping_bytes_forever_hits_the_wall_deadline(httpserver):
    stop = threading.Event()

    def drip() -> Iterator[bytes]:
        # A hostile server: one byte every 50 ms, well inside the read timeout, forever.
        while not stop.is_set():
            yield b"x"
            stop.wait(0.05)

    httpserver.expect_request("/drip").respond_with_handler(lambda request: WResponse(drip()))
    try:
        with Fetcher(config(timeout_s=0.2)) as f:
            result = f.fetch(httpserver.url_for("/drip"))
    finally:
        stop.set()
    assert isinstance(result, Rejection)
    assert result.reason == Reason.TIMEOUT
    assert "deadline" in result.detail


# --- redirects --------------------------------------------------------------------------------


def test_redirects_are_followed_and_the_final_url_reported(httpserver, fetcher):
    httpserver.expect_request("/old").respond_with_data(
        b"", status=301, headers={"Location": "/middle"}
    )
    httpserver.expect_request("/middle").respond_with_data(
        b"", status=302, headers={"Location": httpserver.url_for("/new")}
    )
    httpserver.expect_request("/new").respond_with_data(b"here")
    result = fetcher.fetch(httpserver.url_for("/old"))
    assert isinstance(result, Response)
    assert result.data == b"here"
    assert result.url == httpserver.url_for("/new")


def test_a_credential_header_follows_a_redirect_on_its_host_but_never_to_another(
        httpserver, fetcher):
    """An API key sent as a header went along to wherever the API redirected (a CDN, a
    login page, anyone's server): only the host it was meant for gets it now."""
    seen: dict[str, dict[str, str]] = {}

    def record(request: Request) -> WResponse:
        seen[request.path] = dict(request.headers)
        return WResponse(json.dumps([1]), content_type="application/json")

    elsewhere = httpserver.url_for("/elsewhere").replace("127.0.0.1", "localhost")
    httpserver.expect_request("/api").respond_with_data(
        b"", status=302, headers={"Location": "/moved"})
    httpserver.expect_request("/moved").respond_with_data(
        b"", status=302, headers={"Location": elsewhere})
    httpserver.expect_request("/elsewhere").respond_with_handler(record)
    httpserver.expect_request("/same").respond_with_handler(record)
    headers = {"X-Api-Key": "k", "Authorization": "Bearer t"}
    assert fetcher.get_json(httpserver.url_for("/api"), headers=headers) == [1]
    assert "X-Api-Key" not in seen["/elsewhere"] and "Authorization" not in seen["/elsewhere"]
    httpserver.expect_request("/api2").respond_with_data(
        b"", status=302, headers={"Location": "/same"})
    assert fetcher.get_json(httpserver.url_for("/api2"), headers=headers) == [1]
    assert seen["/same"]["X-Api-Key"] == "k"  # the same host still gets it


def test_redirect_loop_is_an_http_error(httpserver, fetcher):
    httpserver.expect_request("/a").respond_with_data(b"", status=302, headers={"Location": "/b"})
    httpserver.expect_request("/b").respond_with_data(b"", status=302, headers={"Location": "/a"})
    result = fetcher.fetch(httpserver.url_for("/a"))
    assert isinstance(result, Rejection)
    assert result.reason == Reason.HTTP_ERROR
    assert "redirect loop" in result.detail
    assert paths_seen(httpserver) == ["/a", "/b"]


@pytest.mark.parametrize("location", ["http://[bad/x.jpg", "//[::1/x.jpg"])
def test_a_redirect_to_a_malformed_location_is_an_http_error_not_an_exception(
        fetcher, location):
    """urljoin raises ValueError on a bracketed host left open: out of the fetcher, it was a
    traceback from an API source's page, and a robots.txt redirected there stopped its
    opt-out stage, every image of the host refused as `denylisted`."""
    with fault_server() as server:  # werkzeug will not send such a Location
        server.route("/r", redirect_to(location))
        url = server.url("/r")
        for result in (fetcher.fetch(url), fetcher.get_text(url), fetcher.head(url)):
            assert isinstance(result, Rejection) and result.reason == Reason.HTTP_ERROR
            assert "redirect" in result.detail and repr(location) in result.detail
        with pytest.raises(FetchError) as info:
            fetcher.get_json(url)
    assert info.value.reason == Reason.HTTP_ERROR and repr(location) in info.value.cause


def test_endless_distinct_redirects_stop_after_ten_hops(httpserver, fetcher):
    def hop(request: Request) -> WResponse:
        n = int(request.args.get("n", "0"))
        return WResponse(b"", status=307, headers={"Location": f"/hop?n={n + 1}"})

    httpserver.expect_request("/hop").respond_with_handler(hop)
    result = fetcher.fetch(httpserver.url_for("/hop"))
    assert isinstance(result, Rejection)
    assert "too many redirects" in result.detail
    assert len(httpserver.log) == 11


def test_redirect_to_a_private_address_is_refused(httpserver):
    # "localhost" is trusted by name so the first hop can reach the test server;
    # the redirect names 127.0.0.1 directly, which the guard must refuse.
    port = httpserver.port
    httpserver.expect_request("/start").respond_with_data(
        b"", status=302, headers={"Location": f"http://127.0.0.1:{port}/internal"}
    )
    httpserver.expect_request("/internal").respond_with_data(b"secret")
    with Fetcher(config(allow_private_addresses=False), trusted_hosts=["localhost"]) as f:
        result = f.fetch(f"http://localhost:{port}/start")
    assert isinstance(result, Rejection)
    assert result.reason == Reason.ADDRESS_REFUSED and not result.transient
    assert "private address" in result.detail
    assert paths_seen(httpserver) == ["/start"]


def test_redirect_to_a_name_resolving_privately_is_refused_at_connect(httpserver):
    port = httpserver.port
    httpserver.expect_request("/start").respond_with_data(
        b"", status=302, headers={"Location": f"http://localhost:{port}/internal"}
    )
    with Fetcher(config(allow_private_addresses=False), trusted_hosts=["127.0.0.1"]) as f:
        result = f.fetch(f"http://127.0.0.1:{port}/start")
    assert isinstance(result, Rejection)
    assert "refused private address 127.0.0.1 (loopback) for host localhost" in result.detail
    assert paths_seen(httpserver) == ["/start"]


# --- SSRF guard -------------------------------------------------------------------------------


def test_loopback_test_server_is_refused_without_a_request(httpserver):
    httpserver.expect_request("/x").respond_with_data(b"secret")
    with Fetcher(config(allow_private_addresses=False)) as f:
        result = f.fetch(httpserver.url_for("/x"))
    assert isinstance(result, Rejection)
    assert result.reason == Reason.ADDRESS_REFUSED
    assert "private address 127.0.0.1" in result.detail
    assert httpserver.log == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1/img.jpg",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://0.0.0.0/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://224.0.0.1/",
        "http://[64:ff9b::a00:1]/",
        "https://localhost/",
        "http://2130706433/",  # 127.0.0.1 as a bare integer, resolved by the OS
    ],
)
def test_private_addresses_are_refused_before_any_connection(url):
    # With a 1 ms connect timeout, a refusal naming the address proves no dial was tried.
    with Fetcher(config(allow_private_addresses=False, timeout_s=0.001, retries=0)) as f:
        result = f.fetch(url)
    assert isinstance(result, Rejection)
    assert result.reason == Reason.ADDRESS_REFUSED
    assert "refused private address" in result.detail


def test_blocked_kind_names_the_kind_and_passes_public_addresses():
    from ipaddress import ip_address

    assert blocked_kind(ip_address("127.0.0.1")) == "loopback"
    assert blocked_kind(ip_address("169.254.169.254")) == "link-local"
    assert blocked_kind(ip_address("::ffff:10.0.0.1")) == "private"
    assert blocked_kind(ip_address("2002:7f00:1::")) == "loopback"  # 6to4 around 127.0.0.1
    assert blocked_kind(ip_address("93.184.216.34")) is None
    assert blocked_kind(ip_address("2606:2800:220:1:248:1893:25c8:1946")) is None
    assert blocked_kind(ip_address("::ffff:93.184.216.34")) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/a.jpg",
        "file:///etc/passwd",
        "gopher://x/",
        "http:///nohost",
        "http://a b/",
    ],
)
def test_non_http_schemes_and_malformed_urls_are_http_errors(url, fetcher):
    result = fetcher.fetch(url)
    assert isinstance(result, Rejection)
    assert result.reason == Reason.HTTP_ERROR
    assert "bad URL" in result.detail


# --- politeness -------------------------------------------------------------------------------


def test_concurrent_requests_per_host_never_exceed_the_limit(httpserver):
    lock = threading.Lock()
    in_flight = [0]
    peak = [0]
    pair = threading.Barrier(2, timeout=10)

    def handler(request: Request) -> WResponse:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        pair.wait()  # two requests must overlap; a third would be visible in `peak`
        with lock:
            in_flight[0] -= 1
        return WResponse(b"ok")

    httpserver.expect_request("/c").respond_with_handler(handler)
    with Fetcher(config(per_host_connections=2, workers=8)) as f:
        results: list[object] = [None] * 8

        def work(i: int) -> None:
            results[i] = f.fetch(httpserver.url_for("/c"))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(isinstance(r, Response) for r in results)
    assert peak[0] == 2


def test_rate_limit_spaces_request_starts_per_host():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    gate = HostGate(4, rps=4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        with gate.slot("a.example"):
            pass
    with gate.slot("b.example"):  # another host has its own schedule
        pass
    assert slept == [0.25, 0.25]


def test_host_gate_forgets_idle_hosts():
    gate = HostGate(2, rps=None)
    with gate.slot("a.example"):
        assert "a.example" in gate._slots
    assert gate._slots == {}


# --- JSON APIs --------------------------------------------------------------------------------


def test_get_json_appends_params_to_an_existing_query(httpserver, fetcher):
    httpserver.expect_request(
        "/w/api.php",
        query_string={
            "action": "query",
            "format": "json",
            "continue": "-||",
            "gcmcontinue": "page|2",
        },
    ).respond_with_json({"query": {"pages": [1, 2]}})
    data = fetcher.get_json(
        httpserver.url_for("/w/api.php") + "?action=query",
        {"format": "json", "continue": "-||", "gcmcontinue": "page|2"},
    )
    assert data == {"query": {"pages": [1, 2]}}


def test_get_json_sends_accept_and_extra_headers(httpserver, fetcher):
    httpserver.expect_request(
        "/api", headers={"Accept": "application/json", "X-Api-Key": "k"}
    ).respond_with_json([1])
    assert fetcher.get_json(httpserver.url_for("/api"), headers={"X-Api-Key": "k"}) == [1]


def test_get_json_accepts_gzip_encoded_pages(httpserver, fetcher):
    import gzip

    payload = json.dumps({"items": list(range(1000))}).encode()
    httpserver.expect_request("/gz").respond_with_data(
        gzip.compress(payload),
        headers={"Content-Encoding": "gzip"},
        content_type="application/json",
    )
    assert fetcher.get_json(httpserver.url_for("/gz")) == {"items": list(range(1000))}


def test_malformed_json_is_retried_once_then_a_fetch_error(httpserver, fetcher):
    httpserver.expect_request("/bad").respond_with_data(
        b'{"items": [1, 2', content_type="application/json"
    )
    with pytest.raises(FetchError) as info:
        fetcher.get_json(httpserver.url_for("/bad"))
    assert info.value.reason == Reason.HTTP_ERROR
    assert "malformed JSON" in str(info.value)
    assert served(httpserver, "/bad") == 2


def test_get_json_http_error_raises_with_the_status(httpserver, fetcher):
    httpserver.expect_request("/gone").respond_with_data(b"", status=410)
    with pytest.raises(FetchError, match="HTTP 410") as info:
        fetcher.get_json(httpserver.url_for("/gone"))
    assert info.value.reason == Reason.HTTP_ERROR


def test_get_json_timeout_raises_with_timeout_reason(httpserver):
    release = threading.Event()

    def stall(request: Request) -> WResponse:
        release.wait(30)
        return WResponse(b"{}")

    httpserver.expect_request("/slowapi").respond_with_handler(stall)
    try:
        with Fetcher(config(timeout_s=0.3)) as f, pytest.raises(FetchError) as info:
            f.get_json(httpserver.url_for("/slowapi"))
    finally:
        release.set()
    assert info.value.reason == Reason.TIMEOUT


# --- hostile bodies ---------------------------------------------------------------------------


def test_truncated_body_shorter_than_content_length_is_retried_then_a_connection_error(
        httpserver):
    def liar(request: Request) -> WResponse:
        resp = WResponse(b"only ten b")
        resp.headers["Content-Length"] = "1000"
        return resp

    httpserver.expect_request("/short").respond_with_handler(liar)
    with Fetcher(config(retries=1)) as f:
        result = f.fetch(httpserver.url_for("/short"))
    assert isinstance(result, Rejection)
    assert result.reason == Reason.CONNECTION_ERROR
    assert "IncompleteRead" in result.detail and "after 2 attempts" in result.detail
    # count only this path: a slow request of an earlier test may finish while this one runs
    assert sum(1 for request, _ in httpserver.log if request.path == "/short") == 2


@contextmanager
def raw_server(replies: list[bytes]) -> Iterator[str]:
    """A TCP server answering the n-th connection with replies[n] verbatim, then closing
    it (b"" = hang up at once): for faults an HTTP framework will not produce."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        for reply in replies:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                if reply:
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(10)


OK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def test_connection_dropped_before_a_response_is_retried_and_can_recover():
    with raw_server([b"", b"", OK_REPLY]) as base, Fetcher(config(retries=3)) as f:
        result = f.fetch(base + "/img.jpg")
    assert isinstance(result, Response) and result.data == b"ok"


def test_connection_dropped_every_time_is_a_connection_error():
    with raw_server([b""] * 3) as base, Fetcher(config(retries=2)) as f:
        result = f.fetch(base + "/img.jpg")
    assert isinstance(result, Rejection)
    assert result.reason == Reason.CONNECTION_ERROR
    assert "connection error" in result.detail and "after 3 attempts" in result.detail


def test_server_dripping_headers_forever_hits_the_wall_deadline():
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn, suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.is_set():  # a header byte every 50 ms, inside the read timeout
                conn.sendall(b"a")
                stop.wait(0.05)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        with Fetcher(config(timeout_s=0.2, retries=2)) as f:
            result = f.fetch(f"http://127.0.0.1:{listener.getsockname()[1]}/x.jpg")
    finally:
        stop.set()
        listener.close()
        thread.join(10)
    assert isinstance(result, Rejection)
    assert result.reason == Reason.TIMEOUT
    assert "headers" in result.detail and "deadline" in result.detail


def test_garbage_instead_of_http_is_a_connection_error():
    with raw_server([b"SSH-2.0-OpenSSH_9.6\r\n"] * 2) as base, Fetcher(config(retries=1)) as f:
        result = f.fetch(base + "/img.jpg")
    assert isinstance(result, Rejection)
    assert result.reason == Reason.CONNECTION_ERROR


def test_empty_body_is_returned_for_the_image_check_to_judge(httpserver, fetcher):
    httpserver.expect_request("/empty").respond_with_data(b"", content_type="image/jpeg")
    result = fetcher.fetch(httpserver.url_for("/empty"))
    assert isinstance(result, Response) and result.data == b""
