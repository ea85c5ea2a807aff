"""robots.txt (RFC 9309, parsed by protego) and Spawning's ai.txt, for our product token.

RFC 9309 §2.3.1: a 4xx robots.txt means no rules; a 5xx or an unreachable one means
"assume complete disallow" until it can be read. That is a network state, not the host's
wish: the candidate is refused as robots_unreachable (transient, retried by the next run),
never as an opt-out. ai.txt is not a standard, so a 5xx one is recorded as unavailable
rather than treated as a refusal; one the network kept from us is robots_unreachable too. robots.txt groups may also
carry usage preferences: Cloudflare's `Content-Signal: ai-train=no` and the IETF aipref
`Content-Usage: [path] train-ai=n`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from protego import Protego

from builder.optout.headers import usage_refusal
from builder.optout.hostfiles import Answer
from builder.optout.tdmrep import location_pattern
from builder.records import Reason, Rejection

# RFC 9309 2.2.1: a group is matched by its product token; the rest of a User-agent value
# (`cleanset/1.0`, a whole User-Agent header pasted in) is not part of it, as Google's
# parser reads `Googlebot/2.1`. The characters are those a recipe's product_token may have.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
# A User-agent line in every spelling protego reads ("User agent", no colon), value kept to
# its product token.
_AGENT_LINE = re.compile(r"^([ \t]*user[- ]?agent[ \t]*:?[ \t]*)([A-Za-z0-9_-]+)[^#]*",
                         re.IGNORECASE)


@dataclass(frozen=True)
class Usage:
    kind: str  # content-signal | content-usage
    agent: str | None  # None: outside any group
    path: str | None
    value: str
    line: int


@dataclass(frozen=True)
class RobotsFile:
    """A parsed robots.txt / ai.txt, or the reason there are no rules (`note`)."""

    name: str  # "robots.txt" | "ai.txt"
    url: str
    parser: Protego | None
    agents: frozenset[str]
    usages: tuple[Usage, ...]
    note: str
    unread: Rejection | None = None  # could not be read: refuse with this, not as an opt-out

    def verdict(self, url: str, token: str) -> tuple[bool, str]:
        """(allowed, what the trail or the rejection says)."""
        if self.unread is not None:
            return False, self.note
        if self.parser is None:
            return True, self.note
        token = token.lower()
        group = token if token in self.agents else "*"
        if not self.parser.can_fetch(url, token):
            return False, f"Disallow for user-agent {group!r} in {self.url} matches {url}"
        usage = self.usage_refusal(url, token)
        if usage is not None:
            return False, usage
        return True, f"allowed:{group}"

    def usage_refusal(self, url: str, token: str) -> str | None:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        ours = [u for u in self.usages if u.agent == token]
        applicable = ours or [u for u in self.usages if u.agent in ("*", None)]
        for usage in applicable:
            # Matched as Allow and Disallow paths are (`*`, a final `$`), not as a prefix.
            if usage.path is not None and not location_pattern(usage.path).match(path):
                continue
            hit = usage_refusal(usage.kind, usage.value)
            if hit is not None:
                name = "Content-Signal" if usage.kind == "content-signal" else "Content-Usage"
                return f"{name} {hit!r} at line {usage.line} of {self.url}"
        return None


def parse_robots(answer: Answer, name: str = "robots.txt") -> RobotsFile:
    strict = name == "robots.txt"
    unread = answer.unread(name, Reason.ROBOTS_UNREACHABLE, strict=strict)
    if unread is not None:
        if strict and unread.transient:
            unread = Rejection(unread.reason, f"{unread.detail}; RFC 9309 2.3.1.4: assume "
                               "complete disallow until it can be read")
        return RobotsFile(name, answer.url, None, frozenset(), (), unread.detail, unread)
    if answer.status is None or answer.status >= 500:  # ai.txt: broken, but not a refusal
        why = answer.problem or f"HTTP {answer.status}"
        return RobotsFile(name, answer.url, None, frozenset(), (),
                          f"unavailable: {why} at {answer.url}")
    if not answer.found:
        return RobotsFile(name, answer.url, None, frozenset(), (),
                          f"absent (HTTP {answer.status})")
    text = answer.text or ""
    agents, usages = _groups(text)
    tokens_only = "\n".join(_AGENT_LINE.sub(r"\1\2", line) for line in text.splitlines())
    return RobotsFile(name, answer.url, Protego.parse(tokens_only), agents, usages, "no rules")


# A User-agent line as protego reads it, in each spelling sites write it.
AGENT_KEYS = frozenset({"user-agent", "useragent", "user agent"})


def product_token(value: str) -> str:
    """A User-agent line's value as its group is matched: its product token, lower-cased
    (`CleanSet/1.0` -> `cleanset`); `*` and anything without one as it is."""
    found = _TOKEN.match(value.strip())
    return (found.group(0) if found else value.strip()).lower()


def group_lines(text: str) -> Iterator[tuple[int, str, tuple[str, ...], str, str]]:
    """Each `key: value` line of a robots.txt or ai.txt, comment dropped: (line number, the
    line as written, the product tokens of the group it is in, key lower-cased, value).
    A User-agent line (in every spelling protego reads) comes as key `user-agent`, with the
    group it opens or joins."""
    group: tuple[str, ...] = ()
    in_rules = False
    for number, raw in enumerate(text.splitlines(), 1):
        key, sep, value = raw.split("#", 1)[0].partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key in AGENT_KEYS:  # "User agent: cleanset": its lines were filed under another
            group = (product_token(value),) if in_rules else (*group, product_token(value))
            in_rules = False
            yield number, raw, group, "user-agent", value
            continue
        in_rules = True
        yield number, raw, group, key, value


def _groups(text: str) -> tuple[frozenset[str], tuple[Usage, ...]]:
    """The user-agents named, and usage-preference lines with the group each belongs to."""
    agents: set[str] = set()
    usages: list[Usage] = []
    for number, _, group, key, value in group_lines(text):
        if key == "user-agent":
            agents.add(group[-1])
            continue
        if key not in ("content-signal", "content-usage"):
            continue
        path = None
        if key == "content-usage" and value.startswith("/"):
            path, _, value = value.replace("\t", " ").partition(" ")  # RFC 9309: WS is SP or TAB
        for agent in group or (None,):
            usages.append(Usage(key, agent, path, value.strip(), number))
    return frozenset(agents), tuple(usages)


def parse_ai_txt(answer: Answer) -> RobotsFile:
    return parse_robots(answer, "ai.txt")
