"""The records that flow through the pipeline, and the fixed rejection vocabulary.

Every stage takes one record and returns the next record or a Rejection. Records are
frozen: a stage never mutates what it was given.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from operator import attrgetter
from typing import Any

# Request headers that carry a credential: never sent to a host a redirect leads to
# (builder/fetch.py), recorded as *** in the evidence archive (builder/evidence/warc.py).
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key",
                                "api-key", "x-auth-token", "cookie"})


class Reason(StrEnum):
    """Why a candidate was refused. The fixed vocabulary of DESIGN.md (`candidates.parquet`)."""

    LICENSE_MISSING = "license_missing"
    LICENSE_UNRECOGNIZED = "license_unrecognized"
    LICENSE_NOT_ALLOWED = "license_not_allowed"
    LICENSE_CONFLICT = "license_conflict"
    OPTOUT_X_ROBOTS_TAG = "optout_x_robots_tag"
    OPTOUT_TDMREP = "optout_tdmrep"
    OPTOUT_ROBOTS_TXT = "optout_robots_txt"
    OPTOUT_EMBEDDED = "optout_embedded"
    DENYLISTED = "denylisted"
    HTTP_ERROR = "http_error"
    ADDRESS_REFUSED = "address_refused"
    CONNECTION_ERROR = "connection_error"
    HTTP_UNAVAILABLE = "http_unavailable"
    TIMEOUT = "timeout"
    ROBOTS_UNREACHABLE = "robots_unreachable"
    TDMREP_UNREACHABLE = "tdmrep_unreachable"
    OPTOUT_UNCHECKED = "optout_unchecked"
    TOO_LARGE = "too_large"
    NOT_IMAGE = "not_image"
    CORRUPT_IMAGE = "corrupt_image"
    DECOMPRESSION_BOMB = "decompression_bomb"
    TOO_SMALL = "too_small"
    DUPLICATE_EXACT = "duplicate_exact"
    DUPLICATE_NEAR = "duplicate_near"
    EVAL_OVERLAP = "eval_overlap"
    AI_GENERATED = "ai_generated"
    CREATOR_CAP = "creator_cap"


# Outcomes that say nothing about the candidate, only about the network at the time: the
# same recipe run again retries them (up to MAX_ATTEMPTS runs). They are never opt-outs, even
# robots_unreachable, which RFC 9309 2.3.1.4 reads as "disallow" only while it lasts.
# address_refused is not here: the recipe's allow_private_addresses decides it, not the network.
TRANSIENT_REASONS = frozenset({
    Reason.CONNECTION_ERROR,
    Reason.HTTP_UNAVAILABLE,
    Reason.TIMEOUT,
    Reason.ROBOTS_UNREACHABLE,
    Reason.TDMREP_UNREACHABLE,
    # A do-not-train check that failed unexpectedly (a bug, input stranger than any test):
    # it was recorded as the stage's opt-out (`denylisted`, `optout_embedded`), counted as
    # an artist's refusal and never asked again. The image is still not admitted.
    Reason.OPTOUT_UNCHECKED,
})
MAX_ATTEMPTS = 3  # runs that try a candidate before a transient failure is left as it is


def is_transient(reason: str | None) -> bool:
    return reason in TRANSIENT_REASONS


@dataclass(frozen=True)
class Exchange:
    """One HTTP request and the response that counted (the last attempt, after retries), as
    the evidence archive keeps it (builder/evidence). Made wherever the fetch ran (a worker
    thread, process or Ray task) and carried back to the build process with the outcome.

    `kind` says what was asked: "api", "image", "robots.txt", "ai.txt", "tdmrep.json" or
    "landing-page". `body` is the payload as read (after content decoding), or None when it
    is kept elsewhere: an image's bytes are in the shard, tied to the record by
    `payload_sha256`. Secrets are still in here; the archive removes them when it writes."""

    kind: str
    url: str
    request: tuple[tuple[str, str], ...]  # headers sent, in order, Host first
    protocol: str  # "HTTP/1.1"
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # as received, names spelled as the server did
    body: bytes | None
    payload_sha256: str
    truncated: bool  # an error page cut at the fetcher's cap
    retrieved_at: str  # follows SOURCE_DATE_EPOCH, like provenance `retrieved_at`
    method: str = "GET"  # HEAD for a recheck's look at a file


# What a candidate's stages fetched, in order (kept out of equality: evidence, not verdict):
# Exchange, or already made into WARC records where the stages ran (evidence.warc.Prepared).
Exchanges = tuple[Any, ...]


@dataclass(frozen=True)
class Rejection:
    """A refusal. `license` is the normalised SPDX id when one was known: the recognised id
    a policy refused, or the admitted licence of a candidate refused later (fetch, opt-out,
    dedup), so auditors can count refusals by licence."""

    reason: Reason
    detail: str = ""
    license: str | None = None
    exchanges: Exchanges = field(default=(), compare=False, repr=False)

    def with_license(self, spdx: str | None) -> Rejection:
        """This rejection naming `spdx`, unless it already names a licence."""
        if self.license is not None or spdx is None:
            return self
        return replace(self, license=spdx)

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT_REASONS


def recordable(text: str) -> str:
    """`text` as it can be recorded: itself, unless it holds a lone surrogate (U+D800..DFFF,
    which JSON text from outside may spell, `"caf\\udce9"`, and which UTF-8 cannot encode:
    the ledger, provenance, shards and papers are UTF-8). Each such code point becomes its
    escape as literal text (`caf\\udce9`), the way non-UTF-8 file names are shown as
    `\\xNN`: nothing else changes, and what the source sent stays legible. Cheap for the
    common case: ASCII is one flag check, other text one encode."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def recordable_json(value: Any) -> Any:
    """A parsed JSON answer with every string in it (keys too) made `recordable`, in place.

    For API answers, whose text is not only recorded but also sent back (a cursor, a
    continuation, an id in the next request's URL, which cannot be encoded either): one walk
    per page, iterative (however deep the answer), nothing rebuilt unless something changes."""
    if type(value) is str:
        return recordable(value)
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            if not all(type(k) is not str or k.isascii() or recordable(k) is k for k in node):
                fixed = {recordable(k) if type(k) is str else k: v for k, v in node.items()}
                node.clear()
                node.update(fixed)
            items: Any = node.items()
        elif type(node) is list:
            items = enumerate(node)
        else:
            continue
        for k, v in items:
            if type(v) is str:
                if not v.isascii() and (fixed_text := recordable(v)) is not v:
                    node[k] = fixed_text
            elif type(v) is dict or type(v) is list:
                stack.append(v)
    return value


