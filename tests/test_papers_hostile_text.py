"""Sources' text that would be code somewhere it is shown: a formula in a spreadsheet,
Markdown or HTML in a credit list, a `javascript:` link, a terminal escape sequence, a bidi
override. A real build over a folder whose sidecars carry it, and every paper read back."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_image, run_cli, write_recipe

BY4 = "https://creativecommons.org/licenses/by/4.0/"
ESCAPES = "\x1b[31mRED\x1b[0m\x1b]0;pwned\x07\x9b2J"  # SGR, OSC (window title), C1 CSI
RLO = "\u202e"
# (file, sidecar): every field a credit line is made of, hostile.
HOSTILE = [
    ("formula.jpg", {"title": '=HYPERLINK("http://evil.example/","open me")',
                     "creator": "+cmd|' /C calc'!A0", "creator_url": "javascript:alert(1)",
                     "landing_url": "https://example.org/a b)c<d>"}),
    ("markdown.jpg", {"title": "Nice](javascript:alert(1)) <script>alert(1)</script>\n"
                               "# Heading\n[ref]: http://evil.example/ &lt;b&gt;",
                      "creator": "-2+3", "creator_url": "data:text/html,<script>x</script>",
                      "landing_url": "vbscript:msgbox(1)"}),
    ("controls.jpg", {"title": "@SUM(1+1)", "creator": f"Eve{RLO}gnp.exe\x00{ESCAPES}",
                      "creator_url": "file:///etc/passwd",
                      "landing_url": "http://example.org/x_(y)"}),
    ("html.jpg", {"title": "<img src=x onerror=alert(1)>",
                  "creator": "[click](http://evil.example/)", "creator_url": " JavaScript:x",
                  "landing_url": "https://example.org/<>\"'"}),
    ("list.jpg", {"title": "- 1. ~~~ 'quoted", "creator": f"Eve{RLO}gnp.exe\x00{ESCAPES}"}),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-text")
    images = root / "images"
    images.mkdir()
    for seed, (name, sidecar) in enumerate(HOSTILE):
        (images / name).write_bytes(make_image(seed + 500))
        (images / f"{name}.json").write_text(json.dumps({**sidecar, "license": BY4}),
                                             encoding="utf-8")
    # A file name is source text too: the evidence command prints it.
    (images / "name\x1b[2J.jpg").write_bytes(make_image(599))
    (images / "name\x1b[2J.jpg.json").write_text(json.dumps({"license": BY4}), encoding="utf-8")
    recipe = write_recipe(root / "recipe.toml", """
