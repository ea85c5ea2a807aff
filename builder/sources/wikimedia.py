"""`wikimedia` source: files on Wikimedia Commons (or any MediaWiki) via the action API.

One of three generators picks the files, each with `prop=imageinfo` asking for
`iiprop=url|sha1|size|mime|extmetadata`:
  - `category = "Featured pictures on Wikimedia Commons"`: `generator=categorymembers`,
    `gcmtitle=Category:...`, `gcmtype=file`;
  - `search = "..."`: `generator=search`, `gsrnamespace=6` (the File namespace);
  - `start = "2024-01-01T00:00:00Z"` (and optionally `end`): `generator=allimages`,
    `gaisort=timestamp`, `gaistart`/`gaiend`: every file uploaded in that window.
Continuation is MediaWiki's: every key of the top-level `continue` object is copied into
the next request. A batch is complete when the response says `batchcomplete`; until then
the following responses carry more imageinfo for the same pages, and are merged.

Licence evidence is the raw extmetadata (`wikimedia:LicenseShortName`, `UsageTerms`,
`LicenseUrl`, `License`, plus `AttributionRequired`, `Copyrighted`, `Restrictions` and
`NonFree`); values are HTML on Commons and are reduced to text. `NonFree` = "true" (fair use)
is refused whatever the licence name says, and `Copyrighted` = "True" with no licence field
is refused too (licenses/fields.toml). Creator from `Artist`
(its first link becomes `creator_url`), credit from `Attribution` (the licensor's requested credit), else `Credit`, title from `ObjectName`,
caption from `ImageDescription`, landing page from `descriptionurl`, and the API's `sha1`
becomes `expected_sha1` (the image check rejects a download that differs). `Restrictions`
(trademarked, personality rights...) is also kept in `extra` so provenance shows it.

Etiquette (https://www.mediawiki.org/wiki/API:Etiquette): requests in series, `maxlag=5`,
and on a rate limit (`error.code` `maxlag` or `ratelimited`, sent with HTTP 200, or the
HTTP 429 of Wikimedia's 2026 limits for anonymous traffic, `request-limit-reached`) a wait
of the response's `Retry-After` (capped by `[fetch] max_retry_after_s`; else the reported
lag, at least 5 s) before asking again, up to 6 times. Rate limits waited out are counted
in the build summary; they never end as a candidate's rejection. The User-Agent is
the recipe's `[fetch] user_agent` with the HTTP library appended; `cleanset build` refuses a
recipe whose User-Agent has no real contact (none, or example.org), which Wikimedia's
User-Agent policy requires (recipe.check_user_agent_contact); used as a library, the
source logs a warning instead.

Resume state after each candidate: `{"continue": <the continue object that fetched its
batch, or null for the first>, "index": <pages of that batch consumed>, "count": n}`; after
a batch's last page it already points at the next batch, so a resumed build never asks for
a page it has finished. `{"done": true}` after the very last file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.fetch import Response
from builder.recipe import CONTACT_EXAMPLE
from builder.records import Candidate, Evidence
from builder.sources._failures import api_failed, api_refused
from builder.sources._museum import (
    JsonClient,
    check_api_source,
    first_link,
    has_contact,
    html_text,
    retry_after_s,
    with_params,
)
from builder.sources._recheck import chunked, now_from_candidate
from builder.sources.base import GONE, UNREACHABLE, Item, Now, SourceContext

log = logging.getLogger(__name__)

API = "https://commons.wikimedia.org/w/api.php"
# extmetadata fields that are licence evidence (claims or informational), in this order.
EVIDENCE_FIELDS = ("LicenseShortName", "UsageTerms", "LicenseUrl", "License",
                   "AttributionRequired", "Copyrighted", "Restrictions", "NonFree")
# `Attribution`: the credit the licensor asks for (a licence template's attribution
# parameter); `Credit` is where the file came from, most often "Own work".
DESCRIPTIVE_FIELDS = ("Artist", "Attribution", "Credit", "ObjectName", "ImageDescription")
LAG_ERRORS = frozenset({"maxlag", "ratelimited"})
# Wikimedia's 2026 limits for anonymous traffic answer HTTP 429 (the REST side's body
# names `request-limit-reached`): handed back by the Fetcher so it is waited out here.
RATE_LIMIT_STATUS = 429
MIN_LAG_WAIT_S = 5.0  # API:Etiquette: pause at least 5 seconds after a maxlag error
LAG_ATTEMPTS = 6
# Error codes that are the wiki's own trouble, not the query's (MediaWiki API:Errors).
SERVER_ERROR_PREFIXES = ("internal_api_error", "readonly")


@dataclass(frozen=True)
class Config:
    category: str | None = None
    search: str | None = None
    start: str | None = None
    end: str | None = None
    api: str = API
    batch: int = 50
    limit: int | None = None
    maxlag: int = 5
    rps: float | None = None  # requests are in series already; set to space them further

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        chosen = [k for k in ("category", "search", "start") if getattr(self, k)]
        if len(chosen) != 1:
            raise UserError(
                f"{file}: {where} (wikimedia) needs exactly one of category, search or start "
                f"(got {', '.join(chosen) or 'none'}). E.g. category = \"Featured pictures on "
                "Wikimedia Commons\", search = \"lighthouse\" or start = \"2024-01-01T00:00:00Z\"."
            )
        if self.end and not self.start:
            raise UserError(f"{file}: {where}.end needs start (a time window of uploads).")
        if not 1 <= self.batch <= 50:
            # 50 is the API's cap for clients without the apihighlimits right.
            raise UserError(f"{file}: {where}.batch must be between 1 and 50.")
        if self.maxlag < 0:
            raise UserError(f"{file}: {where}.maxlag must not be negative.")
        check_api_source(self.api, limit=self.limit, rps=None, file=file, where=where)
        return self


class WikimediaSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        if not has_contact(context.fetch.user_agent):
            log.warning(
                "%s: [fetch] user_agent %r has no contact; Wikimedia's User-Agent policy asks "
                "for one, e.g. %s", context.recipe_file, context.fetch.user_agent,
                CONTACT_EXAMPLE)
        self.waits: Counter[str] = Counter()  # rate-limit answers waited out, by kind

    def summary_lines(self) -> list[str]:
        """For the build summary: the rate limits this source waited out, if any."""
        if not self.waits:
            return []
        kinds = ", ".join(f"{code} {n}" for code, n in sorted(self.waits.items()))
        return [f"  source {self.name}: waited out {sum(self.waits.values())} rate-limit "
                f"answers ({kinds})"]

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        state = resume or {}
        if state.get("done"):
            return
        count = int(state.get("count", 0))
        limit = self.config.limit
        if limit is not None and count >= limit:
            return
        skip = int(state.get("index", 0))
        cont = state.get("continue")
        client = JsonClient(self.name, self.context.fetch, rps=self.config.rps,
                            hand_back=frozenset({RATE_LIMIT_STATUS}),
                            recipe=self.context.recipe_file)
        try:
            for used, pages, following in self._batches(client, cont):
                for index, page in enumerate(pages):
                    if index < skip:
                        continue
                    count += 1
                    last_of_batch = index + 1 == len(pages)
                    if not last_of_batch:
                        after: dict[str, Any] = {"continue": used, "index": index + 1}
                    elif following is None:
                        after = {"done": True}
                    else:
                        after = {"continue": following, "index": 0}
                    yield self._candidate(page, {**after, "count": count})
                    if limit is not None and count >= limit:
                        return
                skip = 0
        finally:
            client.close()

    # -- the protocol ------------------------------------------------------------------

    def _params(self) -> dict[str, str]:
        c = self.config
        params = {
            "action": "query", "format": "json", "formatversion": "2",
            "maxlag": str(c.maxlag), "prop": "imageinfo",
            "iiprop": "url|sha1|size|mime|extmetadata",
            "iiextmetadatafilter": "|".join(EVIDENCE_FIELDS + DESCRIPTIVE_FIELDS),
        }
        if c.category:
            title = c.category if c.category.startswith("Category:") else f"Category:{c.category}"
            params.update(generator="categorymembers", gcmtitle=title, gcmtype="file",
                          gcmlimit=str(c.batch))
        elif c.search:
            params.update(generator="search", gsrsearch=c.search, gsrnamespace="6",
                          gsrlimit=str(c.batch))
        else:
            params.update(generator="allimages", gaisort="timestamp", gaidir="ascending",
                          gaistart=str(c.start), gailimit=str(c.batch))
            if c.end:
                params["gaiend"] = c.end
        return params

    def _batches(self, client: JsonClient, cont: dict[str, Any] | None
                 ) -> Iterator[tuple[dict[str, Any] | None, list[dict[str, Any]],
                                     dict[str, Any] | None]]:
        """(continue that fetched it, its pages, the continue for the next batch or None)."""
        while True:
            used = cont
            merged: dict[Any, dict[str, Any]] = {}
            while True:
                data = self._query(client, cont)
                for page in self._pages(data):
                    _merge(merged, page)
                nxt = data.get("continue")
                cont = nxt if isinstance(nxt, dict) else None
                if "batchcomplete" in data or cont is None:
                    break
            pages = list(merged.values())
            if pages and all(isinstance(p.get("index"), int) for p in pages):
                pages.sort(key=lambda p: p["index"])  # search results: in rank order
            yield used, pages, cont
            if cont is None:
                return

    def _pages(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """`query.pages` of an answer: a list of page objects (formatversion=2). Any other
        shape (a MediaWiki older than 1.25 answers formatversion=1, pages keyed by id) stops
        the build naming it; read as it came, it was a traceback."""
        query = data.get("query") or {}
        pages = query.get("pages") if isinstance(query, dict) else query
        if pages is None:
            return []
        if not isinstance(pages, list) or not all(isinstance(p, dict) for p in pages):
            shape = ("list holding non-objects" if isinstance(pages, list) else
                     "object" if isinstance(pages, dict) else type(pages).__name__)
            raise api_failed(self.name, f"the answer's query.pages is a JSON {shape}, not the "
                             "list of page objects formatversion=2 gives (a MediaWiki older "
                             "than 1.25?)", self.config.api)
        return pages

    def _query(self, client: JsonClient, cont: dict[str, Any] | None) -> dict[str, Any]:
        """One API answer. A rate limit (HTTP 429, `ratelimited`, `maxlag`) is waited out
        as the server asks (Retry-After, capped by max_retry_after_s) and counted; it never
        reaches a candidate. Any other error stops the build."""
        params = self._params()
        params.update({k: str(v) for k, v in (cont or {}).items()})
        return self._ask(client, params)

    def _ask(self, client: JsonClient, params: dict[str, str]) -> dict[str, Any]:
        """One API answer, waiting out maxlag / ratelimited as the etiquette asks."""
        for _ in range(LAG_ATTEMPTS):
            got = client.get_response(self.config.api, params)
            assert got is not None
            data, response = got
            limited = _rate_limit(data, response)
            if limited is None:
                return self._answer(data, params)
            code, default = limited
            wait = min(retry_after_s(response, default), self.context.fetch.max_retry_after_s)
            self.waits[code] += 1
            log.info("%s: %s, waiting %.0fs", self.name, code, wait)
            time.sleep(wait)  # the server asked us to back off
        raise api_failed(self.name, "the API kept answering with rate limits "
                         f"(maxlag/ratelimited/HTTP 429) after {LAG_ATTEMPTS} waits",
                         self.config.api)

    def _answer(self, data: Any, params: dict[str, str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise api_failed(self.name, f"the answer is a JSON {type(data).__name__}, "
                             "not an object", self.config.api)
        error = data.get("error")
        if isinstance(error, dict):
            raise self._error(str(error.get("code", "")), str(error.get("info", "")), params)
        return data

    def _error(self, code: str, info: str, params: dict[str, str]) -> UserError:
        """An `error` answer: the server's own trouble is a failure to resume after (exit 1);
        any other code (badvalue, invalidcategory...) is the recipe's query to fix (exit 2)."""
        cause = f"the API answered error {code}: {info}".strip().rstrip(":")
        url = with_params(self.config.api, params)
        if code.startswith(SERVER_ERROR_PREFIXES):
            return api_failed(self.name, cause, url)
        return api_refused(self.name, cause, url, recipe=self.context.recipe_file)

    # -- one file ----------------------------------------------------------------------

    def _candidate(self, page: dict[str, Any], resume: dict[str, Any]) -> Candidate:
        info = (page.get("imageinfo") or [{}])[0]
        meta = info.get("extmetadata") or {}
        values = {k: _meta(meta, k) for k in EVIDENCE_FIELDS + DESCRIPTIVE_FIELDS}
        evidence = tuple(Evidence(f"wikimedia:{k}", values[k])
                         for k in EVIDENCE_FIELDS if values[k] is not None)
        title = str(page.get("title", ""))
        landing = info.get("descriptionurl")
        artist_html = _raw(meta, "Artist")
        extra: list[tuple[str, str]] = [("wikimedia:title", title)]
        if values["Restrictions"]:
            extra.append(("wikimedia:Restrictions", values["Restrictions"]))
        for key in ("mime", "size", "width", "height"):
            if info.get(key) is not None:
                extra.append((f"wikimedia:{key}", str(info[key])))
        if page.get("missing") or not info:
            extra.append(("wikimedia:problem", "no imageinfo (file missing or deleted)"))
        source_id = str(page.get("pageid") or title)
        return Candidate(
            source=self.name,
            source_id=source_id,
            url=str(info.get("url") or ""),
            evidence=evidence,
            landing_url=str(landing) if landing else None,
            api_url=_page_api_url(self.config.api, title),
            creator=values["Artist"],
            creator_url=first_link(artist_html, base=landing),
            title=values["ObjectName"] or _bare_title(title),
            caption=values["ImageDescription"],
            credit=values["Attribution"] or values["Credit"],
            expected_sha1=str(info["sha1"]).lower() if info.get("sha1") else None,
            extra=tuple(extra),
            resume=resume,
        )


