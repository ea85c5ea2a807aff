"""`cleveland` source: the Cleveland Museum of Art Open Access API
(https://openaccess-api.clevelandart.org/).

Pages of `GET {api}/artworks/?cc0=1&has_image=1&limit=L&skip=S` (plus `q`, `type`,
`department` when the recipe gives them). Each page answers `{"info": {"total": n, ...},
"data": [...]}`; paging stops when `skip` reaches `info.total` or a page comes back empty.

`cc0=1` is only a filter: every record's own `share_license_status` ("CC0",
"Copyrighted"...) is emitted as `cleveland:share_license_status` evidence and decided by
the licence gate. The image is `images.web.url` (`image_size = "print"` or `"full"` picks
those renditions); landing page `url`, creator `creators[0].description`, title, credit
`creditline`, caption the `description` as text.

Politeness: no rate is documented; `rps` defaults to 5 requests a second.

Resume state after each candidate: `{"skip": s, "index": i, "count": n}`, meaning "the page
starting at s, i records of it consumed"; after a page's last record it names the next page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from builder.errors import UserError
from builder.records import Candidate, Evidence
from builder.sources._failures import api_failed
from builder.sources._keys import NOT_FOUND, as_dict, asked_again_if_empty
from builder.sources._museum import (
    JsonClient,
    api_root,
    check_api_source,
    html_text,
    text_or_none,
)
from builder.sources._recheck import ApiPresence, now_from_candidate
from builder.sources.base import Item, Now, SourceContext

log = logging.getLogger(__name__)

API = "https://openaccess-api.clevelandart.org/api"


@dataclass(frozen=True)
class Config:
    api: str = API
    query: str | None = None
    type: str | None = None
    department: str | None = None
    cc0_only: bool = True
    image_size: Literal["web", "print", "full"] = "web"
    page_size: int = 100
    limit: int | None = None
    rps: float = 5.0

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        check_api_source(self.api, limit=self.limit, rps=self.rps, file=file, where=where)
        if not 1 <= self.page_size <= 1000:
            raise UserError(f"{file}: {where}.page_size must be between 1 and 1000.")
        return self


class ClevelandSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.root = api_root(config.api)

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        state = resume or {}
        if state.get("done"):
            return
        count = int(state.get("count", 0))
        limit = self.config.limit
        if limit is not None and count >= limit:
            return
        skip, consumed = int(state.get("skip", 0)), int(state.get("index", 0))
        client = JsonClient(self.name, self.context.fetch, rps=self.config.rps,
                            recipe=self.context.recipe_file)
        try:
            while True:
                data = asked_again_if_empty(partial(self._page, client), skip, _short_of_total)
                items = [d for d in data.get("data") or [] if isinstance(d, dict)]
                total = as_dict(data.get("info")).get("total")
                following = skip + len(items)
                if _short_of_total(data, skip):  # asked twice: the end, said
                    log.warning("source %s: the page at skip=%d was empty twice though the "
                                "API counts %d; taken as the end", self.name, skip, total)
                last_page = not items or (isinstance(total, int) and following >= total)
                for index, item in enumerate(items):
                    if index < consumed:
                        continue
                    count += 1
                    if index + 1 < len(items):
                        after: dict[str, Any] = {"skip": skip, "index": index + 1}
                    else:
                        after = {"done": True} if last_page else {"skip": following, "index": 0}
                    yield self._candidate(item, {**after, "count": count})
                    if limit is not None and count >= limit:
                        return
                if last_page:
                    return
                skip, consumed = following, 0
        finally:
            client.close()

    def _page(self, client: JsonClient, skip: int) -> dict[str, Any]:
        c = self.config
        params = {"has_image": "1", "limit": str(c.page_size), "skip": str(skip)}
        if c.cc0_only:
            params = {"cc0": "1", **params}
        for key in ("query", "type", "department"):
            value = getattr(c, key)
            if value:
                params["q" if key == "query" else key] = value
        url = f"{self.root}/artworks/"
        data = client.get(url, params)
        if not isinstance(data, dict):
            raise api_failed(self.name, f"the page at skip={skip} is not a JSON object", url)
        return data

    def _candidate(self, item: dict[str, Any], resume: dict[str, Any]) -> Candidate:
        artwork_id = item.get("id")
        status = text_or_none(item.get("share_license_status"))
        evidence = (Evidence("cleveland:share_license_status", status),) if status else ()
        images = item.get("images") if isinstance(item.get("images"), dict) else {}
        rendition = images.get(self.config.image_size) or {}
        url = text_or_none(rendition.get("url")) if isinstance(rendition, dict) else None
        creators = [c for c in item.get("creators") or [] if isinstance(c, dict)]
        extra = [(f"cleveland:{k}", str(item[k])) for k in
                 ("accession_number", "tombstone", "creation_date", "department", "type")
                 if text_or_none(item.get(k))]
        if not url:
            extra.append(("cleveland:problem", f"no images.{self.config.image_size}.url"))
        return Candidate(
            source=self.name,
            source_id=str(artwork_id),
            url=url or "",
            evidence=evidence,
            landing_url=text_or_none(item.get("url")),
            api_url=f"{self.root}/artworks/{artwork_id}",
            creator=text_or_none(creators[0].get("description")) if creators else None,
            title=text_or_none(item.get("title")),
            caption=html_text(item.get("description")),
            credit=text_or_none(item.get("creditline")),
            extra=tuple(extra),
            resume=resume,
        )


class ClevelandRecheck:
    """`GET {api}/artworks/{id}` per artwork (the API has no batch lookup); 404 is gone."""

    batch = 50

    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.source = ClevelandSource(name, config, context)
        self.client = JsonClient(name, context.fetch, rps=config.rps)
        listing = f"{self.source.root}/artworks/"
        self.presence = ApiPresence(
            name, lambda: self.client.get(listing, {"limit": "1"}, allow_404=True),
            url=f"{listing}?limit=1", what="artwork listing", holds="data")

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        out: dict[str, Now] = {}
        for item in items:
            url = f"{self.source.root}/artworks/{item.source_id}"
            data = self.client.get(url, allow_404=True)
            if data is NOT_FOUND:  # not None: a JSON `null` is no answer, not a 404
                out[item.key] = self.presence.gone(url)
                continue
            artwork = data.get("data") if isinstance(data, dict) else None
            if not isinstance(artwork, dict):
                raise api_failed(self.source.name, "the answer has no `data` object", url)
            out[item.key] = now_from_candidate(self.source._candidate(artwork, {}),
                                               image_field=("images", "images" in artwork))
        return out

    def close(self) -> None:
        self.client.close()


def rechecker(name: str, config: Config, context: SourceContext) -> ClevelandRecheck:
    return ClevelandRecheck(name, config, context)


def _short_of_total(data: dict[str, Any], skip: int) -> bool:
    """An empty page although `info.total` says more remain past `skip`."""
    total = as_dict(data.get("info")).get("total")
    return not any(isinstance(d, dict) for d in data.get("data") or []) and \
        isinstance(total, int) and skip < total


SOURCE = ClevelandSource
