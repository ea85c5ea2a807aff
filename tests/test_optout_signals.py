"""The opt-out gate, signal by signal, through the real stages against a real local server."""

from __future__ import annotations

import hashlib
import io
import json
import random
import sqlite3
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image, PngImagePlugin
from pytest_httpserver import HTTPServer

from builder.errors import UserError
from builder.fetch import Fetcher
from builder.licensing import load_policy
from builder.optout import OptoutConfig, OptoutGate, load_optout
from builder.optout.denylist import Denylist, Entry
from builder.optout.hostfiles import MAX_FILE_BYTES
from builder.recipe import FetchConfig, ImageConfig
from builder.records import Candidate, Checked, Evidence, Rejection
from builder.stages import StageSpec, fetch_stage, image_check, licence_gate, run_stages
from tests.api_support import recipe_text
from tests.conftest import make_image, one_url_recipe, run_cli, write_jsonl, write_recipe
from tests.faultserver import fault_server, ok
from tests.faultserver import redirect as redirect_to

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
NC4 = "https://creativecommons.org/licenses/by-nc/4.0/"
PLUS = "http://ns.useplus.org/ldf/xmp/1.0/"
DMI = "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@pytest.fixture(autouse=True)
def _no_handler_is_404(httpserver: HTTPServer) -> None:
    # A real host without robots.txt answers 404; pytest-httpserver's default is 500,
    # which RFC 9309 reads as "disallow everything".
    httpserver.no_handler_status_code = 404


@pytest.fixture
def fetcher():
    config = FetchConfig(allow_private_addresses=True, retries=0, timeout_s=5, workers=4)
    with Fetcher(config) as f:
        yield f


def make_gate(fetcher: Fetcher, denylist: Denylist | None = None, **options) -> OptoutGate:
    return OptoutGate(OptoutConfig(**options), fetcher=fetcher, denylist=denylist or Denylist(),
                      policy=load_policy("commercial"), c2pa_available=options.get("c2pa"))


def run(gate: OptoutGate, cand: Candidate, fetcher: Fetcher) -> Checked | Rejection:
    stages = [
        StageSpec("licence", lambda c: licence_gate(c, policy=gate.policy), "license_missing"),
        StageSpec("optout-before-fetch", gate.before_fetch, "optout_unchecked"),
        StageSpec("fetch", lambda lic: fetch_stage(lic, fetcher=fetcher, max_bytes=5_000_000,
                                                   redirects=gate.redirect_guard),
                  "http_error"),
        StageSpec("optout-headers", gate.after_fetch, "optout_unchecked"),
        StageSpec("image", lambda f: image_check(f, config=ImageConfig()), "corrupt_image"),
        StageSpec("optout-embedded", gate.after_check, "optout_unchecked"),
    ]
    return run_stages(cand, stages)


def candidate(url: str, **fields) -> Candidate:
    fields.setdefault("evidence", (Evidence("license", CC0),))
    return Candidate(source="t", source_id=url.rsplit("/", 1)[-1], url=url, **fields)


def serve_image(httpserver: HTTPServer, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, content_type: str = "image/jpeg") -> str:
    httpserver.expect_request(path).respond_with_data(
        body if body is not None else make_image(len(path)), content_type=content_type,
        headers=headers or {})
    return httpserver.url_for(path)


def trail(result: Checked) -> dict[str, str]:
    return dict(result.optout)


def rejected(result: object, reason: str) -> str:
    assert isinstance(result, Rejection), result
    assert result.reason.value == reason, result
    return result.detail


# --- X-Robots-Tag and usage headers -------------------------------------------------------


@pytest.mark.parametrize("value", ["noai", "noimageai", "NoAI", "noindex, noai",
                                   "cleanset: noai", "googlebot: noindex, cleanset: noimageai",
                                   "*: noimageai", "CleanSet/1.0: noai",  # a versioned name
                                   # not the header's syntax, but what such sites send (these
                                   # three were admitted, split on commas only)
                                   "noai;", "noai noimageai", "noindex; noimageai"])
def test_x_robots_tag_training_directives_are_refused(value: str, httpserver: HTTPServer,
                                                      fetcher: Fetcher) -> None:
    url = serve_image(httpserver, "/x.jpg", headers={"X-Robots-Tag": value})
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "optout_x_robots_tag")
    assert "X-Robots-Tag" in detail and value in detail and url in detail


@pytest.mark.parametrize("value", ["otherbot: noai", "noindex", "noimageindex, nofollow",
                                   "unavailable_after: 25 Jun 2030 15:00:00 PST",
                                   "otherbot: noai noimageai", "max-snippet: 20; nofollow",
                                   "otherbot/2.0: noai"])
def test_x_robots_tag_for_other_bots_or_search_only_is_admitted(value: str,
                                                                httpserver: HTTPServer,
                                                                fetcher: Fetcher) -> None:
    url = serve_image(httpserver, "/x.jpg", headers={"X-Robots-Tag": value})
    result = run(make_gate(fetcher), candidate(url), fetcher)
    assert isinstance(result, Checked), result
    assert trail(result)["x-robots-tag"].startswith("allowed")


def test_noindex_is_refused_when_the_recipe_reads_it_as_an_optout(httpserver: HTTPServer,
                                                                  fetcher: Fetcher) -> None:
    url = serve_image(httpserver, "/x.jpg", headers={"X-Robots-Tag": "noimageindex"})
    gate = make_gate(fetcher, noindex_is_optout=True)
    assert "noimageindex" in rejected(run(gate, candidate(url), fetcher), "optout_x_robots_tag")


@pytest.mark.parametrize("name,value", [("Content-Usage", "train-ai=n"),
                                        ("Content-Usage", "search=y, train-genai=n"),
                                        # the root category: training is inside it
                                        ("Content-Usage", "bots=n"),
                                        ("Content-Usage", "bots=n, search=y"),
                                        ("Content-Usage", "train-ai = n"),  # spaced as typed
                                        ("Content-Signal", "search = yes, ai-train = no"),
                                        ("Content-Signal", "search=yes, ai-train=no")])
def test_usage_preference_headers_refusing_training_are_honoured(
        name: str, value: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    url = serve_image(httpserver, "/u.jpg", headers={name: value})
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "optout_x_robots_tag")
    assert name in detail and value in detail


@pytest.mark.parametrize("name,value", [("X-Robots-Tag", '"noai"'),
                                        ("X-Robots-Tag", '"noai, noimageai"'),
                                        ("X-Robots-Tag", "'noimageai'"),
                                        ("Content-Usage", '"train-ai=n"'),
                                        ("Content-Signal", '"search=yes, ai-train=no"')])
def test_a_quoted_header_value_still_refuses(name: str, value: str, httpserver: HTTPServer,
                                             fetcher: Fetcher) -> None:
    """Hosts whose header settings are taken literally (a `_headers` file, a CDN's rule)
    send the quotes a user typed; read with them, `"noai"` was no directive and admitted.
    (A quoted `tdm-reservation` was already read.)"""
    url = serve_image(httpserver, "/q.jpg", headers={name: value})
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "optout_x_robots_tag")
    assert name in detail and value in detail


@pytest.mark.parametrize("name,value", [("Content-Usage", "train-ai=y"),
                                        # the more specific key overrides the root's n
                                        ("Content-Usage", "bots=n, train-ai=y"),
                                        ("Content-Signal", "search=yes, ai-train=yes")])
