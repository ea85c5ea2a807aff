"""Host consent for `recheck`: the files a build reads, but a failure to read them is
transient (never an opt-out), and a refusal names its file, rule and line."""

from __future__ import annotations

import json

from pytest_httpserver import HTTPServer

from builder.fetch import Fetcher
from builder.optout.config import OptoutConfig
from builder.optout.consent import HostConsent, disallow_line
from tests.apihelpers import FAST_FETCH


def consent_for() -> HostConsent:
    return HostConsent(Fetcher(FAST_FETCH), OptoutConfig(), workers=2)


def test_a_robots_txt_answering_503_is_transient_where_a_build_would_refuse_everything(
        httpserver: HTTPServer) -> None:
    httpserver.expect_request("/robots.txt").respond_with_data("busy", status=503)
    httpserver.expect_request("/ai.txt").respond_with_data("", status=404)
    httpserver.expect_request("/.well-known/tdmrep.json").respond_with_data("", status=404)
    signals = consent_for().signals(httpserver.url_for("/a.jpg"))
    robots = next(s for s in signals if s.signal == "robots.txt")
    assert robots.transient and not robots.refused and "HTTP 503" in robots.said
    assert not any(s.refused for s in signals)


def test_each_host_file_is_read_once_for_many_urls(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/robots.txt").respond_with_data(
        "User-agent: *\nDisallow: /private/\n")
    httpserver.expect_request("/ai.txt").respond_with_data("", status=404)
    httpserver.expect_request("/.well-known/tdmrep.json").respond_with_data(json.dumps(
        [{"location": "/reserved/*", "tdm-reservation": 1}]))
    consent = consent_for()
    urls = [httpserver.url_for(p) for p in ("/a.jpg", "/private/b.jpg", "/reserved/c.jpg")]
    consent.warm(urls)
    verdicts = {u.rsplit("/", 1)[1]: consent.signals(u) for u in urls}
    assert consent.requests == 3
    assert not any(s.refused for s in verdicts["a.jpg"])
    (robots,) = [s for s in verdicts["b.jpg"] if s.refused]
    assert robots.signal == "robots.txt" and "line 2: 'Disallow: /private/'" in robots.said
    (tdm,) = [s for s in verdicts["c.jpg"] if s.refused]
    assert tdm.signal == "tdmrep.json" and tdm.said.startswith("reserved")


def test_the_line_named_is_the_rule_that_decides_in_our_group() -> None:
    text = ("User-agent: *\nDisallow: /\n\nUser-agent: cleanset\nDisallow: /photos/\n"
            "Allow: /photos/public/\n")
    assert disallow_line(text, "cleanset", "https://h/photos/x.jpg") == (5, "Disallow: /photos/")
    assert disallow_line(text, "cleanset", "https://h/photos/public/x.jpg") is None
    assert disallow_line(text, "*", "https://h/x.jpg") == (2, "Disallow: /")


def test_a_robots_txt_with_a_byte_order_mark_still_refuses_in_a_recheck(
        httpserver: HTTPServer) -> None:
    """A BOM before `User-agent` once hid the group: the recheck said `unchanged` for a host
    that had opted out (and a build admitted from it)."""
    httpserver.expect_request("/robots.txt").respond_with_data(
        "\ufeffUser-agent: *\nDisallow: /\n".encode(), content_type="text/plain")
    httpserver.expect_request("/ai.txt").respond_with_data("", status=404)
    httpserver.expect_request("/.well-known/tdmrep.json").respond_with_data("", status=404)
    signals = consent_for().signals(httpserver.url_for("/a.jpg"))
    (robots,) = [s for s in signals if s.refused]
    assert robots.signal == "robots.txt" and not robots.transient
    assert "line 2: 'Disallow: /'" in robots.said


def test_a_robots_txt_over_512_kib_still_refuses_in_a_recheck(httpserver: HTTPServer) -> None:
    """Refused as too_large, it was `unreachable`: exit 4 on every recheck, its Disallow never
    seen. Its first 512 KiB are read, as in a build."""
    httpserver.expect_request("/robots.txt").respond_with_data(
        "User-agent: *\nDisallow: /\n" + "# padding\n" * 60_000, content_type="text/plain")
    httpserver.expect_request("/ai.txt").respond_with_data("", status=404)
    httpserver.expect_request("/.well-known/tdmrep.json").respond_with_data("", status=404)
    signals = consent_for().signals(httpserver.url_for("/a.jpg"))
    (robots,) = [s for s in signals if s.refused]
    assert robots.signal == "robots.txt" and not robots.transient
    assert not any(s.transient for s in signals)
