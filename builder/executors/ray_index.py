"""The dedup indexes split over Ray actors, so they outgrow the driver's memory.

At 328 bytes per admitted image (measured, `scripts/bench/near_index.py`), one driver holds
~100M near-duplicate hashes in 33 GB; a billion need 330 GB. `[executor] index_parts = P` puts
the indexes in P Ray actors instead. Each holds two parts:

- near: an exact multi-index-hashing `NearIndex` over the samples whose key falls in its part
  (crc32 of the key, mod P: fixed by the key alone, so a part can be rebuilt from the ledger
  without knowing the order anything was added in);
- exact: the 64-bit sha256 prefixes of the samples whose prefix falls in its part (prefix mod
  P), sorted, 8 bytes each. A hit is confirmed, and its winner found, in the ledger's sha256
  index; a miss (nearly every candidate) never touches SQLite.

A near query goes to every part; each answers exactly for its codes, and the driver reconciles
the answers by the same rule the single index uses: nearest PDQ distance first, ties to the
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
        self.shas = np.zeros(0, dtype=np.uint64)  # sorted sha256 prefixes
        self.new_shas: set[int] = set()  # merged into the sorted array in bulk

    def add_codes(self, keys: list[str], pdq: np.ndarray, phash: np.ndarray,
                  defer: bool) -> None:
        self.index.add_codes(keys, pdq, phash, defer=defer)

    def add_shas(self, prefixes: list[int]) -> None:
        self.new_shas.update(prefixes)
        if len(self.new_shas) > max(65_536, len(self.shas) // 8):
            self._merge_shas()

    def _merge_shas(self) -> None:
        fresh = np.fromiter(self.new_shas, dtype=np.uint64, count=len(self.new_shas))
        self.shas = np.union1d(self.shas, fresh)
        self.new_shas.clear()

    def compact(self) -> int:
        self.index.compact()
        self._merge_shas()
        return len(self.index)

    def query(self, queries: list[Hashes], prefixes: list[int]
              ) -> tuple[list[list[Match]], list[bool]]:
        near = self.index.search_many(queries) if queries else []
        wanted = np.array(prefixes, dtype=np.uint64)
        if len(self.shas):
            at = np.minimum(np.searchsorted(self.shas, wanted), len(self.shas) - 1)
            found = self.shas[at] == wanted
        else:
            found = np.zeros(len(wanted), dtype=bool)
        seen = [bool(hit) or prefix in self.new_shas
                for hit, prefix in zip(found, prefixes, strict=True)]
        return near, seen

    def size(self) -> int:
        return len(self.index)


def sha_prefix(sha256: str) -> int:
    return int(sha256[:16], 16)


@dataclass
class _Group:
    """Queries sent together, when `generation` samples had been added."""

    queries: list[Hashes]  # near queries (usable hashes only)
    prefixes: list[int]  # exact queries
    refs: list[Any]
    generation: int
    answers: list[list[Match]] | None = None
    seen: list[bool] | None = None


@dataclass(frozen=True)
class Prefetched:
    group: _Group
    row: int | None  # in group.queries; None: no near query (unusable hashes)
    sha_row: int | None  # in group.prefixes; None: no exact query


def _merge(found: Iterable[Match]) -> list[Match]:
    """The single index's order: nearest first, ties to the first indexed (the lowest key);
    a key found twice (a part rebuilt after the query was sent) once."""
    best: dict[str, Match] = {}
    for m in found:
        if m.key not in best or m.pdq_distance < best[m.key].pdq_distance:
            best[m.key] = m
    return sorted(best.values(), key=lambda m: (m.pdq_distance, m.key))


class RayNearIndex:
    """What the pipeline needs of a `NearIndex` (usable, add, search) and of the ledger's
    exact-duplicate check (`seen`), over P Ray actors."""

    def __init__(self, config: DedupConfig, parts: int, reload: Rows, *,
                 reload_shas: Callable[[], Iterable[str]] = lambda: (),
                 recent_slack: int = RECENT_SLACK) -> None:
        if parts < 1:
            raise ValueError("index_parts must be at least 1")
        self.config = config
        self.parts = parts
        self.reload = reload
        self.reload_shas = reload_shas
        self.rebuilds = 0
        self.generation = 0  # samples added so far
        self.recent_slack = recent_slack
        # the samples added since the oldest prefetched answer still to be used
        self.recent = NearIndex(config, use_faiss=False, use_hashing=False)
        self.recent_from = 0  # the generation of recent's first sample
        # per generation from recent_from: (key, hashes, sha256 prefix or None)
        self.recent_entries: list[tuple[str, Hashes, int | None]] = []
        self.added_at: dict[str, int] = {}  # generation of each recent near sample
        self.sha_added_at: dict[int, int] = {}  # generation of each recent sha256 prefix
        self.actors: list[Any] = [None] * parts
        self.unsent: list[list[tuple[str, np.ndarray, int]]] = [[] for _ in range(parts)]
        self.unsent_shas: list[list[int]] = [[] for _ in range(parts)]
        self.unsent_count = 0
        for part in range(parts):
            self._start(part)

    def _start(self, part: int) -> None:
        actor = _IndexPart.options(scheduling_strategy="SPREAD").remote(self.config)
        mine = (row for row in self.reload() if part_of(row[0], self.parts) == part)
        for keys, pdq, phash in code_batches(mine, self.config):
            actor.add_codes.remote(keys, pdq, phash, True)
        batch: list[int] = []
        for sha in self.reload_shas():
            prefix = sha_prefix(sha)
            if prefix % self.parts == part:
                batch.append(prefix)
                if len(batch) >= 65_536:
                    actor.add_shas.remote(batch)
                    batch = []
        if batch:
            actor.add_shas.remote(batch)
        ray.get(actor.compact.remote())  # in order after the adds: the part is complete
        self.actors[part] = actor
        self.unsent[part].clear()  # the ledger already held them
        self.unsent_shas[part].clear()

    def __len__(self) -> int:
        self._send_adds()
        return sum(self._call(lambda a: a.size.remote(), part) for part in range(self.parts))

    def usable(self, hashes: Hashes) -> bool:
        return self.recent.usable(hashes)

    def add(self, key: str, hashes: Hashes, sha256: str | None = None) -> bool:
        """Index an admitted sample: its perceptual hashes if usable, its sha256 if given.
        False when the hashes cannot match near (the sha256 is indexed all the same)."""
        usable = self.usable(hashes)
        prefix = sha_prefix(sha256) if sha256 is not None else None
        if not usable and prefix is None:
            return False
        # Held back until the next query is sent (or many are held): a Ray call per sample
        # cost more than the search. Queries answered before they arrive are completed from
        # the recent adds in search_prefetched and seen_prefetched.
        if usable:
            assert hashes.pdq is not None and hashes.phash is not None
            self.unsent[part_of(key, self.parts)].append(
                (key, pdq_code(hashes.pdq), phash_int(hashes.phash)))
            self.recent.add(key, hashes)
            self.added_at[key] = self.generation
        if prefix is not None:
            self.unsent_shas[prefix % self.parts].append(prefix)
            self.sha_added_at[prefix] = self.generation
        self.recent_entries.append((key, hashes, prefix))
        self.generation += 1
        self.unsent_count += 1
        if self.unsent_count >= ADD_BATCH:
            self._send_adds()
        return usable

    # -- asking now ---------------------------------------------------------------------
    def search(self, hashes: Hashes) -> list[Match]:
        return self.search_many([hashes])[0]

    def search_many(self, queries: Sequence[Hashes]) -> list[list[Match]]:
        return self._near_answers(self._send(list(queries), []))

    def seen(self, sha256: str) -> bool:
        """Whether an indexed sample may have these bytes (its 64-bit sha256 prefix does)."""
        return self._seen_answers(self._send([], [sha_prefix(sha256)]))[0]

    # -- asking ahead -------------------------------------------------------------------
    def prefetch(self, items: Sequence[tuple[Hashes | None, str | None]]) -> list[Prefetched]:
        """Ask now, for (near query or None, sha256 or None) items, answers used later, in
        order, through `search_prefetched` and `seen_prefetched`."""
        queries = [h for h, _ in items if h is not None]
        prefixes = [sha_prefix(s) for _, s in items if s is not None]
        group = self._send(queries, prefixes)
        out: list[Prefetched] = []
        row = sha_row = 0
        for hashes, sha in items:
            out.append(Prefetched(group, row if hashes is not None else None,
                                  sha_row if sha is not None else None))
            row += hashes is not None
            sha_row += sha is not None
        return out

    def search_prefetched(self, prefetched: Prefetched) -> list[Match]:
        """What `search` of the prefetched query would answer now."""
        group, row = prefetched.group, prefetched.row
        assert row is not None, "no near query was sent for this candidate"
        since = [m for m in self.recent.search(group.queries[row])
                 if self.added_at[m.key] >= group.generation]
        return _merge([*self._near_answers(group)[row], *since])

    def seen_prefetched(self, prefetched: Prefetched) -> bool:
        """What `seen` of the prefetched sha256 would answer now."""
        group, row = prefetched.group, prefetched.sha_row
        assert row is not None, "no exact query was sent for this candidate"
        if self._seen_answers(group)[row]:
            return True
        return self.sha_added_at.get(group.prefixes[row], -1) >= group.generation

    def settle(self, prefetched: Prefetched) -> None:
        """This answer's turn has come: nothing added before it is needed for later ones."""
        needed_from = prefetched.group.generation
        if needed_from - self.recent_from > self.recent_slack:
            keep = self.recent_entries[needed_from - self.recent_from:]
            self.recent = NearIndex(self.config, use_faiss=False, use_hashing=False)
            self.added_at = {}
            self.sha_added_at = {}
            for generation, (key, hashes, prefix) in enumerate(keep, start=needed_from):
                if self.recent.add(key, hashes):
                    self.added_at[key] = generation
                if prefix is not None:
                    self.sha_added_at[prefix] = generation
            self.recent_entries = keep
            self.recent_from = needed_from

    # -- the parts ----------------------------------------------------------------------
    def _send_adds(self) -> None:
        # not awaited: a dead part is noticed, and rebuilt with these samples, by a query
        for part in range(self.parts):
            held = self.unsent[part]
            if held:
                keys = [key for key, _, _ in held]
                pdq = np.stack([code for _, code, _ in held])
                phash = np.array([ph for _, _, ph in held], dtype=np.uint64)
                self.actors[part].add_codes.remote(keys, pdq, phash, False)
                held.clear()
            if self.unsent_shas[part]:
                self.actors[part].add_shas.remote(list(self.unsent_shas[part]))
                self.unsent_shas[part].clear()
        self.unsent_count = 0

    def _send(self, queries: list[Hashes], prefixes: list[int]) -> _Group:
        self._send_adds()  # Ray runs them before the queries: the answers include them
        refs = [actor.query.remote(queries, prefixes) for actor in self.actors]
        return _Group(queries, prefixes, refs, self.generation)

    def _resolve(self, group: _Group) -> None:
        if group.answers is not None:
            return
        per_part = [self._await(ref, part, lambda a: a.query.remote(group.queries,
                                                                    group.prefixes))
                    for part, ref in enumerate(group.refs)]
        group.answers = [_merge(m for found in per_query for m in found)
                         for per_query in zip(*(near for near, _ in per_part), strict=True)]
        group.seen = [any(flags) for flags in zip(*(seen for _, seen in per_part), strict=True)]
        group.refs = []

    def _near_answers(self, group: _Group) -> list[list[Match]]:
        self._resolve(group)
        assert group.answers is not None
        return group.answers

    def _seen_answers(self, group: _Group) -> list[bool]:
        self._resolve(group)
        assert group.seen is not None
        return group.seen

    def _call(self, send: Callable[[Any], Any], part: int) -> Any:
        return self._await(send(self.actors[part]), part, send)

    def _await(self, ref: Any, part: int, send: Callable[[Any], Any]) -> Any:
        for attempt in range(REBUILDS_PER_CALL + 1):
            try:
                return ray.get(ref)
            except RayActorError:
                if attempt == REBUILDS_PER_CALL:
                    raise
                log.warning("dedup index part %d was lost; rebuilding it from the ledger", part)
                self.rebuilds += 1
                self._start(part)
                ref = send(self.actors[part])
        raise AssertionError("unreachable")

    def close(self) -> None:
        for actor in self.actors:
            if actor is not None:
                ray.kill(actor)
        self.actors = [None] * self.parts