def test_usage_preference_headers_allowing_training_are_admitted(
        name: str, value: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    url = serve_image(httpserver, "/u.jpg", headers={name: value})
    result = run(make_gate(fetcher), candidate(url), fetcher)
    assert isinstance(result, Checked)
    assert trail(result)[name.lower()] == f"allowed: {value}"


# --- TDMRep ----------------------------------------------------------------------------------


def test_tdm_reservation_header_is_refused_with_its_policy(httpserver: HTTPServer,
                                                          fetcher: Fetcher) -> None:
    url = serve_image(httpserver, "/t.jpg", headers={
        "tdm-reservation": "1", "tdm-policy": "https://example.org/policy.json"})
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "optout_tdmrep")
    assert "tdm-reservation: 1" in detail and "https://example.org/policy.json" in detail


@pytest.mark.parametrize("sent", [[("TDM-Reservation", '"1"')], [("tdm-reservation", "1, 1")],
                                  [("tdm-reservation", "0"), ("tdm-reservation", "1")]],
                         ids=["quoted", "folded by a proxy", "sent twice"])
def test_a_tdm_reservation_header_spelled_oddly_still_reserves(
        sent: list[tuple[str, str]], httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """Read as its first raw value, each of these was no reservation: the image admitted."""
    httpserver.expect_request("/odd.jpg").respond_with_data(make_image(5), headers=sent,
                                                            content_type="image/jpeg")
    detail = rejected(run(make_gate(fetcher), candidate(httpserver.url_for("/odd.jpg")),
                          fetcher), "optout_tdmrep")
    assert "tdm-reservation: 1 header" in detail


def serve_tdmrep(httpserver: HTTPServer, rules: list[dict]) -> None:
    httpserver.expect_request("/.well-known/tdmrep.json").respond_with_json(rules)


def test_tdmrep_json_first_matching_location_wins(httpserver: HTTPServer,
                                                 fetcher: Fetcher) -> None:
    serve_tdmrep(httpserver, [
        {"location": "/open/*", "tdm-reservation": 0},
        {"location": "/*.jpg$", "tdm-reservation": 1, "tdm-policy": "https://ex.org/p"},
        {"location": "/", "tdm-reservation": 0},
    ])
    gate = make_gate(fetcher)
    open_url = serve_image(httpserver, "/open/a.jpg")
    closed_url = serve_image(httpserver, "/photos/b.jpg")
    png_url = serve_image(httpserver, "/photos/c.png", make_image(9, fmt="PNG"),
                          content_type="image/png")
    admitted = run(gate, candidate(open_url), fetcher)
    assert isinstance(admitted, Checked)
    assert trail(admitted)["tdmrep.json"].startswith("not reserved: location '/open/*'")
    detail = rejected(run(gate, candidate(closed_url), fetcher), "optout_tdmrep")
    assert "'/*.jpg$'" in detail and "tdmrep.json" in detail and "https://ex.org/p" in detail
    assert isinstance(run(gate, candidate(png_url), fetcher), Checked)
    requests = [r.path for r, _ in httpserver.log]
    assert requests.count("/.well-known/tdmrep.json") == 1  # once per host per build


def test_a_tdmrep_json_holding_one_rule_as_an_object_not_a_list_still_reserves(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """A site with one rule may write it without the array around it: read as "not a JSON
    array", no rules, its reservation was admitted."""
    httpserver.expect_request("/.well-known/tdmrep.json").respond_with_json(
        {"location": "/", "tdm-reservation": 1})
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/o.jpg")),
                          fetcher), "optout_tdmrep")
    assert detail.startswith("tdmrep.json: tdm-reservation 1 by location '/'")


@pytest.mark.parametrize("rules", [
    # a first rule stating no reservation was read as "0" and, first match winning, hid it
    [{"location": "/"}, {"location": "/", "tdm-reservation": 1}],
    [{"location": "/", "TDM-Reservation": 1}],                 # member names as typed
    [{"Location": "/", "tdm-reservation": "1"}],
    [{"location": "http://{host}/*", "tdm-reservation": 1}],   # a whole URL for its path
])
def test_a_tdmrep_rule_written_loosely_still_reserves(
        rules: list[dict[str, object]], httpserver: HTTPServer, fetcher: Fetcher) -> None:
    host = f"{httpserver.host}:{httpserver.port}"
    serve_tdmrep(httpserver, [{k: (v.replace("{host}", host) if isinstance(v, str) else v)
                               for k, v in rule.items()} for rule in rules])
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/l.jpg")),
                          fetcher), "optout_tdmrep")
    assert "tdm-reservation 1" in detail


@pytest.mark.parametrize("text", [
    '[{"location": "/", "tdm-reservation": 1,}]',           # a trailing comma: read as meant
    "[{location: '/img/*', 'tdm-reservation': 1}]",         # not JSON at all: its text says it
    '[{"location": "/", "tdm-reservation": "1"} // ours]',
])
def test_a_tdmrep_json_that_is_not_valid_json_but_says_it_reserves_still_reserves(
        text: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """A hand-written file with a slip was "unreadable", no rules: its reservation admitted."""
    serve_text(httpserver, "/.well-known/tdmrep.json", text)
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/img/t.jpg")),
                          fetcher), "optout_tdmrep")
    assert "tdm-reservation 1" in detail


