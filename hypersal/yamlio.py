"""YAML in and out: the safe loader only, line numbers kept for error messages, plain types out.

Loading differs from `yaml.safe_load` in four ways, each a trap users fell into:
- `1e-3` is a float (YAML 1.1 reads it as a string), as in YAML 1.2 and Python;
- a key given twice in one mapping is an error instead of a silent overwrite;
- mappings and lists remember the line of each key / item (`YamlMap.lines`), so errors can
  point at `file:line`;
- aliases are bounded: a document whose aliases (`*name`) add more than ALIAS_BUDGET values,
  or that holds itself, is refused before anything is built. Nine nested aliases of nine items
  ("billion laughs") are a few hundred bytes that expand to 9**9 values: every later step
  (a message quoting the value, a config written to disk) would pay for them.
Dumping converts numpy scalars, tuples, paths and the classes above to plain Python first
(`yaml.safe_dump` crashes on numpy scalars: a bug of the omnigan seed).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from hypersal import tree as T, yamlwrite
from hypersal.errors import UserError, name_of
from hypersal.files import write_atomic

ALIAS_BUDGET = 100_000   # values aliases may add to a document (a real config adds a few hundred)


class YamlMap(dict):
    """A dict that knows the line (1-based) of each of its keys in the file it came from."""
    lines: dict
    line: int = 0


class YamlList(list):
    """A list that knows the line of each item."""
    lines: list
    line: int = 0


class _Loader(yaml.SafeLoader):
    """PyYAML's own parser, in Python: what reads a document libyaml refused, so that a syntax
    error is said in the words users have always seen."""


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """libyaml's parser (PyYAML's C binding) with the same resolvers and constructors, ~10x
    faster (`status` of a 500-run sweep read its 501 YAML files in 2.7 s with the Python parser,
    most of its time). It reads a few things otherwise than PyYAML's parser: tabs (it accepts
    some that PyYAML refuses), a bare `!` tag ('' for None) and a byte-order mark after the first
    character (dropped): a text holding any of them goes to the Python parser (SLOW_PATH)."""


SLOW_PATH = re.compile("[\t!]|.\ufeff", re.S)     # what _FastLoader would read otherwise


LOADERS = (_FastLoader, _Loader)


_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
for _cls in LOADERS:
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)  # resolves `<<` merge keys into node.value
    out = YamlMap()
    out.lines, out.line = {}, node.start_mark.line + 1
    explicit: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise UserError("a key must be a name or a number, not a list or a mapping",
                            file=getattr(loader, "path", None), line=line, fix="write `name: value`")
        # Keys merged in by `<<` come first and may be overridden; explicit duplicates may not.
        if key in explicit and not getattr(key_node, "_merged", False):
            raise UserError(f"key '{name_of(key)}' appears twice in one mapping (lines {explicit[key]} "
                            f"and {line})", file=getattr(loader, "path", None), line=line,
                            fix="keep one of them")
        if not getattr(key_node, "_merged", False):
            explicit[key] = line
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _flatten_mapping(self, node):
    # Mark keys that come from `<<` merges so duplicates among them are allowed.
    merged_before = []
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for src in sources:
                if isinstance(src, yaml.MappingNode):
                    self.flatten_mapping(src)
                    for k, _ in src.value:
                        merged_before.append(k)
    yaml.constructor.SafeConstructor.flatten_mapping(self, node)
    for k, _ in node.value:
        if any(k is m for m in merged_before):
            k._merged = True


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> YamlList:
    out = YamlList(loader.construct_object(n, deep=True) for n in node.value)
    out.lines, out.line = [n.start_mark.line + 1 for n in node.value], node.start_mark.line + 1
    return out


for _cls in LOADERS:
    _cls.flatten_mapping = _flatten_mapping
    _cls.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
    _cls.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_list)


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _expanded_sizes(root: yaml.Node, path) -> dict[int, int]:
    """{id(node): the values it stands for once every alias is expanded}, counted on the node
    graph (each distinct node once, iteratively: no recursion limit). A node that holds itself
    is an error."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            open_.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in _children(node))
        elif id(node) in open_:
            raise UserError("an alias refers to the value that holds it (a value that contains itself)",
                            file=path, line=node.start_mark.line + 1, fix="write the values out")
        elif id(node) not in sizes:
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node))
    return sizes


