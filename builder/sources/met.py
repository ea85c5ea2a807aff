"""`met` source: The Metropolitan Museum of Art Collection API
(https://metmuseum.github.io/).

First the object ids: `GET {api}/objects` (optionally `?departmentIds=1|11`), or with
`query` `GET {api}/search?q=...&hasImages=true&isPublicDomain=true` (plus `departmentId`
when one department is given). Both answer `{"total": n, "objectIDs": [...]}` in one
response; the ids are taken in ascending order so a resumed build finds its place even if
objects were added since. Then each object: `GET {api}/objects/{id}`.

Evidence is `met:isPublicDomain` ("true"/"false"), emitted either way: the licence gate
admits true (the Met's Open Access images are CC0) and refuses false, quoting the object's
`rightsAndReproduction` (kept as `met:rightsAndReproduction` evidence) when it has one. The image is
`primaryImage`; with `additional_images = true` each of `additionalImages` is a candidate
too, with source_id `<id>-<n>` (n from 1) and the same evidence. Landing page `objectURL`,
creator `artistDisplayName` (link: `artistWikidata_URL`, else `artistULAN_URL`), title,
credit `creditLine`.

An object that answers 404 (ids are listed that no longer resolve) still becomes a
candidate, with no URL and no evidence, so the ledger records it as `license_missing` with
`met:problem` in provenance: nothing the API listed is silently lost. A public-domain
object without an image gets an empty URL and ends as `http_error`.

Politeness: the Met asks for at most 80 requests per second; `rps` (default 80) spaces
the requests to the API host.

Resume state after each candidate: `{"after": <object id>, "image": <n images of it done>,
"complete": <all its images done>, "count": n}`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.records import Candidate, Evidence
from builder.sources._failures import api_failed
from builder.sources._keys import NOT_FOUND
from builder.sources._museum import (
    JsonClient,
    api_root,
    check_api_source,
    text_or_none,
)
from builder.sources._recheck import ApiPresence, now_from_candidate
from builder.sources.base import GONE, UNREACHABLE, Item, Now, SourceContext

API = "https://collectionapi.metmuseum.org/public/collection/v1"
MAX_RPS = 80.0


@dataclass(frozen=True)
class Config:
    api: str = API
    department_ids: tuple[int, ...] = ()
    query: str | None = None
    additional_images: bool = False
    limit: int | None = None
    rps: float = MAX_RPS

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        check_api_source(self.api, limit=self.limit, rps=self.rps, file=file, where=where,
                         max_rps=MAX_RPS, rps_reason="the Met's stated limit")
        if self.query is not None and not self.query.strip():
            raise UserError(f"{file}: {where}.query is empty; give search words or remove it.")
        if self.query and len(self.department_ids) > 1:
            raise UserError(
                f"{file}: {where}: the Met's /search takes one departmentId; with query give "
                "at most one of department_ids, or make one source per department.")
        return self


class MetSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.root = api_root(config.api)

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        state = resume or {}
        count = int(state.get("count", 0))
        limit = self.config.limit
        if limit is not None and count >= limit:
            return
        client = JsonClient(self.name, self.context.fetch, rps=self.config.rps,
                            recipe=self.context.recipe_file)
        try:
            ids = self._object_ids(client)
            after, done = state.get("after"), int(state.get("image", 0))
            start = 0
            if isinstance(after, int):
                # An object left half done (additional images) is asked for again.
                partial = done > 0 and not state.get("complete", True)
                start = (bisect.bisect_left if partial else bisect.bisect_right)(ids, after)
                if not (partial and start < len(ids) and ids[start] == after):
                    done = 0
            for object_id in ids[start:]:
                cands = self._object(client, object_id)
                for index, cand in enumerate(cands):
                    if index < done:
                        continue
                    count += 1
                    yield replace(cand, resume={
                        "after": object_id, "image": index + 1,
                        "complete": index + 1 == len(cands), "count": count})
                    if limit is not None and count >= limit:
                        return
                done = 0
        finally:
            client.close()

    def _object_ids(self, client: JsonClient) -> list[int]:
        c = self.config
        if c.query:
            params = {"q": c.query, "hasImages": "true", "isPublicDomain": "true"}
            if c.department_ids:
                params["departmentId"] = str(c.department_ids[0])
            url = f"{self.root}/search"
        else:
            params = {}
            if c.department_ids:
                params["departmentIds"] = "|".join(str(d) for d in c.department_ids)
            url = f"{self.root}/objects"
        data = client.get(url, params)
        if not isinstance(data, dict):
            raise api_failed(self.name, "the object list is not a JSON object", url)
        ids = data.get("objectIDs") or []  # /search answers null when nothing matches
        return sorted({int(i) for i in ids if isinstance(i, int) or str(i).isdigit()})

    def _object(self, client: JsonClient, object_id: int) -> list[Candidate]:
        url = f"{self.root}/objects/{object_id}"
        return self._candidates(object_id, url, client.get(url, allow_404=True))

    def _candidates(self, object_id: int, url: str, obj: Any) -> list[Candidate]:
        """The candidates of one object's record (`obj` as the API answered it)."""
        if not isinstance(obj, dict) or obj.get("objectID") is None:
            # Only a 404 is the Met's "gone"; `null`, `{}` or an error object is no record.
            problem = "object not found (HTTP 404)" if obj is NOT_FOUND else "object is not JSON"
            return [Candidate(source=self.name, source_id=str(object_id), url="", api_url=url,
                              extra=(("met:problem", problem),))]
        flag = obj.get("isPublicDomain")
        evidence: tuple[Evidence, ...] = ()
        if isinstance(flag, bool):
            evidence = (Evidence("met:isPublicDomain", "true" if flag else "false"),)
        elif flag is not None:
            evidence = (Evidence("met:isPublicDomain", str(flag)),)
        rights = text_or_none(obj.get("rightsAndReproduction"))
        if rights:  # quoted when the gate refuses a work that is not public domain
            evidence += (Evidence("met:rightsAndReproduction", rights),)
        images = [str(obj.get("primaryImage") or "")]
        if self.config.additional_images:
            images += [str(u) for u in obj.get("additionalImages") or [] if u]
        creator_url = text_or_none(obj.get("artistWikidata_URL")) or \
            text_or_none(obj.get("artistULAN_URL"))
        extra = tuple((f"met:{k}", str(obj[k])) for k in
                      ("accessionNumber", "department", "objectDate", "medium")
                      if text_or_none(obj.get(k)))
        return [
            Candidate(
                source=self.name,
                source_id=str(object_id) if n == 0 else f"{object_id}-{n}",
                url=image,
                evidence=evidence,
                landing_url=text_or_none(obj.get("objectURL")),
                api_url=url,
                creator=text_or_none(obj.get("artistDisplayName")),
                creator_url=creator_url,
                title=text_or_none(obj.get("title")),
                credit=text_or_none(obj.get("creditLine")),
                extra=extra if image else extra + (("met:problem", NO_IMAGE if n or
                                                    "primaryImage" in obj else NO_FIELD),),
            )
            for n, image in enumerate(images)
        ]


