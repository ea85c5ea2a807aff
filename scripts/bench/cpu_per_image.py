"""CPU per image, stage by stage, on the throughput benchmark's corpus; MB/s per core on large JPEGs.

    PYTHONPATH=TREE python scripts/bench/cpu_per_image.py [--images 2000] [--sample 400] [--large]

Measures the cleanset source tree on PYTHONPATH (for "before", a `git archive` of an earlier
commit), all in this one process and thread, with the thread's CPU clock:

1. the corpus of scripts/bench/throughput.py (same seed and size) served by nginx on
   127.0.0.1; the benchmark recipe's per-candidate stages built as a build builds them
   (StagePlan) and each of --sample candidates run through them, timing each stage:
   licence gate, opt-out (before the fetch, on the headers, embedded marks), fetch
   (urllib3, robots.txt and TDMRep lookups, the body), image check;
2. the image check split into its steps, called one by one on the same fetched bytes, in
   every hash pipeline the tree has: header, decode, canonical image, perceptual hashes,
   digests (sha256 + sha1);
3. the driver's ordered decision + write per candidate (scripts/bench/ray_throughput.py's
   driver alone, CPU microseconds);
4. with --large: JPEGs of 2048x1536 (~1.5 MB) and 4000x3000 (~5.5 MB) through check_image
   in every hash pipeline,
   in MB/s per core (bytes checked per CPU second), and the cores that keep 1 and 10 Gbit/s
   links full at that rate.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import (  # noqa: E402
    CC0,
    free_port,
    make_corpus,
    photo_like,
    start_server,
    write_bench_recipe,
)


def cpu(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.thread_time()
    result = fn()
    return result, time.thread_time() - start


def stage_costs(recipe_path: Path, out: Path, sample: int) -> tuple[dict[str, float], list]:
    """CPU seconds per stage name over `sample` candidates, and the fetched records."""
    from builder.licensing import load_policy
    from builder.pipeline import _Cursor, enumerate_candidates
    from builder.recipe import load_recipe
    from builder.records import Rejection
    from builder.stages import StagePlan

    recipe = load_recipe(recipe_path)
    policy = load_policy(recipe.policy.use, jurisdiction=recipe.policy.jurisdiction,
                         base_dir=recipe.base_dir)
    bench = StagePlan(recipe=recipe, policy=policy, out=out, **_evidence_build(StagePlan)).build()
    costs: dict[str, float] = defaultdict(float)
    fetched = []
    stream = enumerate_candidates(recipe, _Cursor(0, 0, None))
    from builder.fetch import recording

    for n, sourced in enumerate(stream):
        if n >= sample:
            break
        # A Sourced record; trees before it yielded (index, candidate, state) tuples.
        record = sourced.candidate if hasattr(sourced, "candidate") else sourced[1]
        with recording() as taped:
            for stage in bench.stages:
                record, seconds = cpu(lambda stage=stage, record=record: stage.run(record))
                costs[stage.name] += seconds
                if isinstance(record, Rejection):
                    break
                if stage.name == "fetch":
                    fetched.append(record.data)
        if hasattr(bench, "_for_archive"):  # the WARC records, made where the stages run
            _, seconds = cpu(lambda taped=taped: bench._for_archive(taped))
            costs["evidence records"] += seconds
    stream.close()
    bench.close()
    return {name: seconds / sample for name, seconds in costs.items()}, fetched


def check_steps(files: list[bytes]) -> dict[str, dict[str, float]]:
    """Per hash pipeline, CPU seconds per image of each step of the image check."""
    from builder import media
    from builder.recipe import ImageConfig

    config = ImageConfig()
    pipelines = getattr(media, "HASH_PIPELINES", (media.HASH_PIPELINE,))
    out = {}
    for pipeline in pipelines:
        steps: dict[str, float] = defaultdict(float)
        for data in files:
            for step, seconds in _steps(media, data, config, pipeline):
                steps[step] += seconds
            kwargs = {"pipeline": pipeline} if len(pipelines) > 1 else {}
            _, seconds = cpu(lambda data=data, kwargs=kwargs: media.check_image(data, config,
                                                                               **kwargs))
            steps["check_image as a whole"] += seconds
        out[pipeline] = {step: seconds / len(files) for step, seconds in steps.items()}
    return out


def _steps(media: Any, data: bytes, config: Any, pipeline: str) -> list[tuple[str, float]]:
    fmt = media.sniff_format(data)
    (im, width, height), header = cpu(lambda: media._open_header(data, fmt, config))
    tag = pipeline.rsplit("-", 1)[-1]
    if tag in ("v3", "v4") and fmt == "jpeg":
        decoded, decode = cpu(lambda: _opencv_jpeg_decode(media, data, im, width, height, tag))
    elif fmt == "png" and hasattr(media, "_decode_png"):  # image data inflated by ISA-L
        decoded, decode = cpu(lambda: media._decode_png(data, im))
    else:
        decoded, decode = cpu(lambda: media._decode(im, fmt, want_reduced=True))
    if hasattr(media, "canonical"):  # the tree with builder/canonical.py
        make, hash_of = _canonical_steps(media.canonical, tag, decoded)
        orientation = media._orientation(decoded if hasattr(decoded, "getexif") else im)
        small, canon = cpu(lambda: make(decoded, orientation))
        _, hashes = cpu(lambda: hash_of(small))
    else:  # the tree before it: media does it all
        small, canon = cpu(lambda: media.canonical_image(decoded))
        _, hashes = cpu(lambda: media._hashes(small))
    _, digests = cpu(lambda: (hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest()))
    return [("header", header), ("decode", decode), ("canonical image", canon),
            ("hashes (PDQ + pHash)", hashes), ("digests (sha256 + sha1)", digests)]


def _opencv_jpeg_decode(media: Any, data: bytes, im: Any, width: int, height: int,
                        tag: str) -> Any:
    """The JPEG decode of v3 (BGR) or v4 (grey), in the tree that has v4 or the one before."""
    if hasattr(media, "_decode_jpeg_cv2"):
        return media._decode_jpeg_cv2(data, im, width, height, grey=tag == "v4")
    return media._decode_jpeg_v3(data, im, width, height)


def _canonical_steps(canonical: Any, tag: str, decoded: Any) -> tuple[Callable, Callable]:
    """The canonical-image and hash functions `tag`'s check calls on this decode."""
    from_opencv = isinstance(decoded, np.ndarray)
    if tag == "v2":
        return canonical.canonical_v2, canonical.hashes_v2
    if tag == "v3":
        return (canonical.canonical_v3_from_bgr if from_opencv
                else canonical.canonical_v3_from_pillow), canonical.hashes_v3
    return (canonical.canonical_v4_from_grey if from_opencv
            else canonical.canonical_v4_from_pillow), canonical.hashes_v4


