"""Works that must never be admitted: `DIR/denylist.jsonl` (takedowns) and the recipe's list.

One JSON object per line: `{"kind": "url" | "sha256" | "creator" | "pdq" | "site", "value":
..., "reason": ...}`. A recipe list may also be plain text, one URL or sha256 per line (`#`
comments), which is how opt-out registries are commonly exported. URL, creator and site
entries are decided before download; sha256 and PDQ entries once the bytes are known. URLs
are compared by `builder.urls.match_key`, so an entry with or without `utm_*` tracking
parameters denies the file either way. A site entry (a host, `takedown --site`) denies every
image whose URL or landing page is on that host or a subdomain of it.

A cleanset older than the `site` kind stops a build into the directory on such a line
("needs kind (one of ...)") rather than admitting the site's images: it fails closed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder.errors import UserError
from builder.urls import match_key, site_host, url_host

KINDS = ("url", "sha256", "creator", "pdq", "site")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Entry:
    kind: str
    value: str
    reason: str
    where: str  # file:line, for the rejection detail
    added_at: str | None = None  # a takedown's entry: when (the takedown's own time)

    def refusal(self, what: str) -> str:
        """A refusal's detail: `what` (e.g. "site artist.example") is on the denylist here."""
        why = f" ({self.reason})" if self.reason else ""
        return f"{what} is on the denylist at {self.where}{why}"


def norm_creator(name: str) -> str:
    return " ".join(name.casefold().split())


@dataclass
class Denylist:
    urls: dict[str, Entry] = field(default_factory=dict)
    sha256: dict[str, Entry] = field(default_factory=dict)
    creators: dict[str, Entry] = field(default_factory=dict)
    pdq: list[Entry] = field(default_factory=list)
    sites: dict[str, Entry] = field(default_factory=dict)  # by host, as site_host spells it
    files: list[str] = field(default_factory=list)
    # The PDQ entries' codes, one array per 64-bit word, made when first searched: a takedown
    # writes a PDQ line for every work it removes, and every candidate of every build is
    # compared with all of them (a loop over Python ints: 17.6 ms a candidate at 10,000 lines).
    _pdq_words: list[np.ndarray] | None = field(default=None, init=False, repr=False,
                                                compare=False)

    def __len__(self) -> int:
        return (len(self.urls) + len(self.sha256) + len(self.creators) + len(self.pdq)
                + len(self.sites))

    def add(self, entry: Entry) -> None:
        if entry.kind == "url":
            self.urls.setdefault(match_key(entry.value), entry)
        elif entry.kind == "sha256":
            self.sha256.setdefault(entry.value.lower(), entry)
        elif entry.kind == "creator":
            self.creators.setdefault(norm_creator(entry.value), entry)
        elif entry.kind == "site":
            self.sites.setdefault(site_host(entry.value), entry)
        else:
            self.pdq.append(entry)
            self._pdq_words = None

    def load(self, path: Path, *, required: bool, unread: list[str] | None = None) -> None:
        """Add the entries of `path`. A line that is not an entry, or a file that cannot be
        read, is an error naming it; with `unread` (a reader answering what it can: lookup,
        verify) it is said there instead and the rest is read."""
        if not path.exists():
            if required:
                raise UserError(f"optout.denylist = {str(path)!r}: no such file. "
                                "Paths in a recipe are relative to the recipe file.")
            return
        try:
            # utf-8-sig: a registry exported by a Windows tool starts with a BOM, which made
            # its first line "neither a URL nor a sha256" and stopped the build.
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"{path}: cannot read the denylist ({exc}). It must be UTF-8 text."
            if unread is None:
                raise UserError(problem) from None
            unread.append(problem)
            return
        self.files.append(str(path))
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                self.add(parse_line(line, f"{path}:{number}"))
            except UserError as exc:
                if unread is None:
                    raise
                unread.append(str(exc))

    def by_url(self, *urls: str | None) -> Entry | None:
        for url in urls:
            if url and (hit := self.urls.get(match_key(url))):
                return hit
        return None

    def by_creator(self, creator: str | None) -> Entry | None:
        return self.creators.get(norm_creator(creator)) if creator else None

    def by_site(self, *urls: str | None) -> Entry | None:
        """The site entry any of `urls` is on (its host or a parent domain)."""
        if not self.sites:
            return None
        for url in urls:
            if (hit := self.by_host(url_host(url))) is not None:
                return hit
        return None

    def by_host(self, host: str | None) -> Entry | None:
        """The site entry for `host` or a parent domain of it."""
        while host and self.sites:
            if (hit := self.sites.get(host)) is not None:
                return hit
            host = host.partition(".")[2]
        return None

    def by_sha256(self, sha256: str) -> Entry | None:
        return self.sha256.get(sha256.lower())

    def refusal(self, *, urls: tuple[str | None, ...], creator: str | None, sha256: str,
                pdq: str | None, max_distance: int) -> str | None:
        """What a build's gate would refuse a work for, from what is recorded of it (a
        recheck: no download), as the gate words it; None when nothing lists it."""
        if (hit := self.by_url(*urls)) is not None:
            return hit.refusal(f"URL {hit.value}")
        if (hit := self.by_creator(creator)) is not None:
            return hit.refusal(f"creator {creator!r}")
        if (hit := self.by_site(*urls)) is not None:
            return hit.refusal(f"site {hit.value}")
        if (hit := self.by_sha256(sha256)) is not None:
            return hit.refusal(f"sha256 {sha256}")
        if (near := self.by_pdq(pdq, max_distance)) is not None:
            return near[0].refusal(f"PDQ within {near[1]} bits of {near[0].value}")
        return None

    def by_pdq(self, pdq: str | None, max_distance: int) -> tuple[Entry, int] | None:
        """The PDQ entry nearest `pdq` (the first listed of equals) and its distance in bits,
        when that is at most `max_distance`."""
        if not pdq or not self.pdq:
            return None
        if self._pdq_words is None:
            codes = np.stack([_words(entry.value) for entry in self.pdq])
            self._pdq_words = [np.ascontiguousarray(codes[:, n]) for n in range(4)]
        query = _words(pdq)
        distances = np.bitwise_count(self._pdq_words[0] ^ query[0]).astype(np.uint16)
        for word in (1, 2, 3):
            distances += np.bitwise_count(self._pdq_words[word] ^ query[word])
        nearest = int(distances.argmin())
        distance = int(distances[nearest])
        return (self.pdq[nearest], distance) if distance <= max_distance else None


