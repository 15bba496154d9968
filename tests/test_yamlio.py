from pathlib import Path

import numpy as np
import pytest
import yaml

from hypersal import yamlio
from hypersal.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_scientific_notation_is_a_float_as_in_yaml_1_2():
    data = yamlio.loads("a: 1e-3\nb: 3.0e+2\nc: 1_000\nd: .5\ne: 1.0.0\nf: -2E4\n")
    assert data == {"a": 0.001, "b": 300.0, "c": 1000, "d": 0.5, "e": "1.0.0", "f": -20000.0}
    assert isinstance(data["a"], float) and isinstance(data["c"], int)


def test_duplicate_keys_are_errors_with_both_lines():
    with pytest.raises(UserError) as e:
        yamlio.loads("a: 1\nb: 2\na: 3\n", "x.yaml")
    assert str(e.value) == "x.yaml:3: key 'a' appears twice in one mapping (lines 1 and 3). Fix: keep one of them."


def test_anchors_and_merge_keys_work_and_may_be_overridden():
    data = yamlio.loads("base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  y: 3\n")
    assert data["run"] == {"x": 1, "y": 3}


def test_line_numbers_of_keys_and_list_items():
    data = yamlio.loads("top:\n  inner:\n    key: 1\nlist:\n  - a: 1\n  - b: 2\n")
    assert yamlio.line_of(data, ("top", "inner", "key")) == 3
    assert yamlio.line_of(data, ("list", 1)) == 6
    assert yamlio.line_of(data, ("list", 1, "b")) == 6
    # A key that is not there: the line of the deepest part of the path that is.
    assert yamlio.line_of(data, ("top", "missing")) == 1
    assert yamlio.line_of(data, ("list", 1, "missing")) == 6


def test_syntax_error_names_file_and_line():
    with pytest.raises(UserError) as e:
        yamlio.loads("a: [1\nb: 2\n", "bad.yaml")
    assert str(e.value).startswith("bad.yaml:2: invalid YAML")


def lines_of(value):
    """Every YamlMap's and YamlList's recorded lines, depth first."""
    if isinstance(value, dict):
        return [(value.line, value.lines), *[x for v in value.values() for x in lines_of(v)]]
    if isinstance(value, list):
        return [(value.line, value.lines), *[x for v in value for x in lines_of(v)]]
    return []


@pytest.mark.parametrize("path", sorted((ROOT / "shared").rglob("*.yaml")), ids=lambda p: p.name)
def test_libyaml_reads_every_shipped_file_as_the_python_parser_does(path):
    """Documents are parsed by libyaml (PyYAML's C binding, ~10x faster); each shipped file gives
    the same values, types and lines as PyYAML's own parser, which still says syntax errors."""
    assert yaml.__with_libyaml__, "this PyYAML has no libyaml: every document takes the Python parser"
    assert yamlio._FastLoader.__mro__[1] is yaml.CSafeLoader
    text = path.read_text()
    fast, slow = (yamlio._parse(cls, text, path) for cls in (yamlio._FastLoader, yamlio._Loader))
    assert fast == slow and repr(fast) == repr(slow) and lines_of(fast) == lines_of(slow)


@pytest.mark.parametrize("text, expected", [
    ("a:\tb\n", "found character '\\t' that cannot start any token"),     # libyaml would read 'b'
    ("lr: 0.1\t# c\nk: v\nk: v\n", "found character '\\t' that cannot start any token"),
    ("a: !\n", {"a": None}),                                              # libyaml: ''
    ("x: 1\n\ufeff\ny: 2\n", "invalid YAML"),                          # libyaml drops the mark
    ("a: \udcff\n", "invalid YAML"),                                     # a lone surrogate (argv)
])
def test_what_libyaml_reads_otherwise_is_read_as_pyyaml_reads_it(text, expected):
    if isinstance(expected, str):
        with pytest.raises(UserError) as e:
            yamlio.loads(text, "f.yaml")
        assert expected in str(e.value)
    else:
        assert yamlio.loads(text) == expected


def test_a_syntax_error_is_said_in_the_python_parsers_words():
    text = "a: [1\nb: 2\n"
    with pytest.raises(yaml.YAMLError) as python:
        yamlio._parse(yamlio._Loader, text, None)
    with pytest.raises(UserError) as e:
        yamlio.loads(text)
    assert python.value.problem in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        yamlio.load(tmp_path / "nope.yaml")


def test_dump_writes_numpy_scalars_as_plain_numbers(tmp_path):
    # omnigan's experiment.py crashed here (yaml.safe_dump and numpy scalars).
    text = yamlio.dumps({"lr": np.float64(0.5), "n": np.int64(3), "t": (np.float32(1.5),)})
    assert text == "lr: 0.5\nn: 3\nt:\n- 1.5\n"
    assert yamlio.loads(text) == {"lr": 0.5, "n": 3, "t": [1.5]}


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    yamlio.dump({"a": 1}, tmp_path / "f.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.yaml"]
    assert yamlio.load(tmp_path / "f.yaml") == {"a": 1}


def test_the_fast_writer_writes_pyyamls_text_for_every_shipped_config():
    import yaml
    from hypersal import yamlwrite
    from hypersal.config import schema
    from helpers.cli import ROOT

    def pyyaml(tree):
        return yaml.dump(tree, Dumper=yaml.SafeDumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=True, width=100)
    trees = [yamlio.to_plain(schema.inherit(yamlio.load(schema.DEFAULTS_FILE)))]
    trees += [yamlio.to_plain(yamlio.load(p)) for p in sorted((ROOT / "shared").rglob("*.yaml"))]
    trees.append({"nested": [[1, 2], [], {}, {"x": [1, {"y": None}]}], "on": "on", "colon": "it's: x",
                  "small": 1e-5, "flag": True, "accent": "é", 3: "int key", "empty": {}, "none": []})
    for tree in trees:
        assert yamlwrite.dumps(tree) == pyyaml(tree)
    long = {"notes": "word " * 60, "multi": {"a": "two\nlines"}}
    assert yaml.safe_load(yamlio.dumps(long)) == long     # not folded, or PyYAML's text: the same values
