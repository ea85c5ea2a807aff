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
`LicenseUrl`, `License`, plus the informational `AttributionRequired`, `Copyrighted`,
`Restrictions`); values are HTML on Commons and are reduced to text. Creator from `Artist`
(its first link becomes `creator_url`), credit from `Credit`, title from `ObjectName`,
caption from `ImageDescription`, landing page from `descriptionurl`, and the API's `sha1`
becomes `expected_sha1` (the image check rejects a download that differs). `Restrictions`
(trademarked, personality rights...) is also kept in `extra` so provenance shows it.

Etiquette (https://www.mediawiki.org/wiki/API:Etiquette): requests in series, `maxlag=5`,
and on `error.code` `maxlag` or `ratelimited` (sent with HTTP 200) a wait of the response's
`Retry-After` (else the reported lag, at least 5 s) before asking again. The User-Agent is
the recipe's `[fetch] user_agent` with the HTTP library appended; a warning is logged when
it carries no contact, which Wikimedia's User-Agent policy requires.

Resume state after each candidate: `{"continue": <the continue object that fetched its
batch, or null for the first>, "index": <pages of that batch consumed>, "count": n}`; after
a batch's last page it already points at the next batch, so a resumed build never asks for
a page it has finished. `{"done": true}` after the very last file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.records import Candidate, Evidence
from builder.sources._museum import (
    JsonClient,
    SourceError,
    check_api_source,
    first_link,
    has_contact,
    html_text,
    retry_after_s,
    with_params,
)
from builder.sources._recheck import chunked, now_from_candidate
from builder.sources.base import GONE, Item, Now, SourceContext

log = logging.getLogger(__name__)

API = "https://commons.wikimedia.org/w/api.php"
# extmetadata fields that are licence evidence (claims or informational), in this order.
EVIDENCE_FIELDS = ("LicenseShortName", "UsageTerms", "LicenseUrl", "License",
                   "AttributionRequired", "Copyrighted", "Restrictions")
DESCRIPTIVE_FIELDS = ("Artist", "Credit", "ObjectName", "ImageDescription", "NonFree")
LAG_ERRORS = frozenset({"maxlag", "ratelimited"})
MIN_LAG_WAIT_S = 5.0  # API:Etiquette: pause at least 5 seconds after a maxlag error
LAG_ATTEMPTS = 6


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
                "for one, e.g. user_agent = \"cleanset/0.1 (https://example.org/you; "
                "you@example.org)\"", context.recipe_file, context.fetch.user_agent)

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
        client = JsonClient(self.name, self.context.fetch, rps=self.config.rps)
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
                for page in (data.get("query") or {}).get("pages") or []:
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

    def _query(self, client: JsonClient, cont: dict[str, Any] | None) -> dict[str, Any]:
        params = self._params()
        params.update({k: str(v) for k, v in (cont or {}).items()})
        return self._ask(client, params)

    def _ask(self, client: JsonClient, params: dict[str, str]) -> dict[str, Any]:
        """One API answer, waiting out maxlag / ratelimited as the etiquette asks."""
        for _ in range(LAG_ATTEMPTS):
            got = client.get_response(self.config.api, params)
            assert got is not None
            data, response = got
            if not isinstance(data, dict):
                raise SourceError(f"source {self.name!r}: {self.config.api} answered with "
                                  f"a JSON {type(data).__name__}, not an object.")
            error = data.get("error")
            if not isinstance(error, dict):
                return data
            code = str(error.get("code", ""))
            if code not in LAG_ERRORS:
                raise SourceError(
                    f"source {self.name!r}: the API refused the query: {code}: "
                    f"{error.get('info', '')}. Check the recipe's category/search/start.")
            lag = error.get("lag")
            default = max(MIN_LAG_WAIT_S, float(lag) if isinstance(lag, int | float) else 0.0)
            wait = min(retry_after_s(response, default), self.context.fetch.max_retry_after_s)
            log.info("%s: %s, waiting %.0fs", self.name, code, wait)
            time.sleep(wait)  # the server asked us to back off
        raise SourceError(
            f"source {self.name!r}: {self.config.api} kept answering maxlag/ratelimited "
            f"after {LAG_ATTEMPTS} waits. Run the same command later to resume.")

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
            credit=values["Credit"],
            expected_sha1=str(info["sha1"]).lower() if info.get("sha1") else None,
            extra=tuple(extra),
            resume=resume,
        )


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
        cont: dict[str, Any] = {}
        while True:
            data = self.source._ask(self.client, {**params, **{k: str(v) for k, v in
                                                               cont.items()}})
            for page in (data.get("query") or {}).get("pages") or []:
                if isinstance(page, dict):
                    _merge(merged, page)
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
        return found

    def _now(self, page: dict[str, Any] | None) -> Now:
        if page is None or page.get("missing") or page.get("invalid"):
            return Now(GONE, "the API answers `missing` for it (deleted)")
        info = (page.get("imageinfo") or [{}])[0]
        if not info or info.get("filemissing"):
            return Now(GONE, "the file page has no file any more (filemissing)")
        return now_from_candidate(self.source._candidate(page, {}))

    def close(self) -> None:
        self.client.close()


def rechecker(name: str, config: Config, context: SourceContext) -> WikimediaRecheck:
    return WikimediaRecheck(name, config, context)


SOURCE = WikimediaSource