def _rate_limit(data: Any, response: Response | None) -> tuple[str, float] | None:
    """(what the server called it, the wait when it sends no Retry-After) for a rate-limit
    answer, else None. HTTP 429 is one whatever its body; so are the action API's
    `ratelimited` and `maxlag` errors, which come with HTTP 200."""
    body = data if isinstance(data, dict) else {}
    error = body.get("error")
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    if response is not None and response.status == RATE_LIMIT_STATUS:
        named = code or str(body.get("errorKey") or body.get("httpReason") or "")
        return (named or "HTTP 429"), MIN_LAG_WAIT_S
    if code in LAG_ERRORS:
        lag = error.get("lag") if isinstance(error, dict) else None
        return code, max(MIN_LAG_WAIT_S, float(lag) if isinstance(lag, int | float) else 0.0)
    return None


def _raw(meta: dict[str, Any], key: str) -> Any:
    entry = meta.get(key)
    return entry.get("value") if isinstance(entry, dict) else entry


def _meta(meta: dict[str, Any], key: str) -> str | None:
    return html_text(_raw(meta, key))


def _merge(pages: dict[Any, dict[str, Any]], page: dict[str, Any]) -> None:
    key = page.get("pageid", page.get("title"))
    if key not in pages:
        pages[key] = dict(page)
        return
    have = pages[key]
    if page.get("imageinfo") and not have.get("imageinfo"):
        have["imageinfo"] = page["imageinfo"]


