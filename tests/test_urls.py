"""`builder.urls.match_key`: the same file is recognised with or without tracking parameters."""

from __future__ import annotations

import pytest

from builder.urls import match_key, match_literal

COMMONS = "https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg"
TRACKING = "utm_source=commons.wikimedia.org&utm_campaign=imageinfo&utm_content=original"


def test_commons_tracking_parameters_do_not_change_the_match_key() -> None:
    assert match_key(f"{COMMONS}?{TRACKING}") == match_key(COMMONS) == COMMONS


def test_other_query_parameters_are_kept_as_written_and_in_their_order() -> None:
    url = "https://example.org/img?z=1&utm_medium=email&a=%2F2&UTM_Term=x&m=&flag"
    assert match_key(url) == "https://example.org/img?z=1&a=%2F2&m=&flag"
    assert match_key("https://example.org/img?b=2&a=1") != match_key(
        "https://example.org/img?a=1&b=2")


def test_only_parameters_named_utm_something_are_tracking() -> None:
    url = "https://example.org/img?utm=1&xutm_source=2&utm_source=3"
    assert match_key(url) == "https://example.org/img?utm=1&xutm_source=2"


def test_fragment_is_dropped() -> None:
    assert match_key("https://example.org/a.jpg?x=1#top") == "https://example.org/a.jpg?x=1"
    assert match_key("https://example.org/a.jpg?utm_source=s#top") == "https://example.org/a.jpg"


def test_scheme_and_host_are_lower_cased_but_the_path_is_not() -> None:
    assert match_key("HTTPS://Upload.Wikimedia.ORG/A/B.JPG") == "https://upload.wikimedia.org/A/B.JPG"
    assert match_key("https://example.org/A.jpg") != match_key("https://example.org/a.jpg")


@pytest.mark.parametrize(("url", "key"), [
    ("https://example.org:443/a.jpg", "https://example.org/a.jpg"),
    ("http://example.org:80/a.jpg", "http://example.org/a.jpg"),
    ("https://example.org:8443/a.jpg", "https://example.org:8443/a.jpg"),
    ("https://example.org", "https://example.org/"),
    ("https://example.org?utm_source=x", "https://example.org/"),
    ("  https://example.org/a.jpg\n", "https://example.org/a.jpg"),
])
def test_default_ports_an_empty_path_and_surrounding_space_are_normalised(url: str,
                                                                           key: str) -> None:
    assert match_key(url) == key


@pytest.mark.parametrize("text", ["/data/images/a.jpg?utm_source=x", "images/a b.jpg",
                                  "https://example.org:notaport/a.jpg"])
def test_local_paths_and_unparsable_urls_are_compared_as_written(text: str) -> None:
    assert match_key(text) == text


@pytest.mark.parametrize("url", [
    f"{COMMONS}?{TRACKING}", "https://example.org/?id=12345&utm_source=x", "https://example.org/",
    "HTTPS://Example.org:443/p/q.jpg?page=2#f", "/data/a.jpg",
])
def test_every_url_with_the_same_key_contains_the_literal(url: str) -> None:
    variants = [url, match_key(url), match_key(url) + "?utm_campaign=c",
                match_key(url).replace("https://example.org", "https://EXAMPLE.org:443")]
    for variant in variants:
        if match_key(variant) == match_key(url):
            assert match_literal(url) in variant, variant
