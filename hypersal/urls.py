"""URLs hypersal writes into a file or a page: web addresses only.

A URL from the user's settings (COMET_URL_OVERRIDE, a .comet.config's url_override) becomes
comet_url.txt and a link on the sweep page; `javascript:alert(1)` there would run when the link
is clicked, `file:` or `data:` open what they name. So a URL is written only when it is http(s)
with a host and without spaces or control characters; one from a setting that is not is a
UserError naming that setting.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from hypersal.errors import UserError, shorten

_PLAIN = re.compile(r"[^\s\x00-\x1f\x7f]+")


def is_web(url: object) -> bool:
    """http(s)://host..., nothing else."""
    if not isinstance(url, str) or not _PLAIN.fullmatch(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:      # e.g. an unclosed [ in the host
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def check(url: str, **where) -> str:
    """The URL itself when it is a web address, else a UserError naming `where` it was set."""
    if not is_web(url):
        raise UserError(f"expects an http:// or https:// address, got {shorten(url)}",
                        fix="write the server's address, e.g. https://comet.example.org/clientlib/, or "
                            "remove the setting", **where)
    return url