def test_a_tdmrep_json_that_is_not_json_and_reserves_nothing_is_no_rule(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    serve_text(httpserver, "/.well-known/tdmrep.json", "<html>Not found</html>")
    result = run(make_gate(fetcher), candidate(serve_image(httpserver, "/img/t.jpg")), fetcher)
    assert isinstance(result, Checked), result


def test_tdm_reservation_header_overrides_tdmrep_json(httpserver: HTTPServer,
                                                      fetcher: Fetcher) -> None:
    serve_tdmrep(httpserver, [{"location": "/", "tdm-reservation": 1}])
    url = serve_image(httpserver, "/h.jpg", headers={"tdm-reservation": "0"})
    result = run(make_gate(fetcher), candidate(url), fetcher)
    assert isinstance(result, Checked), result
    assert ("tdmrep.json", "overridden by tdm-reservation: 0 header") in result.optout


def test_an_empty_tdm_reservation_header_does_not_override_tdmrep_json(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """An empty header says nothing; it once overrode the file's reservation."""
    serve_tdmrep(httpserver, [{"location": "/", "tdm-reservation": 1}])
    url = serve_image(httpserver, "/e.jpg", headers={"tdm-reservation": ""})
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "optout_tdmrep")
    assert detail.startswith("tdmrep.json: tdm-reservation 1")


def test_landing_page_meta_tdm_reservation_is_refused_when_enabled(httpserver: HTTPServer,
                                                                   fetcher: Fetcher) -> None:
    httpserver.expect_request("/page").respond_with_data(
        '<html><head><meta name="tdm-reservation" content="1"></head></html>',
        content_type="text/html")
    url = serve_image(httpserver, "/l.jpg")
    cand = candidate(url, landing_url=httpserver.url_for("/page"))
    assert isinstance(run(make_gate(fetcher), cand, fetcher), Checked)  # off by default
    detail = rejected(run(make_gate(fetcher, landing_page=True), cand, fetcher), "optout_tdmrep")
    assert "landing page" in detail and "/page" in detail


@pytest.mark.parametrize("head, reason", [
    ('<meta name="robots" content="index, follow"><meta name="robots" content="noai">',
     "optout_x_robots_tag"),
    ('<meta name="tdm-reservation" content="0"><meta name="tdm-reservation" content="1">',
     "optout_tdmrep"),
], ids=["a second robots meta (an SEO plugin's, then an AI opt-out plugin's)",
        "tdm-reservation 0 then 1"])
def test_every_meta_tag_of_a_landing_page_is_read_not_only_the_first(
        head: str, reason: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """Only the first <meta name=...> of each name was read: a page whose SEO plugin writes
    `index, follow` before the opt-out plugin's `noai` had its opt-out admitted."""
    httpserver.expect_request("/page").respond_with_data(
        f"<html><head>{head}</head></html>", content_type="text/html")
    cand = candidate(serve_image(httpserver, "/l.jpg"), landing_url=httpserver.url_for("/page"))
    detail = rejected(run(make_gate(fetcher, landing_page=True), cand, fetcher), reason)
    assert "landing page" in detail


@pytest.mark.parametrize("meta, refused", [
    ('<meta name="CleanSet" content="noai">', True),   # ours, as `googlebot` is Google's
    ('<meta name="otherbot" content="noai">', False),  # another crawler's: not ours
])
def test_a_landing_page_meta_named_for_our_token_is_ours(
        meta: str, refused: bool, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """`<meta name="cleanset" content="noai">` was not read (only `robots`), although the
    X-Robots-Tag form `cleanset: noai` was."""
    httpserver.expect_request("/page").respond_with_data(
        f"<html><head>{meta}</head></html>", content_type="text/html")
    cand = candidate(serve_image(httpserver, "/l.jpg"), landing_url=httpserver.url_for("/page"))
    result = run(make_gate(fetcher, landing_page=True), cand, fetcher)
    if refused:
        assert '<meta name="cleanset" content="noai">' in rejected(result, "optout_x_robots_tag")
    else:
        assert isinstance(result, Checked), result


def test_a_landing_page_over_its_cap_is_read_up_to_the_cap_and_its_meta_obeyed(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """A page over 2 MB (inline scripts, a long gallery) was refused whole as too large and
    read as "unavailable", no meta: the `noai` in its <head> admitted."""
    page = ('<html><head><meta name="robots" content="noai"></head><body>'
            + "<p>gallery</p>" * 200_000 + "</body></html>")
    httpserver.expect_request("/page").respond_with_data(page, content_type="text/html")
    cand = candidate(serve_image(httpserver, "/l.jpg"), landing_url=httpserver.url_for("/page"))
    detail = rejected(run(make_gate(fetcher, landing_page=True), cand, fetcher),
                      "optout_x_robots_tag")
    assert '<meta name="robots" content="noai">' in detail


# --- robots.txt and ai.txt ---------------------------------------------------------------------


def serve_text(httpserver: HTTPServer, path: str, text: str, status: int = 200) -> None:
    httpserver.expect_request(path).respond_with_data(text, status=status,
                                                      content_type="text/plain")


def test_robots_txt_group_for_our_token_is_obeyed(httpserver: HTTPServer,
                                                  fetcher: Fetcher) -> None:
    serve_text(httpserver, "/robots.txt",
               "User-agent: *\nDisallow: /\n\nUser-agent: cleanset\nDisallow: /private/\n")
    gate = make_gate(fetcher)
    allowed = run(gate, candidate(serve_image(httpserver, "/public/a.jpg")), fetcher)
    assert isinstance(allowed, Checked)
    assert trail(allowed)["robots.txt"] == "allowed:cleanset"
    detail = rejected(run(gate, candidate(serve_image(httpserver, "/private/b.jpg")), fetcher),
                      "optout_robots_txt")
    assert "'cleanset'" in detail and "/robots.txt" in detail
    assert [r.path for r, _ in httpserver.log].count("/robots.txt") == 1


def test_robots_txt_star_group_applies_when_we_are_not_named(httpserver: HTTPServer,
                                                             fetcher: Fetcher) -> None:
    serve_text(httpserver, "/robots.txt", "User-agent: otherbot\nAllow: /\n\n"
                                          "User-agent: *\nDisallow: /img/\n")
    gate = make_gate(fetcher)
    detail = rejected(run(gate, candidate(serve_image(httpserver, "/img/a.jpg")), fetcher),
                      "optout_robots_txt")
    assert "'*'" in detail
    ok = run(gate, candidate(serve_image(httpserver, "/other/a.jpg")), fetcher)
    assert trail(ok)["robots.txt"] == "allowed:*"


@pytest.mark.parametrize("agent", ["cleanset/1.0", "CleanSet/0.1 (+https://example.org/bot)",
                                   "cleanset 2"])
@pytest.mark.parametrize("rule", ["Disallow: /", "Content-Usage: train-ai=n"])
def test_a_group_naming_our_token_with_a_version_is_ours(
        agent: str, rule: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """RFC 9309 2.2.1: a group is matched by its product token, the letters, `_` and `-`
    before anything else (as Google's parser reads `Googlebot/2.1`). A site copying our
    User-Agent header into its robots.txt named a group nobody matched, and was admitted."""
    serve_text(httpserver, "/robots.txt",
               f"User-agent: *\nAllow: /\n\nUser-agent: {agent}\n{rule}\n")
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")),
                          fetcher), "optout_robots_txt")
    assert "'cleanset'" in detail or "line 5" in detail, detail


def test_a_group_for_a_longer_name_starting_with_our_token_is_not_ours(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    serve_text(httpserver, "/robots.txt", "User-agent: cleansetbot/1.0\nDisallow: /\n")
    result = run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")), fetcher)
    assert isinstance(result, Checked), result


def test_missing_robots_txt_means_no_restriction(httpserver: HTTPServer,
                                                 fetcher: Fetcher) -> None:
    result = run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")), fetcher)
    assert isinstance(result, Checked)
    assert trail(result)["robots.txt"] == "absent (HTTP 404)"


def test_robots_txt_server_error_means_disallow_for_now_per_rfc_9309_not_an_optout(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    serve_text(httpserver, "/robots.txt", "oops", status=500)
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")),
                          fetcher), "robots_unreachable")
    assert "HTTP 500" in detail and "RFC 9309" in detail
    assert "/a.jpg" not in [r.path for r, _ in httpserver.log]  # decided before download


@pytest.mark.parametrize("line", ["Content-Signal: search=yes, ai-train=no",
                                  "Content-Usage: train-ai=n",
                                  "Content-Usage: /img/ train-ai=n"])
def test_usage_preferences_in_robots_txt_are_honoured(line: str, httpserver: HTTPServer,
                                                      fetcher: Fetcher) -> None:
    serve_text(httpserver, "/robots.txt", f"User-agent: *\n{line}\nAllow: /\n")
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/img/a.jpg")),
                          fetcher), "optout_robots_txt")
    assert "line 2" in detail and "robots.txt" in detail


@pytest.mark.parametrize("agent", ["User agent", "Useragent", "USER-AGENT"])
def test_usage_preferences_in_a_group_spelt_another_way_are_ours(
        agent: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """Protego reads `User agent: cleanset` as a group, but the usage lines under it were
    filed under the group before it (here another bot's): the refusal was missed."""
    serve_text(httpserver, "/robots.txt", "User-agent: otherbot\nContent-Usage: train-ai=y\n\n"
               f"{agent}: cleanset\nContent-Usage: train-ai=n\nAllow: /\n")
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/img/a.jpg")),
                          fetcher), "optout_robots_txt")
    assert "line 5" in detail


@pytest.mark.parametrize("line", ["Content-Usage: /img/\ttrain-ai=n",
                                  "Content-Usage: /*.jpg train-ai=n",
                                  "Content-Usage: /img/*/a.jpg$ train-ai=n",
                                  "Content-Usage:\t/img/  train-ai=n"],
                         ids=["tab after the path", "wildcard", "wildcard and end anchor",
                              "tabs and two spaces"])
