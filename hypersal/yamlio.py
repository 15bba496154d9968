"""YAML in and out: the safe loader only, line numbers kept for error messages, plain types out.

Loading differs from `yaml.safe_load` in three ways, each a trap users fell into:
- `1e-3` is a float (YAML 1.1 reads it as a string), as in YAML 1.2 and Python;
- a key given twice in one mapping is an error instead of a silent overwrite;
- mappings and lists remember the line of each key / item (`YamlMap.lines`), so errors can
  point at `file:line`.
Dumping converts numpy scalars, tuples, paths and the classes above to plain Python first
(`yaml.safe_dump` crashes on numpy scalars: a bug of the omnigan seed).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from hypersal import yamlwrite
from hypersal.errors import UserError
from hypersal.files import write_atomic


class YamlMap(dict):
    """A dict that knows the line (1-based) of each of its keys in the file it came from."""
    lines: dict
    line: int = 0


class YamlList(list):
    """A list that knows the line of each item."""
    lines: list
    line: int = 0


class _Loader(yaml.SafeLoader):
    pass


_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)  # resolves `<<` merge keys into node.value
    out = YamlMap()
    out.lines, out.line = {}, node.start_mark.line + 1
    explicit: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        # Keys merged in by `<<` come first and may be overridden; explicit duplicates may not.
        if key in explicit and not getattr(key_node, "_merged", False):
            raise UserError(f"key '{key}' appears twice in one mapping (lines {explicit[key]} "
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
    yaml.SafeLoader.flatten_mapping(self, node)
    for k, _ in node.value:
        if any(k is m for m in merged_before):
            k._merged = True


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> YamlList:
    out = YamlList(loader.construct_object(n, deep=True) for n in node.value)
    out.lines, out.line = [n.start_mark.line + 1 for n in node.value], node.start_mark.line + 1
    return out


_Loader.flatten_mapping = _flatten_mapping
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_list)


def loads(text: str, path: Path | str | None = None) -> Any:
    """Parse YAML text; syntax errors become UserErrors naming `path` and the line."""
    loader = _Loader(text)
    loader.path = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise UserError(f"invalid YAML: {e.problem or e.context}", file=path,
                        line=mark.line + 1 if mark else None,
                        fix="check the indentation and quoting around that line") from None
    except yaml.YAMLError as e:
        raise UserError(f"invalid YAML: {e}", file=path, fix="check the file's syntax") from None
    finally:
        loader.dispose()


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


def to_plain(value: Any) -> Any:
    """Plain dicts, lists, str, int, float, bool and None, recursively."""
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