NO_IMAGE = "no image"  # `primaryImage` empty: the Met lists no image of the object
NO_FIELD = "no primaryImage field"  # the record lacks the field itself: nothing is known


class MetRecheck:
    """`GET {api}/objects/{id}` once per object (its additional images come with it); an
    object that answers 404, or an image no longer listed, is gone."""

    batch = 50

    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.source = _every_image(MetSource(name, config, context))
        self.client = JsonClient(name, context.fetch, rps=config.rps)
        departments = f"{self.source.root}/departments"
        self.presence = ApiPresence(name, lambda: self.client.get(departments, allow_404=True),
                                    url=departments, what="departments list",
                                    holds="departments")

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        out: dict[str, Now] = {}
        objects: dict[str, list[Item]] = {}
        for item in items:
            objects.setdefault(item.source_id.split("-", 1)[0], []).append(item)
        for object_id, wanted in objects.items():
            if not object_id.isdigit():
                for item in wanted:
                    out[item.key] = Now(GONE, f"{object_id!r} is not a Met object id")
                continue
            url = f"{self.source.root}/objects/{object_id}"
            record = self.client.get(url, allow_404=True)
            cands = {c.source_id: c for c in self.source._candidates(int(object_id), url, record)}
            for item in wanted:
                out[item.key] = self._now(item, cands, record, url)
        return out

    def _now(self, item: Item, cands: dict[str, Candidate], record: Any, url: str) -> Now:
        if record is NOT_FOUND:
            return self.presence.gone(url)
        if not isinstance(record, dict) or record.get("objectID") is None:
            # Every image of the object, its additional ones too: no record says nothing.
            return Now(UNREACHABLE, f"{url} answered no object record (no objectID)")
        cand = cands.get(item.source_id)
        if cand is None:
            if "-" in item.source_id and "additionalImages" not in record:
                # As `primaryImage` below: a list left out of the answer says nothing of the
                # object's other images; `additionalImages: []` is the Met's "none".
                return Now(UNREACHABLE, f"{url} answered a record without its "
                                        "`additionalImages` field at all")
            return Now(GONE, "the object no longer lists this image")
        if dict(cand.extra).get("met:problem") == NO_FIELD:
            # Left out of the answer (a partial answer, a renamed field), it says nothing of
            # the image; `primaryImage: ""` is the Met's "no image".
            return Now(UNREACHABLE, f"{url} answered a record without its `primaryImage` "
                                    "field at all")
        return now_from_candidate(cand)

    def close(self) -> None:
        self.client.close()


def _every_image(source: MetSource) -> MetSource:
    """The source asked for every image of an object: a sample may be an additional image
    even if the recipe's `additional_images` was switched off since."""
    source.config = replace(source.config, additional_images=True)
    return source


def rechecker(name: str, config: Config, context: SourceContext) -> MetRecheck:
    return MetRecheck(name, config, context)


SOURCE = MetSource
