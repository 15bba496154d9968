"""The one error type users see: it names the file, the key path and the fix (and RunFailure,
a run that fails for a reason one line says)."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

SHORT = 60   # characters of a value a message quotes: a value may be huge (a YAML alias bomb)
KEY_SHORT = 200   # of a key path (runs[0].trainer.model.hypernet.chunk_embedding_dim is 50)


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
            parts.append(name_of(self.key, KEY_SHORT))
        return ": ".join(parts)

    def render(self) -> str:
        text = _sentence(f"{self.where()}: {self.message}" if self.where() else self.message)
        return f"{text} Fix: {_sentence(self.fix)}" if self.fix else text


def _sentence(text: str) -> str:
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


def shorten(value: Any, limit: int = SHORT) -> str:
    """repr(value), cut to `limit` characters ("..." at the end). Every value a message quotes
    goes through here: the repr is built piece by piece and stops at the limit, so a value of a
    million items costs what a short one does."""
    out, size = [], 0
    for piece in _repr_pieces(value, 0, limit):
        out.append(piece)
        size += len(piece)
        if size > limit:
            return "".join(out)[:limit - 3] + "..."
    return "".join(out)


def _repr_pieces(value: Any, depth: int, limit: int) -> Iterator[str]:
    """repr(value) in pieces, for plain YAML values (dicts, lists, tuples, scalars)."""
    if isinstance(value, (dict, list, tuple)) and depth > 8:
        yield "..."
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield ", " if i else ""
            yield from _repr_pieces(key, depth + 1, limit)
            yield ": "
            yield from _repr_pieces(item, depth + 1, limit)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "[" if isinstance(value, list) else "("
        for i, item in enumerate(value):
            yield ", " if i else ""
            yield from _repr_pieces(item, depth + 1, limit)
        yield "]" if isinstance(value, list) else ("," * (len(value) == 1) + ")")
    elif isinstance(value, str) and len(value) > limit:
        yield repr(value[:limit + 1])
    else:
        yield repr(value)


def name_of(value: Any, limit: int = SHORT) -> str:
    """A name as a message quotes it: a string as it is (cut), anything else as shorten's repr."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit - 3] + "..."
    return shorten(value, limit)


def suggest(name: str, valid: Iterable[str]) -> str:
    """' Did you mean X?' for a near miss, else ''."""
    if isinstance(name, (dict, list, tuple)) or len(str(name)) > 200:
        return ""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str], **where) -> UserError:
    """The error for a name missing from a registry or schema: lists every valid name."""
    valid = sorted(str(v) for v in valid)
    return UserError(f"unknown {kind} '{name_of(name)}'", fix=f"use one of: {', '.join(valid)}."
                     f"{suggest(name, valid)}", **where)


class RunFailure(Exception):
    """A run that fails for a reason its message says in full (a damaged checkpoint, a loss that is
    not finite): train.py prints it in one line and exits 1, without a traceback."""
