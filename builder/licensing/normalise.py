"""Licence claim text -> catalogue id (SPDX id or LicenseRef-...), offline and deterministic.

Order of attempts for one string (first hit wins):
  1. a catalogue id, any case ("cc-by-4.0" -> "CC-BY-4.0");
  2. a URL: scheme, protocol-relative `//`, `www.`, case, port, query, fragment, trailing
     slash, `deed.xx`, `legalcode[.xx][.txt]` and `rdf` do not matter; Creative Commons
     `licenses/<slug>/<version>[/<port>]` paths are read against the CC grid;
  3. an alias from the catalogue ("CC0", "Public domain", "GFDL"...), then a pattern;
  4. a Creative Commons short name or title in any common spelling: "CC BY-SA 4.0",
     "CC-BY-SA-3.0-de", "Creative Commons Attribution-Share Alike 3.0 Unported",
     "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)"; Wikimedia's multi-version
     "CC-BY-SA-3.0,2.5,2.0,1.0" means any of them and becomes an OR expression;
  5. an SPDX expression with OR / AND / WITH and parentheses, each operand read by 1-4
     (after WITH, only an exception on SPDX's list), rendered by `license-expression`.
An unversioned CC name ("CC BY-SA") is not recognised: the version changes the terms.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

from license_expression import LicenseExpression, Licensing, get_spdx_licensing

from builder.licensing.catalogue import Catalogue, load_catalogue

# HTML a source may wrap a licence or a name in (Commons' <span class="licensetpl_short">, a
# link, <br>): only these elements are markup. Other words in angle brackets are text that
# may restrict the work ("CC BY 4.0 <NC>"), and so is an HTML comment ("<!-- NC -->").
_HTML_ELEMENTS = (
    "a", "abbr", "b", "bdi", "bdo", "big", "blockquote", "br", "center", "cite", "code", "dd",
    "del", "dfn", "div", "dl", "dt", "em", "font", "h[1-6]", "hr", "i", "img", "ins", "kbd",
    "li", "mark", "nobr", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt",
    "u", "ul", "var", "wbr",
)
_TAG_RE = re.compile(rf"<\s*/?\s*(?:{'|'.join(_HTML_ELEMENTS)})(?=[\s/>])[^<>]*>", re.IGNORECASE)
_INVISIBLE_RE = re.compile(r"[\u200b-\u200f\u2060\ufeff]")
_URL_START_RE = re.compile(r"^(?:(?:https?:)?//|www\.|[a-z0-9-]+(?:\.[a-z0-9-]+)+/)")
_SUFFIX_RE = re.compile(
    r"^(?:deed|legalcode)(?:\.[a-z]{2,3}(?:[_-][a-z0-9]{2,4})?)?(?:\.(?:txt|html?|md))?$"
    r"|^(?:rdf|index\.html?|deed\.html?)$")
_EMPTY = {"", "none", "null", "nan", "n/a", "na", "-", "[]", "{}"}
_FILLERS = {
    "license", "licence", "licensed", "licenses", "licences", "international", "unported",
    "generic", "public", "deed", "legalcode", "legal", "code", "the", "version", "ver",
    "migrated", "with", "disclaimers", "under", "this", "work", "and", "&", "intl",
    "worldwide", "universal",
}
_WORD_OPERATORS = {"or", "and", "with"}
_ELEMENTS = {"by", "nc", "nd", "sa"}
_VERSION_RE = re.compile(r"^v?(\d)(?:\.(\d))?$")
_PHRASES = (
    (re.compile(r"creative[\s_-]*commons"), " cc "),
    (re.compile(r"share[\s_-]*alike"), " sa "),
    (re.compile(r"non[\s_-]*commercial"), " nc "),
    (re.compile(r"no[\s_-]*deriv(?:ative|ed)?s?(?:[\s_-]+works)?"), " nd "),
    (re.compile(r"\battribution\b"), " by "),
)
_OPERATOR_RE = re.compile(r"(\s+(?:or|and|with)\s+|\(|\))", re.IGNORECASE)
_LICENSING = Licensing()


def markup_free(text: str) -> str:
    """`text` as text: HTML tags (of `_HTML_ELEMENTS`) dropped, entities decoded, invisible
    characters removed, whitespace collapsed; its words and punctuation as written."""
    return " ".join(_INVISIBLE_RE.sub("", html.unescape(_TAG_RE.sub(" ", text))).split())


def clean(text: object) -> str:
    """Unescape HTML, drop its tags (of `_HTML_ELEMENTS` only) and invisible characters,
    collapse whitespace, trim quotes."""
    s = text if isinstance(text, str) else str(text)
    s = _INVISIBLE_RE.sub("", html.unescape(s)).strip()
    inner = s[1:-1]
    if s.startswith("<") and s.endswith(">") and " " not in s and ("/" in s or "." in s) \
            and "<" not in inner and ">" not in inner:
        s = inner  # <http://...> as written in RDF/XMP
    s = _TAG_RE.sub(" ", s)
    s = " ".join(s.split())
    return s.strip("\"'`“”‘’ ").rstrip(".;,").strip()


def is_empty(value: str) -> bool:
    """Values that mean 'no claim' in CSV/JSON exports (pandas NaN, JSON null...)."""
    return clean(value).lower() in _EMPTY


def url_key(text: str) -> str | None:
    """The comparison key of a URL (host/path, lower case, decoration removed), or None."""
    s = clean(text).lower()
    if not _URL_START_RE.match(s) or " " in s:
        return None
    s = re.sub(r"^(?:https?:)?//", "", s)
    s = re.split(r"[?#]", s, maxsplit=1)[0]
    host, _, path = s.partition("/")
    host = host.split(":", 1)[0].removeprefix("www.").rstrip(".")
    if "." not in host:
        return None
    segments = [seg for seg in path.split("/") if seg]
    while segments and _SUFFIX_RE.match(segments[-1]):
        segments.pop()
    return "/".join([host, *segments])


def normalise(text: str, catalogue: Catalogue | None = None) -> str | None:
    """A licence claim -> catalogue id or SPDX expression of ids; None if unrecognised."""
    cat = catalogue or load_catalogue()
    if not isinstance(text, str):
        text = str(text)
    return cat.remember(("normalise", text), lambda: _normalise(text, cat))


def _normalise(text: str, cat: Catalogue) -> str | None:
    try:
        s = clean(text)
        if not s or len(s) > 2000:
            return None
        return _single(s, cat) or _expression(s, cat)
    except (ValueError, TypeError, RecursionError):
        return None  # arbitrary text must never break the gate; unrecognised is the safe answer


def _single(s: str, cat: Catalogue) -> str | None:
    lower = s.lower()
    if lower in cat.by_lower_id:
        return cat.by_lower_id[lower]
    key = url_key(s)
    if key is not None:
        return cat.urls.get(key) or _cc_url(key, cat)
    if lower in cat.aliases:
        return cat.aliases[lower]
    for regex, lid in cat.patterns:
        if regex.match(lower):
            return lid
    return _cc_name(lower, cat)


def _cc_url(key: str, cat: Catalogue) -> str | None:
    host, _, path = key.partition("/")
    segs = path.split("/")
    if host != "creativecommons.org" or len(segs) not in (3, 4) or segs[0] != "licenses":
        return None
    family = cat.cc.by_slug.get(segs[1])
    port = segs[3] if len(segs) == 4 else None
    return cat.cc.ids.get((family, segs[2], port)) if family else None


def _cc_name(lower: str, cat: Catalogue) -> str | None:
    """CC short names and titles; a parenthesised short name must agree with the title."""
    inner = re.findall(r"\(([^()]*)\)", lower)
    outer = re.sub(r"\([^()]*\)", " ", lower).strip()
    if not inner:
        return _cc_tokens(lower, cat)
    results = {_cc_tokens(part, cat) for part in [outer, *inner] if part.strip()}
    return results.pop() if len(results) == 1 else None


def _cc_tokens(text: str, cat: Catalogue) -> str | None:
    for regex, repl in _PHRASES:
        text = regex.sub(repl, text)
    text = _replace_port_names(text, cat)
    if _WORD_OPERATORS & set(text.split()):
        return None  # "X and Y" / "X or" is an expression (or a broken one), not a name
    tokens = [t for t in re.split(r"[\s\-_/,;:+]+", text) if t and t not in _FILLERS]
    elements: list[str] = []
    versions: list[str] = []
    port: str | None = None
    saw_cc = False
    for tok in tokens:
        m = _VERSION_RE.match(tok)
        if tok == "cc" and not elements and not versions:
            saw_cc = True
        elif tok in _ELEMENTS and not versions:
            elements.append(tok)
        elif m and elements and port is None:
            versions.append(f"{m.group(1)}.{m.group(2) or '0'}")
        elif versions and port is None and tok in cat.cc.ports:
            port = tok
        else:
            return None
    if not elements or not versions or ("by" not in elements and not saw_cc):
        return None
    family = cat.cc.by_elements.get(frozenset(elements))
    if family is None or len(set(elements)) != len(elements):
        return None
    ids = [cat.cc.ids.get((family, v, port)) for v in dict.fromkeys(versions)]
    if any(i is None for i in ids):
        return None
    return " OR ".join(i for i in ids if i)


def _replace_port_names(text: str, cat: Catalogue) -> str:
    regex = cat.cc.port_name_re
    if regex is None:
        return text
    return regex.sub(lambda m: f" {cat.cc.port_names[m.group(1)]} ", text)


def _expression(s: str, cat: Catalogue) -> str | None:
    """SPDX-style expressions; each operand is normalised on its own, then the whole is
    parsed and rendered by license-expression so precedence and spacing are canonical."""
    if not _OPERATOR_RE.search(s):
        return None
    parts = [p for p in _OPERATOR_RE.split(s) if p and p.strip()]
    out: list[str] = []
    after_with = False
    for part in parts:
        word = part.strip().upper()
        if word in ("OR", "AND", "WITH", "(", ")"):
            out.append(word)
            after_with = word == "WITH"
            continue
        if after_with:
            exception = spdx_exceptions().get(part.strip().lower())
            if exception is None:
                return None
            out.append(exception)
            after_with = False
            continue
        lid = _single(clean(part), cat)
        if lid is None:
            return None
        out.append(f"({lid})" if " " in lid else lid)
    try:
        parsed = _LICENSING.parse(" ".join(out), simple=False)
    except Exception:  # noqa: BLE001
        # license-expression's parser raises more than ExpressionError on malformed input
        # ("()" -> IndexError, "( OR CC BY 4.0" -> AssertionError): any failure to parse means
        # the claim is not a licence we recognise.
        return None
    if parsed is None:
        return None
    return str(parsed.render("{symbol.key}"))


@lru_cache(maxsize=1)
def spdx_exceptions() -> dict[str, str]:
    """SPDX's licence exceptions (lower case -> id), from license-expression's own data.
    Each adds permissions to the licence it follows; any other word after WITH ("NC",
    "NoAI", a LicenseRef-) is terms the catalogue cannot read, and may restrict the work."""
    symbols = get_spdx_licensing().known_symbols.values()
    return {s.key.lower(): s.key for s in symbols
            if s.is_exception and not s.key.startswith("LicenseRef-")}


def parse_expression(expr: str) -> LicenseExpression:
    """The license-expression tree of a normalised expression (used by the gate)."""
    return _LICENSING.parse(expr, simple=False)
