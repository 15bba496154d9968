"""Block YAML for plain trees, ~10x faster than PyYAML's representer (which is Python even with
libyaml's emitter): a 1,000-run sweep writes two configs of ~200 keys a run. Same text as
`yaml.dump(tree, default_flow_style=False, sort_keys=False, allow_unicode=True)` for the trees
hypersal writes (tests/test_yamlio.py compares them); each scalar is still written by PyYAML
(cached), so quoting and number formats are PyYAML's. What it does not cover (a multi-line
string, a top-level scalar or list) raises Unsupported and the caller uses PyYAML.
"""
from __future__ import annotations

import functools
from typing import Any

import yaml

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class Unsupported(Exception):
    pass


@functools.lru_cache(maxsize=1 << 16, typed=True)
def scalar(value: Any) -> str:
    """PyYAML's text for one scalar, on one line (an over-long string is not folded)."""
    text = yaml.dump(value, Dumper=_Dumper, allow_unicode=True, width=1 << 30)
    text = text[:-5] if text.endswith("\n...\n") else text[:-1]
    if "\n" in text:
        raise Unsupported(value)
    return text


def dumps(tree: dict) -> str:
    if not isinstance(tree, dict):
        raise Unsupported(tree)
    if not tree:
        return "{}\n"
    out: list[str] = []
    _mapping(tree, "", out)
    return "".join(out)


def _mapping(tree: dict, indent: str, out: list, first: str | None = None) -> None:
    """`first`: the text before the first key (a list item's "- "), else the indent."""
    for i, (key, value) in enumerate(tree.items()):
        lead = first if (first is not None and i == 0) else indent
        _entry(lead + scalar(key) + ":", value, indent, out)


def _entry(head: str, value: Any, indent: str, out: list) -> None:
    if isinstance(value, dict):
        if not value:
            out.append(head + " {}\n")
            return
        out.append(head + "\n")
        _mapping(value, indent + "  ", out)
    elif isinstance(value, list):
        if not value:
            out.append(head + " []\n")
            return
        out.append(head + "\n")
        _sequence(value, indent, out)
    else:
        out.append(head + " " + scalar(value) + "\n")


def _sequence(items: list, indent: str, out: list, first: str | None = None) -> None:
    for i, item in enumerate(items):
        lead = (first if (first is not None and i == 0) else indent) + "- "
        if isinstance(item, dict) and item:
            _mapping(item, indent + "  ", out, first=lead)
        elif isinstance(item, list) and item:
            _sequence(item, indent + "  ", out, first=lead)
        elif isinstance(item, (dict, list)):
            out.append(lead + ("{}" if isinstance(item, dict) else "[]") + "\n")
        else:
            out.append(lead + scalar(item) + "\n")