def test_a_content_usage_path_is_read_as_robots_txt_reads_its_paths(
        line: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """The path of a Content-Usage rule is matched as Allow and Disallow paths are (RFC
    9309: `*`, a final `$`; blanks are spaces or tabs). Taken as a plain prefix ended by one
    space, `/*.jpg` matched no image and `/img/<TAB>train-ai=n` was a path with no value:
    both refusals admitted."""
    serve_text(httpserver, "/robots.txt", f"User-agent: *\n{line}\nAllow: /\n")
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/img/x/a.jpg")),
                          fetcher), "optout_robots_txt")
    assert "train-ai=n" in detail and "line 2" in detail
    result = run(make_gate(fetcher), candidate(serve_image(httpserver, "/pub/a.png",
                                                           content_type="image/png",
                                                           body=make_image(3, fmt="PNG"))),
                 fetcher)
    assert isinstance(result, Checked), result


def test_path_scoped_content_usage_leaves_other_paths_admitted(httpserver: HTTPServer,
                                                               fetcher: Fetcher) -> None:
    serve_text(httpserver, "/robots.txt", "User-agent: *\nContent-Usage: /img/ train-ai=n\n")
    result = run(make_gate(fetcher), candidate(serve_image(httpserver, "/pub/a.jpg")), fetcher)
    assert isinstance(result, Checked)


def test_ai_txt_disallow_is_refused(httpserver: HTTPServer, fetcher: Fetcher) -> None:
    serve_text(httpserver, "/ai.txt", "# Spawning AI\nUser-Agent: *\nDisallow: *.jpg\n")
    gate = make_gate(fetcher)
    detail = rejected(run(gate, candidate(serve_image(httpserver, "/a.jpg")), fetcher),
                      "optout_robots_txt")
    assert detail.startswith("ai.txt:") and "/ai.txt" in detail
    png = serve_image(httpserver, "/b.png", make_image(3, fmt="PNG"), content_type="image/png")
    assert trail(run(gate, candidate(png), fetcher))["ai.txt"] == "allowed:*"


# A file saved with a byte order mark (Windows editors write one): the BOM names the
# encoding, whatever the Content-Type says. Read as UTF-8 text, U+FEFF hid the first
# `User-agent` line or the JSON, and the refusal was admitted as "no rules".
BOM_FILES = {
    "robots.txt": ("/robots.txt", "User-agent: *\nDisallow: /\n", "optout_robots_txt"),
    "ai.txt": ("/ai.txt", "User-agent: *\nDisallow: /\n", "optout_robots_txt"),
    "tdmrep.json": ("/.well-known/tdmrep.json", '[{"location": "/", "tdm-reservation": 1}]',
                    "optout_tdmrep"),
}


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("name", sorted(BOM_FILES))
def test_a_policy_file_with_a_byte_order_mark_is_read_and_its_refusal_obeyed(
        name: str, encoding: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    path, text, reason = BOM_FILES[name]
    body = text.encode(encoding)
    if encoding.startswith("utf-16"):
        body = ("\ufeff" + text).encode(encoding)
    httpserver.expect_request(path).respond_with_data(body, content_type="text/plain")
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")),
                          fetcher), reason)
    assert name in detail


@pytest.mark.parametrize("charset", ["undefined", "idna", "punycode"])
@pytest.mark.parametrize("name", sorted(BOM_FILES))
def test_a_policy_file_whose_charset_names_no_text_encoding_is_read_as_utf_8(
        name: str, charset: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """`charset=undefined` is what a server that formats an unset variable sends; Python
    knows "undefined" (and "idna", "punycode") as codecs that raise on decoding. The file
    was not read: the error became every image of the host refused as `denylisted`, an
    opt-out no one made, and never retried. Read as UTF-8, its own rules decide."""
    path, text, reason = BOM_FILES[name]
    httpserver.expect_request(path).respond_with_data(
        text, headers={"Content-Type": f"text/plain; charset={charset}"})
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")),
                          fetcher), reason)
    assert name in detail and "unexpected" not in detail


def test_a_robots_txt_redirected_to_a_malformed_location_waits_and_is_no_denylisting(
        fetcher: Fetcher) -> None:
    """The fetcher raised on `Location: http://[bad/robots.txt`, and the opt-out stage's
    error became `denylisted`: every image of the host counted as an opt-out, never
    retried. Now robots.txt could not be read (RFC 9309: no download while it lasts)."""
    with fault_server() as server:  # werkzeug will not send such a Location
        server.route("/robots.txt", redirect_to("http://[bad/robots.txt", 301))
        server.route("/a.jpg", ok(make_image(1)))
        detail = rejected(run(make_gate(fetcher), candidate(server.url("/a.jpg")), fetcher),
                          "robots_unreachable")
        assert "robots.txt" in detail and "http://[bad/robots.txt" in detail
        assert server.hits["/a.jpg"] == 0


@pytest.mark.parametrize("name", ["robots.txt", "ai.txt"])
def test_a_policy_file_over_512_kib_is_read_up_to_the_cap_without_its_cut_line(
        name: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """RFC 9309 2.5: parse at least the first 500 KiB. Refused as too_large, such a
    robots.txt was robots_unreachable on every run and such an ai.txt no file at all (its
    Disallow admitted). The line the cap cuts is dropped: cut to `Allow: /a.jp`, it would
    allow the image."""
    head = "User-agent: *\nDisallow: /\n"
    allow = "Allow: /a.jp"  # the cap falls here, inside `Allow: /a.jpg-is-not-this-one`
    padding = "#" * (MAX_FILE_BYTES - len(head) - len(allow) - 1) + "\n"
    body = head + padding + allow + "g-is-not-this-one\n" + "#" * 100_000 + "\n"
    assert len((head + padding + allow).encode()) == MAX_FILE_BYTES
    serve_text(httpserver, f"/{name}", body)
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")),
                          fetcher), "optout_robots_txt")
    assert detail.startswith(f"{name}: Disallow")


@pytest.mark.parametrize("name", ["robots.txt", "ai.txt"])
def test_a_policy_file_of_exactly_512_kib_keeps_its_last_line(
        name: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """A file that ends at the cap, with no final newline, is whole: its last line is read.
    Taken for cut (its length reached the cap), it lost the `Disallow` that ends it."""
    head = "User-agent: *\n"
    disallow = "Disallow: /"
    padding = "#" * (MAX_FILE_BYTES - len(head) - len(disallow) - 1) + "\n"
    body = head + padding + disallow
    assert len(body.encode()) == MAX_FILE_BYTES
    serve_text(httpserver, f"/{name}", body)
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")),
                          fetcher), "optout_robots_txt")
    assert detail.startswith(f"{name}: Disallow")


