"""`europeana` source: the Europeana Search API (api.europeana.eu/record/v2/search.json).

Requests `GET {api}/search.json?wskey=KEY&query=...&reusability=open&media=true
&qf=TYPE:IMAGE[&qf=...]&profile=standard&rows=R&cursor=C`, starting with `cursor=*` and
continuing with each response's `nextCursor` until a response has none (cursor-based
pagination, the API's way for harvesting). The key comes from the environment variable
named by `api_key_env`; Europeana takes it as the `wskey` query parameter, so it is
stripped from every URL we keep (provenance `api_url`) and scrubbed from fetch logs and
error messages (sources/_keys).

Each item becomes one Candidate: evidence `europeana:rights` = each URI of its `rights`
list (URIs that disagree are a license_conflict at the gate); image `edmIsShownBy[0]`;
landing page `edmIsShownAt[0]`, else `guid`; creator `dcCreator[0]`; title `title[0]`;
caption `dcDescription[0]`; `dataProvider[0]`, `provider[0]`, `country[0]` and the record
`id` kept as extra. An item without `edmIsShownBy` is still offered (no URL) so it is
accounted for in the ledger.

`reusability = "open"` asks only for openly licensed items (PD, CC0, CC BY, CC BY-SA);
the licence gate still reads every item's own `rights`.

Common API keys: `limit` stops paging once that many candidates were offered (no further
page is asked for); `rps` spaces the API requests.

Resume state: `{"page": cursor, "skip": n, "count": total}` (see sources/_keys.paged).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from builder.errors import UserError
from builder.records import Candidate, Evidence
from builder.sources import _keys
from builder.sources._failures import api_failed
from builder.sources._keys import NOT_FOUND, as_dict, as_list, first_text
from builder.sources._museum import api_fetcher, check_api_source
from builder.sources._recheck import chunked, now_from_candidate
from builder.sources.base import GONE, UNREACHABLE, Item, Now, SourceContext

DEFAULT_API = "https://api.europeana.eu/record/v2"
SIGNUP = "https://pro.europeana.eu/page/get-api"
MAX_ROWS = 100  # the Search API's maximum `rows`


@dataclass(frozen=True)
class Config:
    query: str
    api: str = DEFAULT_API
    api_key_env: str = "EUROPEANA_API_KEY"
    reusability: Literal["open", "restricted", "permission"] = "open"
    qf: tuple[str, ...] = ()
    rows: int = 100
    profile: str = "standard"
    limit: int | None = None
    rps: float | None = None

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        check_api_source(self.api, limit=self.limit, rps=self.rps, file=file, where=where)
        _keys.check_env_name(self.api_key_env, file=file, key=f"{where}.api_key_env",
                             required=True)
        if not self.query.strip():
            raise UserError(f'{file}: {where}.query is empty; give a search such as "*" or '
                            '"who:(Rembrandt)".')
        if not 1 <= self.rows <= MAX_ROWS:
            raise UserError(f"{file}: {where}.rows = {self.rows} must be between 1 and "
                            f"{MAX_ROWS} (the Search API's maximum page size).")
        return self


class EuropeanaSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.endpoint = f"{config.api.rstrip('/')}/search.json"

    def _params(self, cursor: str) -> list[tuple[str, str]]:
        c = self.config
        qf = [("qf", "TYPE:IMAGE")] + [("qf", f) for f in c.qf if f != "TYPE:IMAGE"]
        return [("query", c.query), ("reusability", c.reusability), ("media", "true"), *qf,
                ("profile", c.profile), ("rows", str(c.rows)), ("cursor", cursor)]

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        key = _keys.env_key(self.config.api_key_env, file=self.context.recipe_file,
                            key="api_key_env", signup=SIGNUP)
        with api_fetcher(self.context.fetch, rps=self.config.rps) as fetcher:
            def page(cursor: str) -> _keys.Page:
                params = self._params(cursor)
                url = _keys.with_query(self.endpoint, [("wskey", key), *params])
                body = _keys.get_page(fetcher, self.context.fetch, url, source=self.name,
                                      recipe=self.context.recipe_file,
                                      key_env=self.config.api_key_env)
                return self._page(body, cursor, _keys.with_query(self.endpoint, params))

            yield from _keys.paged("*", page, resume, limit=self.config.limit)

    def _page(self, body: Any, cursor: str, api_url: str) -> _keys.Page:
        body = as_dict(body)
        if body.get("success") is False or "items" not in body and "itemsCount" not in body:
            error = _keys.scrub(str(body.get("error") or str(body)[:200]))
            raise UserError(
                f"source {self.name!r}: {api_url} did not return results: {error}. Check "
                f"`query` and `qf` in {self.context.recipe_file}."
            )
        items = [self._item(as_dict(item), api_url) for item in as_list(body.get("items"))]
        following = first_text(body.get("nextCursor"))
        return items, (following if items and following != cursor else None)

    def _item(self, item: dict[str, Any], api_url: str) -> Candidate:
        rights = [r.strip() for r in as_list(item.get("rights")) if isinstance(r, str)
                  and r.strip()]
        if isinstance(item.get("rights"), str) and item["rights"].strip():
            rights = [item["rights"].strip()]
        # Every rights URI is a claim: the item's web resources may carry different ones,
        # and the first alone admitted [PDM, In Copyright] as public domain. Ones that
        # disagree are a license_conflict at the gate.
        evidence = tuple(Evidence("europeana:rights", r) for r in dict.fromkeys(rights))
        record_id = first_text(item.get("id")) or first_text(item.get("guid")) or "unknown"
        extra = [("record_id", record_id)]
        for field in ("dataProvider", "provider", "country"):
            if (value := first_text(item.get(field))) is not None:
                extra.append((field, value))
        if not first_text(item.get("edmIsShownBy")):
            extra.append(("note", "item has no edmIsShownBy (no direct media URL)"))
        return Candidate(
            source=self.name,
            source_id=record_id.lstrip("/"),
            url=first_text(item.get("edmIsShownBy")) or "",
            evidence=evidence,
            landing_url=first_text(item.get("edmIsShownAt")) or first_text(item.get("guid")),
            api_url=api_url,
            creator=first_text(item.get("dcCreator")),
            title=first_text(item.get("title")),
            caption=first_text(item.get("dcDescription")),
            extra=tuple(extra),
        )


class EuropeanaRecheck:
    """The Search API asked for up to 100 records at once by id
    (`query=europeana_id:("/a/b" OR ...)`, no reusability filter, so a record whose rights
    were restricted still answers). A record the search no longer returns is asked of the
    Record API (`{api}/{id}.json`): only its 404 is gone."""

    batch = MAX_ROWS

    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.source = EuropeanaSource(name, config, context)
        self.key = _keys.env_key(config.api_key_env, file=context.recipe_file,
                                 key="api_key_env", signup=SIGNUP)
        self.fetcher = api_fetcher(context.fetch, rps=config.rps)

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        out: dict[str, Now] = {}
        for chunk in chunked(items, self.batch):
            ids = " OR ".join(f'"/{i.source_id}"' for i in chunk)
            params = [("query", f"europeana_id:({ids})"), ("profile", self.source.config.profile),
                      ("rows", str(len(chunk)))]
            url = _keys.with_query(self.source.endpoint, [("wskey", self.key), *params])
            api_url = _keys.with_query(self.source.endpoint, params)
            body = as_dict(_keys.get_page(self.fetcher, self.source.context.fetch, url,
                                          source=self.source.name,
                                          recipe=self.source.context.recipe_file,
                                          key_env=self.source.config.api_key_env))
            items = body.get("items")
            # The API leaves `items` out when nothing matched (itemsCount 0); `items: null`
            # or left out beside a count above 0 is a broken list, once read as "every
            # record deleted".
            whole = isinstance(items, list) or "items" not in body and body.get("itemsCount") == 0
            if body.get("success") is not True or not whole:
                # A record left out of a whole answer is gone; of a failed one, unknown.
                raise api_failed(self.source.name, "the Search API's answer is not a "
                                 "successful result list; nothing was judged", api_url)
            records = [as_dict(i) for i in as_list(body.get("items"))]
            found = {c.source_id: (c, "edmIsShownBy" in record)
                     for record in records for c in (self.source._item(record, api_url),)}
            for item in chunk:
                cand, has_field = found.get(item.source_id, (None, False))
                out[item.key] = self._alone(item) if cand is None else now_from_candidate(
                    cand, image_field=("edmIsShownBy", has_field))
        return out

    def _alone(self, item: Item) -> Now:
        """A record the search left out, asked of the Record API. The search is an index
        that can fall behind its records (a re-index, a provider's set being reloaded):
        read as gone, every record it missed was `deleted`, refused, and taken down."""
        record_url = f"{self.source.config.api.rstrip('/')}/{item.source_id}.json"
        body = _keys.get_page(self.fetcher, self.source.context.fetch,
                              _keys.with_query(record_url, [("wskey", self.key)]),
                              source=self.source.name, recipe=self.source.context.recipe_file,
                              key_env=self.source.config.api_key_env, allow_404=True)
        left_out = "the Search API no longer returns this record"
        if body is NOT_FOUND:
            return Now(GONE, f"{left_out}, and the Record API answers HTTP 404 for {record_url}")
        if as_dict(body).get("success") is True and isinstance(as_dict(body).get("object"), dict):
            return Now(UNREACHABLE, f"{left_out}, but the Record API still has it ({record_url}): "
                                    "the search index may be behind; nothing is known of it")
        return Now(UNREACHABLE, f"{left_out}, and {record_url} answered no record: nothing is "
                                "known of it")

    def close(self) -> None:
        self.fetcher.close()


def rechecker(name: str, config: Config, context: SourceContext) -> EuropeanaRecheck:
    return EuropeanaRecheck(name, config, context)


SOURCE = EuropeanaSource
