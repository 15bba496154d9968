"""Every declared range and rule (hypersal/config/options.py) is applied on both sides: by experiment.py
on the login node (its plan, before anything is written) and by train.py (its check of
config.yaml before any stage starts). Enumerated from the declarations, so a new rule is
tested the moment it is declared; each case names the key in both error messages."""
from __future__ import annotations

import contextlib
import io
import re

import pytest
import yaml

from hypersal import tree as T, yamlio
from hypersal.config import options, schema
from hypersal.experiment import cli as experiment_cli
from hypersal.config.options import RANGES, RULES
from hypersal.runfolder import RunFolder
from hypersal.runner import cli as train_cli
from helpers.cli import TINY_TRAINER

DEFAULTS = yamlio.load(schema.DEFAULTS_FILE)


def nested(path: str, value) -> dict:
    out: dict = {}
    T.set_(out, path.split("."), value)
    return out


def range_cases():
    """(id, trainer layer with one value out of its range, the key the error must name)."""
    for path, r in RANGES.items():
        yield path, nested(path, r.example()), path


def rule_cases():
    for r in RULES:
        yield r.name, r.bad, None


CASES = [*range_cases(), *rule_cases()]


def login_node(tmp_path, layer: dict) -> tuple[int, str]:
    """experiment.py --dry-run on an experiment whose one run sets `layer` (in process: ~50 ms)."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"experiment": {"name": "bad", "base_dir": str(tmp_path / "out"),
                                                  "config": TINY_TRAINER},
                                   "runs": [{"trainer": layer}]}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = experiment_cli.main([f"--experiment={exp}", "--dry-run"])
    return rc, err.getvalue()


def compute_node(tmp_path, layer: dict) -> str:
    """train.py's check of a run folder's config.yaml, before any stage (in process)."""
    path = tmp_path / "run" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(T.merge(T.merge({}, TINY_TRAINER), layer)))
    with pytest.raises(Exception) as caught:
        train_cli._check_before_start(RunFolder(path.parent), path, [], [])
    return str(caught.value)


@pytest.mark.parametrize("case_id, layer, key", CASES, ids=[c[0] for c in CASES])
def test_every_range_and_rule_is_checked_on_the_login_node_and_by_train_py(tmp_path, case_id, layer, key):
    rc, err = login_node(tmp_path, layer)
    assert rc == 2, err
    assert "Traceback" not in err and "\n" not in err.strip() and "Fix: " in err
    train_err = compute_node(tmp_path, layer)
    named = re.search(r"runs\[0\]\.trainer\.([\w.]+): ", err).group(1)
    assert named == (key or named)
    assert f"{named}: " in train_err and err.split(f"{named}: ")[1] == train_err.split(f"{named}: ")[1] + "\n"
    assert not (tmp_path / "out").exists()                               # nothing written


def test_the_defaults_break_no_range_and_no_rule():
    options.check(schema.inherit(DEFAULTS))


def test_every_declared_range_is_a_key_of_the_defaults():
    for path in RANGES:
        T.get(DEFAULTS, path.split("."))          # raises KeyError for a key that does not exist


def test_every_rule_reads_keys_that_exist_and_breaks_on_its_example():
    for r in RULES:
        for key in r.keys:
            T.get(DEFAULTS["train"] if r.per_stage else DEFAULTS, key.split("."))
        assert r.check(schema.inherit(T.merge(DEFAULTS, r.bad))["train"] if r.per_stage
                       else schema.inherit(T.merge(DEFAULTS, r.bad))) is not None, r.name


def test_a_training_stage_is_held_to_trains_ranges_under_its_own_key(tmp_path):
    rc, err = login_node(tmp_path, {"pipeline": ["train", "adapt"], "adapt": {"task": "center_bias", "epochs": 0}})
    assert rc == 2 and "runs[0].trainer.adapt.epochs: must be >= 1, got 0" in err


def test_a_search_space_is_checked_at_its_low_end(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "experiment": {"name": "s", "base_dir": str(tmp_path / "out"), "config": TINY_TRAINER,
                       "search": {"metric": "val_loss", "trials": 2}},
        "runs": [{"trainer": {"train": {"optim": {"lr": {"sample": "uniform", "from": [-0.1, 0.1]}}}}}]}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = experiment_cli.main([f"--experiment={exp}", "--dry-run"])
    assert rc == 2 and "train.optim.lr: must be > 0, got -0.1" in err.getvalue()
