"""Malformed experiment files: each exits with status 2, prints one paragraph naming the file,
the key and the fix, and writes nothing. `python tests/test_malformed.py` prints the table of
cases and messages that the README shows."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import experiment, write  # noqa: E402

GOOD_RUNS = "runs:\n  - trainer: {train: {epochs: 1}}\n"
HEAD = "experiment:\n  name: bad\n  base_dir: out\n"

# (id, what is wrong, experiment file text, expected fragment of the message, extra arguments)
CASES = [
    ("not-a-mapping", "the file is a list", "- a\n- b\n",
     "exp.yaml: an experiment file must hold a mapping", []),
    ("yaml-syntax", "unclosed bracket", HEAD + "runs: [\n  {trainer: {}\n",
     "exp.yaml:6: invalid YAML", []),
    ("duplicate-key", "a key given twice", HEAD + "  name: again\n" + GOOD_RUNS,
     "exp.yaml:4: key 'name' appears twice in one mapping (lines 2 and 4)", []),
    ("unknown-section", "a misspelt top-level key", HEAD + "runz:\n  - {}\n",
     "exp.yaml:4: runz: unknown key 'runz'. Fix: valid keys here are: experiment, sbatch, runs. "
     "Did you mean 'runs'?", []),
    ("missing-name", "no experiment.name", "experiment:\n  base_dir: out\n" + GOOD_RUNS,
     "exp.yaml: experiment.name is missing. Fix: add `name: ...` under `experiment:`", []),
    ("missing-base-dir", "no experiment.base_dir", "experiment:\n  name: x\n" + GOOD_RUNS,
     "experiment.base_dir is missing", []),
    ("path-traversal-name", "a name that climbs out of base_dir",
     "experiment:\n  name: ../../etc\n  base_dir: out\n" + GOOD_RUNS,
     "exp.yaml:2: experiment.name: the name '../../etc' cannot be used as a folder name", []),
    ("unset-variable", "$VAR that is not set",
     "experiment:\n  name: x\n  base_dir: $HYPERSAL_NO_SUCH_VAR/runs\n" + GOOD_RUNS,
     "exp.yaml:3: experiment.base_dir: environment variable $HYPERSAL_NO_SUCH_VAR is not set", []),
    ("unknown-mode", "mode: parallel", HEAD + "  mode: parallel\n" + GOOD_RUNS,
     "exp.yaml:4: experiment.mode: unknown mode 'parallel'. Fix: use one of: jobs, array", []),
    ("bad-repeat", "repeat: 0", HEAD + "runs:\n  - repeat: 0\n",
     "exp.yaml:5: runs[0].repeat: expects a whole number >= 1, got 0", []),
    ("no-runs", "an empty runs list", HEAD + "runs: []\n",
     "exp.yaml: runs: the experiment has no runs", []),
    ("run-not-mapping", "a run entry that is a number", HEAD + "runs:\n  - 3\n",
     "exp.yaml:5: runs[0]: a run entry must be a mapping, got 3", []),
    ("unknown-run-key", "trainr instead of trainer", HEAD + "runs:\n  - trainr: {}\n",
     "exp.yaml:5: runs[0].trainr: unknown key 'trainr'. Fix: valid keys here are: trainer, sbatch, "
     "comet, repeat. Did you mean 'trainer'?", []),
    ("unknown-trainer-key", "a typo in a trainer key",
     HEAD + "runs:\n  - trainer:\n      train:\n        optim: {lrr: 0.1}\n",
     "exp.yaml:7: runs[0].trainer.train.optim.lrr: unknown key 'lrr'. Fix: valid keys here are: "
     "name, lr, weight_decay, momentum. Did you mean 'lr'?", []),
    ("wrong-type", "a string where a number goes",
     HEAD + "runs:\n  - trainer:\n      train: {epochs: ten}\n",
     "exp.yaml:6: runs[0].trainer.train.epochs: expects an integer, got 'ten'", []),
    ("not-a-mapping-in-trainer", "a value where a section goes",
     HEAD + "runs:\n  - trainer:\n      train: 5\n",
     "runs[0].trainer.train: expects a mapping", []),
    ("unknown-sampler", "sample: gaussian",
     HEAD + "runs:\n  - trainer:\n      train: {optim: {lr: {sample: gaussian, from: [0, 1]}}}\n",
     "runs[0].trainer.train.optim.lr: unknown sampler 'gaussian'. Fix: use one of: grid, list, "
     "loguniform, normal, randint, range, uniform", []),
    ("bad-sample-bounds", "uniform with low > high",
     HEAD + "runs:\n  - trainer:\n      train: {optim: {lr: {sample: uniform, from: [1, 0]}}}\n",
     "sample: uniform needs low < high, got [1, 0]", []),
    ("drawn-wrong-type", "a list of strings sampled into a number",
     HEAD + "  seed: 0\nruns:\n  - trainer:\n      train: {optim: {lr: {sample: list, from: [fast, slow]}}}\n",
     "runs[0].trainer.train.optim.lr: expects a number, got 'slow'", []),
    ("unknown-stage", "a misspelt stage", HEAD + "runs:\n  - trainer: {pipeline: [trian, test]}\n",
     "exp.yaml: runs[0].trainer.pipeline[0]: unknown stage 'trian'. Fix: use one of: adapt, export, "
     "fewshot, pretrain_one_task, pretrain_weights, run, test, train, train_catchup. Did you mean 'train'?", []),
    ("stage-needs-a-key", "adapt with no task to adapt to", HEAD + "runs:\n  - trainer: {pipeline: [train, adapt]}\n",
     "exp.yaml: runs[0].trainer.adapt.task: stage 'adapt' needs adapt.task, which is not set", []),
    ("bad-tags", "comet tags that are not a list", HEAD + "runs:\n  - comet: {tags: demo}\n",
     "exp.yaml:5: runs[0].comet.tags: expects a list, got 'demo'", []),
    ("bad-tag-items", "comet tags that are not strings", HEAD + "runs:\n  - comet: {tags: [1, 2]}\n",
     "exp.yaml:5: runs[0].comet.tags: comet.tags must be a list of strings", []),
    ("missing-config-file", "experiment.config names no file",
     HEAD + "  config: nowhere.yaml\n" + GOOD_RUNS, "nowhere.yaml: file not found", []),
    ("bad-key-in-config-file", "a typo inside the experiment's config file",
     HEAD + "  config: shared.yaml\n" + GOOD_RUNS,
     "shared.yaml:2: train.epochz: unknown key 'epochz'", []),
    ("sbatch-key-not-in-template", "gpu instead of gpus", HEAD + "sbatch: {gpu: 1}\n" + GOOD_RUNS,
     "exp.yaml: sbatch.gpu: the template sbatch.sh does not use the sbatch value 'gpu', so it "
     "would be ignored. Fix: use one of:", []),
    ("template-not-found", "--template names no file", HEAD + GOOD_RUNS,
     "nope.sh: template not found", ["--template", "nope.sh"]),
    ("template-undefined-variable", "a template reading a value nobody sets", HEAD + GOOD_RUNS,
     "the template strict.sh needs a value: 'partition' is undefined", ["--template", "strict.sh"]),
    ("run-sbatch-key-not-in-template", "an unknown value in one run's sbatch",
     HEAD + "runs:\n  - {}\n  - sbatch: {memory: 4G}\n",
     "exp.yaml: runs[1].sbatch.memory: the template sbatch.sh does not use the sbatch value 'memory'", []),
    ("array-mixed-resources", "array mode with runs asking for different memory",
     HEAD + "  mode: array\nruns:\n  - sbatch: {mem: 4G}\n  - sbatch: {mem: 8G}\n",
     "experiment.mode: array mode gives every run the same sbatch values, but run 1 differs from "
     "run 0 in mem", []),
]


def setup_case(folder: Path, text: str) -> Path:
    write(folder / "shared.yaml", "train:\n  epochz: 3\n")
    write(folder / "strict.sh", "#!/bin/bash\n#SBATCH --partition={{ partition }}\nexec {{ job.args }}\n")
    return write(folder / "exp.yaml", text)


@pytest.mark.parametrize("case_id, what, text, expected, extra", CASES, ids=[c[0] for c in CASES])
def test_malformed_experiment(tmp_path, case_id, what, text, expected, extra):
    exp = setup_case(tmp_path, text)
    proc = experiment(f"--experiment={exp}", "--dry-run", *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("hypersal: error: ")
    message = proc.stderr[len("hypersal: error: "):].strip()
    assert "\n" not in message and "Traceback" not in message   # one paragraph, no traceback
    assert expected in message
    assert "Fix: " in message
    assert not (tmp_path / "out").exists()                        # nothing written


def test_cases_are_distinct_and_enough():
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)


def markdown_table(tmp_root: Path) -> str:
    rows = ["| case | what is wrong | what hypersal says (exit status 2) |", "|---|---|---|"]
    for case_id, what, text, _, extra in CASES:
        folder = tmp_root / case_id
        exp = setup_case(folder, text)
        proc = experiment(f"--experiment={exp}", "--dry-run", *extra, cwd=folder)
        message = proc.stderr.replace("hypersal: error: ", "").strip().replace(str(folder) + "/", "")
        message = message.replace("|", "\\|")
        rows.append(f"| {case_id} | {what} | {message} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        print(markdown_table(Path(d)))
