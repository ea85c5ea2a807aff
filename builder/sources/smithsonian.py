"""`smithsonian` source: the Smithsonian Open Access API (api.si.edu, an api.data.gov service).

Requests `GET {api}/search?q=...&start=S&rows=R` (or `{api}/category/{category}/search` when
the recipe names a category such as "art_design"), paging by `start` += `rows` until a page
comes back short or `response.rowCount` is reached. The api.data.gov key is read from the
environment variable named by `api_key_env` and sent in the `X-Api-Key` header (api.data.gov
accepts it there as well as in `api_key=`), so it never appears in a URL we keep or log.

Each row's `content.descriptiveNonRepeating.online_media.media[]` entries of type "Images"
become one Candidate each, with evidence `smithsonian:usage.access` from that media item's
`usage.access` ("CC0" or "Usage conditions apply"); the licence gate decides. A row with no
image media still becomes one Candidate (no URL, no licence claim), so every row the API
returned is accounted for in the ledger (rejected as license_missing).

Image: the media `content` URL (the IDS delivery service), or with `resource = "<label>"`
the `resources[]` entry of that label (e.g. "High-resolution JPEG"), falling back to
`content` when a media item has no such resource. Creator from `content.freetext.name[]`,
title from the row's `title`, landing page from `descriptiveNonRepeating.record_link` (else
`guid`); `unit_code`, `data_source`, the row id and the metadata's own usage are kept as extra.

Common API keys: `limit` stops paging once that many candidates were offered (no further
page is asked for); `rps` spaces the API requests (api.data.gov allows 1,000 an hour per key).

Resume state: `{"page": start, "skip": n, "count": total}` (see sources/_keys.paged).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.records import Candidate, Evidence
from builder.sources import _keys
from builder.sources._keys import NOT_FOUND, as_dict, as_list, first_text
from builder.sources._museum import api_fetcher, check_api_source
from builder.sources._recheck import ApiPresence, now_from_candidate
from builder.sources.base import GONE, UNREACHABLE, Item, Now, SourceContext

DEFAULT_API = "https://api.si.edu/openaccess/api/v1.0"
SIGNUP = "https://api.data.gov/signup/"
MAX_ROWS = 1000  # the API's documented maximum for `rows`
# freetext.name labels that name who made the work, best first (others are owners, donors...)
CREATOR_LABELS = ("artist", "creator", "author", "photographer", "maker", "artist/maker",
                  "designer", "illustrator", "engraver", "sculptor", "architect", "painter")


@dataclass(frozen=True)
class Config:
    query: str = "online_media_type:Images AND media_usage:CC0"
    category: str | None = None
    api: str = DEFAULT_API
    api_key_env: str = "SI_API_KEY"
    rows: int = 100
    resource: str | None = None
    limit: int | None = None
    rps: float | None = None

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        check_api_source(self.api, limit=self.limit, rps=self.rps, file=file, where=where)
        _keys.check_env_name(self.api_key_env, file=file, key=f"{where}.api_key_env",
                             required=True)
        if not 1 <= self.rows <= MAX_ROWS:
            raise UserError(f"{file}: {where}.rows = {self.rows} must be between 1 and "
                            f"{MAX_ROWS} (the API's maximum page size).")
        if not self.query.strip():
            raise UserError(f"{file}: {where}.query is empty; give a search such as "
                            '"online_media_type:Images AND media_usage:CC0".')
        if self.category is not None and not self.category.replace("_", "").isalnum():
            raise UserError(f"{file}: {where}.category = {self.category!r} must be a category "
                            'name such as "art_design", "history_culture" or "science_technology".')
        return self


class SmithsonianSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        base = config.api.rstrip("/")
        self.endpoint = (f"{base}/category/{config.category}/search" if config.category
                         else f"{base}/search")

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        key = _keys.env_key(self.config.api_key_env, file=self.context.recipe_file,
                            key="api_key_env", signup=SIGNUP)
        with api_fetcher(self.context.fetch, rps=self.config.rps) as fetcher:
            def page(start: int) -> _keys.Page:
                url = _keys.with_query(self.endpoint, [
                    ("q", self.config.query), ("start", str(start)),
                    ("rows", str(self.config.rows))])
                body = _keys.get_page(fetcher, self.context.fetch, url, source=self.name,
                                      recipe=self.context.recipe_file,
                                      headers={"X-Api-Key": key},
                                      key_env=self.config.api_key_env)
                return self._page(body, start, _keys.strip_secrets(url))

            yield from _keys.paged(0, page, resume, limit=self.config.limit, source=self.name)

    def _page(self, body: Any, start: int, api_url: str) -> _keys.Page:
        response = as_dict(as_dict(body).get("response"))
        if "rows" not in response:
            raise UserError(
                f"source {self.name!r}: {api_url} answered without `response.rows` "
                f"({_keys.scrub(str(body)[:200])}). Check `api` in {self.context.recipe_file}."
            )
        rows = as_list(response.get("rows"))
        found: list[Candidate] = []
        for row in rows:
            found.extend(self._row(as_dict(row), api_url))
        total = response.get("rowCount")
        following = start + len(rows)
        # rowCount is the authority (an empty page before it is asked again: paged); without
        # it, a short page is the last one
        done = (following >= total) if isinstance(total, int) else len(rows) < self.config.rows
        return found, (None if done else following)

    def _row(self, row: dict[str, Any], api_url: str) -> list[Candidate]:
        content = as_dict(row.get("content"))
        dnr = as_dict(content.get("descriptiveNonRepeating"))
        freetext = as_dict(content.get("freetext"))
        row_id = str(row.get("id") or dnr.get("record_ID") or row.get("url") or "unknown")
        shared: dict[str, Any] = {
            "landing_url": first_text(dnr.get("record_link")) or first_text(dnr.get("guid")),
            "title": first_text(row.get("title")) or first_text(as_dict(dnr.get("title"))
                                                                .get("content")),
            "creator": _creator(freetext),
            "api_url": api_url,
        }
        extra = [("record_id", row_id)]
        for field in ("unit_code", "data_source"):
            if (value := first_text(dnr.get(field))) is not None:
                extra.append((field, value))
        meta_usage = first_text(as_dict(dnr.get("metadata_usage")).get("access"))
        if meta_usage is not None:
            extra.append(("metadata_usage.access", meta_usage))
        media = [as_dict(m) for m in as_list(as_dict(dnr.get("online_media")).get("media"))]
        images = [m for m in media if str(m.get("type", "Images")).lower() == "images"]
        if not images:
            return [Candidate(source=self.name, source_id=row_id, url="",
                              extra=(*extra, ("note", "record has no image media")), **shared)]
        out = []
        for index, item in enumerate(images):
            access = first_text(as_dict(item.get("usage")).get("access"))
            evidence = (Evidence("smithsonian:usage.access", access),) if access else ()
            media_id = first_text(item.get("idsId")) or f"{row_id}#{index}"
            out.append(Candidate(
                source=self.name, source_id=media_id, url=self._image_url(item) or "",
                evidence=evidence, extra=(*extra, *_media_extra(item)), **shared))
        return out

    def _image_url(self, item: dict[str, Any]) -> str | None:
        wanted = self.config.resource
        if wanted:
            for res in as_list(item.get("resources")):
                res = as_dict(res)
                label = str(res.get("label", "")).strip().lower()
                if label == wanted.strip().lower() and (url := first_text(res.get("url"))):
                    return url
        return first_text(item.get("content"))


def _creator(freetext: dict[str, Any]) -> str | None:
    names = [as_dict(n) for n in as_list(freetext.get("name"))]
    named = [(str(n.get("label", "")).strip().lower(), first_text(n.get("content")))
             for n in names]
    named = [(label, text) for label, text in named if text]
    for wanted in CREATOR_LABELS:
        for label, text in named:
            if label == wanted:
                return text
    return named[0][1] if named else None


def _media_extra(item: dict[str, Any]) -> list[tuple[str, str]]:
    kept = []
    for field in ("idsId", "guid", "caption"):
        if (value := first_text(item.get(field))) is not None:
            kept.append((f"media.{field}", value))
    return kept


class SmithsonianRecheck:
    """`GET {api}/content/{record id}` per record (its media items come with it), key in
    `X-Api-Key`; a record that answers 404, or a media item no longer in it, is gone."""

    batch = 50

    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.source = SmithsonianSource(name, config, context)
        self.key = _keys.env_key(config.api_key_env, file=context.recipe_file,
                                 key="api_key_env", signup=SIGNUP)
        self.fetcher = api_fetcher(context.fetch, rps=config.rps)
        first_row = _keys.with_query(self.source.endpoint, [
            ("q", config.query), ("start", "0"), ("rows", "1")])
        self.presence = ApiPresence(name, lambda: self._response(first_row), url=first_row,
                                    what="search", holds="rows")

    def _response(self, url: str) -> Any:
        """The `response` object of the API's answer (NOT_FOUND for a 404)."""
        body = self._get(url)
        return body if body is NOT_FOUND else as_dict(body).get("response")

    def _get(self, url: str) -> Any:
        return _keys.get_page(self.fetcher, self.source.context.fetch, url,
                              source=self.source.name, recipe=self.source.context.recipe_file,
                              headers={"X-Api-Key": self.key},
                              key_env=self.source.config.api_key_env, allow_404=True)

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        out: dict[str, Now] = {}
        records: dict[str, list[Item]] = {}
        for item in items:
            records.setdefault(item.extra_value("record_id") or item.source_id, []).append(item)
        base = self.source.config.api.rstrip("/")
        for record_id, wanted in records.items():
            url = f"{base}/content/{record_id}"
            body = self._get(url)
            if body is NOT_FOUND:
                for item in wanted:
                    out[item.key] = self.presence.gone(url)
                continue
            row = as_dict(as_dict(body).get("response"))
            if not isinstance(row.get("content"), dict):
                # `{"response": null}`, `{}`, an error object: no record at all, so nothing
                # is known of its media (every item of it once read as deleted).
                for item in wanted:
                    out[item.key] = Now(UNREACHABLE, f"{url} answered no record (no "
                                        f"response.content): {_keys.scrub(str(body)[:120])}")
                continue
            dnr = as_dict(as_dict(row.get("content")).get("descriptiveNonRepeating"))
            if "online_media" not in dnr:
                # The field itself left out (a partial answer, a renamed field): nothing is
                # known of the record's media, which once read as every item deleted.
                for item in wanted:
                    out[item.key] = Now(UNREACHABLE, f"{url} answered a record without its "
                                        "`online_media` field at all")
                continue
            cands = {c.source_id: c for c in self.source._row(row, url)}
            for item in wanted:
                cand = cands.get(item.source_id)
                out[item.key] = (Now(GONE, f"record {record_id} no longer lists this media item")
                                 if cand is None else now_from_candidate(cand))
        return out

    def close(self) -> None:
        self.fetcher.close()


def rechecker(name: str, config: Config, context: SourceContext) -> SmithsonianRecheck:
    return SmithsonianRecheck(name, config, context)


SOURCE = SmithsonianSource
