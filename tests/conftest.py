"""Shared test helpers: generated images, recipes, and running the real CLI."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from PIL import Image
from preloaded_cli import PreloadedCli

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# No time limit per example: a property test's first example pays for loading the licence
# catalogue (~25 ms alone, 324 ms once with both test workers busy: DeadlineExceeded). Speed
# belongs in scripts/bench/, not in a test's verdict.
settings.register_profile("cleanset", deadline=None)
settings.load_profile("cleanset")


def pytest_configure(config: pytest.Config) -> None:
    """The commands these tests interrupt get Ctrl-C as a terminal delivers it. A test run
    started in the background of a script without job control (`cmd &`) inherits SIGINT
    ignored, and so would every command it starts: Python then installs no KeyboardInterrupt
    handler, and each Ctrl-C test saw its build carry on to exit 0. A handler here is reset
    to the default by exec in every child."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Provenance timestamps pinned, so rebuilds can be compared byte for byte.
FIXED_EPOCH = "1700000000"
FIXED_HTTP_DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # FIXED_EPOCH as an HTTP Date header


def make_image(seed: int, size: tuple[int, int] = (96, 64), fmt: str = "JPEG",
               quality: int = 90) -> bytes:
    """A distinct, deterministic picture: random blocks of colour (not flat, so hashes are good)."""
    rng = random.Random(seed)
    img = Image.new("RGB", size)
    px = img.load()
    bw, bh = max(1, size[0] // 8), max(1, size[1] // 8)
    for by in range(0, size[1], bh):
        for bx in range(0, size[0], bw):
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            for y in range(by, min(by + bh, size[1])):
                for x in range(bx, min(bx + bw, size[0])):
                    px[x, y] = colour
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def upgraded_cleanset(into: Path) -> Path:
    """A copy of this cleanset with one comment added, in `into`: another release as
    `cleanset --version` (`0.1.0+src.DIGEST`) tells them apart; run it with PYTHONPATH=`into`
    and cwd `into`."""
    import shutil

    shutil.copytree(REPO / "builder", into / "builder",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "licenses", into / "licenses")
    with (into / "builder" / "lookup.py").open("a") as f:
        f.write("# the next release\n")
    return into


def write_recipe(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def cli_env() -> dict[str, str]:
    return {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}


PRELOADED = PreloadedCli(cli_env)


@pytest.fixture(scope="session", autouse=True)
def _preloaded_cli_server() -> Iterator[None]:
    yield
    PRELOADED.close()


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
    """`cleanset ARGS` run to its end, from the preloaded server where it can be
    (tests/preloaded_cli.py), else as a fresh `python -m builder`."""
    full_env = {**cli_env(), **(env or {})}
    proc = None
    if PRELOADED.usable(full_env):
        proc = PRELOADED.run(list(args), full_env, cwd, timeout=300)
    if proc is None:
        proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True,
                              text=True, env=full_env, cwd=cwd, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"cleanset {' '.join(args)} -> {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`cleanset ARGS` started and left running (e.g. held at a CLEANSET_STOP_AT point)."""
    full_env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO),
                **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "builder", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stopped_itself(process: subprocess.Popen[str], timeout: float = 60) -> bool:
    """True once `process` has stopped itself (CLEANSET_STOP_AT), from its /proc state."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
            return True
        time.sleep(0.01)
    return False


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_url_recipe(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A loaded recipe of one table row (a CC0 image URL at example.org, never fetched):
    for tests that build stages from a plan without running a build."""
    from builder.recipe import load_recipe

    write_jsonl(tmp_path / "urls.jsonl", [{"url": "https://example.org/a.jpg",
                                           "license": "CC0-1.0"}])
    return load_recipe(write_recipe(tmp_path / "recipe.toml", """
[dataset]
name = "signals"
[[sources]]
kind = "table"
path = "urls.jsonl"
"""))


def table_recipe(tmp_path: Path, rows: list[dict], dataset: str, *, after: str = "",
                 source: str = "") -> Path:
    """A recipe over `rows` (urls.jsonl, a table source) fetching from the test server:
    `dataset` is the [dataset] table's body; `source` more lines of the source (its name);
    `after` follows `[fetch]`'s first key (more [fetch] keys, then any further tables)."""
    table = write_jsonl(tmp_path / "urls.jsonl", rows)
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
{dataset}
[[sources]]
kind = "table"
path = "{table.name}"
{source}
[fetch]
allow_private_addresses = true
{after}
""")


@pytest.fixture(autouse=True)
def test_servers_state_a_fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test HTTP server (pytest-httpserver runs on http.server) sends this Date header.

    The evidence archive keeps each response's headers, and provenance points at its records
    (builder/evidence), so a server stating the real time makes two builds differ, exactly
    as a live server would: comparing builds byte for byte needs the same responses, Date
    included. A replay or mirror with fixed headers is what these servers stand for."""
    from http.server import BaseHTTPRequestHandler

    monkeypatch.setattr(BaseHTTPRequestHandler, "date_time_string",
                        lambda self, timestamp=None: FIXED_HTTP_DATE)


@pytest.fixture
def fixed_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)


def serve_no_site_policies(httpserver) -> None:  # type: ignore[no-untyped-def]
    """Answer robots.txt, ai.txt and tdmrep.json with 404 (no reservation), as most hosts do.

    pytest-httpserver answers unknown paths with 500, which RFC 9309 reads as "disallow all".
    """
    for path in ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json"):
        httpserver.expect_request(path).respond_with_data("not found", status=404)


@pytest.fixture(scope="module")
def bound_by_permissions() -> list[str]:
    """The argv prefix running a command as a process file permissions bind: as it is when
    not root, else root without its capabilities (setpriv), which reads anything otherwise."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be observed")
    prefix = without_capabilities(setpriv)
    if prefix is None:
        pytest.skip("setpriv cannot drop this root's capabilities here")
    return prefix


def without_capabilities(setpriv: str) -> list[str] | None:
    """The argv prefix running a command as this root without its capabilities (file
    permissions then bind it, on files it owns too), or None where setpriv cannot drop them."""
    prefix = [setpriv, "--bounding-set=-all", "--inh-caps=-all"]
    probe = subprocess.run([*prefix, "cat", "/proc/self/status"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0 or "CapEff:\t0000000000000000" not in probe.stdout:
        return None
    return prefix
