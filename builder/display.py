"""Text from outside as cleanset shows it to people: in a terminal, in Markdown, in HTML.

A creator's name, a title, a file's name or a server's answer is whatever its source wrote,
and the ledger and provenance keep it so. What people read is held to three rules here:

- `visible`: a control character (C0 but tab and newline, DEL, C1) or a bidirectional
  override / embedding / isolate (U+202A..U+202E, U+2066..U+2069) is shown as its escape,
  `\\u001b`, `\\u202e`: an ANSI sequence in a creator's name must not recolour, retitle or
  clear the terminal that prints it, and an RLO must not make a credit line read backwards
  (Trojan Source, CVE-2021-42574). The escape is also JSON's, so JSON output read back says
  exactly what it said before.
- `link_target`: only an absolute http(s) URL becomes a link (a `href`, a Markdown
  destination); `javascript:`, `data:`, `vbscript:`, `file:` and anything else is text.
- `md_text` / `md_link`: Markdown that renders as the text it was given, on one line.

`EscapingStream` applies `visible` to everything the `cleanset` program prints (installed by
`builder.cli.run`), so no command has to remember to.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_HTTP = re.compile(r"https?://[^/?#\s]", re.IGNORECASE)


def visible(text: str) -> str:
    """`text` with every control and bidi-override character shown as its `\\uXXXX` escape."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def link_target(url: str | None) -> str | None:
    """`url` when it may become a link (an absolute http or https URL with a host), else None.

    Matched on the text as recorded, not after trimming: a browser drops leading spaces and
    control characters from a href, so " javascript:..." would run as javascript."""
    return url if url and _HTTP.match(url) else None


# -- Markdown (CommonMark, as GitHub and the Hugging Face Hub render it) ----------------------
# Backslash-escaped wherever they appear: each can start a link, an image, an HTML tag, code,
# emphasis, a heading, a table cell, strikethrough or a fence.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")
_MD_ENTITY = re.compile(r"&(?=#?[0-9A-Za-z]+;)")  # "&amp;" would render as "&"
# At the start of the text (each credit is a list item), a marker would nest a list.
_MD_LEADING = re.compile(r"^(\d{0,9})([-+.)])")
_MD_BARE_TARGET = re.compile(r"[^\s<>()\\\x00-\x1f\x7f]+")


def md_text(text: str) -> str:
    """`text` as Markdown that renders as that text, on one line (whitespace collapsed)."""
    text = visible(" ".join(text.split()))
    text = _MD_ENTITY.sub(r"\\&", _MD_SPECIAL.sub(r"\\\1", text))
    match = _MD_LEADING.match(text)
    if match and (match.group(1) or match.group(2) in "-+"):  # "- x", "+ x", "1. x", "2) x"
        text = f"{match.group(1)}\\{text[match.end(1):]}"
    return text


def md_link(label: str, url: str | None) -> str:
    """`label` linked to `url` when it is an http(s) URL; any other URL follows the label as
    code, to be read but never followed."""
    label = md_text(label)
    if not url:
        return label
    target = link_target(url)
    if target is None:
        return f"{label} ({md_code(url)})"
    return f"[{label}]({md_destination(target)})"


def md_destination(url: str) -> str:
    """`url` as a Markdown link destination: as written when it holds nothing Markdown would
    end it at, else in angle brackets with spaces, controls, `<` and `>` percent-encoded (as
    a browser sends them) and a backslash escaped."""
    if _MD_BARE_TARGET.fullmatch(url):
        return url
    encoded = "".join(f"%{ord(c):02X}" if c in "<> " or ord(c) < 0x20 or ord(c) == 0x7f
                      else "\\\\" if c == "\\" else c for c in url)
    return f"<{encoded}>"


def md_code(text: str) -> str:
    """`text` as a Markdown code span (never a link, whatever it holds)."""
    text = visible(" ".join(text.split()))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class EscapingStream:
    """A text stream writing `visible(text)` to the stream it wraps; everything else (flush,
    fileno, isatty, encoding...) is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(visible(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def unescaped(stream: Any) -> Any:
    """The stream an `EscapingStream` wraps (a progress bar's own carriage returns must
    reach the terminal), or `stream` itself."""
    return stream.wrapped if isinstance(stream, EscapingStream) else stream
