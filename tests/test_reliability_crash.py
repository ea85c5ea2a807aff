"""Crash anywhere: kill -9 at seeded (point, n) pairs, resume, get the uninterrupted dataset.

tests/test_resume.py pins nine hand-picked crash points. Here a seeded RNG picks at least 24
distinct (crash point, n-th arrival) pairs from every point the pipeline offers, counted in
a reference run's ledger; each scenario kills a fresh build there, often kills the resumed
build a second time, then resumes to the end. Each result must be byte-identical to the
uninterrupted build, and the ledger must account for every candidate exactly once.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import make_image, run_cli, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
NC = "https://creativecommons.org/licenses/by-nc/4.0/"
N = 30
PER_SHARD = 4
COMMIT_EVERY = 3
SEED = 20240608
# OMP_NUM_THREADS=1: faiss otherwise spins up an OpenMP team per near-dup query (~50 ms each).
ENV = {"CLEANSET_COMMIT_EVERY": str(COMMIT_EVERY), "OMP_NUM_THREADS": "1"}


def make_folder(root: Path) -> Path:
    """N images: a few exact duplicates and a few refused licences among them."""
    images = root / "images"
    images.mkdir(parents=True)
    for i in range(N):
        path = images / f"img{i:02d}.png"
        path.write_bytes(make_image(i % 26, (48, 32), fmt="PNG"))
        if i % 9 == 4:
            path.with_name(path.name + ".json").write_text(json.dumps({"license": NC}))
    return write_recipe(root / "recipe.toml", f"""
[dataset]
name = "crash-anywhere"
samples_per_shard = {PER_SHARD}
[policy]
use = "commercial"
[[sources]]
kind = "folder"
path = "images"
license = "{CC0}"
[fetch]
workers = 2
""")


def build(recipe: Path, out: Path, crash_at: str | None = None) -> int:
    env = {**ENV, **({"CLEANSET_CRASH_AT": crash_at} if crash_at else {})}
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"build crashed at {crash_at} -> {proc.returncode}\n{proc.stderr}")
    return proc.returncode


def arrivals(out: Path) -> dict[str, int]:
    """How often an uninterrupted build reaches each crash point, replayed from its ledger.

    Decisions are the ledger's candidate rows in order; shards close every PER_SHARD accepted
    samples; a commit follows every COMMIT_EVERY decisions and syncs the shard if one is open.
    """
    with sqlite3.connect(out / "ledger.sqlite") as db:
        statuses = [s for (s,) in db.execute("SELECT status FROM candidates ORDER BY seq")]
    counts = dict.fromkeys(("decide", "after_shard_sync", "after_commit", "before_shard_rename",
                            "after_shard_rename"), 0)
    open_samples: int | None = None
    for done, status in enumerate(statuses, start=1):
        counts["decide"] += 1
        if status == "accepted":
            open_samples = (open_samples or 0) + 1
            if open_samples == PER_SHARD:
                counts["before_shard_rename"] += 1
                counts["after_shard_rename"] += 1
                open_samples = None
        if done % COMMIT_EVERY == 0:
            counts["after_commit"] += 1
            counts["after_shard_sync"] += open_samples is not None
    if open_samples is not None:  # the last, partial shard closes at the end
        counts["before_shard_rename"] += 1
        counts["after_shard_rename"] += 1
    counts["before_finish_commit"] = 1
    return counts


def shard_bytes(out: Path) -> dict[str, bytes]:
    """The shards and the evidence archive, which must survive a crash just as well."""
    return {f"{p.parent.name}/{p.name}": p.read_bytes()
            for folder in ("shards", "evidence") for p in sorted((out / folder).iterdir())}


def check_ledger(out: Path) -> None:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT build, seq, status FROM candidates").fetchall()
        samples = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        keys = db.execute("SELECT COUNT(DISTINCT key) FROM candidates WHERE key IS NOT NULL")
        distinct_keys = keys.fetchone()[0]
    assert len(rows) == N
    assert len({(b, s) for b, s, _ in rows}) == N
    accepted = sum(1 for *_, s in rows if s == "accepted")
    rejected = sum(1 for *_, s in rows if s == "rejected")
    assert accepted + rejected == N
    assert samples == accepted == distinct_keys


def pick_pairs(counts: dict[str, int], how_many: int, rng: random.Random,
               taken: set[str] = frozenset(), early: bool = False) -> list[str]:
    """Distinct `point:n` pairs; `early` keeps n in the first half of the point's arrivals, so
    that a build resumed after an earlier crash (with less left to do) still reaches it."""
    pairs = [f"{point}:{n}" for point, times in sorted(counts.items())
             for n in range(1, (max(1, times // 2) if early else times) + 1)
             if f"{point}:{n}" not in taken]
    assert len(pairs) >= how_many, counts
    return rng.sample(pairs, how_many)


CHAINS = 9
CRASHES_PER_CHAIN = 4


def test_kill_9_at_36_seeded_points_four_times_per_build_then_resume_is_byte_identical(
        tmp_path: Path) -> None:
    """9 output directories, each killed up to 4 times in a row at seeded points, then resumed."""
    recipe = make_folder(tmp_path)
    reference = tmp_path / "reference"
    assert build(recipe, reference) == 0
    check_ledger(reference)
    counts = arrivals(reference)
    assert all(counts.values()), counts
    rng = random.Random(SEED)
    firsts = pick_pairs(counts, CHAINS, rng)
    laters = pick_pairs(counts, CHAINS * (CRASHES_PER_CHAIN - 1), rng, set(firsts), early=True)
    chains = [[firsts[i], *laters[i::CHAINS]] for i in range(CHAINS)]

    def scenario(i: int) -> list[str]:
        out = tmp_path / f"crash{i}"
        killed = []
        for step, point in enumerate(chains[i]):
            code = build(recipe, out, point)
            # The first crash is always reached; a later one may lie beyond what is left.
            assert code == -signal.SIGKILL or step > 0, point
            if code == -signal.SIGKILL:
                killed.append(point)
        assert build(recipe, out) == 0
        assert shard_bytes(out) == shard_bytes(reference), chains[i]
        check_ledger(out)
        return killed

    with ThreadPoolExecutor(2) as pool:  # two builds at a time: they are separate processes
        killed = [point for chain in pool.map(scenario, range(CHAINS)) for point in chain]
    # The pairs are seeded and the pipeline deterministic: the same ones die every run.
    assert len(set(killed)) >= 20, killed
    print(f"{len(killed)} kills at {len(set(killed))} distinct points: {sorted(killed)}")
    assert {point.split(":")[0] for point in killed} == set(counts)
    assert run_cli("verify", str(tmp_path / "crash0")).returncode == 0


@pytest.mark.slow
def test_kill_9_at_every_arrival_of_every_crash_point_then_resume_is_byte_identical(
        tmp_path: Path) -> None:
    recipe = make_folder(tmp_path)
    reference = tmp_path / "reference"
    assert build(recipe, reference) == 0
    counts = arrivals(reference)
    pairs = pick_pairs(counts, sum(counts.values()), random.Random(SEED))
    # The replayed counts are exact: one past the last arrival never kills.
    assert build(recipe, tmp_path / "past", f"after_commit:{counts['after_commit'] + 1}") == 0

    def scenario(i: int) -> None:
        out = tmp_path / f"crash{i:03d}"
        assert build(recipe, out, pairs[i]) == -signal.SIGKILL, pairs[i]
        assert build(recipe, out) == 0
        assert shard_bytes(out) == shard_bytes(reference), pairs[i]
        check_ledger(out)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(scenario, range(len(pairs))))
