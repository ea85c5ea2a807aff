"""Attribution credit lines: Title, Author, Source, Licence (TASL), as Creative Commons
recommends (https://wiki.creativecommons.org/wiki/Best_practices_for_attribution).

One sentence: `"Title" by Creator is licensed under CC BY-SA 4.0.` — each element linked
when a URL is known (`markup="markdown"` or `"html"`), or followed by its URL in
parentheses in plain text, so the line is complete when printed.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from builder.display import link_target, md_link, visible
from builder.licensing.catalogue import LicenseInfo, load_catalogue
from builder.licensing.normalise import markup_free
from builder.records import LicenseDecision

_MARKUPS = ("text", "markdown", "html")


def credit_line(title: str | None, creator: str | None, creator_url: str | None,
                source_url: str | None, decision: LicenseDecision, *,
                markup: str = "text") -> str:
    """The ready-to-print credit line for an admitted sample."""
    return _line(title, creator, creator_url, source_url, spdx=decision.spdx,
                 license_name=decision.name, license_url=decision.url, markup=markup)


def credit_line_text(*, title: str | None, creator: str | None, source_url: str | None,
                     license_name: str, license_url: str | None, spdx: str,
                     creator_url: str | None = None) -> str:
    """The same line from loose fields (what builder.provenance has at hand)."""
    return _line(title, creator, creator_url, source_url, spdx=spdx,
                 license_name=license_name, license_url=license_url, markup="text")


def _line(title: str | None, creator: str | None, creator_url: str | None,
          source_url: str | None, *, spdx: str, license_name: str, license_url: str | None,
          markup: str) -> str:
    if markup not in _MARKUPS:
        raise ValueError(f"markup must be one of {_MARKUPS}, not {markup!r}")
    link = _LINKERS[markup]
    title_c = plain_text(title).strip("\"'“”‘’ ")
    creator_c = plain_text(creator)
    work = link(f'"{title_c}"' if title_c else "This work", source_url)
    if creator_c:
        work += " by " + link(creator_c, creator_url)
    return f"{work} {_licence_phrase(spdx, license_name, license_url, link)}."


def plain_text(text: str | None) -> str:
    """A title or a name as text: tags dropped and entities decoded (a source may send an
    HTML fragment), whitespace collapsed, and its words and punctuation kept as written
    (not the licence-claim cleaner, which reads "<i>x</i>" as an RDF <url> and drops a
    final full stop)."""
    return markup_free(text) if text else ""


def _licence_phrase(spdx: str, license_name: str, license_url: str | None,
                    link: Callable[[str, str | None], str]) -> str:
    cat = load_catalogue()
    ids = [p for p in spdx.replace("(", " ").replace(")", " ").split()
           if p not in ("AND", "OR", "WITH")]
    infos = [cat.entries[i] for i in ids if i in cat.entries]
    if len(infos) == 1 and len(ids) == 1:
        info: LicenseInfo = infos[0]
        # "is in the public domain" has no licence to name, so nothing to link
        return info.credit.replace("{short}", link(info.short, license_url or info.url))
    if infos and len(infos) == len([i for i in ids if i in cat.entries]):
        names = " AND ".join(link(i.short, i.url) for i in infos)
        return f"is licensed under {names}"
    return f"is licensed under {link(license_name or spdx, license_url)}"


def _text(label: str, url: str | None) -> str:
    return f"{label} ({url})" if url else label


def _html(label: str, url: str | None) -> str:
    label = html.escape(visible(label), quote=False)
    if url and (target := link_target(url)) is not None:
        return f'<a href="{html.escape(target)}">{label}</a>'
    # Any other URL (javascript:, data:...) is shown, never made a link.
    return f"{label} (<code>{html.escape(visible(url))}</code>)" if url else label


_LINKERS = {"text": _text, "markdown": md_link, "html": _html}