def _check_aliases(root: yaml.Node, path) -> None:
    """Refuse a document whose aliases add more than ALIAS_BUDGET values, naming the deepest key
    whose value alone is over it (where the bomb is)."""
    sizes = _expanded_sizes(root, path)
    added = sizes[id(root)] - len(sizes)
    if added <= ALIAS_BUDGET:
        return
    keys, node, line = [], root, None
    while True:   # down through mappings (and the mappings of lists: runs[2]), to the key to name
        if isinstance(node, yaml.MappingNode):
            parts = [(k.value if isinstance(k, yaml.ScalarNode) else "?", k, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            parts = [(i, v, v) for i, v in enumerate(node.value) if isinstance(v, yaml.MappingNode)]
        else:
            parts = []
        big = [(sizes[id(v)], key, at, v) for key, at, v in parts if sizes[id(v)] > ALIAS_BUDGET]
        if not big:
            break
        _, key, at, node = max(big, key=lambda b: b[0])
        keys.append(key)
        line = at.start_mark.line + 1
    raise UserError(f"its aliases (*name) expand to {sizes[id(node)]:,} values, more than hypersal reads "
                    f"(aliases may add {ALIAS_BUDGET:,}): an alias bomb?", file=path, key=T.fmt(tuple(keys)) or None,
                    line=line,
                    fix="write the values out, or nest fewer aliases")


def _parse(cls, text: str, path) -> Any:
    loader = cls(text)
    loader.path = path
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def loads(text: str, path: Path | str | None = None) -> Any:
    """Parse YAML text; syntax errors become UserErrors naming `path` and the line. Aliases are
    counted (and bounded) on the parsed node graph, before any value is built."""
    try:
        if SLOW_PATH.search(text) is None:
            try:
                return _parse(_FastLoader, text, path)
            except (yaml.YAMLError, UnicodeError):    # said below in PyYAML's words, as ever
                pass
        return _parse(_Loader, text, path)
    except RecursionError:
        raise UserError("the YAML is nested too deeply", file=path,
                        fix="nest fewer lists and mappings inside each other") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise UserError(f"invalid YAML: {e.problem or e.context}", file=path,
                        line=mark.line + 1 if mark else None,
                        fix="check the indentation and quoting around that line") from None
    except yaml.YAMLError as e:
        raise UserError(f"invalid YAML: {e}", file=path, fix="check the file's syntax") from None


def load(path: Path | str) -> Any:
    """Read a YAML file; a missing or unreadable file is a UserError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("file not found", file=path, fix="check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the file ({e.__class__.__name__}: {e})", file=path,
                        fix="check the file's permissions and encoding (UTF-8)") from None
    return loads(text, path)


line_of = T.line_of    # the lines YamlMap and YamlList record (tree.py reads them by duck typing)


_SCALARS = (str, int, float, bool, type(None))


def to_plain(value: Any) -> Any:
    """Plain dicts, lists, str, int, float, bool and None, recursively."""
    if type(value) in _SCALARS:       # the common case first: a sweep converts ~750,000 values
        return value
    if isinstance(value, dict):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return value.item()  # numpy / torch scalars
    if isinstance(value, bool) or value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"cannot write {type(value).__name__} to YAML: {value!r}")


# libyaml's emitter when PyYAML was built with it (every wheel is): ~10x faster, same text.
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dumps(value: Any) -> str:
    plain = to_plain(value)
    try:
        return yamlwrite.dumps(plain)
    except yamlwrite.Unsupported:
        return yaml.dump(plain, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=True, width=100)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write through a temporary file in the same folder and rename: never a half file."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def dump(value: Any, path: Path | str) -> None:
    write_text_atomic(path, dumps(value))
