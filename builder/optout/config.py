"""The recipe's `[optout]` table: which signals to check and how strictly."""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class OptoutConfig:
    x_robots_tag: bool = True
    # noindex / noimageindex / none are about search, not training; some publishers mean
    # "keep out" by them, so a recipe may choose to read them as an opt-out too.
    noindex_is_optout: bool = False
    content_usage: bool = True  # Content-Usage (IETF aipref) and Content-Signal headers
    tdmrep: bool = True
    robots_txt: bool = True
    ai_txt: bool = True
    landing_page: bool = False  # fetches each landing page: one more request per candidate
    embedded: bool = True
    c2pa: bool = True
    reject_ai_generated: bool = True
    denylist: str | None = None
    product_token: str = "cleanset"
    pdq_max_distance: int = 31

    def __post_init__(self) -> None:
        if not TOKEN_RE.match(self.product_token):
            raise ValueError(
                f"product_token = {self.product_token!r} must be 1-64 characters of "
                "A-Z, a-z, 0-9, '_' or '-' (RFC 9309 product token)."
            )
        if not 0 <= self.pdq_max_distance <= 256:
            raise ValueError("pdq_max_distance must be between 0 and 256 (bits of PDQ).")
