"""Time to take one sample down from a dataset of many shards, beside the time to rewrite one shard.

    python scripts/bench/takedown.py [--shards 50] [--per-shard 100] [--work DIR]

Builds a dataset with the real pipeline from a local folder source (generated JPEGs, CC0
metadata), then, on copies of it, times:
  - rewrite:  one shard rewritten with nothing removed (read, write temp, fsync) — the floor;
  - takedown: `cleanset takedown --key K` end to end (lock, match, journal, rewrite one shard,
              rename, ledger commit, denylist/log, every paper regenerated), in process.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from builder.pipeline import BuildOptions, build  # noqa: E402
from builder.recipe import load_recipe  # noqa: E402
from builder.takedown import Selectors, _rewrite_shard, _write_papers, takedown  # noqa: E402


def make_jpeg(seed: int, size: tuple[int, int] = (384, 288)) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (24, 18))
    img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                 for _ in range(24 * 18)])
    buf = io.BytesIO()
    img.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_dataset(work: Path, shards: int, per_shard: int) -> Path:
    images = work / "images"
    images.mkdir(parents=True)
    meta = []
    for i in range(shards * per_shard):
        name = f"img{i:06d}.jpg"
        (images / name).write_bytes(make_jpeg(i))
        meta.append({"file_name": name, "license": "CC0-1.0", "creator": f"creator {i % 97}"})
    (images / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    recipe = work / "recipe.toml"
    recipe.write_text(f"""
[dataset]
name = "takedown-bench"
samples_per_shard = {per_shard}
[policy]
use = "commercial"
[[sources]]
kind = "folder"
path = "images"
[dedup]
near = false
""")
    out = work / "built"
    started = time.monotonic()
    summary = build(load_recipe(recipe), BuildOptions(out=out, progress=False))
    print(f"built {summary.total_samples} samples in {summary.total_shards} shards "
          f"({sum(p.stat().st_size for p in (out / 'shards').glob('*.tar')) / 1e6:.0f} MB) "
          f"in {time.monotonic() - started:.1f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=50)
    parser.add_argument("--per-shard", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cleanset-takedown-bench-"))
    base = make_dataset(work, args.shards, args.per_shard)
    shards_dir = base / "shards"
    shard = sorted(shards_dir.glob("*.tar"))[args.shards // 2]
    size_mb = shard.stat().st_size / 1e6

    rewrite = []
    for _ in range(args.repeat):
        spec = {"file": shard.name, "tmp": shard.name + ".bench", "remove": []}
        t = time.monotonic()
        _rewrite_shard(shards_dir, spec)
        rewrite.append(time.monotonic() - t)
        (shards_dir / spec["tmp"]).unlink()

    removal: list[float] = []
    papers: list[float] = []
    for r in range(args.repeat):
        copy = work / f"copy{r}"
        shutil.copytree(base, copy)
        key = f"{(args.shards // 2) * args.per_shard + 7 + r:010d}"
        t = time.monotonic()
        result = takedown(copy, Selectors(keys=(key,)), "bench")
        removal.append(time.monotonic() - t)
        assert [m.key for m in result.matches] == [key]
        t = time.monotonic()
        _write_papers(copy)  # the same regeneration the takedown ended with, timed alone
        papers.append(time.monotonic() - t)
        shutil.rmtree(copy)

    print(f"rewrite one shard ({size_mb:.1f} MB, {args.per_shard} samples): "
          f"median {statistics.median(rewrite) * 1000:.0f} ms over {args.repeat}")
    print(f"take down one sample from {args.shards} shards, end to end: "
          f"median {statistics.median(removal) * 1000:.0f} ms over {args.repeat}, of which "
          f"regenerating the papers (manifest, candidates, SPDX, Croissant, card, attribution) "
          f"~{statistics.median(papers) * 1000:.0f} ms")
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