def _recordable_fields(record: object, names: tuple[str, ...]) -> None:
    """Make the text fields `names` of a frozen record recordable, in place (at creation)."""
    for name in names:
        value = getattr(record, name)
        if type(value) is str and not value.isascii():
            fixed = recordable(value)
            if fixed is not value:
                object.__setattr__(record, name, fixed)


@dataclass(frozen=True)
class Evidence:
    """One raw licence claim as the source stated it: which field, what value.

    Made recordable on creation (`recordable`), so the licence gate decides on the text the
    ledger and provenance record."""

    field: str
    value: str

    def __post_init__(self) -> None:
        if not (type(self.field) is str and self.field.isascii()
                and type(self.value) is str and self.value.isascii()):
            _recordable_fields(self, ("field", "value"))


# A Candidate's text fields, all but `local_path` (see Candidate).
_CANDIDATE_TEXT = ("source", "source_id", "url", "landing_url", "api_url", "creator",
                   "creator_url", "title", "caption", "credit", "expected_sha1")
_candidate_text = attrgetter(*_CANDIDATE_TEXT)


@dataclass(frozen=True)
class Candidate:
    """One image a source offers, with the licence claims it makes about it.

    `source_id` is unique within the source; `url` is what to fetch (http[s]) unless
    `local_path` is set (folder sources). `resume` is the source's state *after* this
    candidate: handing it back to the source continues with the next one.

    Every text field but `local_path` (the file as the OS names it, which the fetch stage
    opens, and refuses when it is not UTF-8) is made recordable on creation: this is where
    every source turns outside text into a record, so a lone surrogate in a sidecar, a
    table cell or an API answer is escaped here, once (`recordable`), not in each writer.
    """

    source: str
    source_id: str
    url: str
    evidence: tuple[Evidence, ...] = ()
    landing_url: str | None = None
    api_url: str | None = None
    local_path: str | None = None
    creator: str | None = None
    creator_url: str | None = None
    title: str | None = None
    caption: str | None = None
    credit: str | None = None
    expected_sha1: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    resume: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for value in _candidate_text(self):  # the common case: all ASCII, one flag each
            if type(value) is str and not value.isascii():
                _recordable_fields(self, _CANDIDATE_TEXT)
                break
        for k, v in self.extra:
            if not (type(k) is str and k.isascii() and type(v) is str and v.isascii()):
                object.__setattr__(self, "extra", tuple(
                    (recordable(k) if type(k) is str else k,
                     recordable(v) if type(v) is str else v) for k, v in self.extra))
                break

    @property
    def candidate_id(self) -> str:
        return f"{self.source}:{self.source_id}"

    def to_json(self) -> str:
        """Everything a later run needs to try this candidate again without re-reading its
        source (the resume state is the source's business, not the candidate's)."""
        data = asdict(self)
        data.pop("resume")
        return json.dumps(data, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        data = json.loads(text)
        known = {f.name for f in fields(cls)} - {"resume"}
        values = {k: v for k, v in data.items() if k in known}
        values["evidence"] = tuple(Evidence(e["field"], e["value"])
                                   for e in values.get("evidence", ()))
        values["extra"] = tuple((k, v) for k, v in values.get("extra", ()))
        return cls(**values)


@dataclass(frozen=True)
class LicenseDecision:
    """The licence gate's verdict for an admitted candidate."""

    spdx: str
    url: str | None
    name: str
    attribution_required: bool
    share_alike: bool
    evidence: tuple[Evidence, ...]
    policy: str
    chosen_from: str | None = None  # the expression it was chosen from, for dual licences


# (signal, result) pairs: every opt-out signal checked so far and what it said.
OptoutTrail = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Licensed:
    candidate: Candidate
    license: LicenseDecision
    optout: OptoutTrail = ()


@dataclass(frozen=True)
class HttpInfo:
    status: int | None
    etag: str | None
    last_modified: str | None
    content_type: str | None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Detached:
    """Fetched bytes left where they were fetched (item `index` of a Ray object `ref`), for a
    worker to write into a shard; the driver sees only their size."""

    ref: Any
    index: int
    size: int

    def __len__(self) -> int:
        return self.size


@dataclass(frozen=True)
class Fetched:
    licensed: Licensed
    data: bytes | Detached
    retrieved_at: str
    http: HttpInfo
    optout: OptoutTrail = ()
    sha256: str | None = None  # of `data`, when the fetch already hashed it (not hashed twice)


@dataclass(frozen=True)
class ImageInfo:
    """What the image check learned from the bytes themselves."""

    mime: str
    ext: str
    width: int
    height: int
    sha256: str
    sha1: str
    pdq: str | None = None
    pdq_quality: int | None = None
    phash: str | None = None


@dataclass(frozen=True)
class Checked:
    fetched: Fetched
    image: ImageInfo
    optout: OptoutTrail = ()
    exchanges: Exchanges = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Sample:
    """An admitted image with its key, ready for a shard."""

    key: str
    shard: int
    checked: Checked
    provenance: dict[str, Any]


def decided_license(record: object) -> str | None:
    """The SPDX id the licence gate admitted for a record past the gate, else None."""
    if isinstance(record, Checked):
        record = record.fetched
    if isinstance(record, Fetched):
        record = record.licensed
    return record.license.spdx if isinstance(record, Licensed) else None
