"""End-to-end throughput: cleanset vs img2dataset on the same URLs, against the machine's limits.

    python scripts/bench/throughput.py [--images 3000] [--rounds 3]

1. generates a seeded corpus (distinct JPEG and PNG images of 300-1200 px, plus exact and near
   duplicates) under --workdir, reused across runs;
2. serves it on 127.0.0.1 with nginx when installed (else Python's threaded http.server, with
   a listen backlog that holds every client's connection);
3. runs `cleanset build` and `img2dataset` (pass-through: --resize_mode no
   --disable_all_reencoding True, webdataset output, same shard size, 2 processes) on the same
   URL list, alternating which goes first, for several rounds; img2dataset runs from its own
   virtualenv (--img2dataset-venv, created with `pip install img2dataset` when missing);
4. measures on the same files, in the same run, what the machine can do at best on 2
   processes: sha256 only, full Pillow decode, reduced (draft) decode, and cleanset's own
   per-candidate stages with no build process behind them (scripts/bench/stages_alone.py);
and prints images/s (min/median/max), the ratios cleanset/img2dataset and
cleanset/reduced-decode, and each tool's peak memory. Figures are ratios within one run:
absolute numbers on a shared machine drift.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"


# -- corpus -------------------------------------------------------------------------------
def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour fields plus grain: compresses like a photograph, hashes like one."""
    base = rng.integers(0, 256, (rng.integers(4, 16), rng.integers(4, 16), 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)
    grain = rng.integers(-6, 7, (height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + grain, 0, 255)
                           .astype(np.uint8))


def encode(img: Image.Image, fmt: str, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def make_corpus(root: Path, count: int, seed: int) -> list[str]:
    """Files under root/img; returns their names in URL-list order. Cached by (count, seed)."""
    marker = root / f"corpus-{count}-{seed}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    images = root / "img"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names: list[str] = []
    originals: list[tuple[str, Image.Image]] = []
    for i in range(count):
        width, height = (int(v) for v in rng.integers(300, 1201, 2))
        fmt = "PNG" if rng.random() < 0.12 else "JPEG"
        img = photo_like(rng, width, height)
        name = f"{i:06d}.{'png' if fmt == 'PNG' else 'jpg'}"
        (images / name).write_bytes(encode(img, fmt))
        names.append(name)
        if len(originals) < count // 20:
            originals.append((name, img))
    # 2.5% exact copies under new names, 2.5% near copies (re-encoded at q=60, resized 80%)
    for j, (name, img) in enumerate(originals):
        src = images / name
        if j % 2 == 0:
            dup = f"dup-{j:05d}{src.suffix}"
            shutil.copyfile(src, images / dup)
        else:
            dup = f"near-{j:05d}.jpg"
            small = img.resize((max(1, img.width * 4 // 5), max(1, img.height * 4 // 5)))
            (images / dup).write_bytes(encode(small, "JPEG", quality=60))
        names.append(dup)
    order = rng.permutation(len(names))
    names = [names[k] for k in order]
    marker.write_text(json.dumps(names))
    return names


# -- server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Python's threaded http.server, with a listen backlog of 1024 instead of socketserver's 5:
# `python -m http.server` dropped the SYNs of 16 clients connecting at once (one connection per
# request: it speaks HTTP/1.0), each retried by TCP after 1 s, and the benchmark measured that
# (cleanset 0.38x img2dataset against it, 0.88x against nginx in the same session; 1,000 GETs
# from 16 threads: p99 1,020 ms and 11 listen drops, against 28 ms and none with 1024).
FALLBACK_SERVER = """
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
Server(("127.0.0.1", int(sys.argv[1])),
       functools.partial(Quiet, directory=sys.argv[2])).serve_forever()
"""


def start_server(root: Path, port: int) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                     else None)
    if nginx:
        conf = root / "nginx.conf"
        conf.write_text(textwrap.dedent(f"""
            worker_processes 1;
            daemon off;
            error_log {root}/nginx-error.log;
            pid {root}/nginx.pid;
            events {{ worker_connections 1024; }}
            http {{
                access_log off;
                sendfile on;
                keepalive_requests 100000;
                types {{ image/jpeg jpg; image/png png; }}
                client_body_temp_path {root}/tmp;
                proxy_temp_path {root}/tmp;
                fastcgi_temp_path {root}/tmp;
                uwsgi_temp_path {root}/tmp;
                scgi_temp_path {root}/tmp;
                server {{ listen 127.0.0.1:{port}; root {root}/img; }}
            }}
        """))
        (root / "tmp").mkdir(exist_ok=True)
        proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root)])
        server = "nginx"
    else:
        proc = subprocess.Popen([sys.executable, "-c", FALLBACK_SERVER, str(port),
                                 str(root / "img")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = "python http.server (listen backlog 1024)"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                break
        except OSError:
            time.sleep(0.05)  # waiting for a server we started to bind; bounded
    print(f"server: {server} on 127.0.0.1:{port}")
    return proc


# -- runs ---------------------------------------------------------------------------------
def _tree(root: int) -> list[int]:
    """root and its descendants, from each thread's children list (no scan of all of /proc)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in
                            Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process so far, in clock ticks (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is the state (field 3)
    return int(fields[11]) + int(fields[12])


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int, float]:
    """(wall seconds, exit code, peak RSS in MB of the whole process tree at one instant,
    CPU seconds of the whole tree).

    CPU is each process's own utime + stime as last seen in the same polls (children's
    times are not added in, so nothing counts twice; a process living under 0.1 s may be
    missed). It is what load on a shared machine does not inflate.

    Polled from /proc, not wait4's ru_maxrss: a child's ru_maxrss starts at its parent's RSS
    at fork (Linux carries the high-water mark over exec), so it reported this script's own
    size (500 MB after generating the corpus) instead of the tool's.
    """
    start = time.perf_counter()
    # Not this checkout's directory: `python -m` puts the working directory first on
    # sys.path, ahead of PYTHONPATH, so a baseline tree would run today's code.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=tempfile.gettempdir())
    peak_kb = 0
    ticks: dict[int, int] = {}
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak_kb
        while not stop.is_set():
            tree = _tree(proc.pid)
            peak_kb = max(peak_kb, sum(_status_kb(pid, "VmRSS") for pid in tree))
            for pid in tree:
                ticks[pid] = max(ticks.get(pid, 0), _cpu_ticks(pid))
            stop.wait(0.1)  # sampling interval of a measurement, not a wait for an event

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stderr = proc.stderr.read() if proc.stderr else b""
    proc.wait()
    stop.set()
    poller.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(stderr.decode(errors="replace")[-3000:])
    cpu = sum(ticks.values()) / os.sysconf("SC_CLK_TCK")
    return wall, proc.returncode, peak_kb // 1024, cpu


def write_bench_recipe(recipe: Path, urls: Path, per_shard: int, workers: int,
                       extra: str = "") -> Path:
    """The recipe every benchmark builds the URL list with: all checks on, CC0 claims."""
    recipe.write_text(textwrap.dedent(f"""
        [dataset]
        name = "bench"
        samples_per_shard = {per_shard}
        [policy]
        use = "commercial"
        [[sources]]
        kind = "table"
        path = "{urls}"
        [fetch]
        allow_private_addresses = true
        workers = {workers}
        per_host_connections = {workers}
        retries = 1
    """) + textwrap.dedent(extra))
    return recipe


def cleanset_round(work: Path, urls: Path, per_shard: int, workers: int,
                   executor: str | None = None, tree: Path | None = None
                   ) -> tuple[float, int, int, float]:
    """One build; `tree`: run the cleanset source tree there instead (an earlier version)."""
    out = work / "out-cleanset"
    shutil.rmtree(out, ignore_errors=True)
    recipe = write_bench_recipe(work / "bench-recipe.toml", urls, per_shard, workers)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    if executor is None and tree is not None and not _knows_auto(tree):
        executor = "processes"  # what that version was measured with
    chosen = [] if executor is None else ["--executor", executor]
    wall, code, peak, cpu = run_measured([sys.executable, "-m", "builder", "build",
                                          str(recipe), "--out", str(out), "--no-progress",
                                          *chosen], env)
    accepted = len(pq.read_table(out / "manifest.parquet")) if code == 0 else 0
    return wall, accepted, peak, cpu


def _knows_auto(tree: Path) -> bool:
    return '"auto"' in (tree / "builder" / "executors" / "__init__.py").read_text()


def img2dataset_round(work: Path, urls: Path, per_shard: int, venv: Path, threads: int
                      ) -> tuple[float, int, int, float]:
    out = work / "out-img2dataset"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled",
           "WANDB_DISABLED": "true", "HF_HUB_OFFLINE": "1"}
    cmd = [str(venv / "bin" / "img2dataset"), "--url_list", str(urls), "--input_format",
           "parquet", "--url_col", "url", "--output_format", "webdataset", "--output_folder",
           str(out), "--processes_count", "2", "--thread_count", str(threads),
           "--resize_mode", "no", "--disable_all_reencoding", "True",
           "--number_sample_per_shard", str(per_shard), "--enable_wandb", "False",
           "--retries", "0", "--timeout", "20"]
    wall, code, peak, cpu = run_measured(cmd, env)
    ok = 0
    for stats in out.glob("*_stats.json"):
        ok += int(json.loads(stats.read_text()).get("successes", 0))
    return wall, ok, peak, cpu


# -- machine limits -----------------------------------------------------------------------
def _sha(path: str) -> int:
    hashlib.sha256(Path(path).read_bytes()).digest()
    return 1


def _full(path: str) -> int:
    with Image.open(path) as im:
        im.load()
    return 1


def _draft(path: str) -> int:
    with Image.open(path) as im:
        im.draft("RGB", (256, 256))
        im.load()
    return 1


def stages_alone(recipe: Path, workers: int) -> float:
    """Candidates/s of cleanset's stages in 2 worker processes with no build process
    (scripts/bench/stages_alone.py), over the same URLs from the same server."""
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("stages_alone.py")),
                           str(recipe), "--processes", "2", "--threads", str(workers // 2)],
                          capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    line = proc.stdout.strip().splitlines()[-1]
    print(line)
    return float(line.split()[2])


def limit_rate(fn, files: list[str]) -> float:  # type: ignore[no-untyped-def]
    with Pool(2) as pool:
        start = time.perf_counter()
        sum(pool.imap_unordered(fn, files, chunksize=32))
        return len(files) / (time.perf_counter() - start)


def ensure_venv(venv: Path) -> Path:
    if not (venv / "bin" / "img2dataset").exists():
        print(f"creating {venv} with img2dataset (one time)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    return venv


def fmt(values: list[float], digits: int = 1) -> str:
    if not values:
        return "n/a"
    return (f"{statistics.median(values):8.{digits}f}  "
            f"({min(values):.{digits}f} .. {max(values):.{digits}f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cleanset-bench"))
    parser.add_argument("--img2dataset-venv", type=Path, default=Path("/tmp/i2d-venv"))
    parser.add_argument("--skip-img2dataset", action="store_true")
    parser.add_argument("--executor", choices=("auto", "threads", "processes"),
                        help="cleanset's executor (default: the recipe's default, as a user "
                             "gets it; a baseline tree older than `auto` gets processes)")
    parser.add_argument("--baseline-tree", type=Path,
                        help="also run the cleanset source tree there (e.g. `git archive` of an "
                             "earlier commit), alternated in the same rounds: before and after")
    args = parser.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    names = make_corpus(work, args.images, args.seed)
    files = [str(work / "img" / n) for n in names]
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"corpus: {len(names)} files ({args.images} distinct + duplicates), "
          f"{total_mb:.0f} MB, mean {total_mb * 1000 / len(names):.0f} KB")
    port = free_port()
    urls = work / "urls.parquet"
    pq.write_table(pa.table({
        "url": [f"http://127.0.0.1:{port}/{n}" for n in names],
        "license": [CC0] * len(names),
    }), urls)
    venv = None if args.skip_img2dataset else ensure_venv(args.img2dataset_venv)
    server = start_server(work, port)
    tools = ["cleanset", "img2dataset"] + (["baseline"] if args.baseline_tree else [])
    results: dict[str, list[float]] = {tool: [] for tool in tools}
    peaks: dict[str, list[int]] = {tool: [] for tool in tools}
    cpu_ms: dict[str, list[float]] = {tool: [] for tool in tools}  # CPU ms per input image
    ratios: list[float] = []
    baseline_ratios: list[float] = []
    try:
        # warm the page cache and the server once
        cleanset_round(work, urls, args.per_shard, args.workers, args.executor)
        for r in range(args.rounds):
            order = tools if r % 2 == 0 else tools[::-1]
            round_rates: dict[str, float] = {}
            for tool in order:
                if tool == "img2dataset" and venv is None:
                    continue
                if tool in ("cleanset", "baseline"):
                    tree = args.baseline_tree if tool == "baseline" else None
                    wall, ok, peak, cpu = cleanset_round(work, urls, args.per_shard,
                                                         args.workers, args.executor, tree)
                else:
                    assert venv is not None
                    wall, ok, peak, cpu = img2dataset_round(work, urls, args.per_shard, venv,
                                                            args.workers)
                rate = len(names) / wall  # candidates per second, the same input for both
                round_rates[tool] = rate
                results[tool].append(rate)
                peaks[tool].append(peak)
                cpu_ms[tool].append(cpu * 1e3 / len(names))
                print(f"round {r + 1}: {tool:11s} {wall:6.1f} s  {rate:7.1f} input images/s  "
                      f"({ok} written)  peak {peak} MB  CPU {cpu:.1f} s "
                      f"({cpu * 1e3 / len(names):.2f} ms per input image)")
            if "img2dataset" in round_rates:
                ratios.append(round_rates["cleanset"] / round_rates["img2dataset"])
                if "baseline" in round_rates:
                    baseline_ratios.append(round_rates["baseline"] / round_rates["img2dataset"])
        stages = stages_alone(work / "bench-recipe.toml", args.workers)
    finally:
        server.terminate()
        server.wait()
    limits = {
        "sha256 only": limit_rate(_sha, files),
        "full decode": limit_rate(_full, files),
        "reduced (draft) decode": limit_rate(_draft, files),
    }
    print()
    print(f"{'images/s on this machine':30s} {'median':>8s}  (min .. max)")
    for tool in tools:
        print(f"{tool:30s} {fmt(results[tool])}   peak memory {max(peaks[tool], default=0)} MB "
              f"(all its processes), CPU {fmt(cpu_ms[tool], 2)} ms per input image")
    for name, rate in limits.items():
        print(f"{name + ' (2 processes)':30s} {rate:8.1f}")
    if ratios:
        print(f"cleanset / img2dataset          {fmt(ratios, 2)}   (per round, paired)")
    if baseline_ratios:
        print(f"baseline / img2dataset          {fmt(baseline_ratios, 2)}   (per round, paired)")
    print(f"{'cleanset stages alone (2 proc.)':30s} {stages:8.1f}   (no build process: "
          "no decisions, dedup, shards, ledger or papers)")
    median = statistics.median(results["cleanset"])
    print(f"cleanset / its stages alone     {median / stages:8.2f}")
    if results["img2dataset"]:
        print(f"img2dataset / cleanset stages   "
              f"{statistics.median(results['img2dataset']) / stages:8.2f}")
    print(f"cleanset / reduced-decode limit {median / limits['reduced (draft) decode']:8.2f}")
    print(f"cleanset / full-decode limit    {median / limits['full decode']:8.2f}")


if __name__ == "__main__":
    main()
