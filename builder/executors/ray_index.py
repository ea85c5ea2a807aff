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

A part whose actor dies (node lost, OOM) is rebuilt from the ledger (`reload`, read through
the driver's own connection, which sees the uncommitted window too) and the call retried.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
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


class RayNearIndex:
    """What the pipeline needs of a `NearIndex` (usable, add, search), over P Ray actors."""

    def __init__(self, config: DedupConfig, parts: int, reload: Rows) -> None:
        if parts < 1:
            raise ValueError("index_parts must be at least 1")
        self.config = config
        self.parts = parts
        self.reload = reload
        self.rebuilds = 0
        self.local = NearIndex(config, use_faiss=False, use_hashing=False)  # for `usable`
        self.actors: list[Any] = [None] * parts
        for part in range(parts):
            self._start(part)

    def _start(self, part: int) -> None:
        actor = _IndexPart.options(scheduling_strategy="SPREAD").remote(self.config)
        mine = (row for row in self.reload() if part_of(row[0], self.parts) == part)
        for keys, pdq, phash in code_batches(mine, self.config):
            actor.add_codes.remote(keys, pdq, phash, True)
        ray.get(actor.compact.remote())  # in order after the adds: the part is complete
        self.actors[part] = actor

    def __len__(self) -> int:
        return sum(self._call(lambda a: a.size.remote(), part) for part in range(self.parts))

    @property
    def uses_faiss(self) -> bool:
        return False

    def usable(self, hashes: Hashes) -> bool:
        return self.local.usable(hashes)

    def add(self, key: str, hashes: Hashes) -> bool:
        if not self.usable(hashes):
            return False
        assert hashes.pdq is not None and hashes.phash is not None
        part = part_of(key, self.parts)
        # not awaited: a dead part is noticed, and rebuilt with this sample, by the next query
        self.actors[part].add_codes.remote([key], pdq_code(hashes.pdq)[None, :],
                                           np.array([phash_int(hashes.phash)], dtype=np.uint64),
                                           False)
        return True

    def search(self, hashes: Hashes) -> list[Match]:
        return self.search_many([hashes])[0]

    def search_many(self, queries: Sequence[Hashes]) -> list[list[Match]]:
        queries = list(queries)
        refs = [actor.search_many.remote(queries) for actor in self.actors]
        answers = [self._await(ref, part, lambda a: a.search_many.remote(queries))
                   for part, ref in enumerate(refs)]
        merged: list[list[Match]] = []
        for per_query in zip(*answers, strict=True):
            # the single index's order: nearest first, ties to the first indexed (lowest key)
            merged.append(sorted((m for found in per_query for m in found),
                                 key=lambda m: (m.pdq_distance, m.key)))
        return merged

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
