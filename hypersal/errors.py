"""The one error type users see: it names the file, the key path and the fix."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable, Optional


class UserError(Exception):
    """A mistake in the user's input. The CLIs print it as one paragraph and exit with status 2.

    `file`, `line` and `key` say where; `message` says what is wrong; `fix` says what to do.
    """

    def __init__(self, message: str, *, file: Optional[Path | str] = None,
                 line: Optional[int] = None, key: Optional[str] = None,
                 fix: Optional[str] = None):
        self.message, self.file, self.line, self.key, self.fix = message, file, line, key, fix
        super().__init__(self.render())

    def __str__(self) -> str:  # rendered now: a caller may add the file after raising
        return self.render()

    def where(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line else str(self.file))
        if self.key:
            parts.append(self.key)
        return ": ".join(parts)

    def render(self) -> str:
        text = _sentence(f"{self.where()}: {self.message}" if self.where() else self.message)
        return f"{text} Fix: {_sentence(self.fix)}" if self.fix else text


def _sentence(text: str) -> str:
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


def suggest(name: str, valid: Iterable[str]) -> str:
    """' Did you mean X?' for a near miss, else ''."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str], **where) -> UserError:
    """The error for a name missing from a registry or schema: lists every valid name."""
    valid = sorted(str(v) for v in valid)
    return UserError(f"unknown {kind} '{name}'", fix=f"use one of: {', '.join(valid)}."
                     f"{suggest(name, valid)}", **where)
