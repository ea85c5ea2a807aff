"""Take works down: remove matching samples without a rebuild, and keep them out for good.

A takedown is a journal, so a crash leaves the old dataset or (after any re-run) the new one:
  1. `DIR/.takedown.json` is written (the plan: shards to rewrite, keys, temp names, denylist
     entries, the log record). Before it is durable nothing changed; once it is, the takedown
     is decided and every later step is redone or skipped idempotently by whoever finds it.
  2. each affected shard is rewritten to `NNNNNN.tar.takedown` with the same tar writer and
     fixed metadata as the build (so the kept members are byte-for-byte what they were), then
     fsynced; the journal records phase `ready` with the new sizes and sha256s;
  3. the temp files are renamed over their shards (untouched shards are never opened for
     writing) and the directory is fsynced;
  4. one ledger transaction: samples rows deleted, candidate rows `removed` with the reason,
     shard rows updated, `dataset_version` bumped, the version's removed keys recorded, and
     the takedown archived as a WARC metadata record (`evidence/ID.warc.gz`, written just
     before; the removed samples' evidence records are kept);
  5. the denylist and `takedowns.jsonl` are appended (entries already there are not repeated);
  6. the papers (manifest, candidates, SPDX, Croissant, card, attribution, and report.html
     when there is one) are regenerated;
  7. the journal is deleted.
A shard left with no samples is deleted (file and ledger row; the log lists it under
`shards_deleted`) rather than kept as an empty tar: Hugging Face `datasets` fails to load a
set of shards whose first one is empty, and `webdataset` refuses an empty one on its own.
Shard numbers are therefore not always contiguous after a takedown; read the shard list from
the manifest or a glob, not from a brace range.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from builder import clock
from builder.dedup import dataset_hash_pipeline
from builder.errors import UserError
from builder.faults import crash_point
from builder.identity import tool_version
from builder.ledger import Ledger, check_not_emptied, reading, require_dataset
from builder.lock import OutputLock
from builder.media import hamming, perceptual_hashes
from builder.optout.denylist import norm_creator
from builder.recipe import DedupConfig
from builder.records import recordable
from builder.shards import (
    file_sha256,
    fsync_dir,
    read_shard_members,
    shard_name,
    write_whole_shard,
)
from builder.takedown_journal import DENYLIST, JOURNAL, LOG, pending_takedown, read_jsonl
from builder.urls import match_key, match_literal, on_site, site_host, site_pattern
from builder.versions import (
    current_version,
    has_version,
    record_build_version,
    record_takedown_version,
)

TEMP_SUFFIX = ".takedown"

# Keys are the pipeline's `f"{n:010d}"`; a sha256 is 64 hex digits in either case. A value of
# another shape cannot match anything, so it is refused rather than answered "nothing matches".
_KEY_SHAPE = re.compile(r"[0-9]{10,}")
_SHA256_SHAPE = re.compile(r"[0-9a-fA-F]{64}")
SELECTOR_HINT = ("--key K, --url U, --sha256 H, --image PATH, --creator NAME or --site HOST, "
                 "repeatable, and --reason TEXT")


@dataclass(frozen=True)
class Selectors:
    keys: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    sha256s: tuple[str, ...] = ()
    images: tuple[Path, ...] = ()
    creators: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()  # hosts, as builder.urls.site_host gives them
    # (key, words) added to that key's `why` in takedowns.jsonl, e.g. what a recheck found
    notes: tuple[tuple[str, str], ...] = ()
    # The recheck whose --apply this is: marked applied in the takedown's own ledger commit,
    # so a takedown interrupted and finished by a later command still names it.
    recheck: int | None = None

    def empty(self) -> bool:
        return not (self.keys or self.urls or self.sha256s or self.images or self.creators
                    or self.sites)

    def to_json(self) -> dict[str, list[str]]:
        return {"key": list(self.keys), "url": list(self.urls), "sha256": list(self.sha256s),
                "image": [str(p) for p in self.images], "creator": list(self.creators),
                "site": list(self.sites)}

    def check_shapes(self) -> None:
        """Refuse a --key, --sha256 or --url that no sample could have (a typo, a truncated
        hash, an empty shell variable)."""
        for key in self.keys:
            if not _KEY_SHAPE.fullmatch(key):
                raise UserError(f"takedown: --key {key!r} is not a sample key; keys are ten "
                                "digits, e.g. 0000000042 (see manifest.parquet, or find one "
                                "with `cleanset lookup`).")
        for sha in self.sha256s:
            if not _SHA256_SHAPE.fullmatch(sha.strip()):
                raise UserError(f"takedown: --sha256 {sha!r} is not a sha256; give all 64 "
                                "hexadecimal digits of the image file's sha256 (`sha256sum "
                                "FILE`), or the file itself with --image FILE.")
        for url in self.urls:
            require_utf8(url, "takedown: --url")
            if not url.strip():
                raise UserError(f"takedown: --url {url!r} is empty; give the file URL, the "
                                "landing page or the URL it was fetched from (see "
                                "manifest.parquet), with or without tracking parameters.")
        for creator in self.creators:
            require_utf8(creator, "takedown: --creator")
            if not creator.strip():
                raise UserError(f"takedown: --creator {creator!r} is empty; give the name as "
                                "the attribution list credits it (attribution.csv).")
        for path in self.images:
            # A named pipe or a device is read until it ends: the takedown waited for ever,
            # holding the directory's lock (a missing file or a folder is named when read).
            if path.exists() and not path.is_file() and not path.is_dir():
                raise UserError(f"takedown: --image {path}: is not a file (a device or a "
                                "pipe); give the path of an image file. Nothing changed.")


def require_utf8(text: str, what: str) -> None:
    """Refuse text that is not UTF-8 before anything is planned. A Latin-1 terminal or script
    hands Python argv bytes it reads as lone surrogates, which the ledger cannot store: such a
    --reason once failed only at the ledger commit, after the journal, so no later command
    could finish the takedown and every writer to the directory stopped on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:  # the bytes as typed, the undecodable ones as \xNN
            shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
        raise UserError(f"{what} '{shown}' is not UTF-8 text (the terminal or script sent "
                        "another encoding); give it in UTF-8. Nothing changed.") from None