def large_jpegs(seconds_each: float = 20.0) -> None:
    from builder import media
    from builder.recipe import ImageConfig

    config = ImageConfig()
    pipelines = getattr(media, "HASH_PIPELINES", (media.HASH_PIPELINE,))
    rng = np.random.default_rng(11)
    for size in ((2048, 1536), (4000, 3000)):
        files = []
        for _ in range(3):
            # Camera-like grain (+-24) at quality 92: ~1.5 MB and ~5.5 MB, as photos of
            # these sizes weigh; smoother pictures compress more and check faster.
            base = np.asarray(photo_like(rng, *size), dtype=np.int16)
            grain = rng.integers(-24, 25, base.shape, dtype=np.int16)
            buf = io.BytesIO()
            Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8)).save(
                buf, "JPEG", quality=92)
            files.append(buf.getvalue())
        mb = np.mean([len(f) for f in files]) / 1e6
        for pipeline in pipelines:
            kwargs = {"pipeline": pipeline} if "pipeline" in inspect.signature(
                media.check_image).parameters else {}
            done, spent = 0, 0.0
            while spent < seconds_each / len(pipelines):
                for data in files:
                    _, seconds = cpu(lambda data=data, kwargs=kwargs: media.check_image(
                        data, config, **kwargs))
                    spent += seconds
                    done += len(data)
            rate = done / 1e6 / spent
            print(f"{size[0]}x{size[1]} JPEG ({mb:.1f} MB) {pipeline.rsplit('-', 1)[-1]}: "
                  f"{rate:6.1f} MB/s per core, {spent / (done / 1e6) * mb * 1e3:6.1f} ms "
                  f"per image; cores for 1 Gbit/s {125 / rate:4.1f}, "
                  f"for 10 Gbit/s {1250 / rate:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="the corpus, as throughput.py")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=400, help="candidates timed")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cleanset-cpu-bench"))
    parser.add_argument("--large", action="store_true", help="also the large-JPEG MB/s")
    parser.add_argument("--large-only", action="store_true", help="only the large-JPEG MB/s")
    parser.add_argument("--skip-driver", action="store_true")
    args = parser.parse_args()

    import builder

    print(f"tree: {Path(builder.__file__).parent.parent}")
    if args.large_only:
        large_jpegs()
        return
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    names = make_corpus(work, args.images, args.seed)
    port = free_port()
    urls = work / "urls.parquet"
    pq.write_table(pa.table({"url": [f"http://127.0.0.1:{port}/{n}" for n in names],
                             "license": [CC0] * len(names)}), urls)
    recipe = write_bench_recipe(work / "cpu-bench.toml", urls, 1000, 16)
    server = start_server(work, port)
    try:
        stages, fetched = stage_costs(recipe, work / "out-stages", args.sample)
        driver = None
        if not args.skip_driver:
            from ray_throughput import driver_cost

            _, driver, _ = driver_cost(recipe, work / "out-driver")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work / "out-stages", ignore_errors=True)
    mean_kb = np.mean([len(f) for f in fetched]) / 1e3
    print(f"{len(fetched)} candidates fetched, mean {mean_kb:.0f} KB; CPU ms per candidate:")
    for name, seconds in stages.items():
        print(f"  stage {name:34s} {seconds * 1e3:7.3f}")
    jpegs = [f for f in fetched if f[:3] == b"\xff\xd8\xff"]
    for label, files in (("all", fetched), (f"the {len(jpegs)} JPEGs", jpegs)):
        for pipeline, steps in check_steps(files).items():
            print(f"image check steps, {label}, {pipeline}:")
            for name, seconds in steps.items():
                print(f"  {name:40s} {seconds * 1e3:7.3f}")
    if driver is not None:
        print(f"  driver: ordered decision + write      {driver / 1e3:7.3f}")
    if args.large:
        large_jpegs()


def _evidence_build(plan: type) -> dict[str, int]:
    """Where the tree has it (#21), the evidence records are made with the stages."""
    return {"evidence_build": 1} if "evidence_build" in plan.__dataclass_fields__ else {}


if __name__ == "__main__":
    main()
