"""Nested config trees (dicts of dicts): merge, walk, address by key path, expand paths."""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from hypersal.errors import UserError, name_of

KeyPath = tuple  # ("runs", 0, "trainer", "optim", "lr")


def fmt(path: KeyPath) -> str:
    """("runs", 0, "trainer", "lr") -> "runs[0].trainer.lr"."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def is_leaf_mapping(value: Any) -> bool:
    """Sample specs ({sample: ..., from: ...}) are values, not subtrees: they merge as a whole."""
    return isinstance(value, dict) and "sample" in value


def merge(base: dict, override: dict) -> dict:
    """Deep merge: a new tree where `override` wins; `base` and `override` are not modified.

    Mappings merge key by key (as addict's `Dict.update`); anything else, sample specs
    included, replaces the value below it. Everything is deep-copied, so runs built from the
    same layers never share (and leak) nested objects: a bug of the kdsalbox seed.
    """
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if (isinstance(value, dict) and not is_leaf_mapping(value)
                and isinstance(out.get(key), dict) and not is_leaf_mapping(out[key])):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def leaves(tree: Any, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """(path, value) for every leaf of a tree of dicts; sample specs count as leaves."""
    if isinstance(tree, dict) and not is_leaf_mapping(tree) and tree:
        for key, value in tree.items():
            yield from leaves(value, prefix + (key,))
    else:
        yield prefix, tree


def get(tree: dict, path: KeyPath) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def set_(tree: dict, path: KeyPath, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def map_leaves(tree: Any, fn: Callable[[KeyPath, Any], Any], prefix: KeyPath = ()) -> Any:
    """A copy of `tree` with every leaf replaced by fn(path, leaf)."""
    if isinstance(tree, dict) and not is_leaf_mapping(tree) and tree:
        return {k: map_leaves(v, fn, prefix + (k,)) for k, v in tree.items()}
    return fn(prefix, tree)


def line_of(tree: Any, key_path: tuple) -> int | None:
    """The line where `key_path` (a tuple of keys / indices) was written; for a key that is
    not there, the line of the deepest part of the path that is."""
    line, node = getattr(tree, "line", None), tree
    for key in key_path:
        lines = getattr(node, "lines", None)
        try:
            line = lines[key] if lines is not None else line
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
    return line



PATH_SUFFIXES = ("_dir", "_path", "_file")
_VAR = re.compile(r"\$(\w+)|\$\{([^}]+)\}")


def is_path_key(key: Any) -> bool:
    """Keys ending in _dir, _path or _file hold paths (the convention the schema relies on)."""
    return isinstance(key, str) and key.endswith(PATH_SUFFIXES)


def expand_path(value: Any, base_dir: Path, **where) -> Any:
    """`~` and `$VAR` / `${VAR}` expanded, then made absolute against `base_dir`.

    Non-strings (None, a sample spec) pass through. An unset variable is an error rather
    than a literal `$VAR` folder.
    """
    if not isinstance(value, str) or value == "":
        return value

    def env(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise UserError(f"environment variable ${name} is not set (in '{name_of(value)}')",
                            fix=f"export {name}=... before running, or write the path out", **where)
        return os.environ[name]

    text = os.path.expanduser(_VAR.sub(env, value))
    return os.path.normpath(base_dir / text) if not os.path.isabs(text) else os.path.normpath(text)


def expand_paths(tree: Any, base_dir: Path, file=None, prefix: KeyPath = ()) -> Any:
    """expand_path on every value whose key marks a path; `prefix` names the tree in errors."""
    def fix(path: KeyPath, value: Any) -> Any:
        if not path or not is_path_key(path[-1]):
            return value
        where = dict(file=file, key=fmt(prefix + path), line=line_of(tree, path))
        if is_leaf_mapping(value) and isinstance(value.get("from"), list):  # sampled paths
            return {**value, "from": [expand_path(v, base_dir, **where) for v in value["from"]]}
        return expand_path(value, base_dir, **where)

    return map_leaves(tree, fix)