@dataclass(frozen=True)
class NearRule:
    """The recipe's default near-duplicate rule (builder.recipe.DedupConfig)."""

    pdq_max: int = DedupConfig.max_distance
    phash_max: int = DedupConfig.phash_max_distance
    pdq_max_with_phash: int = DedupConfig.pdq_max_distance_with_phash
    min_quality: int = DedupConfig.min_pdq_quality

    def near(self, pdq_distance: int, phash_distance: int | None) -> bool:
        if pdq_distance <= self.pdq_max:
            return True
        return (phash_distance is not None and phash_distance <= self.phash_max
                and pdq_distance <= self.pdq_max_with_phash)


@dataclass(frozen=True)
class Match:
    key: str
    shard: int
    why: tuple[str, ...]  # every selector that matched it, e.g. "url=...", "image=p (near 12)"


@dataclass(frozen=True)
class Removed:
    """A selector naming no current sample but a work an earlier takedown removed."""

    selector: str             # as in Match.why, e.g. "key=0000000004"
    when: str | None          # when that takedown ran (UTC ISO 8601); None if not on record
    takedown_id: str | None
    reason: str
    # a site no sample was ever removed from, denylisted before any build took from it
    denied_only: bool = False

    def line(self) -> str:
        on = f" on {self.when[:10]}" if self.when else ""
        by = f" by {self.takedown_id}" if self.takedown_id else ""
        done = "already denylisted" if self.denied_only else "already removed"
        return f"{self.selector}: {done}{on}{by} (reason: {self.reason})"


@dataclass
class TakedownResult:
    matches: list[Match]
    dry_run: bool
    version: int | None = None           # the dataset version after the takedown
    shards_rewritten: list[str] = field(default_factory=list)  # file names, as in the log
    shards_deleted: list[str] = field(default_factory=list)    # emptied, so deleted
    already_removed: list[Removed] = field(default_factory=list)
    completed_pending: str | None = None  # id of an interrupted takedown this run finished
    seconds: float = 0.0
    denylisted_sites: list[str] = field(default_factory=list)  # newly (or would be: dry run)

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.completed_pending:
            out.append(f"completed the interrupted takedown {self.completed_pending}")
        verb = "would remove" if self.dry_run else "removed"
        for m in self.matches:
            out.append(f"{verb} {m.key} ({shard_name(m.shard)}): {'; '.join(m.why)}")
        out += [r.line() for r in self.already_removed]
        would = "would be denylisted" if self.dry_run else "denylisted"
        out += [f"site={site}: {would}: later builds into this directory refuse every image "
                "whose URL or landing page is on it or a subdomain"
                + ("" if self.matches else " (none is in the dataset now)")
                for site in self.denylisted_sites]
        if self.dry_run:
            out.append(f"dry run: {len(self.matches)} sample(s) in "
                       f"{len({m.shard for m in self.matches})} shard(s) would be removed; "
                       "nothing changed")
        elif self.matches:
            deleted = (f", {len(self.shards_deleted)} shard(s) deleted because emptied "
                       f"({', '.join(self.shards_deleted)})" if self.shards_deleted else "")
            out.append(f"takedown: {len(self.matches)} sample(s) removed, "
                       f"{len(self.shards_rewritten)} shard(s) rewritten{deleted}, dataset "
                       f"version {self.version}, {self.seconds:.2f} s")
        return out


