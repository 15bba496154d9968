"""`experiment.py schema`: a JSON Schema from the declarations that every shipped experiment file
satisfies and a bad one does not (checked with the jsonschema package, as an editor would)."""
from __future__ import annotations

import contextlib
import io
import json

import jsonschema
import pytest
import yaml

from hypersal import yamlio
from hypersal.config import choices
from hypersal.experiment import cli as experiment_cli
from helpers.cli import ROOT, TINY_TRAINER, experiment


@pytest.fixture(scope="module")
def validator():
    proc = experiment("schema", check_rc=0)
    doc = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def shipped():
    files = sorted((ROOT / "shared" / "experiment").glob("*.yaml"))
    gpu = (ROOT / "bench" / "fewshot_gpu.yaml.in").read_text().replace("FAMILY", "prior")
    return [(p.name, yamlio.to_plain(yamlio.load(p))) for p in files] + [("fewshot_gpu.yaml", yaml.safe_load(gpu))]


@pytest.mark.parametrize("name, doc", shipped(), ids=[n for n, _ in shipped()])
def test_every_shipped_experiment_file_satisfies_the_schema(validator, name, doc):
    assert [e.message for e in validator.iter_errors(doc)] == []


GOOD = {"experiment": {"name": "x", "base_dir": "out"}, "runs": [{"trainer": {"train": {"epochs": 2}}}]}
BAD = [
    ("a misspelt key", {"runs": [{"trainer": {"train": {"epochz": 2}}}]}, "'epochz' was unexpected"),
    ("a string for a number", {"runs": [{"trainer": {"train": {"optim": {"lr": "fast"}}}}]}, "'fast'"),
    ("an unknown optimizer", {"runs": [{"trainer": {"train": {"optim": {"name": "sdg"}}}}]}, "'sdg'"),
    ("a negative learning rate", {"runs": [{"trainer": {"train": {"optim": {"lr": -0.1}}}}]}, "-0.1"),
    ("a stage's value out of range", {"runs": [{"trainer": {"adapt": {"epochs": 0}}}]}, "0"),
    ("an unknown sampler", {"runs": [{"trainer": {"seed": {"sample": "gaussian", "from": [0, 1]}}}]}, "gaussian"),
    ("an unknown metric", {"runs": [{"trainer": {"test": {"metrics": ["cc", "ccc"]}}}]}, "'ccc'"),
    ("no runs", {"runs": []}, "should be non-empty"),
    ("an unknown section", {"runz": []}, "'runz' was unexpected"),
    ("a list for a string", {"runs": [{"trainer": {"comet": {"workspace": ["a"]}}}]}, "['a']"),
]


@pytest.mark.parametrize("what, change, expected", BAD, ids=[b[0] for b in BAD])
def test_the_schema_refuses_a_bad_file(validator, what, change, expected):
    doc = {**GOOD, **change}
    errors = [e.message for e in validator.iter_errors(doc)] + [
        m for e in validator.iter_errors(doc) for m in [c.message for c in (e.context or [])]]
    assert errors, what
    assert any(expected in m for m in errors), errors
    assert validator.is_valid(GOOD)


def test_the_trainer_schema_takes_a_written_config_yaml(tmp_path):
    doc = json.loads(experiment("schema", "--trainer", check_rc=0).stdout)
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"experiment": {"name": "s", "base_dir": str(tmp_path), "config": TINY_TRAINER},
                                   "runs": [{"trainer": {}}]}))
    experiment(f"--experiment={exp}", "--dry-run", "--no-snapshot", check_rc=0)
    config = yamlio.to_plain(yamlio.load(next((tmp_path / "s").glob("run_*/config.yaml"))))
    jsonschema.validate(config, doc)


def test_an_optimizer_declared_once_is_in_the_checks_the_schema_and_the_registry(tmp_path, monkeypatch):
    """Adding an optimizer is one line in hypersal.config.choices plus its function (docs/options.md)."""
    from hypersal.experiment import editor_schema
    from hypersal.train.optim import make_optimizer
    import torch
    monkeypatch.setitem(choices.OPTIMIZERS.entries, "toy_sgd", "helpers.toy:toy_sgd")
    layer = {"train": {"optim": {"name": "toy_sgd"}}}
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"experiment": {"name": "t", "base_dir": str(tmp_path / "out"),
                                                  "config": TINY_TRAINER}, "runs": [{"trainer": layer}]}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert experiment_cli.main([f"--experiment={exp}", "--dry-run", "--no-snapshot"]) == 0, err.getvalue()
    names = editor_schema.trainer()["properties"]["train"]["properties"]["optim"]["properties"]["name"]["enum"]
    assert "toy_sgd" in names and "adam" in names
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], {"name": "toy_sgd", "lr": 0.1})
    assert type(opt) is torch.optim.SGD
    monkeypatch.delitem(choices.OPTIMIZERS.entries, "toy_sgd")
    with contextlib.redirect_stderr(err):
        assert experiment_cli.main([f"--experiment={exp}", "--dry-run", "--no-snapshot", "--name", "u"]) == 2
    assert "unknown optimizer 'toy_sgd'" in err.getvalue()
