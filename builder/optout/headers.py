"""Opt-out signals in the image response's headers: string work only, no parsing libraries.

- `X-Robots-Tag: noai, noimageai` (and `noindex`, `noimageindex`, `none` when the recipe
  says so), including the user-agent-scoped form `X-Robots-Tag: cleanset: noai`;
- TDMRep `tdm-reservation: 1` (with `tdm-policy`), which overrides `/.well-known/tdmrep.json`;
- IETF aipref `Content-Usage: train-ai=n` and Cloudflare's `Content-Signal: ai-train=no`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.records import Reason, Rejection

Headers = tuple[tuple[str, str], ...]
Trail = list[tuple[str, str]]

TRAINING_DIRECTIVES = frozenset({"noai", "noimageai"})
INDEX_DIRECTIVES = frozenset({"noindex", "noimageindex", "none"})
# Directives that carry a value after a colon; anything else before a colon is a bot name.
VALUED_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
# A bot name may carry a version (`cleanset/1.0: noai`): the scope is its product token.
_SCOPE_RE = re.compile(r"^\s*([A-Za-z0-9_.*-]+)(?:/[^\s:,]*)?\s*:\s*(.*)$")
_WORD_SEPARATORS = re.compile(r"[\s;]+")

# aipref vocabulary keys whose "n" forbids training (older and newer draft names).
CONTENT_USAGE_TRAINING = frozenset({"train-ai", "train-genai", "ai", "genai", "tdm"})
CONTENT_SIGNAL_TRAINING = frozenset({"ai-train"})


@dataclass(frozen=True)
class HeaderSignals:
    """What the headers said about TDMRep: the file check needs it (header overrides file)."""

    tdm_reservation: str | None
    tdm_policy: str | None


def header_values(headers: Headers, name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


def robots_directives(values: list[str], token: str) -> list[str]:
    """The X-Robots-Tag directives that apply to `token`: unscoped ones and `token: ...`.

    Within one header value a `bot:` prefix scopes every directive after it (Google's
    documented form `googlebot: noindex, nofollow`)."""
    token = token.lower()
    found: list[str] = []
    for value in values:
        scope: str | None = None
        for part in value.split(","):
            # Quotes a user typed into a setting taken literally (`"noai, noimageai"`) are
            # not part of the directives: read with them, the opt-out was admitted.
            part = part.strip().strip("\"'").strip()
            match = _SCOPE_RE.match(part)
            if match and match.group(1).lower() not in VALUED_DIRECTIVES:
                scope, part = match.group(1).lower(), match.group(2).strip()
            if not part or not (scope is None or scope in (token, "*")):
                continue
            # `noai noimageai` and `noai;` are not the header's syntax, but sent by sites
            # that mean them: read as the directives they name, an opt-out is not missed.
            words = [w for w in _WORD_SEPARATORS.split(part.lower()) if w]
            first = words[0].split(":", 1)[0] if words else ""
            if first in VALUED_DIRECTIVES or ":" in words[0]:
                found.append(first)  # its value is text (a date, a number), not directives
            else:
                found += words
    return found


def parse_usage(value: str) -> dict[str, str]:
    """`a=n, b=y` (structured-field dictionary, or a space-separated list) -> {a: n, b: y}."""
    out: dict[str, str] = {}
    # `ai-train = no`, spaced as people type it: split on the spaces, its refusal was lost.
    value = re.sub(r"\s*=\s*", "=", value)
    for item in re.split(r"[,\s]+", value):
        key, sep, val = item.partition("=")
        key = key.strip().strip("\"'").lower()  # `"train-ai=n"`, quoted as typed
        if key and sep:
            out[key] = val.split(";", 1)[0].strip().strip('"').lower()
    return out


def usage_refusal(kind: str, value: str) -> str | None:
    """The offending `key=value` if a Content-Usage / Content-Signal value forbids training."""
    prefs = parse_usage(value)
    keys = CONTENT_USAGE_TRAINING if kind == "content-usage" else CONTENT_SIGNAL_TRAINING
    refused = {"n", "no", "?0"} if kind == "content-usage" else {"no", "n"}
    for key in sorted(keys & prefs.keys()):
        if prefs[key] in refused:
            return f"{key}={prefs[key]}"
    # `bots` (Automated Processing) is the vocabulary's root: AI training is inside it, so
    # its `n` holds for training unless a training key says otherwise.
    if kind == "content-usage" and prefs.get("bots") in refused and \
            not keys & prefs.keys():
        return f"bots={prefs['bots']}"
    return None


def check_x_robots_tag(headers: Headers, *, token: str, noindex: bool, url: str,
                       trail: Trail) -> Rejection | None:
    values = header_values(headers, "x-robots-tag")
    if not values:
        trail.append(("x-robots-tag", "absent"))
        return None
    forbidden = TRAINING_DIRECTIVES | (INDEX_DIRECTIVES if noindex else frozenset())
    directives = robots_directives(values, token)
    hit = next((d for d in directives if d in forbidden), None)
    if hit is not None:
        shown = "; ".join(values)
        return Rejection(Reason.OPTOUT_X_ROBOTS_TAG,
                         f"X-Robots-Tag {hit!r} (header value {shown!r}) in the response for {url}")
    trail.append(("x-robots-tag", f"allowed: {', '.join(directives) or 'no directive for us'}"))
    return None


def check_usage_headers(headers: Headers, *, url: str, trail: Trail) -> Rejection | None:
    for kind in ("content-usage", "content-signal"):
        values = header_values(headers, kind)
        if not values:
            trail.append((kind, "absent"))
            continue
        joined = ", ".join(values)
        hit = usage_refusal(kind, joined)
        if hit is not None:
            name = "Content-Usage" if kind == "content-usage" else "Content-Signal"
            return Rejection(Reason.OPTOUT_X_ROBOTS_TAG,
                             f"{name} {hit!r} (header value {joined!r}) in the response for {url}")
        trail.append((kind, f"allowed: {joined}"))
    return None


def tdm_header(headers: Headers) -> HeaderSignals:
    """The tdm-reservation header's value: "1" when any value says 1, else the first one.

    Every value and list member is read, quotes and spaces stripped: a proxy folds repeated
    headers into `1, 1`, a server may send it twice or quoted (`"1"`). Read as its first raw
    value, each of those was no reservation, and an empty header overrode tdmrep.json's."""
    values = [item.strip().strip('"').strip()
              for value in header_values(headers, "tdm-reservation")
              for item in value.split(",")]
    values = [v for v in values if v]
    policy = header_values(headers, "tdm-policy")
    return HeaderSignals("1" if "1" in values else (values[0] if values else None),
                         policy[0].strip() if policy else None)


def check_tdm_header(signals: HeaderSignals, *, url: str, trail: Trail) -> Rejection | None:
    if signals.tdm_reservation is None:
        trail.append(("tdm-reservation", "absent"))
        return None
    policy = f", tdm-policy {signals.tdm_policy}" if signals.tdm_policy else ""
    if signals.tdm_reservation == "1":
        return Rejection(Reason.OPTOUT_TDMREP,
                         f"tdm-reservation: 1 header{policy} in the response for {url}")
    trail.append(("tdm-reservation", f"{signals.tdm_reservation} (header){policy}"))
    return None
