"""The near-duplicate index split over Ray actors, so it outgrows the driver's memory.

At 328 bytes per admitted image (measured, `scripts/bench/near_index.py`), one driver holds
~100M hashes in 33 GB; a billion need 330 GB. `[executor] index_parts = P` puts the index in
P Ray actors instead, each an exact multi-index-hashing `NearIndex` over the samples whose key
falls in its part (crc32 of the key, mod P: fixed by the key alone, so a part can be rebuilt
from the ledger without knowing the order anything was added in).

A query goes to every part; each answers exactly for its codes, and the driver reconciles the
answers by the same rule the single index uses: nearest PDQ distance first, ties to the
earliest key (the first indexed). So the admitted set equals the local build's. Adds are
sent without waiting: Ray runs one caller's calls to an actor in the order they were made, so
a later query always sees every earlier add.

A query costs a round trip to every part, so the driver asks ahead: as soon as a batch of
outcomes is back, `prefetch` sends all their queries at once. A prefetched answer covers the
index as it was when it was asked; when the candidate's turn comes, `search_prefetched` adds
the matches among the samples admitted since (a small flat scan of recent adds, kept here).
Both together are exactly the answer a query made at that moment would get: the reconcile.

A part whose actor dies (node lost, OOM) is rebuilt from the ledger (`reload`, read through
the driver's own connection, which sees the uncommitted window too) and the call retried.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError

from builder.dedup import Hashes, Match, NearIndex, code_batches, pdq_code, phash_int
from builder.recipe import DedupConfig

log = logging.getLogger(__name__)

# (key, pdq hex, pdq quality, phash hex) of every sample in the output, in key order
Rows = Callable[[], Iterable[tuple[str, str | None, int | None, str | None]]]
# times one call may find its part dead and rebuild it before the build stops
REBUILDS_PER_CALL = 2
# recent adds kept beyond what any prefetched answer still needs, before they are dropped
RECENT_SLACK = 1024
ADD_BATCH = 256  # admitted samples held before they are sent to their parts


def part_of(key: str, parts: int) -> int:
    return zlib.crc32(key.encode("utf-8")) % parts


@ray.remote(num_cpus=0)  # memory-bound and mostly idle: must not take a stage task's CPU
class _IndexPart:
    def __init__(self, config: DedupConfig) -> None:
        self.index = NearIndex(config)

    def add_codes(self, keys: list[str], pdq: np.ndarray, phash: np.ndarray,
                  defer: bool) -> None:
        self.index.add_codes(keys, pdq, phash, defer=defer)

    def compact(self) -> int:
        self.index.compact()
        return len(self.index)

    def search_many(self, queries: list[Hashes]) -> list[list[Match]]:
        return self.index.search_many(queries)

    def size(self) -> int:
        return len(self.index)


@dataclass
class _Group:
    """Queries sent together, when `generation` samples had been added."""

    queries: list[Hashes]
    refs: list[Any]
    generation: int
    answers: list[list[Match]] | None = None


@dataclass(frozen=True)
class Prefetched:
    group: _Group
    row: int


def _merge(found: Iterable[Match]) -> list[Match]:
    """The single index's order: nearest first, ties to the first indexed (the lowest key);
    a key found twice (a part rebuilt after the query was sent) once."""
    best: dict[str, Match] = {}
    for m in found:
        if m.key not in best or m.pdq_distance < best[m.key].pdq_distance:
            best[m.key] = m
    return sorted(best.values(), key=lambda m: (m.pdq_distance, m.key))


class RayNearIndex:
    """What the pipeline needs of a `NearIndex` (usable, add, search), over P Ray actors."""

    def __init__(self, config: DedupConfig, parts: int, reload: Rows, *,
                 recent_slack: int = RECENT_SLACK) -> None:
        if parts < 1:
            raise ValueError("index_parts must be at least 1")
        self.config = config
        self.parts = parts
        self.reload = reload
        self.rebuilds = 0
        self.generation = 0  # samples added so far
        self.recent_slack = recent_slack
        # the samples added since the oldest prefetched answer still to be used
        self.recent = NearIndex(config, use_faiss=False, use_hashing=False)
        self.recent_from = 0  # the generation of recent's first sample
        self.recent_entries: list[tuple[str, Hashes]] = []
        self.added_at: dict[str, int] = {}  # generation of each recent sample
        self.actors: list[Any] = [None] * parts
        self.unsent: list[list[tuple[str, np.ndarray, int]]] = [[] for _ in range(parts)]
        self.unsent_count = 0
        for part in range(parts):
            self._start(part)

    def _start(self, part: int) -> None:
        actor = _IndexPart.options(scheduling_strategy="SPREAD").remote(self.config)
        mine = (row for row in self.reload() if part_of(row[0], self.parts) == part)
        for keys, pdq, phash in code_batches(mine, self.config):
            actor.add_codes.remote(keys, pdq, phash, True)
        ray.get(actor.compact.remote())  # in order after the adds: the part is complete
        self.actors[part] = actor
        self.unsent[part].clear()  # the ledger already held them

    def __len__(self) -> int:
        self._send_adds()
        return sum(self._call(lambda a: a.size.remote(), part) for part in range(self.parts))

    @property
    def uses_faiss(self) -> bool:
        return False

    def usable(self, hashes: Hashes) -> bool:
        return self.recent.usable(hashes)

    def add(self, key: str, hashes: Hashes) -> bool:
        if not self.usable(hashes):
            return False
        assert hashes.pdq is not None and hashes.phash is not None
        # Held back until the next query is sent (or many are held): a Ray call per sample
        # cost more than the search. Queries answered before they arrive are completed from
        # `recent` in search_prefetched.
        self.unsent[part_of(key, self.parts)].append(
            (key, pdq_code(hashes.pdq), phash_int(hashes.phash)))
        self.unsent_count += 1
        if self.unsent_count >= ADD_BATCH:
            self._send_adds()
        self.recent.add(key, hashes)
        self.recent_entries.append((key, hashes))
        self.added_at[key] = self.generation
        self.generation += 1
        return True

    def search(self, hashes: Hashes) -> list[Match]:
        return self.search_many([hashes])[0]

    def search_many(self, queries: Sequence[Hashes]) -> list[list[Match]]:
        group = self._send(list(queries))
        return self._answers(group)

    def prefetch(self, queries: Sequence[Hashes]) -> list[Prefetched]:
        """Ask now for answers used later, in order, through `search_prefetched`."""
        group = self._send(list(queries))
        return [Prefetched(group, row) for row in range(len(group.queries))]

    def search_prefetched(self, prefetched: Prefetched) -> list[Match]:
        """What `search` of the prefetched query would answer now."""
        group = prefetched.group
        since = [m for m in self.recent.search(group.queries[prefetched.row])
                 if self.added_at[m.key] >= group.generation]
        found = _merge([*self._answers(group)[prefetched.row], *since])
        self.settle(prefetched)
        return found

    def settle(self, prefetched: Prefetched) -> None:
        """This answer's turn has come: nothing added before it is needed for later ones."""
        needed_from = prefetched.group.generation
        if needed_from - self.recent_from > self.recent_slack:
            keep = self.recent_entries[needed_from - self.recent_from:]
            self.recent = NearIndex(self.config, use_faiss=False, use_hashing=False)
            self.added_at = {}
            for generation, (key, hashes) in enumerate(keep, start=needed_from):
                self.recent.add(key, hashes)
                self.added_at[key] = generation
            self.recent_entries = keep
            self.recent_from = needed_from

    def _send_adds(self) -> None:
        # not awaited: a dead part is noticed, and rebuilt with these samples, by a query
        for part, held in enumerate(self.unsent):
            if held:
                keys = [key for key, _, _ in held]
                pdq = np.stack([code for _, code, _ in held])
                phash = np.array([ph for _, _, ph in held], dtype=np.uint64)
                self.actors[part].add_codes.remote(keys, pdq, phash, False)
                held.clear()
        self.unsent_count = 0

    def _send(self, queries: list[Hashes]) -> _Group:
        self._send_adds()  # Ray runs them before the queries: the answers include them
        refs = [actor.search_many.remote(queries) for actor in self.actors]
        return _Group(queries, refs, self.generation)

    def _answers(self, group: _Group) -> list[list[Match]]:
        if group.answers is None:
            per_part = [self._await(ref, part, lambda a: a.search_many.remote(group.queries))
                        for part, ref in enumerate(group.refs)]
            group.answers = [_merge(m for found in per_query for m in found)
                             for per_query in zip(*per_part, strict=True)]
            group.refs = []
        return group.answers

    def _call(self, send: Callable[[Any], Any], part: int) -> Any:
        return self._await(send(self.actors[part]), part, send)

    def _await(self, ref: Any, part: int, send: Callable[[Any], Any]) -> Any:
        for attempt in range(REBUILDS_PER_CALL + 1):
            try:
                return ray.get(ref)
            except RayActorError:
                if attempt == REBUILDS_PER_CALL:
                    raise
                log.warning("near-duplicate index part %d was lost; rebuilding it from the "
                            "ledger", part)
                self.rebuilds += 1
                self._start(part)
                ref = send(self.actors[part])
        raise AssertionError("unreachable")

    def close(self) -> None:
        for actor in self.actors:
            if actor is not None:
                ray.kill(actor)
        self.actors = [None] * self.parts
