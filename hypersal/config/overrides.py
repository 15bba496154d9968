"""Command-line overrides, one more config layer after the files:

    experiment.py --experiment=E trainer.train.epochs=2 sbatch.partition=debug \\
        'trainer.train.optim.lr={sample: loguniform, from: [1e-4, 1e-2]}'
    train.py --config RUN/config.yaml test.split=val

Each item is KEY.PATH=VALUE; the value is read as YAML (so 2 is a number, [a, b] a list, and
{sample: ...} a sample spec), with hypersal's loader (1e-3 is a float). Errors name the
"command line" as their file and the item as their key.
"""
from __future__ import annotations

from typing import Iterable

from hypersal import tree as T, yamlio
from hypersal.errors import UserError, name_of, suggest

PLACE = "command line"


def parse(items: Iterable[str], sections: tuple[str, ...] | None = None) -> dict:
    """The overrides as one nested tree. `sections`: the first key must be one of them."""
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        path = tuple(key.split("."))
        if not sep or not all(path):
            raise UserError(f"cannot read the override '{name_of(item)}'", file=PLACE,
                            fix="write KEY.PATH=VALUE, e.g. trainer.train.epochs=2")
        if sections is not None and path[0] not in sections:
            raise UserError(f"unknown section '{name_of(path[0])}' in the override '{name_of(item)}'", file=PLACE,
                            key=name_of(key),
                            fix=f"start the key with one of: {', '.join(sections)}.{suggest(path[0], sections)}")
        try:
            value = yamlio.loads(text) if text.strip() else ""
        except UserError as e:
            inner = f".{e.key}" if e.key and not e.key.startswith("[") else (e.key or "")
            raise UserError(f"cannot read the value of '{name_of(item)}' as YAML ({e.message})", file=PLACE,
                            key=name_of(key) + inner, fix=e.fix if not e.message.startswith("invalid YAML") else
                            "quote the whole item for the shell, e.g. 'trainer.tasks=[a, b]'") from None
        node = out
        for i, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict) or T.is_leaf_mapping(node):
                raise UserError(f"'{'.'.join(path[:i + 1])}' is set to a value and also used as a section",
                                file=PLACE, key=key, fix="keep one of the two overrides")
        if path[-1] in node:
            raise UserError(f"'{key}' is given twice", file=PLACE, key=key, fix="keep one of them")
        node[path[-1]] = value
    return out