def test_a_tdmrep_json_over_512_kib_is_read_whole_and_its_reservation_obeyed(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """Cut at 512 KiB like robots.txt, a long tdmrep.json was unreadable JSON: no rules, and
    the reservation at its end admitted."""
    rules = [{"location": f"/open/{n}/*", "tdm-reservation": 0} for n in range(12_000)]
    rules.append({"location": "/", "tdm-reservation": 1})
    assert len(json.dumps(rules)) > MAX_FILE_BYTES
    serve_tdmrep(httpserver, rules)
    detail = rejected(run(make_gate(fetcher), candidate(serve_image(httpserver, "/a.jpg")),
                          fetcher), "optout_tdmrep")
    assert detail.startswith("tdmrep.json: tdm-reservation 1"), detail


# --- embedded XMP -------------------------------------------------------------------------------


def xmp(body: str, attrs: str = "", prefix_decls: str = "") -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" {prefix_decls} {attrs}>{body}</rdf:Description>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


DATA_MINING_FORMS = {
    "attribute": xmp("", f'plus:DataMining="{DMI}"', f'xmlns:plus="{PLUS}"'),
    "element": xmp(f"<plus:DataMining>{DMI}</plus:DataMining>", "", f'xmlns:plus="{PLUS}"'),
    "resource": xmp(f'<plus:DataMining rdf:resource="{DMI}"/>', "", f'xmlns:plus="{PLUS}"'),
    "other-prefix": xmp(f'<ldf:DataMining rdf:resource="{DMI}"/>', "", f'xmlns:ldf="{PLUS}"'),
}


def with_xmp(fmt: str, packet: bytes, seed: int = 1) -> bytes:
    image = Image.open(io.BytesIO(make_image(seed, fmt="PNG"))).convert("RGB")
    out = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode("utf-8"), zip=seed % 2 == 0)
        image.save(out, "PNG", pnginfo=info)
    elif fmt == "TIFF":
        image.save(out, "TIFF", tiffinfo={700: packet})
    else:
        image.save(out, fmt, xmp=packet)
    return out.getvalue()


MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff"}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("form", sorted(DATA_MINING_FORMS))
def test_embedded_plus_data_mining_prohibition_is_refused(fmt: str, form: str,
                                                          httpserver: HTTPServer,
                                                          fetcher: Fetcher) -> None:
    body = with_xmp(fmt, DATA_MINING_FORMS[form], seed=len(form))
    url = serve_image(httpserver, f"/e.{fmt.lower()}", body, content_type=MIME[fmt])
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "optout_embedded")
    assert "DMI-PROHIBITED-AIMLTRAINING" in detail and "plus:DataMining" in detail
    assert {"JPEG": "JPEG APP1", "PNG": "PNG iTXt", "WEBP": "WebP XMP", "TIFF": "TIFF tag 700"}[fmt] in detail


def imagemagick_raw_profile(packet: bytes) -> bytes:
    """ImageMagick's `Raw profile type xmp` text: name, length, then the bytes in hex."""
    hexed = packet.hex()
    lines = "\n".join(hexed[i:i + 72] for i in range(0, len(hexed), 72))
    return f"\nxmp\n{len(packet):8d}\n{lines}\n".encode()


@pytest.mark.parametrize("keyword, zipped", [("XML:com.adobe.xmp", False),
                                             ("XML:com.adobe.xmp", True),
                                             ("Raw profile type xmp", True),
                                             ("Raw profile type xmp", False)],
                         ids=["tEXt", "zTXt", "ImageMagick zTXt", "ImageMagick tEXt"])
def test_png_xmp_in_a_text_chunk_is_read_as_in_itxt(keyword: str, zipped: bool,
                                                    httpserver: HTTPServer,
                                                    fetcher: Fetcher) -> None:
    """Only iTXt was read: XMP that a converter put in a tEXt or zTXt chunk (ImageMagick's
    hex `Raw profile type xmp`, which a JPEG's XMP becomes when it converts it to PNG)
    was not looked at, and its DataMining prohibition admitted."""
    packet = DATA_MINING_FORMS["element"]
    text = packet if keyword.startswith("XML") else imagemagick_raw_profile(packet)
    image = Image.open(io.BytesIO(make_image(4, fmt="PNG"))).convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text(keyword, text, zip=zipped)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    url = serve_image(httpserver, "/t.png", out.getvalue(), content_type="image/png")
    detail = rejected(run(make_gate(fetcher, c2pa=False), candidate(url), fetcher),
                      "optout_embedded")
    assert "DMI-PROHIBITED-AIMLTRAINING" in detail
    assert f"PNG {'zTXt' if zipped else 'tEXt'} {keyword}" in detail


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_image_without_signals_is_admitted_with_every_check_in_its_trail(
        fmt: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    allowed = xmp("<plus:DataMining rdf:resource=\"http://ns.useplus.org/ldf/vocab/DMI-ALLOWED\"/>",
                  "", f'xmlns:plus="{PLUS}"')
    url = serve_image(httpserver, f"/ok.{fmt.lower()}", with_xmp(fmt, allowed),
                      content_type=MIME[fmt])
    result = run(make_gate(fetcher, c2pa=False), candidate(url), fetcher)
    assert isinstance(result, Checked), result
    said = trail(result)
    assert said["plus:DataMining"] == "http://ns.useplus.org/ldf/vocab/DMI-ALLOWED"
    for signal in ("denylist", "robots.txt", "ai.txt", "tdmrep.json", "x-robots-tag",
                   "content-usage", "content-signal", "tdm-reservation", "denylist-content",
                   "DigitalSourceType", "c2pa"):
        assert signal in said, signal
    assert said["x-robots-tag"] == "absent"


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><a>&lol3;</a>{extra}</x:xmpmeta>'
)
XXE = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
       '<x:xmpmeta xmlns:x="adobe:ns:meta/"><a>&xxe;</a>{extra}</x:xmpmeta>')