# -- matching -------------------------------------------------------------------------------
def find_matches(ledger: Ledger, sel: Selectors, rule: NearRule | None = None) -> list[Match]:
    """Samples currently in the dataset that any selector names, in key order."""
    rule = rule or NearRule()
    why: dict[str, list[str]] = defaultdict(list)
    shard_of: dict[str, int] = {}

    def hit(rows: Any, label: str) -> None:
        for key, shard in rows:
            shard_of[key] = shard
            if label not in why[key]:
                why[key].append(label)

    q = ledger.db.execute
    for key in sel.keys:
        hit(q("SELECT key, shard FROM samples WHERE key = ?", (key,)), f"key={key}")
    for url in sel.urls:
        hit(_samples_by_url(ledger, url), f"url={url}")
    for sha in sel.sha256s:
        hit(q("SELECT key, shard FROM samples WHERE sha256 = ?", (sha.strip().lower(),)),
            f"sha256={sha}")
    for creator in sel.creators:
        hit(q("SELECT key, shard FROM samples WHERE lower(trim(creator)) = lower(trim(?))",
              (creator,)), f"creator={creator}")
    for site in sel.sites:
        hit(_samples_on_site(ledger, site), f"site={site}")
    for path in sel.images:
        for key, shard, label in _image_matches(ledger, path, rule):
            hit([(key, shard)], label)
    for key, note in sel.notes:
        if key in shard_of and note not in why[key]:
            why[key].append(note)
    return [Match(k, shard_of[k], tuple(why[k])) for k in sorted(why)]


def _samples_on_site(ledger: Ledger, host: str) -> list[tuple[str, int]]:
    """(key, shard) of the samples whose file, landing or fetched URL is on `host` or a
    subdomain (`builder.urls.on_site`), or whose bytes came from a URL there."""
    from builder.evidence.archive import served_from

    pattern = site_pattern(host)
    found = {key: shard for key, shard, file_url, landing_url in ledger.db.execute(
        "SELECT key, shard, file_url, landing_url FROM samples WHERE file_url LIKE ?1 "
        "ESCAPE '\\' OR landing_url LIKE ?1 ESCAPE '\\'", (pattern,))
        if on_site(file_url, host) or on_site(landing_url, host)}
    # The URL it was fetched from, where that is not its file URL (a redirect followed).
    for key, shard, fetched in ledger.db.execute(
            "SELECT c.key, s.shard, c.url FROM candidates AS c JOIN samples AS s USING (key) "
            "WHERE c.status = 'accepted' AND c.url LIKE ? ESCAPE '\\'", (pattern,)):
        if on_site(fetched, host):
            found.setdefault(key, shard)
    # Where its bytes came from: a short link or another host's URL redirecting there.
    for build, seq, served in served_from(ledger.db, pattern):
        if on_site(served, host):
            for key, shard in ledger.db.execute(
                    "SELECT s.key, s.shard FROM candidates AS c JOIN samples AS s USING (key) "
                    "WHERE c.build = ? AND c.seq = ?", (build, seq)):
                found.setdefault(key, shard)
    return sorted(found.items())


def _samples_by_url(ledger: Ledger, url: str) -> list[tuple[str, int]]:
    """(key, shard) of the samples whose file, landing or fetched URL names the same file
    as `url` (`builder.urls.match_key`: with or without `utm_*` parameters, host in any case).

    SQL keeps the rows that contain `url`'s most distinctive literal part (`match_literal`),
    then Python compares match keys over those few: one pass over `samples` in SQLite's C
    code, as the plain `=` it replaces was (these columns have no index), with no Python per
    row and no extra column or index in the ledger. On a million samples that pass takes
    about as long as the old exact comparison did (2-3 s on a busy 2-core machine).
    """
    want, needle = match_key(url), match_literal(url)
    found: dict[str, int] = {}
    for key, shard, file_url, landing_url in ledger.db.execute(
            "SELECT key, shard, file_url, landing_url FROM samples"
            " WHERE instr(file_url, ?1) > 0 OR instr(landing_url, ?1) > 0", (needle,)):
        if want in (match_key(u) for u in (file_url, landing_url) if u):
            found[key] = shard
    # A fetched URL is the sample's file_url, except for local files (file_url NULL, the
    # candidate's url is their path): only those are looked up in `candidates`, through its
    # key index (CROSS JOIN keeps SQLite from scanning every candidate row instead).
    for key, shard, fetched in ledger.db.execute(
            "SELECT s.key, s.shard, c.url FROM samples s CROSS JOIN candidates c"
            " ON c.key = s.key WHERE s.file_url IS NULL AND instr(c.url, ?) > 0", (needle,)):
        if match_key(fetched) == want:
            found[key] = shard
    return sorted(found.items())


def _image_matches(ledger: Ledger, path: Path, rule: NearRule) -> list[tuple[str, int, str]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"--image {path}: cannot be read ({exc.strerror or exc}). "
                        "Give the path of an image file.") from None
    sha = hashlib.sha256(data).hexdigest()
    out = [(k, s, f"image={path} (exact)") for k, s in ledger.db.execute(
        "SELECT key, shard FROM samples WHERE sha256 = ?", (sha,))]
    try:  # hashed as the dataset's samples were, or the distances mean nothing
        pdq, quality, phash = perceptual_hashes(
            data, pipeline=dataset_hash_pipeline(ledger.db, ledger.path.parent))
    except ValueError as exc:
        if out:
            return out  # exact matches need no decoding
        raise UserError(f"--image {path}: not a usable image ({exc}); give the image file "
                        "itself, or use --sha256 / --url.") from None
    if quality < rule.min_quality:
        return out  # a flat or tiny image's PDQ says little: exact matches only
    exact = {k for k, _, _ in out}
    # A linear scan over the samples' hashes: fine at ledger scale (100k rows take well under
    # a second); builder.dedup's index would serve the same rule for much larger sets.
    for key, shard, s_pdq, s_quality, s_phash in ledger.db.execute(
            "SELECT key, shard, pdq, pdq_quality, phash FROM samples WHERE pdq IS NOT NULL"):
        if key in exact or (s_quality is not None and s_quality < rule.min_quality):
            continue
        d_pdq = hamming(pdq, s_pdq)
        d_phash = hamming(phash, s_phash) if s_phash and len(s_phash) == len(phash) else None
        if rule.near(d_pdq, d_phash):
            out.append((key, shard, f"image={path} (near: pdq {d_pdq}"
                        + (f", phash {d_phash})" if d_phash is not None else ")")))
    return out


