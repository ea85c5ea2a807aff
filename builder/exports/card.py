"""`README.md` in the output directory: a Hugging Face dataset card.

A YAML header the Hub reads (licence, size category, task tags, the shards as the default
config) and a body for people: licence mix, sources, policy, opt-out signals honoured,
rejections by reason, how to load the shards, how to ask for a takedown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.exports.papers import atomic_write, not_text
from builder.ledger import Ledger

if TYPE_CHECKING:
    from builder.exports.papers import Facts

# Licence ids the Hub accepts in `license:`; anything else is `other` + license_name/link.
HUB_LICENSES = {
    "CC0-1.0": "cc0-1.0", "CC-BY-2.0": "cc-by-2.0", "CC-BY-2.5": "cc-by-2.5",
    "CC-BY-3.0": "cc-by-3.0", "CC-BY-4.0": "cc-by-4.0", "CC-BY-SA-3.0": "cc-by-sa-3.0",
    "CC-BY-SA-4.0": "cc-by-sa-4.0", "PDDL-1.0": "pddl", "ODC-By-1.0": "odc-by",
}
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
          (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
          (1_000_000_000, "100M<n<1B"))


def size_category(n: int) -> str:
    return next((label for limit, label in _SIZES if n < limit), "n>1T")


def card_header(facts: Facts) -> dict[str, Any]:
    header: dict[str, Any] = {"pretty_name": facts.name}
    ids = sorted(facts.licenses)
    if len(ids) == 1 and ids[0] in HUB_LICENSES:
        header["license"] = HUB_LICENSES[ids[0]]
    else:
        header["license"] = "other"
        header["license_name"] = "per-sample-open-licences"
        header["license_link"] = "spdx.json"
    header["size_categories"] = [size_category(facts.samples)]
    header["task_categories"] = ["text-to-image", "image-to-text",
                                 "unconditional-image-generation"]
    header["tags"] = ["cleanset", "provenance", "webdataset"] + [f"license:{i}" for i in ids]
    header["configs"] = [{"config_name": "default",
                          "data_files": [{"split": "train", "path": "shards/*.tar"}]}]
    return header


def write_card(ledger: Ledger, path: Path, facts: Facts) -> None:
    atomic_write(path, card_markdown(facts))


def card_markdown(facts: Facts) -> str:
    import yaml

    header = yaml.safe_dump(card_header(facts), sort_keys=False, allow_unicode=True)
    parts = [f"---\n{header}---\n", f"# {facts.name}\n", _summary(facts), _contact(facts),
             _licences(facts), _sources(facts), _policy(facts), _rejections(facts),
             _loading(facts), _takedown(facts), _citation(facts), _files()]
    return "\n".join(part for part in parts if part)


def _summary(facts: Facts) -> str:
    text = facts.description.strip() or "An image dataset built by cleanset."
    return (f"{text}\n\nVersion {facts.version}: {facts.samples} images "
            f"({facts.total_bytes / 1e6:.1f} MB) in {len(facts.shards)} WebDataset shard(s). "
            "Every image carries its provenance (source, licence with the evidence it was "
            f"decided from, credit line, checksums) in its `.json`.\n{_rechecked(facts)}")


def _rechecked(facts: Facts) -> str:
    """When the sources were last asked again (`cleanset recheck`), and what had drifted."""
    row = facts.rechecked
    if row is None:
        return ""
    applied = f"; taken down in {row.applied}" if row.applied else ""
    # Unreachable is not drift, but "0 drifted, 0 refused" alone reads as an all-clear.
    unreachable = row.counts.get("unreachable", 0)
    unchecked = (f"; {unreachable} could not be checked (unreachable: not an all-clear)"
                 if unreachable else "")
    from builder.recheck_log import describe_scope

    # The scope too: "0 drifted" of a random sample is not of every image.
    return (f"\nLast rechecked against its sources {row.when} (recheck {row.recheck}, "
            f"{row.total} samples of version {row.version}, {describe_scope(row.scope)}): "
            f"{row.drifted} drifted, "
            f"{row.refused} would have been refused{applied}{unchecked}.\n")


def _table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _licences(facts: Facts) -> str:
    from builder.licensing import license_info

    rows = []
    for license_id, n in facts.licenses.most_common():
        info = license_info(license_id)
        name = f"[{info.name}]({info.url})" if info and info.url else license_id
        credit = "yes" if info is None or info.attribution_required else "no"
        rows.append((f"`{license_id}`", name, n, f"{100 * n / max(facts.samples, 1):.1f}%",
                     credit))
    body = _table(("SPDX id", "Licence", "Images", "Share", "Credit required"), rows)
    return ("## Licences\n\nEach image has its own licence (in its `.json`, "
            "`manifest.parquet` and `spdx.json`). Credits owed are listed in "
            f"[ATTRIBUTION.md](ATTRIBUTION.md).\n\n{body}")


def _sources(facts: Facts) -> str:
    rows = [(f"`{name}`", n) for name, n in facts.sources.most_common()]
    return "## Sources\n\n" + _table(("Source", "Images"), rows)


def _policy(facts: Facts) -> str:
    lines = ["## Policy and opt-out signals\n"]
    for p in facts.policies:
        lines.append(f"- Licence policy `{p.get('name')}`: {p.get('description', '')}")
    signals = ", ".join(f"`{s}`" for s in facts.optout_signals)
    lines.append("- Licences were decided from source metadata before download; embedded "
                 "metadata could only make a decision stricter.")
    lines.append("- Machine-readable do-not-train signals honoured (any one refuses the "
                 f"image): {signals or 'none were checked for the images kept (local files)'}.")
    return "\n".join(lines) + "\n"


def _rejections(facts: Facts) -> str:
    total = sum(facts.candidates.values())
    rows = [(f"`{reason}`", n) for reason, n in sorted(facts.reasons.items(),
                                                       key=lambda kv: (-kv[1], kv[0]))]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(facts.candidates.items()))
    return (f"## What was refused\n\n{total} candidates considered ({counts or 'none'}). "
            "`candidates.parquet` has one row per candidate with its reason.\n\n"
            + (_table(("Reason", "Candidates"), rows) if rows else "Nothing was refused.\n")
            + _transient_note(facts))


def _transient_note(facts: Facts) -> str:
    """Network failures are listed with the refusals but are nobody's opt-out: say so."""
    from builder.records import MAX_ATTEMPTS, TRANSIENT_REASONS

    transient = {r: n for r, n in facts.reasons.items() if r in TRANSIENT_REASONS}
    if not transient:
        return ""
    names = ", ".join(f"`{r}`" for r in sorted(transient))
    return (f"\n{sum(transient.values())} of these ({names}) could not be checked or "
            "downloaded because of a network failure at build time (or a local file that "
            "could not be read). They are not opt-outs; "
            f"running the same recipe again retries each, {MAX_ATTEMPTS} runs in all.\n")