@pytest.mark.parametrize("template", [BILLION_LAUGHS, XXE], ids=["billion-laughs", "xxe"])
def test_hostile_xmp_is_never_expanded_and_cannot_hide_a_prohibition(
        template: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    gate = make_gate(fetcher, c2pa=False)
    harmless = with_xmp("JPEG", template.format(extra="").encode())
    url = serve_image(httpserver, "/h1.jpg", harmless)
    result = run(gate, candidate(url), fetcher)
    assert isinstance(result, Checked), result
    assert "unparseable XMP" in trail(result)["xmp"]
    assert "root:" not in json.dumps(result.optout)  # /etc/passwd never read
    hiding = with_xmp("JPEG", template.format(extra=f"<b>{DMI}</b>").encode(), seed=2)
    url = serve_image(httpserver, "/h2.jpg", hiding)
    assert "DMI-PROHIBITED" in rejected(run(gate, candidate(url), fetcher), "optout_embedded")


@pytest.mark.parametrize("encoding", ["x-mac-roman", "EBCDIC", "bogus"])
def test_xmp_declaring_an_encoding_the_parser_does_not_know_is_still_read(
        encoding: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """The parser's LookupError escaped the XMP reader: every such image was
    optout_unchecked on every run, never decided, and a prohibition in it never recorded."""
    gate = make_gate(fetcher, c2pa=False)
    declared = f'<?xml version="1.0" encoding="{encoding}"?>'.encode()
    harmless = with_xmp("JPEG", declared + xmp("<dc:format>image/jpeg</dc:format>"))
    result = run(gate, candidate(serve_image(httpserver, "/d1.jpg", harmless)), fetcher)
    assert isinstance(result, Checked), result
    assert "unparseable XMP (LookupError)" in trail(result)["xmp"]
    prohibiting = with_xmp("JPEG", declared + DATA_MINING_FORMS["element"], seed=2)
    url = serve_image(httpserver, "/d2.jpg", prohibiting)
    assert "DMI-PROHIBITED" in rejected(run(gate, candidate(url), fetcher), "optout_embedded")


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-16", "utf-32"])
@pytest.mark.parametrize("fmt", ["WEBP", "TIFF"])
def test_an_xmp_packet_in_utf_16_or_32_cannot_hide_a_prohibition(
        fmt: str, codec: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """XMP allows UTF-16 and UTF-32 packets. One was stripped of its last NUL, unparseable,
    and searched as UTF-8 text, where `D\\0M\\0I` is not `DMI`: its prohibition admitted."""
    packet = DATA_MINING_FORMS["element"].decode().encode(codec)
    url = serve_image(httpserver, f"/u.{fmt.lower()}", with_xmp(fmt, packet),
                      content_type=MIME[fmt])
    detail = rejected(run(make_gate(fetcher, c2pa=False), candidate(url), fetcher),
                      "optout_embedded")
    assert "DMI-PROHIBITED-AIMLTRAINING" in detail


def test_ai_generated_digital_source_type_is_refused_unless_switched_off(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    packet = xmp(f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{AI_SOURCE}"/>', "",
                 f'xmlns:Iptc4xmpExt="{IPTC_EXT}"')
    url = serve_image(httpserver, "/ai.png", with_xmp("PNG", packet), content_type="image/png")
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "ai_generated")
    assert "trainedAlgorithmicMedia" in detail
    kept = run(make_gate(fetcher, reject_ai_generated=False), candidate(url), fetcher)
    assert isinstance(kept, Checked)
    assert trail(kept)["DigitalSourceType"] == AI_SOURCE


def test_composite_with_ai_is_refused_as_ai_generated(httpserver: HTTPServer,
                                                      fetcher: Fetcher) -> None:
    composite = AI_SOURCE.replace("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")
    packet = xmp("", f'Iptc4xmpExt:DigitalSourceType="{composite}"',
                 f'xmlns:Iptc4xmpExt="{IPTC_EXT}"')
    url = serve_image(httpserver, "/c.webp", with_xmp("WEBP", packet), content_type="image/webp")
    rejected(run(make_gate(fetcher), candidate(url), fetcher), "ai_generated")


RIGHTS = 'xmlns:xmpRights="http://ns.adobe.com/xap/1.0/rights/"'


def test_embedded_licence_that_disagrees_is_a_conflict(httpserver: HTTPServer,
                                                       fetcher: Fetcher) -> None:
    packet = xmp(f"<xmpRights:WebStatement>{NC4}</xmpRights:WebStatement>", "", RIGHTS)
    url = serve_image(httpserver, "/lic.jpg", with_xmp("JPEG", packet))
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "license_conflict")
    assert NC4 in detail and "xmp:xmpRights:WebStatement" in detail


def test_embedded_licence_that_agrees_is_added_to_the_evidence(httpserver: HTTPServer,
                                                               fetcher: Fetcher) -> None:
    packet = xmp(f'<cc:license rdf:resource="{CC0}"/>', "",
                 'xmlns:cc="http://creativecommons.org/ns#"')
    url = serve_image(httpserver, "/agree.png", with_xmp("PNG", packet), content_type="image/png")
    result = run(make_gate(fetcher), candidate(url), fetcher)
    assert isinstance(result, Checked), result
    evidence = result.fetched.licensed.license.evidence
    assert Evidence("xmp:cc:license", CC0) in evidence
    assert trail(result)["xmp-license"].startswith("agrees")


def test_an_embedded_web_statement_that_is_no_licence_is_recorded_not_decisive(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    packet = xmp("", 'xmpRights:WebStatement="https://photographer.example/about"', RIGHTS)
    url = serve_image(httpserver, "/page.jpg", with_xmp("JPEG", packet))
    result = run(make_gate(fetcher), candidate(url), fetcher)
    assert isinstance(result, Checked), result
    assert "not a licence" in trail(result)["xmp-license"]


# --- denylist ----------------------------------------------------------------------------------


def test_denylist_by_url_creator_sha256_and_pdq(httpserver: HTTPServer, fetcher: Fetcher,
                                                tmp_path: Path) -> None:
    listed_bytes = make_image(42)
    url = serve_image(httpserver, "/listed.jpg")
    path = tmp_path / "deny.jsonl"
    path.write_text("\n".join([
        json.dumps({"kind": "url", "value": url.replace("http://", "HTTP://"),
                    "reason": "takedown 7"}),
        json.dumps({"kind": "creator", "value": "Ann  Example"}),
        "# a comment",
        hashlib.sha256(listed_bytes).hexdigest(),
    ]) + "\n", encoding="utf-8")
    deny = Denylist()
    deny.load(path, required=True)
    gate = make_gate(fetcher, deny)
    detail = rejected(run(gate, candidate(url), fetcher), "denylisted")
    assert "takedown 7" in detail and f"{path}:1" in detail
    assert "/listed.jpg" not in [r.path for r, _ in httpserver.log]  # before download
    other = serve_image(httpserver, "/by-ann.jpg")
    assert "creator" in rejected(run(gate, candidate(other, creator="ann example"), fetcher),
                                 "denylisted")
    copy = serve_image(httpserver, "/copy.jpg", listed_bytes)
    assert "sha256" in rejected(run(gate, candidate(copy), fetcher), "denylisted")
    control = serve_image(httpserver, "/control.jpg", make_image(43))
    assert isinstance(run(gate, candidate(control), fetcher), Checked)


UTM = "utm_source=commons.wikimedia.org&utm_campaign=imageinfo&utm_content=original"


@pytest.mark.parametrize(("listed", "fetched"), [("{url}", "{url}?" + UTM),
                                                 ("{url}?" + UTM, "{url}")],
                         ids=["bare-entry-tracked-candidate", "tracked-entry-bare-candidate"])
def test_denylist_url_refuses_the_file_with_or_without_tracking_parameters(
        listed: str, fetched: str, httpserver: HTTPServer, fetcher: Fetcher,
        tmp_path: Path) -> None:
    url = serve_image(httpserver, "/wiki/Example.jpg")
    registry = tmp_path / "registry.txt"  # a plain-text export, one URL a line
    registry.write_text(listed.format(url=url) + "\n", encoding="utf-8")
    deny = Denylist()
    deny.load(registry, required=True)
    gate = make_gate(fetcher, deny)
    detail = rejected(run(gate, candidate(fetched.format(url=url)), fetcher), "denylisted")
    assert f"{registry}:1" in detail
    assert "/wiki/Example.jpg" not in [r.path for r, _ in httpserver.log]  # before download
    other = serve_image(httpserver, "/wiki/Other.jpg")
    assert isinstance(run(gate, candidate(f"{other}?{UTM}"), fetcher), Checked)


def test_denylist_by_pdq_catches_a_reencoded_copy(httpserver: HTTPServer,
                                                  fetcher: Fetcher) -> None:
    # Not 256x256: make_image's blocks would then sit on an 8-pixel grid of the 64x64 pixels
    # v3 and v4 hand PDQ, where ~60 of its 256 DCT coefficients (its median too) are exactly
    # zero and JPEG noise decides their bits (q90 vs q60: 20 bits apart in v3, 32 in v4).
    gate = make_gate(fetcher)
    first = run(gate, candidate(serve_image(httpserver, "/o.jpg", make_image(50, (300, 300)))),
                fetcher)
    assert isinstance(first, Checked) and first.image.pdq
    deny = Denylist()
    deny.add(Entry("pdq", first.image.pdq, "takedown", "DIR/denylist.jsonl:1"))
    again = serve_image(httpserver, "/r.jpg", make_image(50, (300, 300), quality=60))
    detail = rejected(run(make_gate(fetcher, deny), candidate(again), fetcher), "denylisted")
    assert "PDQ within" in detail


def test_denylist_by_pdq_finds_the_nearest_of_thousands_of_entries() -> None:
    # A takedown writes a PDQ line for every work it removes: thousands, read by every build.
    rng = random.Random(7)
    codes = [rng.getrandbits(256) for _ in range(3000)]
    deny = Denylist()
    for n, code in enumerate(codes):
        deny.add(Entry("pdq", f"{code:064x}", f"takedown {n}", f"DIR/denylist.jsonl:{n + 1}"))
    target = codes[1234]
    for flipped in (0, 5, 31):
        near = target
        for bit in rng.sample(range(256), flipped):
            near ^= 1 << bit
        hit = deny.by_pdq(f"{near:064x}", 31)
        assert hit is not None and hit[0].reason == "takedown 1234" and hit[1] == flipped
    assert deny.by_pdq(f"{target ^ ((1 << 40) - 1):064x}", 31) is None  # 40 bits away
    # Two entries equally near: the first listed answers, as the gate has always said.
    deny.add(Entry("pdq", f"{target:064x}", "listed again", "DIR/denylist.jsonl:3001"))
    assert deny.by_pdq(f"{target:064x}", 0) == (deny.pdq[1234], 0)
    # An entry added after a search is searched too.
    later = rng.getrandbits(256)
    deny.add(Entry("pdq", f"{later:064X}", "later", "DIR/denylist.jsonl:3002"))
    assert deny.by_pdq(f"{later ^ 1:064x}", 31) == (deny.pdq[-1], 1)


def test_bad_denylist_line_is_a_user_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "deny.jsonl"
    path.write_text('{"kind": "url", "value": "https://a.example/x.jpg"}\n{"kind": "isbn"}\n')
    with pytest.raises(UserError, match=r"deny.jsonl:2"):
        load_optout({"denylist": "deny.jsonl"}, file=tmp_path / "r.toml", base=tmp_path)


@pytest.mark.parametrize("first", ["https://a.example/x.jpg",
                                   '{"kind": "url", "value": "https://a.example/x.jpg"}'])
def test_a_denylist_saved_with_a_byte_order_mark_is_read(first: str, tmp_path: Path) -> None:
    """A registry exported by a Windows tool starts with a BOM: its first line was
    "'\\ufeffhttps://...' is neither a URL nor a sha256", and the build stopped."""
    path = tmp_path / "deny.txt"
    path.write_text(f"{first}\n{'ab' * 32}\n", encoding="utf-8-sig")
    _, denylist = load_optout({"denylist": "deny.txt"}, file=tmp_path / "r.toml",
                              base=tmp_path)
    assert denylist.by_url("https://a.example/x.jpg") is not None
    assert denylist.by_sha256("ab" * 32) is not None


def test_unknown_optout_key_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="optout.robots"):
        load_optout({"robots": True}, file=tmp_path / "r.toml", base=tmp_path)


# --- local files --------------------------------------------------------------------------------


def test_local_files_get_embedded_and_denylist_checks_only(tmp_path: Path,
                                                           fetcher: Fetcher) -> None:
    clean = tmp_path / "a.jpg"
    clean.write_bytes(make_image(5))
    marked = tmp_path / "b.jpg"
    marked.write_bytes(with_xmp("JPEG", DATA_MINING_FORMS["element"]))
    gate = make_gate(fetcher, c2pa=False)
    result = run(gate, candidate(str(clean), local_path=str(clean)), fetcher)
    assert isinstance(result, Checked), result
    said = trail(result)
    assert said["robots.txt"] == "n/a: local file" and said["x-robots-tag"] == "n/a: local file"
    rejected(run(gate, candidate(str(marked), local_path=str(marked)), fetcher),
             "optout_embedded")


def test_summary_counts_each_signal_and_says_when_c2pa_was_not_checked(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    gate = make_gate(fetcher, c2pa=True)
    gate = OptoutGate(gate.config, fetcher=fetcher, denylist=Denylist(), policy=gate.policy,
                      c2pa_available=False)
    run(gate, candidate(serve_image(httpserver, "/s1.jpg")), fetcher)
    url = serve_image(httpserver, "/s2.jpg", headers={"X-Robots-Tag": "noai"})
    run(gate, candidate(url), fetcher)
    lines = gate.summary_lines()
    assert "  opt-out x-robots-tag: checked 2, rejected 1" in lines
    assert "  opt-out robots.txt: checked 2, rejected 0" in lines
    assert "  C2PA: not checked (install cleanset[c2pa])" in lines


# --- a host file or landing page answering "busy" ---------------------------------------

BUSY = {"ai.txt": ("/ai.txt", "robots_unreachable"),
        "tdmrep.json": ("/.well-known/tdmrep.json", "tdmrep_unreachable"),
        "landing page": ("/page", "tdmrep_unreachable")}


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("name", sorted(BUSY))
def test_a_busy_answer_holds_the_candidate_for_the_next_run_not_as_no_file(
        name: str, status: int, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """A rate limit or an overloaded host answering the ai.txt, tdmrep.json or landing page
    was "no file", and the image went in though the file may reserve it: a reservation lost
    to a hiccup. It now waits, transient, as when no answer came; a build asks again."""
    path, reason = BUSY[name]
    httpserver.expect_request(path).respond_with_data("slow down", status=status)
    url = serve_image(httpserver, "/a.jpg")
    cand = candidate(url, landing_url=httpserver.url_for("/page"))
    detail = rejected(run(make_gate(fetcher, landing_page=True), cand, fetcher), reason)
    assert f"HTTP {status}" in detail, detail
    assert "/a.jpg" not in [request.path for request, _ in httpserver.log]


@pytest.mark.parametrize("name", sorted(BUSY))
def test_a_host_file_or_page_answering_500_is_still_no_file(
        name: str, httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """Hosts misconfigured to answer 500 for every unknown path would otherwise keep every
    image of theirs waiting for ever."""
    httpserver.expect_request(BUSY[name][0]).respond_with_data("oops", status=500)
    url = serve_image(httpserver, "/a.jpg")
    result = run(make_gate(fetcher, landing_page=True),
                 candidate(url, landing_url=httpserver.url_for("/page")), fetcher)
    assert isinstance(result, Checked), result


# -- redirects ------------------------------------------------------------------------------
@pytest.fixture
def other_host():
    """A second host (another port: another origin, its own robots.txt)."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.no_handler_status_code = 404
    server.start()
    yield server
    server.clear()
    server.stop()


def redirect(httpserver: HTTPServer, path: str, to: str) -> str:
    httpserver.expect_request(path).respond_with_data("", status=302, headers={"Location": to})
    return httpserver.url_for(path)


def asked(server: HTTPServer) -> list[str]:
    return [request.path for request, _ in server.log]


def test_a_redirect_into_a_path_robots_txt_disallows_is_refused_before_it_is_followed(
        httpserver: HTTPServer, fetcher: Fetcher) -> None:
    """robots.txt is per URL: an allowed image URL answering with a redirect to a
    disallowed path on the same host was followed and admitted."""
    serve_text(httpserver, "/robots.txt", "User-agent: *\nDisallow: /private/\n")
    serve_image(httpserver, "/private/a.jpg")
    url = redirect(httpserver, "/pub/a.jpg", "/private/a.jpg")
    detail = rejected(run(make_gate(fetcher), candidate(url), fetcher), "optout_robots_txt")
    assert detail.startswith("robots.txt:") and "redirect to " in detail, detail
    assert "/private/a.jpg" not in asked(httpserver)


def test_a_redirect_to_another_host_reads_that_host_s_signals_before_following_it(
        httpserver: HTTPServer, other_host: HTTPServer, fetcher: Fetcher) -> None:
    """A short link or a CDN in front of an artist's site: the image comes from a host
    whose robots.txt, ai.txt and tdmrep.json were never read."""
    serve_text(other_host, "/robots.txt", "User-agent: *\nDisallow: /portfolio/\n")
    serve_image(other_host, "/portfolio/a.jpg")
    serve_image(other_host, "/free/b.jpg")
    gate = make_gate(fetcher)
    refused = run(gate, candidate(redirect(httpserver, "/s/a",
                                           other_host.url_for("/portfolio/a.jpg"))), fetcher)
    detail = rejected(refused, "optout_robots_txt")
    assert f"redirect to {other_host.url_for('/portfolio/a.jpg')}" in detail
    assert "/portfolio/a.jpg" not in asked(other_host)
    admitted = run(gate, candidate(redirect(httpserver, "/s/b", other_host.url_for(
        "/free/b.jpg"))), fetcher)
    assert isinstance(admitted, Checked), admitted
    said = [(signal, result) for signal, result in admitted.optout
            if result.endswith(f"(redirect to {other_host.url_for('/free/b.jpg')})")]
    assert [signal for signal, _ in said] == ["robots.txt", "ai.txt", "tdmrep.json"]
    assert asked(other_host).count("/robots.txt") == 1  # read once per host, as any host


def test_a_redirect_target_s_ai_txt_and_tdmrep_json_are_obeyed(
        httpserver: HTTPServer, other_host: HTTPServer, fetcher: Fetcher) -> None:
    serve_text(other_host, "/ai.txt", "User-Agent: *\nDisallow: /ai-no/\n")
    other_host.expect_request("/.well-known/tdmrep.json").respond_with_json(
        [{"location": "/reserved/*", "tdm-reservation": 1}])
    serve_image(other_host, "/ai-no/a.jpg")
    serve_image(other_host, "/reserved/b.jpg")
    gate = make_gate(fetcher)
    detail = rejected(run(gate, candidate(redirect(
        httpserver, "/s/a", other_host.url_for("/ai-no/a.jpg"))), fetcher), "optout_robots_txt")
    assert detail.startswith("ai.txt:")
    detail = rejected(run(gate, candidate(redirect(
        httpserver, "/s/b", other_host.url_for("/reserved/b.jpg"))), fetcher), "optout_tdmrep")
    assert "tdm-reservation 1" in detail and "redirect to" in detail


def test_a_redirect_target_whose_robots_txt_cannot_be_read_waits_for_the_next_run(
        httpserver: HTTPServer, other_host: HTTPServer, fetcher: Fetcher) -> None:
    serve_text(other_host, "/robots.txt", "busy", status=503)
    serve_image(other_host, "/a.jpg")
    detail = rejected(run(make_gate(fetcher), candidate(redirect(
        httpserver, "/s/a", other_host.url_for("/a.jpg"))), fetcher), "robots_unreachable")
    assert "HTTP 503" in detail and f"(redirect to {other_host.url_for('/a.jpg')})" in detail
    assert "/a.jpg" not in asked(other_host)


def test_a_redirect_to_a_denylisted_url_or_site_is_refused_before_it_is_followed(
        httpserver: HTTPServer, other_host: HTTPServer, fetcher: Fetcher) -> None:
    serve_image(other_host, "/a.jpg")
    target = other_host.url_for("/a.jpg")
    for entry in (Entry("url", target, "artist", "deny:1"),
                  Entry("site", "127.0.0.1", "artist", "deny:2")):
        denylist = Denylist()
        denylist.add(entry)
        detail = rejected(run(make_gate(fetcher, denylist), candidate(redirect(
            httpserver, f"/s/{entry.kind}", target)), fetcher), "denylisted")
        assert f"(a redirect from {httpserver.url_for(f'/s/{entry.kind}')})" in detail
        assert "deny:" in detail
    assert "/a.jpg" not in asked(other_host)


def test_a_build_checks_each_redirect_and_records_what_the_target_s_host_said(
        httpserver: HTTPServer, other_host: HTTPServer, tmp_path: Path) -> None:
    """Through `cleanset build`: the stages a build runs guard the redirects, and a sample's
    provenance lists what the host it came from said."""
    serve_text(other_host, "/robots.txt", "User-agent: *\nDisallow: /portfolio/\n")
    serve_image(other_host, "/portfolio/a.jpg")
    serve_image(other_host, "/free/b.jpg")
    rows = [{"id": "a", "url": redirect(httpserver, "/s/a", other_host.url_for("/portfolio/a.jpg")),
             "license": CC0},
            {"id": "b", "url": redirect(httpserver, "/s/b", other_host.url_for("/free/b.jpg")),
             "license": CC0}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    recipe = write_recipe(tmp_path / "r.toml", recipe_text("redirects", 'kind = "table"\n'
                                                                       'path = "rows.jsonl"'))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    cands = {c["candidate_id"].rsplit(":", 1)[-1]: c
             for c in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert cands["a"]["reason"] == "optout_robots_txt" and "redirect to" in cands["a"]["detail"]
    assert cands["b"]["status"] == "accepted"
    assert "/portfolio/a.jpg" not in asked(other_host)
    with tarfile.open(out / "shards" / "000000.tar") as tar:
        [provenance] = [json.load(tar.extractfile(m)) for m in tar.getmembers()
                        if m.name.endswith(".json")]
    checked = provenance["optout"]["checked"]
    assert {"signal": "robots.txt", "result": "allowed:* (redirect to "
            f"{other_host.url_for('/free/b.jpg')})"} in checked, checked
    # The target host's robots.txt is archived as evidence the sample relied on.
    with sqlite3.connect(out / "ledger.sqlite") as db:
        relied = {uri for (uri,) in db.execute(
            "SELECT r.target_uri FROM samples AS s JOIN evidence_links AS l ON l.build = "
            "s.build AND l.seq = s.seq JOIN evidence_records AS r USING (record_id) "
            "WHERE l.role = 'signal'")}
    assert other_host.url_for("/robots.txt") in relied, relied
    # The report names the host that refused, not the short link's.
    run_cli("report", str(out), check=True)
    page = (out / "report.html").read_text()
    refusing = page[page.index("<th>host</th><th>signal</th>"):]
    refusing = refusing[:refusing.index("</table>")]
    assert f"<code>127.0.0.1:{other_host.port}</code>" in refusing, refusing
    assert f"localhost:{httpserver.port}" not in refusing


def test_a_do_not_train_check_that_fails_unexpectedly_is_never_recorded_as_an_opt_out(
        tmp_path: Path) -> None:
    """An exception nobody foresaw in an opt-out stage (an odd charset and a malformed
    redirect did it) was recorded as that stage's opt-out: `denylisted`, `optout_x_robots_tag`
    or `optout_embedded`, counted in the report as an artist's refusal and never asked again.
    It is `optout_unchecked`: not admitted, not an opt-out, retried by the next run."""
    from builder.records import Reason, is_transient
    from builder.stages import StagePlan

    recipe = one_url_recipe(tmp_path)
    bench = StagePlan(recipe=recipe, policy=load_policy("commercial"), out=tmp_path).build()
    try:
        on_error = {s.name: s.on_error for s in bench.stages if s.name.startswith("optout")}
        stage = next(s for s in bench.stages if s.name == "optout-before-fetch")
        failed = run_stages(candidate("https://example.org/a.jpg"), [
            StageSpec(stage.name, lambda _: 1 // 0, stage.on_error)])
    finally:
        bench.close()
    assert on_error == {"optout-before-fetch": Reason.OPTOUT_UNCHECKED,
                        "optout-headers": Reason.OPTOUT_UNCHECKED,
                        "optout-embedded": Reason.OPTOUT_UNCHECKED}
    assert isinstance(failed, Rejection) and is_transient(failed.reason)
    assert failed.detail == "optout-before-fetch: unexpected ZeroDivisionError: integer " \
        "division or modulo by zero"