def _bare_title(title: str) -> str | None:
    name = title.split(":", 1)[1] if ":" in title else title
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem.replace("_", " ").strip() or None


def _page_api_url(api: str, title: str) -> str | None:
    if not title:
        return None
    return with_params(api, {"action": "query", "titles": title, "prop": "imageinfo",
                             "iiprop": "url|sha1|extmetadata", "format": "json"})


class WikimediaRecheck:
    """`prop=imageinfo` for up to 50 files a request (`pageids=`, or `titles=` for files
    recorded without a page id), `iiprop=sha1|url|extmetadata`: the licence fields, the
    SHA-1 of the current upload, and `missing` for a deleted file."""

    batch = 50  # the API's cap for clients without the apihighlimits right

    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.source = WikimediaSource(name, config, context)
        self.client = JsonClient(name, context.fetch, rps=config.rps)

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        out: dict[str, Now] = {}
        by_id = [i for i in items if i.source_id.isdigit()]
        by_title = [i for i in items if not i.source_id.isdigit()]
        for group, param in ((by_id, "pageids"), (by_title, "titles")):
            for chunk in chunked(group, self.batch):
                pages = self._pages(param, [i.source_id for i in chunk])
                for item in chunk:
                    out[item.key] = self._now(pages.get(item.source_id))
        return out

    def _pages(self, param: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The pages for `ids`, by page id or title, imageinfo merged across continuations."""
        params = {"action": "query", "format": "json", "formatversion": "2",
                  "maxlag": str(self.source.config.maxlag), "prop": "imageinfo",
                  "iiprop": "sha1|url|extmetadata",
                  "iiextmetadatafilter": "|".join(EVIDENCE_FIELDS + DESCRIPTIVE_FIELDS),
                  param: "|".join(ids)}
        merged: dict[Any, dict[str, Any]] = {}
        renamed: dict[str, str] = {}  # a title as recorded -> as the API spells it
        cont: dict[str, Any] = {}
        while True:
            data = self.source._ask(self.client, {**params, **{k: str(v) for k, v in
                                                               cont.items()}})
            query = data.get("query")
            if not isinstance(query, dict) or not isinstance(query.get("pages"), list):
                # The API answers every id it is asked, if only with `missing`: an answer
                # without pages says nothing about the files, and must not read as deleted.
                raise api_failed(self.source.name, "the answer to an imageinfo query has no "
                                 "query.pages list; nothing was judged", self.source.config.api)
            for page in query["pages"]:
                if isinstance(page, dict):
                    _merge(merged, page)
            for pair in query.get("normalized") or []:
                if isinstance(pair, dict) and pair.get("from") and pair.get("to"):
                    renamed[str(pair["from"])] = str(pair["to"])
            nxt = data.get("continue")
            if "batchcomplete" in data or not isinstance(nxt, dict) or nxt == cont:
                break  # (a server repeating its continuation would loop forever)
            cont = nxt
        found: dict[str, dict[str, Any]] = {}
        for page in merged.values():
            if page.get("pageid") is not None:
                found[str(page["pageid"])] = page
            if page.get("title"):
                found[str(page["title"])] = page
        for asked, spelled in renamed.items():
            if spelled in found:
                found.setdefault(asked, found[spelled])
        return found

    def _now(self, page: dict[str, Any] | None) -> Now:
        if page is None:
            # Left out of an answer that had pages: a short or broken answer, not a deletion
            # (a deleted file is answered, with `missing`).
            return Now(UNREACHABLE, "the API's answer left this file out (neither its page "
                       "nor `missing`)")
        if page.get("missing") or page.get("invalid"):
            return Now(GONE, "the API answers `missing` for it (deleted)")
        info = (page.get("imageinfo") or [{}])[0]
        if not info or info.get("filemissing"):
            return Now(GONE, "the file page has no file any more (filemissing)")
        if not isinstance(info.get("extmetadata"), dict) or not info["extmetadata"]:
            # Asked for, extmetadata always comes (at least with the file's own fields);
            # without it the answer cannot say the licence changed.
            return Now(UNREACHABLE, "the API's answer has no extmetadata (licence fields) "
                       "for this file")
        return now_from_candidate(self.source._candidate(page, {}))

    def close(self) -> None:
        self.client.close()


def rechecker(name: str, config: Config, context: SourceContext) -> WikimediaRecheck:
    return WikimediaRecheck(name, config, context)


SOURCE = WikimediaSource