def _loading(facts: Facts) -> str:
    # A glob, not a brace range: a takedown deletes a shard it empties, so the numbers can
    # have gaps (`{000000..000003}` would name a missing file). webdataset takes a list.
    return (
        "## Loading\n\nWith `webdataset`:\n\n```python\nimport glob\n\n"
        "import webdataset as wds\n\n"
        'shards = sorted(glob.glob("shards/*.tar"))\n'
        'dataset = wds.WebDataset(shards, shardshuffle=False).decode("pil")\n'
        'for sample in dataset:\n    image, provenance = sample["jpg"], sample["json"]\n```\n\n'
        "With Hugging Face `datasets` (the provenance `json` is typed explicitly, because "
        "unknown values are null and type inference from the first samples would "
        "guess them wrongly; no cleanset install needed):\n\n```python\n"
        + FEATURES_SNIPPET +
        'ds = load_dataset("webdataset", data_files={"train": "shards/*.tar"}, split="train",\n'
        "                  features=features)\n```\n\n"
        "`manifest.parquet` lists every sample with its shard, licence and checksums; "
        "`croissant.json` describes both for Croissant readers.\n")


def _contact(facts: Facts) -> str:
    """Where the dataset lives and who answers for it ([dataset] homepage, contact)."""
    lines = []
    if facts.homepage:
        lines.append(f"- Homepage: {facts.homepage}")
    if facts.contact:
        lines.append(f"- Contact (questions, takedown requests): {_reach(facts)}")
    return "## Contact\n\n" + "\n".join(lines) + "\n" if lines else ""


def _reach(facts: Facts) -> str:
    return f"<{facts.contact_email}>" if facts.contact_email else str(facts.contact)


def _takedown(facts: Facts) -> str:
    if facts.contact:
        ask = f"contact the maintainers at {_reach(facts)}"
    else:
        ask = ("ask whoever published this dataset (its recipe names no `[dataset] "
               "contact`)")
    return (
        "## Takedown requests\n\nIf you hold rights in an image here and want it removed, "
        f"{ask}, naming the image (its key, "
        "its source URL or the file itself). The maintainers run\n\n```\n"
        'cleanset takedown DIR --url URL --reason "request from the rights holder"\n```\n\n'
        "(or `--key`, `--sha256`, `--image PATH`, `--creator NAME`, `--site HOST`), which "
        "removes the "
        "works from the shards, regenerates every paper, records the request in "
        "`takedowns.jsonl` and denylists the works so no later build admits them again.\n")