# -- works already taken down --------------------------------------------------------------
def find_removed(out: Path, ledger: Ledger, sel: Selectors, matches: list[Match]
                 ) -> list[Removed]:
    """The --key, --url, --sha256, --image, --creator and --site selectors that match no
    current sample because an earlier takedown removed their work: when, by which takedown
    and why.

    `takedowns.jsonl` dates a removed key; the ledger's `removed` candidate rows map a fetched
    URL to its key; `denylist.jsonl` holds the URLs and sha256s of every removed work, and
    every creator a takedown named.
    """
    matched = {label for m in matches for label in m.why}
    entries = [entry for entry in read_jsonl(out / LOG) if isinstance(entry, dict)]
    log = _log_by_key(entries)
    deny = _denylist_by_value(out / DENYLIST)
    found: list[Removed] = []
    for key in sel.keys:
        if f"key={key}" not in matched:
            found += _removed_key(ledger, log, key, f"key={key}")
    for url in sel.urls:
        label = f"url={url}"
        if label in matched:
            continue
        want = match_key(url)
        keys = [k for k, fetched in ledger.db.execute(
            "SELECT key, url FROM candidates WHERE status = 'removed' AND instr(url, ?) > 0",
            (match_literal(url),)) if match_key(fetched) == want]
        # A landing page is not in the candidate rows: the log names the works it matched.
        keys += _taken_by_url(entries, want)
        by_key = [r for k in keys for r in _removed_key(ledger, log, k, label)]
        found += by_key[:1] or _denied(deny, "url", want, label)
    for sha in sel.sha256s:
        if f"sha256={sha}" not in matched:
            found += _denied(deny, "sha256", sha.strip().lower(), f"sha256={sha}")
    for creator in sel.creators:
        if f"creator={creator}" not in matched:
            found += _denied(deny, "creator", norm_creator(creator), f"creator={creator}")
    for site in sel.sites:
        label = f"site={site}"
        if label in matched:
            continue
        # The takedown that named this site; else one that removed a work fetched from it
        # (its page, not kept once the sample is gone, is known only to the first).
        keys = [m["key"] for entry in entries
                for m in entry.get("matched") or [] if isinstance(m, dict)
                and isinstance(m.get("key"), str) and label in (m.get("why") or [])]
        keys += [key for key, url in ledger.db.execute(
            "SELECT key, url FROM candidates WHERE status = 'removed' AND url LIKE ? "
            "ESCAPE '\\'", (site_pattern(site),)) if on_site(url, site)]
        found += ([r for k in keys for r in _removed_key(ledger, log, k, label)][:1]
                  or [replace(r, denied_only=True) for r in _denied(deny, "site", site, label)])
    unmatched = [path for path in sel.images
                 if not any(label.startswith(f"image={path} (") for label in matched)]
    if unmatched:
        found += _removed_images(out, ledger, unmatched)
    return found


def _taken_by_url(entries: list[dict[str, Any]], want: str) -> list[str]:
    """Keys earlier takedowns removed as matched by a `--url` with match key `want`."""
    return [match["key"] for entry in entries for match in entry.get("matched") or []
            if isinstance(match, dict) and isinstance(match.get("key"), str)
            and any(str(why).startswith("url=") and match_key(str(why)[4:]) == want
                    for why in match.get("why") or [])]


def _removed_images(out: Path, ledger: Ledger, paths: list[Path]) -> list[Removed]:
    """--image of a work an earlier takedown removed, or of a near copy of it, found in the
    denylist as `lookup` finds it: it was answered "nothing matches", as if never taken."""
    from builder.lookup import Removals, query_of

    removals = Removals.of(out, ledger.db)
    pipeline = dataset_hash_pipeline(ledger.db, ledger.path.parent)
    found = []
    for path in paths:
        gone = removals.find(query_of(path, pipeline))
        found += [Removed(f"image={path} " + ("(exact)" if g["exact"] else
                                              f"(near: pdq {g['distance']})"),
                          g["when"], g["takedown"], str(g["reason"])) for g in gone[:1]]
    return found