def _words(pdq_hex: str) -> np.ndarray:
    """A 256-bit PDQ hash as 4 words; the byte order is the same for every code compared."""
    return np.frombuffer(bytes.fromhex(pdq_hex), dtype=np.uint64)


def parse_line(line: str, where: str) -> Entry:
    if not line.startswith("{"):
        value = line.split()[0]
        if _HEX64.match(value.lower()):
            return Entry("sha256", value.lower(), "", where)
        if value.lower().startswith(("http://", "https://")):
            return Entry("url", value, "", where)
        raise UserError(f"{where}: {value!r} is neither a URL nor a sha256. Use a JSON line "
                        '{"kind": "url"|"sha256"|"creator"|"pdq"|"site", "value": ..., '
                        '"reason": ...}.')
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise UserError(f"{where}: not valid JSON ({exc}). Fix or remove the line.") from None
    kind, value = item.get("kind") if isinstance(item, dict) else None, None
    if isinstance(item, dict):
        value = item.get("value")
    if kind not in KINDS or not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: needs \"kind\" (one of {', '.join(KINDS)}) and a non-empty "
                        "string \"value\". Fix the line.")
    if kind == "sha256" and not _HEX64.match(value.lower()):
        raise UserError(f"{where}: sha256 value {value!r} is not 64 hex digits.")
    if kind == "pdq" and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise UserError(f"{where}: pdq value {value!r} is not 64 hex digits (256 bits).")
    if kind == "site":
        try:
            site_host(value)
        except ValueError as exc:
            raise UserError(f"{where}: site value {exc}.") from None
    reason, added = item.get("reason"), item.get("added_at")
    return Entry(kind, value, reason if isinstance(reason, str) else "", where,
                 added if isinstance(added, str) else None)