def _citation(facts: Facts) -> str:
    if not facts.citation:
        return ""
    text = facts.citation.strip()
    fence = "`" * max(3, _longest_backtick_run(text) + 1)  # the citation cannot close it
    kind = "bibtex" if text.startswith("@") else "text"
    return f"## Citation\n\n{fence}{kind}\n{text}\n{fence}\n"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _files() -> str:
    # Every file a cleanset output can hold: an auditor reading a copy years later must be
    # able to tell what each one is, and which are the record rather than derived from it.
    return ("## Files\n\n" + _table(("File", "What"), [
        ("`shards/*.tar`", "WebDataset shards: `KEY.jpg/png/...`, `KEY.json`, `KEY.txt`"),
        ("`README.md`", "this dataset card"),
        ("`manifest.parquet`", "one row per sample"),
        ("`candidates.parquet`", "one row per candidate considered, with its outcome"),
        ("`spdx.json`", "SPDX 2.3: the dataset and every image with its licence"),
        ("`croissant.json`", "Croissant metadata with Responsible-AI fields"),
        ("`ATTRIBUTION.md`, `attribution.csv`", "every credit owed"),
        ("`ledger.sqlite`", "the record every file above is derived from (SQLite): every "
         "candidate ever considered with its decision and reason, every sample with its "
         "provenance, each build with its recipe's sha256 and its policy, each dataset "
         "version; `cleanset verify`, `lookup`, `diff` and `takedown` read it"),
        ("`evidence/*.warc.gz`", "the evidence archive (WARC 1.1, ISO 28500): every "
         "response a source's API, a host's robots.txt / ai.txt / tdmrep.json and an image "
         "server gave while deciding a candidate, with headers and dates, API keys removed; "
         "provenance `evidence` points at the records (`cleanset evidence DIR KEY` prints "
         "them); a takedown is logged there as a metadata record"),
        ("`takedowns.jsonl`", "after a takedown: one line per takedown, what was removed, "
         "when and why"),
        ("`denylist.jsonl`", "after a takedown: the works removed (URLs, sha256, PDQ hash; "
         "a creator named with --creator, a site named with --site); later builds into this "
         "directory refuse them"),
        ("`report.html`", "written by `cleanset report`: charts of licences, sources, "
         "refusals, creators and sizes"),
        ("`_cleanset_published.json`", "at a published URL: every file with its size and "
         "sha256; the files it lists are one consistent version"),
        ("hidden files (`.NAME`)", "cleanset's working state (the lock of a running build, "
         "an interrupted takedown's journal, a URL output's stage); not part of the dataset, "
         "never published"),
    ]))


# The provenance schema as code a reader can paste without cleanset installed (the card
# prints it; hf_features() runs it).
FEATURES_SNIPPET = """from datasets import Features, Image, List, Value, load_dataset

s, i, b = Value("string"), Value("int64"), Value("bool")
warc = {"file": s, "record_id": s, "offset": i}  # a record in evidence/*.warc.gz
features = Features({
    "__key__": s, "__url__": s, "txt": s,
    **{ext: Image() for ext in ("jpg", "png", "webp", "gif", "tif")},
    "json": {
        "key": s, "sha256": s, "sha1": s, "pdq": s, "pdq_quality": i, "phash": s,
        "hash_pipeline": s, "width": i, "height": i, "mime": s, "bytes": i,
        "source": {"name": s, "id": s, "file_url": s, "landing_url": s, "api_url": s,
                   "path": s},
        "license": {"spdx": s, "url": s, "name": s, "attribution_required": b,
                    "share_alike": b, "chosen_from": s,
                    "evidence": List({"field": s, "value": s})},
        "attribution": {"creator": s, "creator_url": s, "title": s, "credit": s, "text": s},
        "caption": s, "retrieved_at": s,
        "http": {"status": i, "etag": s, "last_modified": s, "content_type": s},
        "optout": {"checked": List({"signal": s, "result": s}), "result": s},
        "extra": List({"name": s, "value": s}),
        "evidence": {"api": List(warc), "signals": List(warc), "image": warc},
        "build": {"tool": s, "tool_version": s, "provenance_version": i,
                  "recipe_sha256": s, "policy": s, "dataset": s, "build": i},
    },
})
"""


def hf_features() -> Any:
    """Features for `datasets.load_dataset("webdataset", ...)` over cleanset shards.

    Defined once, as the snippet printed in every dataset card, so the schema readers copy
    and the one the tests load with cannot drift apart.
    """
    namespace: dict[str, Any] = {}
    exec(FEATURES_SNIPPET, namespace)  # noqa: S102 - our own constant, not input
    return namespace["features"]


def check_card(out: Path, ledger: Ledger, facts: Facts,
               samples: dict[str, tuple[str, str]]) -> list[str]:
    path = out / "README.md"
    if not path.exists():
        return ["README.md (dataset card) is missing"]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return [not_text("README.md", exc)]
    match = re.search(r"^Version (\S+): (\d+) images", text, re.MULTILINE)
    if not match:
        return ["README.md: no 'Version V: N images' line; regenerate it with cleanset build"]
    problems = []
    if match.group(1) != facts.version:
        problems.append(f"README.md: version {match.group(1)} differs from the ledger's "
                        f"{facts.version}")
    if int(match.group(2)) != len(samples):
        problems.append(f"README.md: says {match.group(2)} images; the manifest has "
                        f"{len(samples)}")
    return problems
