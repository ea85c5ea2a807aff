"""When two URLs name the same file: the one place URLs are compared.

Sources hand out URLs with tracking parameters (Wikimedia Commons' `url` ends in
`?utm_source=commons.wikimedia.org&utm_campaign=imageinfo&utm_content=original`), and a
rights holder quotes the URL from their browser bar without them, or the other way round.
Provenance keeps every URL as given; the denylist, `takedown --url` and anything else that
asks "is this the same file?" compares `match_key`s instead.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def match_key(url: str) -> str:
    """`url` as compared: `utm_*` query parameters dropped (every other one kept, in order
    and as written), scheme and host lower-cased, a default port and the fragment dropped,
    an empty path written `/`. The path is kept as is: servers may treat its case and
    encoding as meaningful. Anything without a scheme and host (a local path) is only
    stripped of surrounding whitespace."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # e.g. a port that is not a number: nothing to normalise reliably
        return text
    if not parts.scheme or not parts.netloc:
        return text
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", _kept_query(parts.query), ""))


def match_literal(url: str) -> str:
    """A piece of `url` that every URL with the same match key contains as written: its
    longest kept query parameter or its path, whichever is longer. A SQL `instr()` on it
    narrows a table to the few rows worth a `match_key` comparison."""
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.scheme or not parts.netloc:
        return text
    pieces = [p for p in _kept_query(parts.query).split("&") if p]
    if parts.path not in ("", "/"):  # an empty path and "/" have the same key
        pieces.append(parts.path)
    return max(pieces, key=len, default="")


def _kept_query(query: str) -> str:
    return "&".join(p for p in query.split("&") if p and not _is_tracking(p))


def _is_tracking(parameter: str) -> bool:
    name = unquote_plus(parameter.partition("=")[0])
    return name.lower().startswith("utm_")


# -- a site: a host and its subdomains (`lookup --site`, `takedown --site`) ---------------
def site_host(text: str) -> str:
    """The host a `--site` names: `artist.example`, or the host of a URL given instead
    (`www.` dropped: the site's other hosts are its subdomains). Raises ValueError naming
    what is not a host."""
    raw = text.strip()
    try:
        host = _normal_host(urlsplit(raw if "://" in raw else f"//{raw}").hostname)
    except ValueError:
        host = None
    if not host or not _HOST.fullmatch(host):
        raise ValueError(f"{text!r} is not a host name (for example artist.example, or a "
                         "URL on it)")
    return host.removeprefix("www.")


_HOST = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|[0-9a-f:.]+")


def _normal_host(host: str | None) -> str | None:
    """Lower case, no final dot, a Unicode name as URLs carry it (IDNA)."""
    if not host:
        return None
    host = host.rstrip(".")
    with contextlib.suppress(UnicodeError):
        host = host.encode("idna").decode("ascii")
    return host


def url_host(url: str | None) -> str | None:
    """The host of `url` as `site_host` spells hosts (lower case, IDNA, no final dot; `www.`
    kept), or None for what is not a URL with a host (a folder source's path)."""
    try:
        return _normal_host(urlsplit(url).hostname) if url else None
    except ValueError:  # a broken URL
        return None


def on_site(url: str | None, host: str) -> bool:
    """Whether `url` is on `host` or one of its subdomains (www., cdn., ...)."""
    found = url_host(url)
    return found is not None and (found == host or found.endswith("." + host))


def site_pattern(host: str) -> str:
    """A LIKE pattern (ESCAPE '\\') that every URL on `host` matches, to narrow a scan in
    SQLite before `on_site` decides; a Unicode name's URLs may spell it otherwise: all."""
    if "xn--" in host:
        return "%"
    return "%" + host.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"
