"""Malformed experiment files: each exits with status 2, prints one paragraph naming the file,
the key and the fix, and writes nothing. `python tests/test_malformed.py` prints the table of
cases and messages that docs/experiment-file.md shows."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.cli import experiment_here, write

GOOD_RUNS = "runs:\n  - trainer: {train: {epochs: 1}}\n"
HEAD = "experiment:\n  name: bad\n  base_dir: out\n"
SEARCH_RUNS = "runs:\n  - trainer:\n      train: {optim: {lr: {sample: loguniform, from: [1.0e-4, 1.0e-2]}}}\n"

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
     "fewshot_study, pretrain_one_task, pretrain_weights, run, test, train, train_catchup. Did you mean 'train'?", []),
    ("stage-needs-a-key", "adapt with no task to adapt to", HEAD + "runs:\n  - trainer: {pipeline: [train, adapt]}\n",
     "exp.yaml: runs[0].trainer.adapt.task: stage 'adapt' needs adapt.task, which is not set", []),
    ("bad-tags", "comet tags that are not a list", HEAD + "runs:\n  - comet: {tags: 5}\n",
     "exp.yaml:5: runs[0].comet.tags: expects a list, got 5", []),
    ("bad-tag-items", "comet tags that are not strings", HEAD + "runs:\n  - comet: {tags: [1, 2]}\n",
     "exp.yaml:5: runs[0].comet.tags: comet.tags must be a list of strings", []),
    ("missing-config-file", "experiment.config names no file",
     HEAD + "  config: nowhere.yaml\n" + GOOD_RUNS,
     "exp.yaml:4: experiment.config: the file {dir}/nowhere.yaml does not exist", []),
    ("missing-defaults-file", "experiment.defaults names no file",
     HEAD + "  defaults: nodefaults.yaml\n" + GOOD_RUNS,
     "exp.yaml:4: experiment.defaults: the file {dir}/nodefaults.yaml does not exist", []),
    ("unwritable-base-dir", "base_dir inside a file, not a folder",
     "experiment:\n  name: bad\n  base_dir: shared.yaml/out\n" + GOOD_RUNS,
     "exp.yaml:3: experiment.base_dir: cannot write in the base folder {dir}/shared.yaml/out", []),
    ("bad-key-in-config-file", "a typo inside the experiment's config file",
     HEAD + "  config: shared.yaml\n" + GOOD_RUNS,
     "shared.yaml:2: train.epochz: unknown key 'epochz'", []),
    ("sbatch-key-not-in-template", "gpuz instead of gpus", HEAD + "sbatch: {gpuz: 1}\n" + GOOD_RUNS,
     "exp.yaml: sbatch.gpuz: the template sbatch.sh does not use the sbatch value 'gpuz', so it "
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
    ("omnigan-gpu", "omnigan's gpu spelling with a value it cannot read", HEAD + "sbatch: {gpu: two}\n" + GOOD_RUNS,
     "exp.yaml:4: sbatch.gpu: cannot read sbatch.gpu 'two'. Fix: write gpus: N (and gpu_type: TYPE)", []),
    ("omnigan-and-new-spelling", "cpu and cpus both set", HEAD + "sbatch: {cpu: 2, cpus: 4}\n" + GOOD_RUNS,
     "exp.yaml:4: sbatch.cpu: both cpu (omnigan's spelling) and cpus are set. Fix: keep cpus only", []),
    # Allowed values, checked on the login node (hypersal/config/choices.py), not hours later on the node.
    ("unknown-metric", "a misspelt test metric", HEAD + "runs:\n  - trainer:\n      test: {metrics: [cc, auc_jud]}\n",
     "exp.yaml:6: runs[0].trainer.test.metrics: unknown metric 'auc_jud'. Fix: use one of: auc_borji, "
     "auc_judd, cc, fbeta, info_gain, kld, mae, nss, sauc, sim. Did you mean 'auc_judd'?", []),
    ("unknown-optimizer", "adamm", HEAD + "runs:\n  - trainer:\n      train: {optim: {name: adamm}}\n",
     "exp.yaml:6: runs[0].trainer.train.optim.name: unknown optimizer 'adamm'. Fix: use one of: adam, "
     "adamw, sgd. Did you mean 'adam'?", []),
    ("unknown-schedule", "cosin", HEAD + "runs:\n  - trainer:\n      train: {schedule: {name: cosin}}\n",
     "runs[0].trainer.train.schedule.name: unknown schedule 'cosin'. Fix: use one of: cosine, cyclic, "
     "exponential, none, staircase. Did you mean 'cosine'?", []),
    ("unknown-loss-term", "a misspelt loss in a sum",
     HEAD + "runs:\n  - trainer:\n      train: {loss: bce + 0.5 * ccc}\n",
     "exp.yaml:6: runs[0].trainer.train.loss: unknown loss 'ccc'. Fix: use one of: bce, cc, huber, kld, "
     "l1, mse, nss. Did you mean 'cc'?", []),
    ("unreadable-loss", "a loss expression that is not a weighted sum",
     HEAD + "runs:\n  - trainer:\n      train: {loss: 0.5 * cc * 2}\n",
     "runs[0].trainer.train.loss: cannot read the loss '0.5 * cc * 2'", []),
    ("unknown-bn-stats", "an adapt-only value misspelt", HEAD + "runs:\n  - trainer:\n      adapt: {bn_stats: kept}\n",
     "runs[0].trainer.adapt.bn_stats: unknown value 'kept'. Fix: use one of: keep, update. Did you mean 'keep'?", []),
    ("unknown-task-images", "mine", HEAD + "runs:\n  - trainer:\n      data: {task_images: mine}\n",
     "runs[0].trainer.data.task_images: unknown value 'mine'. Fix: use one of: all, own", []),
    ("unknown-precision", "fp8", HEAD + "runs:\n  - trainer:\n      train: {precision: fp8}\n",
     "runs[0].trainer.train.precision: unknown precision 'fp8'. Fix: use one of: bf16, fp16, fp32", []),
    ("unknown-decoder", "lite instead of light",
     HEAD + "runs:\n  - trainer:\n      model: {decoder: {name: lite}}\n",
     "exp.yaml:6: runs[0].trainer.model.decoder.name: unknown decoder 'lite'. Fix: use one of: inception, "
     "kdsalbox, light. Did you mean 'light'?", []),
    ("unknown-hypernet", "chunk instead of chunked",
     HEAD + "runs:\n  - trainer:\n      model: {hypernet: {name: chunk}}\n",
     "runs[0].trainer.model.hypernet.name: unknown hypernet 'chunk'. Fix: use one of: chunked, simple", []),
    ("unknown-action", "a misspelt action",
     HEAD + "runs:\n  - trainer:\n      train: {actions: [log_epoch_losses, freeze_encodr]}\n",
     "runs[0].trainer.train.actions[1].name: unknown action 'freeze_encodr'. Fix: use one of: batch_logger, "
     "early_stopping, freeze_encoder", []),
    ("unknown-action-option", "an action option that does not exist",
     HEAD + "runs:\n  - trainer:\n      train: {actions: [{name: lr_decay, evry: 2}]}\n",
     "runs[0].trainer.train.actions[0]: action 'lr_decay' has no option evry. Fix: its options are: "
     "factor, every. Did you mean 'every'?", []),
    ("unknown-study-arm", "a misspelt few-shot study arm",
     HEAD + "runs:\n  - trainer:\n      study: {arms: [saliency, finetune_al]}\n",
     "runs[0].trainer.study.arms: unknown study arm 'finetune_al'. Fix: use one of: embedding, encoder, encoder_finetune, encoder_saliency, finetune_all, ", []),
    ("unknown-comet-mode", "offlien", HEAD + "runs:\n  - trainer:\n      comet: {mode: offlien}\n",
     "runs[0].trainer.comet.mode: unknown Comet mode 'offlien'. Fix: use one of: disabled, offline, online", []),
    ("unknown-device", "gpu instead of cuda", HEAD + "runs:\n  - trainer: {device: gpu}\n",
     "exp.yaml:5: runs[0].trainer.device: unknown device 'gpu'. Fix: use one of: auto, cpu, cuda", []),
    ("unknown-synth-task", "a task the generator does not know",
     HEAD + "runs:\n  - trainer:\n      data: {synth: {tasks: [center_bias, spectral]}}\n",
     "runs[0].trainer.data.synth.tasks: unknown saliency task 'spectral'", []),
    ("stage-optimizer", "a bad value under a stage that inherits from train",
     HEAD + "runs:\n  - trainer:\n      adapt: {optim: {name: sdg}}\n",
     "exp.yaml:6: runs[0].trainer.adapt.optim.name: unknown optimizer 'sdg'. Fix: use one of: adam, adamw, "
     "sgd. Did you mean 'sgd'?", []),
    ("sampled-bad-choice", "a list sample with one bad candidate",
     HEAD + "runs:\n  - trainer:\n      train: {optim: {name: {sample: list, from: [adam, sgdd]}}}\n",
     "exp.yaml:6: runs[0].trainer.train.optim.name: unknown optimizer 'sgdd'", []),
    ("config-file-bad-value", "a bad value inside the experiment's config file",
     HEAD + "  config: values.yaml\n" + GOOD_RUNS,
     "values.yaml:2: train.precision: unknown precision 'fp64'", []),
    # Adaptive sweeps (experiment.search): checked before the study is created.
    ("search-unknown-sampler", "sampler: bayes", HEAD + "  search: {sampler: bayes}\n" + SEARCH_RUNS,
     "exp.yaml:4: experiment.search.sampler: unknown sampler 'bayes'. Fix: use one of: grid, random, tpe", []),
    ("search-unknown-pruner", "pruner: hyperbnd", HEAD + "  search: {pruner: hyperbnd}\n" + SEARCH_RUNS,
     "experiment.search.pruner: unknown pruner 'hyperbnd'. Fix: use one of: asha, hyperband, median, none. "
     "Did you mean 'hyperband'?", []),
    ("search-metric-never-logged", "a metric the train stage does not log per epoch",
     HEAD + "  search: {metric: test_cc}\n" + SEARCH_RUNS,
     "experiment.search.metric: the train stage never logs 'test_cc' per epoch. Fix: use val_loss, "
     "val_loss/<task> or train_loss", []),
    ("search-no-sampled-key", "a search with nothing to search", HEAD + "  search: {trials: 4}\n" + GOOD_RUNS,
     "experiment.search: a search needs at least one sampled value in its run entry", []),
    ("search-no-trials", "trials: 0", HEAD + "  search: {trials: 0}\n" + SEARCH_RUNS,
     "experiment.search.trials: expects a whole number >= 1, got 0", []),
    ("search-budget-out-of-reach", "min_epochs above the epochs trained",
     HEAD + "  search: {min_epochs: 9}\n" + SEARCH_RUNS,
     "experiment.search.min_epochs: min_epochs 9 is more than the 4 epochs a run trains", []),
    ("search-spec-the-sampler-cannot-serve", "sample: normal with TPE",
     HEAD + "  search: {sampler: tpe}\nruns:\n  - trainer:\n      train: {optim: {lr: {sample: normal, from: [0.01, 0.001]}}}\n",
     "exp.yaml: runs[0].trainer.train.optim.lr: the tpe sampler cannot draw `sample: normal`. Fix: with sampler "
     "tpe use one of: uniform, loguniform, randint, range, list", []),
    ("search-two-entries", "a search with two run entries", HEAD + "  search: {}\n" + SEARCH_RUNS + "  - {}\n",
     "exp.yaml: runs: a search takes exactly one run entry, without repeat", []),
    # Command-line overrides: checked like a file, "command line" as the place.
    ("override-unknown-key", "a misspelt key on the command line", HEAD + GOOD_RUNS,
     "command line: trainer.train.epochz: unknown key 'epochz'", ["trainer.train.epochz=2"]),
    ("override-bad-value", "an unknown optimizer on the command line", HEAD + GOOD_RUNS,
     "command line: trainer.train.optim.name: unknown optimizer 'adamm'", ["trainer.train.optim.name=adamm"]),
    ("override-wrong-type", "a word where a number goes, on the command line", HEAD + GOOD_RUNS,
     "command line: trainer.train.epochs: expects an integer, got 'two'", ["trainer.train.epochs=two"]),
    ("override-unknown-section", "a key that is not under trainer, sbatch or experiment", HEAD + GOOD_RUNS,
     "command line: train.epochs: unknown section 'train' in the override 'train.epochs=2'. Fix: start the "
     "key with one of: experiment, trainer, sbatch", ["train.epochs=2"]),
    ("override-no-value", "an override without =", HEAD + GOOD_RUNS,
     "command line: cannot read the override 'trainer.train.epochs'", ["trainer.train.epochs"]),
    ("override-sbatch-not-in-template", "an sbatch value the template does not use", HEAD + GOOD_RUNS,
     "command line: sbatch.gpuz: the template sbatch.sh does not use the sbatch value 'gpuz'", ["sbatch.gpuz=1"]),
    # Ranges and the rules between options (hypersal/config/options.py): refused on the login node, not
    # after the queue wait.
    ("negative-lr", "a learning rate below zero", HEAD + "runs:\n  - trainer: {train: {optim: {lr: -0.01}}}\n",
     "exp.yaml:5: runs[0].trainer.train.optim.lr: must be > 0, got -0.01. Fix: use a value > 0", []),
    ("zero-epochs", "epochs: 0", HEAD + "runs:\n  - trainer: {train: {epochs: 0}}\n",
     "runs[0].trainer.train.epochs: must be >= 1, got 0", []),
    ("device-batch-not-divisor", "batch_size 8 over device batches of 3",
     HEAD + "runs:\n  - trainer: {train: {batch_size: 8, device_batch_size: 3}}\n",
     "runs[0].trainer.train.device_batch_size: batch_size 8 is not a multiple of device_batch_size 3. "
     "Fix: choose a divisor of batch_size, or null", []),
    ("cyclic-bounds", "a cyclic schedule with min_lr > max_lr",
     HEAD + "runs:\n  - trainer: {train: {schedule: {name: cyclic, min_lr: 0.1, max_lr: 0.01}}}\n",
     "runs[0].trainer.train.schedule: cyclic needs 0 < min_lr < max_lr, got min_lr 0.1 and max_lr 0.01", []),
    ("stage-range", "a training stage's own value out of range",
     HEAD + "runs:\n  - trainer: {pipeline: [train, adapt], adapt: {task: center_bias, steps_per_epoch: 0}}\n",
     "runs[0].trainer.adapt.steps_per_epoch: must be >= 1, got 0", []),
    ("momentum-one", "sgd momentum of 1", HEAD + "runs:\n  - trainer: {train: {optim: {name: sgd, momentum: 1.0}}}\n",
     "runs[0].trainer.train.optim.momentum: must be >= 0 and < 1, got 1.0", []),
    ("hflip-probability", "a flip probability above 1", HEAD + "runs:\n  - trainer: {data: {hflip: 1.5}}\n",
     "runs[0].trainer.data.hflip: must be >= 0 and <= 1, got 1.5", []),
    ("crop-scale-order", "crop_scale [0.9, 0.5]", HEAD + "runs:\n  - trainer: {data: {crop_scale: [0.9, 0.5]}}\n",
     "runs[0].trainer.data.crop_scale: crop_scale must be [low, high] with 0 < low <= high <= 1", []),
    ("size-zero", "a training size of 0", HEAD + "runs:\n  - trainer: {data: {size: [64, 0]}}\n",
     "runs[0].trainer.data.size: expects [height, width], two whole numbers of at least 8, got [64, 0]", []),
    ("cutoff-range", "an encoder cutoff past MobileNetV2's 19 blocks",
     HEAD + "runs:\n  - trainer: {model: {encoder: {cutoff: 20}}}\n",
     "runs[0].trainer.model.encoder.cutoff: must be >= 1 and <= 19, got 20", []),
    ("skip-past-cutoff", "a decoder skip at the cutoff",
     HEAD + "runs:\n  - trainer: {model: {encoder: {cutoff: 7}, decoder: {skip: 7}}}\n",
     "runs[0].trainer.model.decoder.skip: skip 7 must be a number of encoder blocks, at least 1, before the cutoff 7", []),
    ("skip-wrong-decoder", "a skip on a decoder that takes none",
     HEAD + "runs:\n  - trainer: {model: {decoder: {name: inception, skip: 4}}}\n",
     "runs[0].trainer.model.decoder.skip: the inception decoder takes no skip", []),
    ("encoder-weight-without-encoder", "training a task encoder the model does not have",
     HEAD + "runs:\n  - trainer: {train: {episodic: {encoder_weight: 1.0}}}\n",
     "runs[0].trainer.train.episodic.encoder_weight: encoder_weight > 0 trains the task encoder, but "
     "model.task_encoder.width is 0 (none)", []),
    ("encoder-arm-without-encoder", "a study arm that needs the task encoder, none built",
     HEAD + "runs:\n  - trainer: {pipeline: [train, fewshot_study], study: {family: prior, arms: [k0_start, encoder]}}\n",
     "runs[0].trainer.study.arms: arm encoder adapts with the task encoder, but model.task_encoder.width is 0", []),
    ("encoder-from-missing", "decoder+encoder without its first block",
     HEAD + "runs:\n  - trainer: {model: {hypernet: {generate: decoder+encoder}}}\n",
     "runs[0].trainer.model.hypernet.encoder_from: generate: decoder+encoder needs the first generated encoder block", []),
    ("stage-needs-hypernet", "train_catchup with no hypernetwork",
     HEAD + "runs:\n  - trainer: {pipeline: [train, train_catchup], model: {hypernet: {generate: none}}}\n",
     "runs[0].trainer.pipeline: stage train_catchup needs a hypernetwork, but model.hypernet.generate is none", []),
    ("task-not-generated", "a training task the generated dataset lacks",
     HEAD + "runs:\n  - trainer: {tasks: [fine_grained]}\n",
     "runs[0].trainer.tasks: the generated dataset has no task fine_grained", []),
    ("adapt-task-not-generated", "a new task the generated dataset lacks",
     HEAD + "runs:\n  - trainer: {pipeline: [train, adapt], adapt: {task: boolean_map}}\n",
     "runs[0].trainer.adapt.task: the new task must be one of the dataset's tasks, got 'boolean_map'", []),
    ("episodic-precision", "episodes in bf16", HEAD + "runs:\n  - trainer: {train: {episodic: {weight: 1.0}, precision: bf16}}\n",
     "runs[0].trainer.train.precision: episodic training runs one process, fp32, whole batches. Fix: use fp32", []),
    ("fp16-on-cpu", "fp16 with device cpu", HEAD + "runs:\n  - trainer: {device: cpu, train: {precision: fp16}}\n",
     "runs[0].trainer.train.precision: precision fp16 needs a GPU, and device is cpu", []),
    ("pretrain-weights-files", "pretrain_weights without its weight files",
     HEAD + "runs:\n  - trainer: {pipeline: [pretrain_weights, train]}\n",
     "runs[0].trainer.pretrain_weights.weights_dir: pretrain_weights needs per-task weight files", []),
    ("study-member", "a held-out family member that does not exist",
     HEAD + "runs:\n  - trainer: {pipeline: [fewshot_study], study: {family: prior, test_members: [1, 8]}}\n",
     "runs[0].trainer.study.test_members: a family has members 0..7, not 8", []),
    ("sampled-out-of-range", "a drawn value out of range",
     HEAD + "runs:\n  - trainer: {train: {batch_size: {sample: list, from: [8, 0]}}}\n",
     "runs[0].trainer.train.batch_size: must be >= 1, got 0", []),
]


def setup_case(folder: Path, text: str) -> Path:
    write(folder / "shared.yaml", "train:\n  epochz: 3\n")
    write(folder / "values.yaml", "train:\n  precision: fp64\n")
    write(folder / "strict.sh", "#!/bin/bash\n#SBATCH --partition={{ partition }}\nexec {{ job.args }}\n")
    return write(folder / "exp.yaml", text)


@pytest.mark.parametrize("case_id, what, text, expected, extra", CASES, ids=[c[0] for c in CASES])
def test_malformed_experiment(tmp_path, case_id, what, text, expected, extra):
    exp = setup_case(tmp_path, text)
    proc = experiment_here(f"--experiment={exp}", "--dry-run", *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("hypersal: error: ")
    message = proc.stderr[len("hypersal: error: "):].strip()
    assert "\n" not in message and "Traceback" not in message   # one paragraph, no traceback
    assert expected.format(dir=tmp_path) in message
    assert "Fix: " in message
    assert not (tmp_path / "out").exists()                        # nothing written


def test_cases_are_distinct_and_enough():
    assert len(CASES) >= 66
    assert len({c[0] for c in CASES}) == len(CASES)


def markdown_table(tmp_root: Path) -> str:
    rows = ["| case | what is wrong | what hypersal says (exit status 2) |", "|---|---|---|"]
    for case_id, what, text, _, extra in CASES:
        folder = tmp_root / case_id
        exp = setup_case(folder, text)
        proc = experiment_here(f"--experiment={exp}", "--dry-run", *extra, cwd=folder)
        message = proc.stderr.replace("hypersal: error: ", "").strip().replace(str(folder) + "/", "")
        message = message.replace(str(folder), ".").replace("|", "\\|")
        rows.append(f"| {case_id} | {what} | {message} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        print(markdown_table(Path(d)))
