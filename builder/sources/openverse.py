"""`openverse` source: discovery through the Openverse API, in small, explicitly limited pulls.

Openverse's terms of service forbid scraping or bulk-downloading its catalogue, and the
API itself caps what one query reaches (anonymous callers: pages of at most 20, about 240
results deep). So this source is for a bounded discovery pull: `limit` (default 200) is a
hard cap on candidates and cannot be raised above 2000 in a recipe. For collections at
scale, use the providers' own APIs (wikimedia, smithsonian, europeana, met, ...) instead.

Requests `GET {api}/images/?q=...&license_type=commercial&page=N&page_size=S` (plus any
`license`, `source` and `extension` filters the recipe gives), page numbers from 1, until
`page_count` is reached (an empty page before it is asked once more, then passed over:
Openverse filters dead links out of a page after paging), a page is empty when there is no `page_count`, or `limit`
candidates were offered. An optional
OAuth2 bearer token (for larger pages and rate limits) is read from the environment
variable named by `token_env` and sent as `Authorization: Bearer ...`, never in a URL.

Each result becomes one Candidate: evidence `openverse:license` ("by-sa", "cc0", "pdm"...),
`openverse:license_version` ("4.0") and `openverse:license_url`; the file is downloaded from
the provider's `url` (not from Openverse); landing page `foreign_landing_url`; `creator`,
`creator_url`, `title`; `attribution` as credit; `provider`, `source`, `id`, `filetype`
and the declared `width`/`height` kept as extra.

`rps` (a common API key) spaces the API requests further.

Resume state: `{"page": n, "skip": i, "count": total}` (see sources/_keys.paged).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from builder.errors import UserError
from builder.records import Candidate, Evidence
from builder.sources import _keys
from builder.sources._keys import NOT_FOUND, as_dict, as_list, first_text
from builder.sources._museum import api_fetcher, check_api_source
from builder.sources._recheck import ApiPresence, now_from_candidate
from builder.sources.base import UNREACHABLE, Item, Now, SourceContext

DEFAULT_API = "https://api.openverse.org/v1"
DEFAULT_LIMIT = 200
MAX_LIMIT = 2000  # Openverse's terms forbid scraping: a recipe cannot ask for a bulk pull
ANONYMOUS_PAGE_SIZE = 20  # the API refuses larger pages without a token
MAX_PAGE_SIZE = 500
EXTRA_FIELDS = ("provider", "source", "id", "filetype", "width", "height", "category")


@dataclass(frozen=True)
class Config:
    query: str
    api: str = DEFAULT_API
    license_type: Literal["commercial", "modification", "all", "all-cc"] | None = "commercial"
    license: str | None = None
    source: str | None = None
    extension: str | None = None
    page_size: int = ANONYMOUS_PAGE_SIZE
    limit: int = DEFAULT_LIMIT
    token_env: str | None = None
    rps: float | None = None

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        check_api_source(self.api, limit=None, rps=self.rps, file=file, where=where)
        _keys.check_env_name(self.token_env, file=file, key=f"{where}.token_env",
                             required=False)
        if not self.query.strip():
            raise UserError(f'{file}: {where}.query is empty; give search words such as '
                            '"lighthouse".')
        if not 1 <= self.limit <= MAX_LIMIT:
            raise UserError(
                f"{file}: {where}.limit = {self.limit}: Openverse pulls are capped at "
                f"{MAX_LIMIT} candidates because its terms of service forbid scraping or "
                "bulk-downloading the catalogue. Use a smaller limit, or build from the "
                "providers' own APIs (wikimedia, smithsonian, europeana, ...) for scale."
            )
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise UserError(f"{file}: {where}.page_size = {self.page_size} must be between 1 "
                            f"and {MAX_PAGE_SIZE} ({ANONYMOUS_PAGE_SIZE} without a token).")
        if self.page_size > ANONYMOUS_PAGE_SIZE and not self.token_env:
            raise UserError(
                f"{file}: {where}.page_size = {self.page_size}: anonymous Openverse requests "
                f"may ask for at most {ANONYMOUS_PAGE_SIZE} per page. Lower it, or register "
                "for a token and name its variable in token_env."
            )
        return self


class OpenverseSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.endpoint = f"{config.api.rstrip('/')}/images/"

    def _params(self, page: int) -> list[tuple[str, str]]:
        c = self.config
        params = [("q", c.query)]
        for key, value in (("license_type", c.license_type), ("license", c.license),
                           ("source", c.source), ("extension", c.extension)):
            if value:
                params.append((key, value))
        return [*params, ("page", str(page)), ("page_size", str(c.page_size))]

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        headers = {}
        if self.config.token_env:
            token = _keys.env_key(self.config.token_env, file=self.context.recipe_file,
                                  key="token_env")
            headers["Authorization"] = f"Bearer {token}"
        with api_fetcher(self.context.fetch, rps=self.config.rps) as fetcher:
            def page(number: int) -> _keys.Page:
                url = _keys.with_query(self.endpoint, self._params(number))
                body = _keys.get_page(fetcher, self.context.fetch, url, source=self.name,
                                      recipe=self.context.recipe_file, headers=headers,
                                      key_env=self.config.token_env)
                return self._page(body, number, _keys.strip_secrets(url))

            yield from _keys.paged(1, _keys.asking_again_if_empty(page), resume,
                                   limit=self.config.limit, source=self.name)

    def _page(self, body: Any, number: int, api_url: str) -> _keys.Page:
        body = as_dict(body)
        if "results" not in body:
            detail = _keys.scrub(str(body.get("detail") or str(body)[:200]))
            raise UserError(f"source {self.name!r}: {api_url} answered without `results`: "
                            f"{detail}. Check the source's settings in "
                            f"{self.context.recipe_file}.")
        results = [as_dict(r) for r in as_list(body.get("results"))]
        items = [self._item(r, api_url) for r in results]
        page_count = body.get("page_count")
        # `page_count` is the authority: Openverse filters dead links out of a page after
        # paging, so an empty page can come before the last one, and taken as the end it
        # silently cut the pull short. Without a count, an empty page is the end.
        last = number >= page_count if isinstance(page_count, int) else not results
        return items, (None if last else number + 1)

    def _item(self, item: dict[str, Any], api_url: str) -> Candidate:
        evidence = [Evidence(f"openverse:{field}", value)
                    for field in ("license", "license_version", "license_url")
                    if (value := _text(item.get(field))) is not None]
        extra = [(field, value) for field in EXTRA_FIELDS
                 if (value := _text(item.get(field))) is not None]
        return Candidate(
            source=self.name,
            source_id=_text(item.get("id")) or _text(item.get("url")) or "unknown",
            url=_text(item.get("url")) or "",
            evidence=tuple(evidence),
            landing_url=_text(item.get("foreign_landing_url")),
            api_url=api_url,
            creator=_text(item.get("creator")),
            creator_url=_text(item.get("creator_url")),
            title=_text(item.get("title")),
            credit=_text(item.get("attribution")),
            extra=tuple(extra),
        )


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return first_text(value)


class OpenverseRecheck:
    """`GET {api}/images/{id}/` per image (the optional token as for a build); 404 is gone."""

    batch = 20

    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.source = OpenverseSource(name, config, context)
        self.headers: dict[str, str] = {}
        if config.token_env:
            token = _keys.env_key(config.token_env, file=context.recipe_file, key="token_env")
            self.headers["Authorization"] = f"Bearer {token}"
        self.fetcher = api_fetcher(context.fetch, rps=config.rps)
        first_page = _keys.with_query(self.source.endpoint, self.source._params(1))
        self.presence = ApiPresence(name, lambda: self._get(first_page),
                                    url=_keys.strip_secrets(first_page), what="image search",
                                    holds="results")

    def _get(self, url: str) -> Any:
        return _keys.get_page(self.fetcher, self.source.context.fetch, url,
                              source=self.source.name, recipe=self.source.context.recipe_file,
                              headers=self.headers, key_env=self.source.config.token_env,
                              allow_404=True)

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        out: dict[str, Now] = {}
        for item in items:
            url = f"{self.source.endpoint}{item.source_id}/"
            body = self._get(url)
            if body is NOT_FOUND:
                out[item.key] = self.presence.gone(url)
            elif not isinstance(body, dict) or "id" not in body:
                # `null`, `{}`, `{"detail": ...}`: no image record, so nothing is known of
                # it (read as a record, it had no URL: "deleted", for every sample).
                out[item.key] = Now(UNREACHABLE, f"{url} answered no image record (no `id`): "
                                    f"{_keys.scrub(str(body)[:120])}")
            else:
                out[item.key] = now_from_candidate(self.source._item(body, url),
                                                   image_field=("url", "url" in body))
        return out

    def close(self) -> None:
        self.fetcher.close()


def rechecker(name: str, config: Config, context: SourceContext) -> OpenverseRecheck:
    return OpenverseRecheck(name, config, context)


SOURCE = OpenverseSource