[dataset]
name = "hostile-text"
[policy]
use = "commercial"
[[sources]]
kind = "folder"
name = "sidecars"
path = "images"
""")
    out = root / "out"
    proc = run_cli("build", str(recipe), "--out", str(out), check=True)
    (root / "build.stdout").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return out


def credits(out: Path) -> list[dict[str, str]]:
    with (out / "attribution.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_verify_passes_over_papers_made_from_hostile_text(built: Path) -> None:
    proc = run_cli("verify", str(built))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_csv_cells_starting_like_a_formula_get_a_quote_and_keys_and_urls_stay_exact(
        built: Path) -> None:
    rows = credits(built)
    assert len(rows) == len(HOSTILE) + 1
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    by_title = {r["title"]: r for r in rows}
    for _, sidecar in HOSTILE:
        title = sidecar["title"].strip()
        quoted = by_title[f"'{title}"] if title[0] in "=+-@'" else by_title[title]
        # Exactly one quote added, and only to a cell that starts like a formula or a quote.
        assert quoted["creator"].removeprefix("'") == sidecar["creator"]
        assert quoted["creator"].startswith("'") == (sidecar["creator"][0] in "=+-@'")
        assert quoted["creator_url"] == sidecar.get("creator_url", "").strip()
        assert quoted["source_url"] == sidecar.get("landing_url", "")
        assert re.fullmatch(r"\d{10}", quoted["key"])


def test_attribution_md_links_only_http_urls_and_shows_the_rest_as_text(built: Path) -> None:
    text = (built / "ATTRIBUTION.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(lines) == len(HOSTILE) + 1  # one line each: no newline got through
    for line in lines:
        assert re.search(r" `\d{10}`$", line), line
        # Code spans are text whatever they hold; what is left may link only to http(s).
        prose = re.sub(r"(`+).*?\1", "", line)
        targets = re.findall(r"(?<!\\)\]\((<[^<>]*>|[^\s()<>]+)\)", prose)
        assert targets and all(re.match(r"<?https?://", t) for t in targets), line
        for target in targets:
            assert " " not in target and "<" not in target.strip("<>")
        outside = re.sub(r"(?<!\\)\]\((<[^<>]*>|[^\s()<>]+)\)", "]", prose)
        assert not re.search(r"(?<!\\)[<>]", outside), line  # no raw HTML tag
        assert not re.search(r"(?<!\\)\[(?![^\]]*\]\()", prose), line  # no bare [ ... ]
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", line), line
    joined = "\n".join(lines)
    # The text is still there to read, escaped: \<script\> renders as <script>.
    assert "\\<script\\>alert(1)\\</script\\>" in joined
    assert "(`javascript:alert(1)`)" in joined and "(`vbscript:msgbox(1)`)" in joined
    assert ('[=HYPERLINK("http://evil.example/","open me")](<https://example.org/a%20b)c%3Cd%3E>)'
            in joined)
    assert "(<http://example.org/x_(y)>)" in joined
    assert "\\&lt;b\\&gt;" in joined  # an entity shown as written, not decoded
    assert "Eve\\\\u202egnp.exe\\\\u0000\\\\u001b\\[31mRED" in joined
    assert "- \\- 1. \\~\\~\\~ 'quoted" in joined  # not a nested list, not a fence


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.links: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.links += [(tag, k, v) for k, v in attrs
                       if k in ("href", "src", "action") or k.startswith("on")]


def test_report_escapes_every_source_string_and_links_only_its_own_files(built: Path) -> None:
    run_cli("report", str(built), check=True)
    page = (built / "report.html").read_text(encoding="utf-8")
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3",
                           "section", "dl", "dt", "dd", "div", "b", "p", "br", "code", "ol",
                           "ul", "li", "a", "table", "tr", "th", "td", "span", "details",
                           "summary", "svg", "rect", "line", "polyline", "text"}
    assert parsed.links == [("a", "href", "ATTRIBUTION.md")]
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", page)
    assert "Eve\\u202egnp.exe\\u0000\\u001b[31mRED" in page
    assert "[click](http://evil.example/)" in page


def test_card_spdx_and_croissant_stay_valid_and_say_the_same(built: Path,
                                                            tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    card = (built / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-4.0" and header["pretty_name"] == "hostile-text"
    document = parse_file(str(built / "spdx.json"))
    assert validate_full_spdx_document(document) == []
    texts = {t for f in document.files for t in f.attribution_texts}
    assert any(f"Eve{RLO}gnp.exe\x00{ESCAPES}" in t for t in texts)  # the record, exact
    env = {**os.environ, "CROISSANT_CACHE": str(tmp_path / "cache")}
    read = subprocess.run([sys.executable, "-c", """
import json, sys
import mlcroissant as mlc
rows = mlc.Dataset(sys.argv[1]).records("samples")
print(json.dumps(sorted(c.decode() if isinstance(c := r["samples/creator"], bytes) else str(c)
                        for r in rows)))
""", str(built / "croissant.json")], capture_output=True, text=True, env=env, timeout=300,
        check=True)
    creators = json.loads(read.stdout.strip().splitlines()[-1])
    assert f"Eve{RLO}gnp.exe\x00{ESCAPES}" in creators


def test_nothing_cleanset_prints_carries_a_terminal_control_sequence(built: Path) -> None:
    unsafe = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
    said = (built.parent / "build.stdout").read_text(encoding="utf-8")
    assert "most: " in said and not unsafe.search(said)
    assert "Eve\\u202egnp.exe\\u0000\\u001b[31mRED" in said  # shown, escaped
    name = "sidecars:name\x1b[2J.jpg"
    shown = run_cli("evidence", str(built), name)
    assert shown.returncode == 0, shown.stderr
    assert not unsafe.search(shown.stdout + shown.stderr)
    assert "candidate sidecars:name\\u001b[2J.jpg" in shown.stdout
    missing = run_cli("evidence", str(built), "nothing\x1b]0;pwned\x07")
    assert missing.returncode == 2 and not unsafe.search(missing.stderr)
    # JSON output says the same: the escapes are JSON's own.
    as_json = run_cli("evidence", str(built), name, "--json")
    assert json.loads(as_json.stdout)["candidate_id"] == name


def test_the_progress_bar_still_draws_on_a_terminal(built: Path, tmp_path: Path) -> None:
    """The escaping of what cleanset prints leaves the progress bar's own carriage returns
    alone: they reach the terminal as they are, not as `\\u000d`."""
    import fcntl
    import pty
    import struct
    import termios

    from tests.conftest import FIXED_EPOCH, REPO

    primary, secondary = pty.openpty()
    # 24 x 80: a terminal of no size gets a bar of no width.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    recipe = built.parent / "recipe.toml"
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", str(recipe), "--out",
                             str(tmp_path / "out")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=secondary, env=env)
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the build closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    assert proc.wait(timeout=300) == 0
    assert b"\rcleanset: " in seen and b"\\u000d" not in seen
