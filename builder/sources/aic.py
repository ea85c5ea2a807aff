"""`aic` source: the Art Institute of Chicago API (https://api.artic.edu/docs/).

Pages of `GET {api}/artworks/search` with `query[term][is_public_domain]=true` (and `q`
when the recipe gives `query`), or of `GET {api}/artworks` when `public_domain_only =
false` and no query; both with `fields=...`, `page` (from 1) and `limit` (at most 100).
Each page answers `{"pagination": {"total_pages", "current_page", ...}, "data": [...],
"config": {"iiif_url": ...}}`; paging stops after `total_pages` (an empty page before it is
asked once more, then passed over, up to 5 in a row), or at an empty page when the answer has no `total_pages`.
Elasticsearch-backed search stops at 10,000 results (page * limit); for more, the museum
points to its data dumps.

Evidence is `aic:is_public_domain` ("true"/"false"), emitted either way, plus the artwork's
`copyright_notice` as `aic:copyright_notice` when it has one (informational: the gate quotes
it when it refuses a work the museum marks not public domain). The image is
`{config.iiif_url}/{image_id}/full/{image_width},/0/default.jpg` (843 px wide by default, the
size the AIC docs recommend); an artwork without `image_id` gets an empty URL. Landing page
`https://www.artic.edu/artworks/{id}`, creator `artist_title` (else the first line of
`artist_display`), credit `credit_line`, caption the image's `thumbnail.alt_text`.

Politeness: the documented limit is 60 requests a minute, so `rps` defaults to 1.0; the
`AIC-User-Agent` header carries the recipe's User-Agent, as the docs ask.

Resume state after each candidate: `{"page": p, "index": i, "count": n}`, meaning "page p,
i artworks of it consumed"; after a page's last artwork it already names the next page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.records import Candidate, Evidence
from builder.sources._failures import api_failed
from builder.sources._keys import NOT_FOUND, as_dict, asked_again_if_empty
from builder.sources._museum import (
    JsonClient,
    api_root,
    check_api_source,
    text_or_none,
    with_library,
)
from builder.sources._recheck import chunked, now_from_candidate
from builder.sources.base import GONE, UNREACHABLE, Item, Now, SourceContext

API = "https://api.artic.edu/api/v1"
IIIF = "https://www.artic.edu/iiif/2"
FIELDS = ("id,title,image_id,is_public_domain,artist_display,artist_title,credit_line,"
          "date_display,medium_display,copyright_notice,thumbnail")
SEARCH_DEPTH = 10_000
MAX_RPS = 1.0  # 60 requests per minute
EMPTY_PAGES_IN_A_ROW = 5  # before `total_pages`: more than a hiccup, the count is wrong

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    api: str = API
    query: str | None = None
    public_domain_only: bool = True
    page_size: int = 100
    image_width: int = 843
    limit: int | None = None
    rps: float = MAX_RPS

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        check_api_source(self.api, limit=self.limit, rps=self.rps, file=file, where=where,
                         max_rps=MAX_RPS, rps_reason="the AIC's documented 60 requests a minute")
        if not 1 <= self.page_size <= 100:
            raise UserError(f"{file}: {where}.page_size must be between 1 and 100 (the API's cap).")
        if not 1 <= self.image_width <= 3000:
            raise UserError(f"{file}: {where}.image_width must be between 1 and 3000 pixels.")
        if self.query is not None and not self.query.strip():
            raise UserError(f"{file}: {where}.query is empty; give search words or remove it.")
        return self


class AicSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.root = api_root(config.api)
        self.search = bool(config.query) or config.public_domain_only

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        state = resume or {}
        if state.get("done"):
            return
        count = int(state.get("count", 0))
        limit = self.config.limit
        if limit is not None and count >= limit:
            return
        page, skip = int(state.get("page", 1)), int(state.get("index", 0))
        agent = with_library(self.context.fetch.user_agent)
        client = JsonClient(self.name, self.context.fetch, rps=self.config.rps,
                            recipe=self.context.recipe_file,
                            headers={"AIC-User-Agent": agent})
        empty_in_a_row = 0
        try:
            while True:
                # An empty page before `total_pages` is asked once more, then passed over.
                # Several in a row: the count is wrong, and the source ends there, saying so.
                data = asked_again_if_empty(partial(self._page, client), page,
                                            self._empty_before_the_end)
                items = _items(data)
                iiif = str(as_dict(data.get("config")).get("iiif_url") or IIIF).rstrip("/")
                last_page = self._last_page(data, page, items)
                empty_in_a_row = 0 if items else empty_in_a_row + 1
                if empty_in_a_row >= EMPTY_PAGES_IN_A_ROW and not last_page:
                    log.warning("source %s: pages %d-%d were empty though the API counts "
                                "more; taken as the end", self.name,
                                page - empty_in_a_row + 1, page)
                    return
                for index, item in enumerate(items):
                    if index < skip:
                        continue
                    count += 1
                    if index + 1 < len(items):
                        after: dict[str, Any] = {"page": page, "index": index + 1}
                    else:
                        after = {"done": True} if last_page else {"page": page + 1, "index": 0}
                    yield self._candidate(item, iiif, {**after, "count": count})
                    if limit is not None and count >= limit:
                        return
                if last_page:
                    return
                page, skip = page + 1, 0
        finally:
            client.close()

    def _page(self, client: JsonClient, page: int) -> dict[str, Any]:
        c = self.config
        params = {"fields": FIELDS, "page": str(page), "limit": str(c.page_size)}
        if self.search:
            if c.query:
                params["q"] = c.query
            if c.public_domain_only:
                params["query[term][is_public_domain]"] = "true"
            url = f"{self.root}/artworks/search"
        else:
            url = f"{self.root}/artworks"
        data = client.get(url, params)
        if not isinstance(data, dict):
            raise api_failed(self.name, f"page {page} is not a JSON object", url)
        return data

    def _empty_before_the_end(self, data: dict[str, Any], page: int) -> bool:
        return not _items(data) and not self._last_page(data, page, [])

    def _last_page(self, data: dict[str, Any], page: int, items: list[Any]) -> bool:
        pagination = as_dict(data.get("pagination"))
        total_pages = pagination.get("total_pages")
        if isinstance(total_pages, int) and page >= total_pages:
            return True
        if not items and not isinstance(total_pages, int):
            return True
        # Search results end at a fixed depth; asking past it is an API error.
        return self.search and (page + 1) * self.config.page_size > SEARCH_DEPTH

    def _candidate(self, item: dict[str, Any], iiif: str, resume: dict[str, Any]) -> Candidate:
        artwork_id = item.get("id")
        flag = item.get("is_public_domain")
        evidence: tuple[Evidence, ...] = ()
        if isinstance(flag, bool):
            evidence = (Evidence("aic:is_public_domain", "true" if flag else "false"),)
        elif flag is not None:
            evidence = (Evidence("aic:is_public_domain", str(flag)),)
        notice = text_or_none(item.get("copyright_notice"))
        if notice:  # quoted when the gate refuses a work that is not public domain
            evidence += (Evidence("aic:copyright_notice", notice),)
        image_id = text_or_none(item.get("image_id"))
        url = f"{iiif}/{image_id}/full/{self.config.image_width},/0/default.jpg" \
            if image_id else ""
        display = text_or_none(item.get("artist_display"))
        creator = text_or_none(item.get("artist_title")) or \
            (display.splitlines()[0].strip() if display else None)
        thumbnail = item.get("thumbnail") if isinstance(item.get("thumbnail"), dict) else {}
        extra = [(f"aic:{k}", str(item[k])) for k in
                 ("artist_display", "date_display", "medium_display")
                 if text_or_none(item.get(k))]
        if not image_id:
            extra.append(("aic:problem", "no image_id"))
        return Candidate(
            source=self.name,
            source_id=str(artwork_id),
            url=url,
            evidence=evidence,
            landing_url=f"https://www.artic.edu/artworks/{artwork_id}",
            api_url=f"{self.root}/artworks/{artwork_id}",
            creator=creator,
            title=text_or_none(item.get("title")),
            caption=text_or_none(thumbnail.get("alt_text")),
            credit=text_or_none(item.get("credit_line")),
            extra=tuple(extra),
            resume=resume,
        )


class AicRecheck:
    """`GET {api}/artworks?ids=1,2,...&fields=...`: up to 100 artworks a request. An id the
    answer leaves out is asked alone (`GET {api}/artworks/{id}`): only its 404 is gone."""

    batch = 100  # the API's `limit` cap

    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.source = AicSource(name, config, context)
        agent = with_library(context.fetch.user_agent)
        self.client = JsonClient(name, context.fetch, rps=config.rps,
                                 headers={"AIC-User-Agent": agent})

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        out: dict[str, Now] = {}
        for chunk in chunked(items, self.batch):
            url = f"{self.source.root}/artworks"
            data = self.client.get(url, {"ids": ",".join(i.source_id for i in chunk),
                                         "fields": FIELDS, "limit": str(len(chunk))})
            if not isinstance(data, dict) or not isinstance(data.get("data"), list):
                # Without its `data` list the answer says nothing about these ids: an id
                # left out of a whole answer is gone, one left out of a broken answer is not.
                raise api_failed(self.source.name, "the answer is not a JSON object with a "
                                 "`data` list; nothing was judged", url)
            iiif = str((data.get("config") or {}).get("iiif_url") or IIIF).rstrip("/")
            found = {str(d.get("id")): d for d in data.get("data") or [] if isinstance(d, dict)}
            for item in chunk:
                artwork = found.get(item.source_id)
                out[item.key] = self._now(artwork, iiif) if artwork is not None else \
                    self._alone(item, iiif)
        return out

    def _now(self, artwork: dict[str, Any], iiif: str) -> Now:
        return now_from_candidate(self.source._candidate(artwork, iiif, {}),
                                  image_field=("image_id", "image_id" in artwork))

    def _alone(self, item: Item, iiif: str) -> Now:
        """An artwork the batch's answer left out, asked for alone. A batch that silently
        drops ids (an index being rebuilt, a search backend behind) once made every one of
        them `deleted`; the API's 404 for the artwork itself is its word that it is gone."""
        url = f"{self.source.root}/artworks/{item.source_id}"
        data = self.client.get(url, {"fields": FIELDS}, allow_404=True)
        if data is NOT_FOUND:
            return Now(GONE, f"HTTP 404 from {url}: the API no longer has this artwork")
        artwork = data.get("data") if isinstance(data, dict) else None
        if not isinstance(artwork, dict) or str(artwork.get("id")) != item.source_id:
            return Now(UNREACHABLE, f"left out of the API's answer for its batch, and {url} "
                                    "answered no record of it: nothing is known of it")
        return self._now(artwork, iiif)

    def close(self) -> None:
        self.client.close()


def rechecker(name: str, config: Config, context: SourceContext) -> AicRecheck:
    return AicRecheck(name, config, context)


def _items(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in data.get("data") or [] if isinstance(d, dict)]


SOURCE = AicSource