def _removed_key(ledger: Ledger, log: dict[str, dict[str, Any]], key: str, label: str
                 ) -> list[Removed]:
    entry = log.get(key)
    if entry is not None:
        return [Removed(label, entry.get("when"), entry.get("id"), str(entry.get("reason")))]
    # Not in the log (an older or hand-trimmed one): the ledger row still says who and why.
    row = ledger.db.execute("SELECT detail FROM candidates WHERE key = ? AND status = 'removed'",
                            (key,)).fetchone()
    if row is None:
        return []
    takedown_id, _, reason = str(row[0] or "").partition(": ")
    return [Removed(label, None, takedown_id or None, reason or "not recorded")]


def _denied(deny: dict[tuple[str, str], dict[str, Any]], kind: str, value: str, label: str
            ) -> list[Removed]:
    entry = deny.get((kind, value))
    if entry is None:
        return []
    return [Removed(label, entry.get("added_at"), None, str(entry.get("reason")))]


def _log_by_key(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: entry for entry in entries for key in entry.get("keys") or []}


def _denylist_by_value(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Entries by (kind, value); a URL entry by its match key, as the opt-out gate reads it."""
    return {_denylist_id(str(e.get("kind")), str(e.get("value"))): e for e in read_jsonl(path)}


def _denylist_id(kind: str, value: str) -> tuple[str, str]:
    """What the opt-out gate compares: a URL's match key, a creator's name in any case."""
    if kind == "url":
        return (kind, match_key(value))
    if kind == "site":
        with contextlib.suppress(ValueError):  # a hand-written entry that is no host
            return (kind, site_host(value))
    return (kind, norm_creator(value) if kind == "creator" else value)


def new_sites(out: Path, sel: Selectors) -> list[str]:
    """The --site hosts the dataset's denylist does not refuse yet."""
    deny = _denylist_by_value(out / DENYLIST)
    return [site for site in sel.sites if ("site", site) not in deny]


# -- the command ----------------------------------------------------------------------------
def takedown(out: Path, sel: Selectors, reason: str | None, *, dry_run: bool = False,
             locked: bool = False) -> TakedownResult:
    """Take down what `sel` names; `locked`: the caller already holds the writer lock
    (`recheck --apply`, from its recheck on)."""
    ledger_path = out / "ledger.sqlite"
    require_dataset(out)
    check_not_emptied(ledger_path)
    sel.check_shapes()
    if reason is not None:
        require_utf8(reason, "takedown: --reason")
    if dry_run:
        return _dry_run(out, sel)
    if not sel.empty() or pending_takedown(out) is not None:
        _require_writable(out)
    from builder.exports.papers import require_writers

    require_writers()  # before any shard is rewritten: the takedown ends by rewriting the papers
    started = time.monotonic()
    with nullcontext() if locked else OutputLock(out):
        completed = _complete_locked(out)
        if sel.empty():
            if completed is None:
                raise UserError(f"takedown: nothing to finish in {out} (no interrupted "
                                f"takedown); name what to remove ({SELECTOR_HINT}).")
            return TakedownResult(matches=[], dry_run=False, completed_pending=completed)
        if not reason or not reason.strip():
            raise UserError("takedown: --reason TEXT is required (it is kept in the ledger, "
                            "takedowns.jsonl and the denylist).")
        ledger = Ledger(ledger_path)
        try:
            matches = find_matches(ledger, sel)
            removed = find_removed(out, ledger, sel, matches)
            sites = new_sites(out, sel)
            if not matches:
                # Asked to take a site down before any build took from it (or after every
                # sample from it is gone): later builds still must not.
                if sites:
                    only_sites = Selectors(sites=tuple(sites))
                    _append_jsonl(out / DENYLIST, _denylist_entries(
                        ledger, [], only_sites, reason.strip(), clock.wall_iso()),
                        unique=("kind", "value"))
                    _refresh_report(out)
                return TakedownResult(matches=[], dry_run=False, completed_pending=completed,
                                      already_removed=removed, denylisted_sites=sites)
            plan = _make_plan(ledger, sel, reason.strip(), matches)
            _require_shards(out, plan, {row.shard: row for row in ledger.shards()})
        finally:
            ledger.close()
        _write_journal(out, plan)
        crash_point("takedown_journal")
        _apply(out, plan)
    return TakedownResult(matches=matches, dry_run=False, version=plan["new_version"],
                          shards_rewritten=plan["log"]["shards_rewritten"],
                          shards_deleted=plan["log"]["shards_deleted"],
                          already_removed=removed, completed_pending=completed,
                          seconds=time.monotonic() - started, denylisted_sites=sites)


def _require_shards(out: Path, plan: dict[str, Any], recorded: dict[int, Any]) -> None:
    """Refuse (exit 2, nothing changed) when a shard the takedown must rewrite is gone or is
    not the file the ledger recorded (truncated by a bad copy, replaced, overwritten).

    A journal written over a missing or unreadable shard could never be finished, and every
    later command would ask for it; a damaged one was rewritten from whatever members it
    still held and its new sha256 recorded, so the samples lost with it vanished from the
    shard's record and the good copy it could have been restored from no longer fitted."""
    shards = out / "shards"
    # A shard lost whole whose every sample goes is no obstacle: nothing of it is kept.
    emptied = set(plan["log"]["shards_deleted"])
    missing, changed, open_ = [], [], []
    for entry in plan["shards"]:
        if entry["file"] in emptied:
            continue
        path = shards / entry["file"]
        row = recorded.get(entry["shard"])
        if row is not None and not row.complete:
            # The shard a stopped build was writing (NNNNNN.tar.tmp, or in place): was
            # "missing ... restore the shards from a copy", or was rewritten with the
            # members past its last commit, no sample of the ledger, kept as if committed.
            open_.append(entry["file"])
        elif not path.exists():
            missing.append(entry["file"])
        elif row is not None and row.complete and row.sha256 and (
                path.stat().st_size != row.size or file_sha256(path) != row.sha256):
            changed.append(entry["file"])
    if open_:
        raise UserError(
            f"{shards}: {_listed(open_)} {'is' if len(open_) == 1 else 'are'} still being "
            "written by a build that was stopped before it finished, and the takedown must "
            f"rewrite {'it' if len(open_) == 1 else 'them'}. Resume the build first (the same "
            "`cleanset build RECIPE --out DIR`; `--limit` stops it sooner), then take down "
            "again. Nothing changed.")
    if missing:
        listed = _listed(missing)
        raise UserError(
            f"{shards}: {listed} {'is' if len(missing) == 1 else 'are'} missing, and the "
            "takedown must rewrite "
            f"{'it' if len(missing) == 1 else 'them'}. The directory was changed outside "
            "cleanset: restore the shards from a copy (`cleanset verify` lists what differs "
            "from the ledger), then take down again; with no copy, a takedown of every sample "
            "a shard held deletes it (verify lists them as in no shard). Nothing changed.")
    if changed:
        raise UserError(
            f"{shards}: {_listed(changed)} {'is' if len(changed) == 1 else 'are'} not the "
            "file the ledger recorded (another size or sha256: truncated, replaced or "
            "edited outside cleanset), and the takedown must rewrite "
            f"{'it' if len(changed) == 1 else 'them'}. Restore the shards from a copy "
            "(`cleanset verify` lists what differs from the ledger), then take down again; "
            "with no copy, a takedown of every sample a shard held deletes it. Nothing "
            "changed.")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _require_writable(out: Path) -> None:
    """Refuse (exit 2, nothing changed) a directory this user cannot write, before the lock
    or the ledger is touched: SQLite would fail half-way in with 'readonly database'. The
    files and folders a takedown writes after renaming its shards are checked too: an
    `evidence/` or `denylist.jsonl` it could not write left the takedown half-applied."""
    needed = [out, out / "ledger.sqlite", out / "shards", out / "evidence", out / DENYLIST,
              out / LOG]
    unwritable = [path for path in needed if path.exists() and not os.access(path, os.W_OK)]
    if unwritable:
        raise UserError(f"{out}: is read-only ({unwritable[0]} cannot be written); a takedown "
                        "rewrites shards, the ledger and the papers. Run it where the "
                        "directory can be written (fix its permissions, or take down in a "
                        "writable copy); `--dry-run` lists the matches here. Nothing changed.")


def complete_pending(out: Path) -> str | None:
    """Finish an interrupted takedown in `out`, if there is one; return its id.

    Every command that writes to an output directory calls this first (under the output
    lock it already holds, via `complete_pending_locked`); `verify` only reports it.
    """
    if not (out / JOURNAL).exists():
        return None
    with OutputLock(out):
        return _complete_locked(out)


def complete_pending_locked(out: Path) -> str | None:
    return _complete_locked(out)


def _complete_locked(out: Path) -> str | None:
    path = out / JOURNAL
    if not path.exists():
        return None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        # The journal is renamed into place whole; an unreadable one was edited by hand.
        raise UserError(f"{path}: is not valid JSON. Restore it, or delete it if no shard was "
                        "renamed yet (compare shard sha256s with the ledger).") from None
    missing = _not_a_plan(plan)
    if missing:
        # Valid JSON of another shape (an edit, another file copied over it) stopped every
        # writer with a KeyError traceback.
        raise UserError(f"{path}: is not a takedown journal cleanset wrote ({missing}). "
                        "Restore it, or delete it if no shard was renamed yet (compare shard "
                        "sha256s with the ledger).")
    _apply(out, plan)
    return str(plan["id"])


# What `_make_plan` writes and `_apply` reads back, with the type of each.
_PLAN_FIELDS = {"id": str, "phase": str, "old_version": int, "new_version": int, "keys": list,
                "shards": list, "denylist": list, "log": dict}


def _not_a_plan(plan: object) -> str | None:
    """What makes `plan` no journal of ours, or None when it has every field `_apply` reads."""
    if not isinstance(plan, dict):
        return f"a JSON {type(plan).__name__}, not an object"
    for name, kind in _PLAN_FIELDS.items():
        if not isinstance(plan.get(name), kind):
            return f"its {name!r} is missing or not a {kind.__name__}"
    return None


def _dry_run(out: Path, sel: Selectors) -> TakedownResult:
    if sel.empty():
        pending = pending_takedown(out)
        if pending:
            raise UserError(f"takedown --dry-run: the interrupted takedown {pending} is "
                            f"pending in {out}; `cleanset takedown {out}` finishes it.")
        raise UserError(f"takedown --dry-run: name what to remove ({SELECTOR_HINT}).")
    # Read-only (a read-only copy is enough), beside readers, never beside a writer.
    with reading(out, "takedown --dry-run") as ledger:
        matches = find_matches(ledger, sel)
        sites = new_sites(out, sel)
        return TakedownResult(matches=matches, dry_run=True, denylisted_sites=sites,
                              already_removed=find_removed(out, ledger, sel, matches))


# -- the plan -------------------------------------------------------------------------------
def _make_plan(ledger: Ledger, sel: Selectors, reason: str, matches: list[Match]
               ) -> dict[str, Any]:
    ledger.begin()
    # So the diff knows which version added what we remove. A build stopped before it
    # finished (Ctrl-C, a crash) left keys no version claims: they become a version of
    # their own, and the dataset's version with it (a first build's: 0 -> 1), before the
    # takedown takes the next (once, planned 0 -> 1, it took version 1, already recorded,
    # and skipped its ledger commit: shards rewritten, ledger and papers unchanged).
    latest = ledger.latest_build()
    record_build_version(ledger, note=f"build {latest.build}, as far as it had gone"
                         if latest is not None and latest.finished_at is None else None)
    ledger.commit()
    old = current_version(ledger)
    new = old + 1
    now = clock.wall_iso()
    takedown_id = f"takedown-v{new}"
    by_shard: dict[int, list[str]] = defaultdict(list)
    for m in matches:
        by_shard[m.shard].append(m.key)
    keys = [m.key for m in matches]
    emptied = [shard_name(n) for n, ks in sorted(by_shard.items())
               if ledger.db.execute("SELECT COUNT(*) FROM samples WHERE shard = ?",
                                    (n,)).fetchone()[0] == len(ks)]
    return {
        "id": takedown_id, "phase": "planned", "created_at": now, "reason": reason,
        "old_version": old, "new_version": new, "keys": keys, "recheck": sel.recheck,
        "shards": [{"shard": n, "file": shard_name(n), "tmp": shard_name(n) + TEMP_SUFFIX,
                    "remove": sorted(ks)} for n, ks in sorted(by_shard.items())],
        "denylist": _denylist_entries(ledger, keys, sel, reason, now, pages=[
            url for url in sel.urls if any(f"url={url}" in m.why for m in matches)]),
        "log": {"id": takedown_id, "when": now, "selectors": sel.to_json(),
                "matched": [{"key": m.key, "shard": shard_name(m.shard), "why": list(m.why)}
                            for m in matches],
                "keys": keys, "reason": reason, "version": new,
                "shards_rewritten": [shard_name(n) for n in sorted(by_shard)
                                     if shard_name(n) not in emptied],
                "shards_deleted": emptied,
                # which cleanset decided it, as a sample's provenance and the ledger's
                # build_tools say for a build
                "tool_version": tool_version()},
    }


def _denylist_entries(ledger: Ledger, keys: list[str], sel: Selectors, reason: str,
                      now: str, *, pages: Sequence[str] = ()) -> list[dict[str, str]]:
    """URL, sha256 and PDQ of every removed work, and any creator named: denied for good.
    `pages` are the --url values that matched a work: a landing page named is denied too (a
    later build meeting the work at that page under another file URL refuses it)."""
    entries: list[tuple[str, str]] = []
    for key in keys:
        row = ledger.db.execute("SELECT sha256, pdq, file_url FROM samples WHERE key = ?",
                                (key,)).fetchone()
        sha, pdq, file_url = row
        urls = [file_url] + [r[0] for r in ledger.db.execute(
            "SELECT url FROM candidates WHERE key = ?", (key,))]
        entries += [("url", u) for u in urls if u]
        entries.append(("sha256", sha))
        if pdq:
            entries.append(("pdq", pdq))
    entries += [("url", page) for page in pages]
    entries += [("creator", c.strip()) for c in sel.creators]
    entries += [("site", site) for site in sel.sites]
    # One entry per file: a fetched URL and the same one with tracking parameters are one.
    seen: set[tuple[str, str]] = set()
    out = []
    for kind, value in entries:
        if _denylist_id(kind, value) not in seen:
            seen.add(_denylist_id(kind, value))
            out.append({"kind": kind, "value": value, "reason": reason, "added_at": now})
    return out


def _refresh_report(out: Path) -> None:
    """report.html, when there, lists the sites kept out: written again (the papers say
    nothing of the denylist, and the dataset's version does not change)."""
    if (out / "report.html").exists():
        from builder.exports.report import write_report

        write_report(out, lock_held=True)


# -- applying a plan (first run and recovery alike) -----------------------------------------
def _apply(out: Path, plan: dict[str, Any]) -> None:
    shards_dir = out / "shards"
    if plan["phase"] == "planned":
        # No shard has been renamed yet: (re)write every temp from the untouched shards.
        emptied = set(plan["log"]["shards_deleted"])
        results = [{"samples": 0, "data_end": 0, "size": None, "sha256": None}
                   if s["file"] in emptied else _rewrite_shard(shards_dir, s)
                   for s in plan["shards"]]
        for s, r in zip(plan["shards"], results, strict=True):
            s.update(r)
        plan["phase"] = "ready"
        _write_journal(out, plan)
        crash_point("takedown_ready")
    for s in plan["shards"]:
        tmp = shards_dir / s["tmp"]
        if s["samples"] == 0:
            (shards_dir / s["file"]).unlink(missing_ok=True)
            crash_point("takedown_renamed")
        elif tmp.exists():
            os.replace(tmp, shards_dir / s["file"])
            crash_point("takedown_renamed")
    fsync_dir(shards_dir)
    _commit_ledger(out, plan)
    crash_point("takedown_ledger")
    _append_jsonl(out / DENYLIST, plan["denylist"], unique=("kind", "value"))
    _append_jsonl(out / LOG, [plan["log"]], unique=("id",))
    crash_point("takedown_logged")
    _write_papers(out)
    crash_point("takedown_papers")
    (out / JOURNAL).unlink()
    fsync_dir(out)


def _rewrite_shard(shards_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Write the shard without the removed keys to its temp name; durable before returning."""
    source = shards_dir / spec["file"]
    tmp = shards_dir / spec["tmp"]
    remove = set(spec["remove"])
    samples: dict[str, dict[str, bytes]] = {}
    for name, data in read_shard_members(source):
        key, _, ext = name.partition(".")
        if key not in remove:
            samples.setdefault(key, {})[ext] = data
    if not samples:
        return {"samples": 0, "data_end": 0, "size": None, "sha256": None}
    # The build's writer and settings, so every kept member is written exactly as before.
    data_end, size, sha256 = write_whole_shard(tmp, samples.items())
    crash_point("takedown_shard_written")
    return {"samples": len(samples), "data_end": data_end, "size": size, "sha256": sha256}


def _commit_ledger(out: Path, plan: dict[str, Any]) -> None:
    ledger = Ledger(out / "ledger.sqlite")
    try:
        if has_version(ledger, plan["new_version"]):
            return  # committed before a crash
        if current_version(ledger) != plan["old_version"]:
            raise UserError(
                f"{out / JOURNAL}: plans version {plan['old_version']} -> {plan['new_version']} "
                f"but the ledger is at version {current_version(ledger)}; the directory was "
                "changed outside cleanset. Restore it from a copy.")
        keys = plan["keys"]
        # recordable: a journal written by an older cleanset may hold a reason in another
        # encoding (lone surrogates, see require_utf8); escaped, so that takedown can finish.
        detail = recordable(f"{plan['id']}: {plan['reason']}")
        from builder.evidence.archive import log_takedown

        ledger.begin()
        log_takedown(out, ledger.db, plan["log"])  # the archive keeps what was removed, and why
        marks = ",".join("?" for _ in keys)
        ledger.db.execute(
            f"UPDATE candidates SET status = 'removed', detail = ? WHERE key IN ({marks})"
            " AND status = 'accepted'", (detail, *keys))
        ledger.db.execute(f"DELETE FROM samples WHERE key IN ({marks})", tuple(keys))
        for s in plan["shards"]:
            if s["samples"] == 0:
                ledger.db.execute("DELETE FROM shards WHERE shard = ?", (s["shard"],))
                continue
            ledger.db.execute(
                "UPDATE shards SET samples = ?, data_end = ?, size = ?, sha256 = ? WHERE shard = ?",
                (s["samples"], s["data_end"], s["size"], s["sha256"], s["shard"]))
        ledger.set_meta("dataset_version", str(plan["new_version"]))
        record_takedown_version(ledger, plan["new_version"], keys, detail)
        if plan.get("recheck") is not None:
            from builder.recheck_log import RecheckLog

            RecheckLog(ledger.db).mark_applied(plan["recheck"], plan["id"])
        ledger.commit()
    finally:
        ledger.close()


def _write_papers(out: Path) -> None:
    from builder.exports.papers import write_papers

    ledger = Ledger(out / "ledger.sqlite")
    try:
        write_papers(ledger, out)  # report.html too, when the user has one
    finally:
        ledger.close()


# -- files ----------------------------------------------------------------------------------
def _write_journal(out: Path, plan: dict[str, Any]) -> None:
    path = out / JOURNAL
    tmp = out / (JOURNAL + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(plan, f, sort_keys=True, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Ctrl-C or a full disk before the journal exists: nothing has changed, and the half
        # journal would have stayed beside the dataset (no build or verify looks at it).
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out)


def _append_jsonl(path: Path, rows: list[dict[str, Any]], unique: tuple[str, ...]) -> None:
    """Append rows whose `unique` fields are not in the file yet (a re-run repeats nothing).

    The rows go out in one O_APPEND write, which a kill cannot split; a torn tail left by an
    older writer is cut off first, because readers (the opt-out gate) refuse a broken line.
    """
    present: set[tuple[Any, ...]] = set()
    if path.exists():
        _drop_torn_tail(path)
        with path.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                present.add(tuple(row.get(k) for k in unique))
    new = [r for r in rows if tuple(r.get(k) for k in unique) not in present]
    if not new:
        return
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in new).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_torn_tail(path: Path) -> None:
    with path.open("r+b") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
