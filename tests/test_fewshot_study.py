"""The few-shot study (issue: a new task from 10 examples): episodic training, the learned
start, the decode-from-features path, every arm, the fewshot_study stage at CPU-test size
through experiment.py, its resume, and the report's statistics on known inputs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
from PIL import Image

from hypersal.config import options
from hypersal import yamlio
from hypersal.config import Config
from hypersal.errors import UserError
from hypersal.stages import study as S
from hypersal.study import arms as A, protocol
from hypersal.study import report as R
from hypersal.train.episodic import EpisodicTrainStep, adapt_embedding

from helpers.cli import PYTHON, ROOT, experiment, run
from helpers.fewshot import BCE, MNET, Batch, Trainer, episode, setting, small


def test_decoding_cached_features_equals_the_forward():
    model = small().eval()
    x = torch.randn(3, 3, 32, 32)
    encoded = model(x, task=1, encode_only=True)
    assert encoded[1].shape[-2:] == (8, 8)                        # the skip's stride-4 grid
    torch.testing.assert_close(model(None, task=1, encoded=encoded, size=x.shape[-2:]), model(x, task=1))


def test_a_learned_start_is_a_shared_parameter_and_new_tasks_begin_there():
    model = small("learned")
    assert any(p is model.hnet.start for p in model.shared_parameters())
    with torch.no_grad():
        model.hnet.start.fill_(0.5)
    new = model.add_task("new")
    assert torch.equal(model.hnet.task_embeddings[new], torch.full((4,), 0.5))
    mean = small("mean")
    expected = mean.hnet.task_embeddings.detach().mean(0)
    first, second = mean.add_task("new"), mean.add_task("newer")
    assert torch.allclose(mean.hnet.task_embeddings[first], expected)
    assert torch.allclose(mean.hnet.task_embeddings[second], expected)       # the mean of trained tasks only
    with pytest.raises(UserError, match="model.hypernet.start"):
        small("median")


def test_the_count_of_trained_tasks_survives_a_save_and_load(tmp_path):
    from hypersal.runner.job import build_model
    mnet = dict(cutoff=7, width=8, skip=4, prior=2, decoder="light", weights=None)
    args = dict(mnet=mnet, task_names=["t0", "t1", "t2"], hypernet_options=dict(
        embedding_dim=4, hidden=[8], chunk_size=512, chunk_embedding_dim=4), per_task_bn=False)
    model = build_model(args)
    model.add_task("new")
    with torch.no_grad():
        model.hnet.task_embeddings[3] += 10                      # adapted far from the others
    again = build_model({**args, "task_names": model.task_names, "n_trained": model.n_trained})
    again.load_state_dict(model.state_dict())
    assert again.n_trained == 3                                  # the adapted task is not a trained one
    torch.testing.assert_close(again.start_embedding(), model.hnet.task_embeddings.detach()[:3].mean(0))


def test_one_episodic_step_is_finite_and_trains_the_start_and_the_hypernetwork():
    model = small().train()
    loss, changed = episode(model)
    assert torch.isfinite(loss)
    assert "hnet.start" in changed and "hnet.base" in changed and "hnet.task_embeddings" in changed
    assert any(n.startswith("mnet.encoder.") for n in changed)    # the query loss reaches the encoder
    assert options.range_of(("train", "episodic", "support")).problem(1.0)   # refused before any stage
    cfg = Config({"weight": 1.0, "inner_steps": 2, "inner_lr": 0.5, "support": 0.5, "encoder_weight": 0.0})
    with pytest.raises(UserError, match="train.batch_size"):
        EpisodicTrainStep(BCE, cfg)(Trainer(model, list(model.parameters())), Batch(n=1))


def test_the_inner_loop_takes_steps_of_the_given_length_downhill():
    model = small().eval()
    b = Batch()
    x = (b.images.float() / 255 - 0.5) / 0.25
    y = b.maps.float() / 255
    encoded = model(x, encode_only=True)
    start = model.start_embedding().detach()
    one = adapt_embedding(model, start, encoded, y, x.shape[-2:], BCE, 1, 0.3)
    assert float((one - start).norm()) == pytest.approx(0.3, rel=1e-4)
    loss = lambda e: float(BCE(model(None, embedding=e, encoded=encoded, size=x.shape[-2:]), y).detach())  # noqa: E731
    assert loss(adapt_embedding(model, start, encoded, y, x.shape[-2:], BCE, 3, 0.01)) < loss(start)


@pytest.mark.parametrize("arm", A.ARMS)
def test_every_arm_scores_finite_and_reruns_identically(arm):
    first = A.run(arm, setting(small()), [1, 2], 0.01, MNET)
    again = A.run(arm, setting(small()), [1, 2], 0.01, MNET)
    assert set(first) == {1, 2} and all(-1 <= v <= 1 for v in first.values())
    assert first == again                                          # what a resumed stage relies on


@pytest.mark.parametrize("arm", ["embedding", "finetune_decoder", "finetune_all", "finetune_lora"])
def test_without_a_step_size_an_arm_of_the_start_is_the_start(arm):
    """The generated network, its decoder as plain tensors, and the exported network agree."""
    s = setting(small())
    assert A.run(arm, s, [2], 0.0, MNET)[2] == pytest.approx(A.k0(s, best=False), abs=1e-5)


def test_the_lora_arm_changes_the_generated_tensors_and_low_rank_changes_of_the_encoder_only():
    """finetune_lora: the encoder's pointwise convolutions change by at most rank r each, every
    other encoder weight stays the exported network's, the generated tensors learn."""
    from torch.nn.utils import parametrize
    s = setting(small())
    s.lora_rank = 2
    net, _ = A.plain_network(s, MNET, "finetune_all")
    start = {n: p.detach().clone() for n, p in net.state_dict().items()}
    params = A.low_rank(s, net)
    changed = [m for m in net.encoder.modules() if parametrize.is_parametrized(m)]
    assert changed and all(m.kernel_size == (1, 1) for m in changed)
    assert len(params) == sum(n in s.model.generated for n, _ in net.named_parameters()) + 2 * len(changed)
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        s.loss_fn(net(s.support.x), s.support_y).backward()
        opt.step()
    for m in changed:
        base = m.parametrizations.weight.original
        delta = (m.weight - base).detach().flatten(1)
        assert 0 < torch.linalg.matrix_rank(delta) <= 2
    after = dict(net.named_parameters())
    for name, value in start.items():
        if name in after and name.startswith("encoder.") and name not in s.model.generated:
            assert torch.equal(after[name], value), name               # frozen: BatchNorm, depthwise, stem
    learned = {n for n in s.model.generated if not torch.equal(after[n], start[n])}
    decoder = {n for n in s.model.generated if n.startswith("decoder.")}
    assert decoder and decoder <= learned, learned                     # the generated decoder learns


def test_the_saliency_arm_keeps_the_start_with_the_lowest_loss_on_the_pairs():
    s = setting(small())
    trained = A.trained_embeddings(s)
    starts = torch.cat([s.model.start_embedding().detach()[None], trained[A.support_losses(s, trained).argsort()[:2]]])
    chosen = starts[int(A.support_losses(s, starts).argmin())]
    expected = A.score(lambda im: A._hnet(s, chosen, im), s.query, s.query_y)
    assert A.run("saliency", s, [2], 0.0, MNET)[2] == pytest.approx(expected, abs=1e-6)


def test_k0_best_picks_the_trained_embedding_with_the_lowest_loss_on_the_pairs():
    s = setting(small())
    losses = A.support_losses(s, A.trained_embeddings(s))
    best = A.trained_embeddings(s)[int(losses.argmin())]
    assert A.k0(s, best=True) == pytest.approx(A.score(lambda im: A._hnet(s, best, im), s.query, s.query_y))
    assert sorted(A.saliency_names(s.model)) == ["decoder.head.bias", "decoder.head.weight", "output.bias",
                                                 "output.blur_logit", "output.gain", "output.prior_centre",
                                                 "output.prior_log_width", "output.prior_weight"]


def test_the_folds_roles_are_disjoint():
    cfg = Config({"family": "prior", "train_members": [0, 1, 2, 3, 4, 5], "select_member": 6, "seen_member": 7,
                  "test_members": [1, 3, 5, 7]})
    train = protocol.training_tasks(cfg)
    assert len(train) == 18 and not any(t.startswith("prior") for t in train)
    assert protocol.selection_tasks(cfg) == ["contrast-6", "frequency-6", "region-6"]
    assert protocol.seen_tasks(cfg) == ["contrast-7", "frequency-7", "region-7"]
    assert protocol.test_tasks(cfg) == ["prior-1", "prior-3", "prior-5", "prior-7"]
    with pytest.raises(UserError, match="overlap"):
        protocol.training_tasks(Config({**cfg.to_dict(), "select_member": 5}))
    with pytest.raises(UserError, match="members 0..7"):
        protocol.test_tasks(Config({**cfg.to_dict(), "test_members": [8]}))


def record(family: str, seed: int, values: dict) -> dict:
    """A finished study.json: values {arm: cc} for every task, k 10, 2 draws (the second +0.02)."""
    tasks = [f"{family}-1", f"{family}-3"]
    scores = {f"{t}/k10/d{d}/{arm}": cc + 0.02 * d for t in tasks for d in range(2) for arm, cc in values.items()}
    return {"family": family, "seed": seed, "scores": scores, "groups": {"family": tasks, "seen": []},
            "budgets": {f"{arm}/k10": {"lr": 0.01, "steps": 25} for arm in values if arm in A.TRAINED}}


def test_an_unknown_family_is_refused_on_the_login_node(tmp_path):
    proc = experiment(f"--experiment={ROOT / 'shared' / 'experiment' / 'fewshot_small.yaml'}", "--dry-run",
                      "--base-dir", str(tmp_path), "trainer.study.family=priors")
    assert proc.returncode == 2 and "study.family" in proc.stderr and "prior" in proc.stderr
    assert not (tmp_path / "fewshot-small").exists()


def test_the_gpu_studys_template_passes_the_login_node_checks(tmp_path):
    """bench/fewshot_gpu.sh makes one experiment file per family from bench/fewshot_gpu.yaml.in."""
    template = (ROOT / "bench" / "fewshot_gpu.yaml.in").read_text()
    (tmp_path / "prior.yaml").write_text(template.replace("FAMILY", "prior"))
    experiment(f"--experiment={tmp_path / 'prior.yaml'}", "--dry-run", "--executor=local", "--no-snapshot",
               "--base-dir", str(tmp_path), check_rc=0)
    assert len(list((tmp_path / "fewshot-gpu-prior").glob("run_*"))) == 7      # 3 seeds, 4 references


def test_a_study_without_k0_start_reports_and_plots_without_its_baseline(tmp_path):
    """A probe of a few arms only (scripts/fewshot_probe.py 'study.arms=[...]'): no k = 0 line,
    no gain over k = 0 (said, not a NaN called missed)."""
    studies = [record(f, 0, {"encoder_finetune": 0.8, "finetune_all": 0.7}) for f in ("contrast", "prior")]
    table, criteria = R.headline(studies, {}, 10)
    assert "k = 0 (the start embedding): no k0_start arm: **not shown**" in criteria[3]
    assert criteria[0].startswith("best hypernetwork arm: encoder_finetune (0.810)")     # a hypernetwork arm
    assert criteria[4] == "wins on at least 2 of 2 families: 2 of 2: **met**"
    assert Image.open(R.plot(studies, {}, tmp_path / "cc.png")).size == (990, 495)     # two panels


def test_the_report_on_known_values():
    base = {"k0_start": 0.5, "embedding": 0.7, "saliency": 0.8, "finetune_all": 0.6, "scratch": 0.4}
    studies = [record(f, s, base) for f in ("contrast", "prior") for s in (0, 1)]
    studies[0]["scores"]["contrast-1/k10/d0/finetune_all"] = 0.9          # a close call on contrast
    studies[0]["scores"]["contrast-3/k10/d0/finetune_all"] = 0.9
    studies[1]["scores"]["contrast-1/k10/d0/finetune_all"] = 0.9
    studies[1]["scores"]["contrast-3/k10/d0/finetune_all"] = 0.9
    refs = {t: 0.85 for f in ("contrast", "prior") for t in (f"{f}-1", f"{f}-3")}
    table, criteria = R.headline(studies, refs, 10)
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    # saliency: 0.81 everywhere (draws 0.80, 0.82) -> 95% of the 0.85 reference, +0.30 over k = 0
    # in every record (an interval of one point); the bootstrap's interval lies inside the draws
    sal = rows[R.NAMES["saliency"]].split(" | ")
    assert sal[1:4] == ["0.810 [0.80, 0.82]", "0.810 [0.80, 0.82]", "0.810 [0.805, 0.815]"]
    assert sal[4:6] == ["95%", "+0.300 [+0.300, +0.300]"]
    # finetune_all: contrast (0.9 + 0.62) / 2 = 0.76, prior 0.61: the best fine-tuning arm
    assert "difference to the best fine-tuning (finetune_all)" in table
    ft = rows[R.NAMES["finetune_all"]].split(" | ")
    assert ft[1].startswith("0.760 [") and ft[2] == "0.610 [0.60, 0.62]" and ft[3].startswith("0.685 [")
    # the difference: +0.05 on contrast, +0.20 on prior; a resample of contrast's draws 0 alone (0.80 - 0.90)
    # pulls the interval below 0
    diff = sal[6].split(" ")
    assert diff[0] == "+0.125" and float(diff[1][1:-1]) < 0 < 0.2 <= float(diff[2][:-1]) + 1e-9
    assert criteria[0] == "best hypernetwork arm: saliency (0.810); best fine-tuning arm: finetune_all (0.685)"
    assert criteria[1].startswith("beats the best fine-tuning with the paired interval above 0: +0.125 [")
    assert criteria[1].endswith("**missed**") and criteria[2] == ">= 90% of the converged reference: 95%: **met**"
    assert criteria[3].endswith("**met**") and criteria[4] == "wins on at least 2 of 2 families: 2 of 2: **met**"
    assert criteria[5].startswith("per family, saliency - finetune_all")
    assert "prior +0.200 [+0.200, +0.200]" in criteria[5]
    assert criteria[5].split("): ")[1].startswith("contrast +0.050 [-")   # the close call, per family


def test_the_small_study_runs_resumes_and_reports(tmp_path, capsys):
    experiment(f"--experiment={ROOT / 'shared' / 'experiment' / 'fewshot_small.yaml'}", "--executor=local",
               "--parallelism=2", "--base-dir", str(tmp_path), timeout=600, check_rc=0)
    sweep = tmp_path / "fewshot-small"
    path = sweep / "run_000" / "study.json"
    done = json.loads(path.read_text())
    arms = tuple(yamlio.load(sweep / "run_000" / "config.yaml")["study"]["arms"])
    seen = ("k0_start", "k0_best", "embedding", "saliency", "finetune_decoder")
    assert set(A.ARMS) - set(arms) == {"encoder_finetune", "finetune_lora"}     # two fine-tunings of every weight fewer
    assert set(done["budgets"]) == {f"{a}/k3" for a in A.TRAINED if a in arms}
    for key, budget in done["budgets"].items():          # study.pulls: a third axis of the grid, for two arms
        pulled = key.split("/")[0] in A.PULL_ARMS
        assert ("pull" in budget) == pulled and budget.get("pull", 0.0) in (0.0, 0.1)
        assert len(budget["tried"]) == 2 * (2 if pulled else 1)        # 2 step budgets x the pulls
        assert {protocol.parse_tried(t)[2] for t in budget["tried"]} == ({0.0, 0.1} if pulled else {None})
    expected = {f"{t}/k3/d{d}/{a}" for t in ("prior-1", "prior-7") for d in (0, 1) for a in arms}
    expected |= {f"{t}-7/k3/d{d}/{a}" for t in ("contrast", "frequency", "region") for d in (0, 1) for a in seen}
    assert set(done["scores"]) == expected and all(-1 <= v <= 1 for v in done["scores"].values())
    cfg = Config(yamlio.load(sweep / "run_000" / "config.yaml")).study       # status's progress counts these
    assert S.totals(cfg, protocol.test_tasks(cfg), protocol.seen_tasks(cfg)) == (len(done["budgets"]), len(expected))
    results = json.loads((sweep / "run_000" / "results.json").read_text())
    assert results["fewshot_study"]["family"] == "prior" and "k3/saliency" in results["fewshot_study"]
    # A job stopped midway through the stage (SIGTERM, obeyed between units of work) goes on
    # where it stopped, with the same numbers.
    partial = {**done, "scores": {k: v for k, v in done["scores"].items() if not k.startswith("prior-7/k3")}}
    del partial["groups"]
    path.write_text(json.dumps(partial))
    state_file = sweep / "run_000" / "state.json"
    state = json.loads(state_file.read_text())
    state["stages_done"].remove("fewshot_study")
    state_file.write_text(json.dumps(state))
    command = [PYTHON, str(ROOT / "train.py"), "--config", str(sweep / "run_000" / "config.yaml")]
    env = {**os.environ, "HYPERSAL_CPUS": "1"}           # the job's cpus (1 thread: the same sums)
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(json.loads(path.read_text())["scores"]) == len(partial["scores"]) and time.monotonic() < deadline:
        time.sleep(0.05)                                  # the first arm's new scores are saved
    job.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 143 and time.monotonic() - stopped_at < 20, out
    kept = json.loads(path.read_text())["scores"]
    assert len(partial["scores"]) < len(kept) < len(done["scores"])      # stopped midway, what it did kept
    resumed = run(command, env={"HYPERSAL_CPUS": "1"}, check_rc=0, timeout=300)
    assert "resuming after stage train" in resumed.stderr + resumed.stdout
    assert json.loads(path.read_text())["scores"] == done["scores"]

    # scripts/fewshot_probe.py: the same trained model, other study settings, another folder; from
    # a run that only trained, too (its pipeline without the study: the probe adds it).
    trained = tmp_path / "trained"
    trained.mkdir()
    shutil.copytree(sweep / "run_000" / "models", trained / "models")
    yamlio.dump({**yamlio.load(sweep / "run_000" / "config.yaml"), "pipeline": ["train"]}, trained / "config.yaml")
    (trained / "state.json").write_text(json.dumps({**state, "stages_done": ["train"]}))
    probe = [PYTHON, str(ROOT / "scripts" / "fewshot_probe.py"), str(trained), str(tmp_path / "probe")]
    proc = run([*probe, "study.arms=[k0_start]", "study.seen_arms=[k0_start]", "study.shots=[1]",
                "study.seen_shots=[1]", "study.draws=1"], env={"HYPERSAL_CPUS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["family"] == "prior" and "stage train is done already" in proc.stderr
    assert json.loads(path.read_text())["scores"] == done["scores"]                 # the run is untouched
    bad = run([*probe, "study.drawz=1"], timeout=60)
    assert bad.returncode == 2 and "study.drawz=1: expects SECTION.KEY=VALUE" in bad.stderr
    untrained = run([PYTHON, str(ROOT / "scripts" / "fewshot_probe.py"), str(tmp_path), str(tmp_path / "no")], timeout=60)
    assert untrained.returncode == 2 and "is not a run whose train stage is done" in untrained.stderr
    out = tmp_path / "out"
    assert R.main([str(sweep), "--out", str(out), "--k", "3"]) == 0        # in-process: no second start-up
    text = (out / "results.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "## k = 3: the held-out family's members" in text and "| prior (held out) |" in text.splitlines()[4]
    assert "## By k: a new member of a seen family" in text
    assert Image.open(out / "cc_vs_k.png").size == (880, 495)
    budget_rows = {line.split(" | ")[0]: line for line in text.split("## Budgets")[1].splitlines() if line.startswith("| ")}
    for cell in budget_rows["| embedding"].split(" | ")[1:]:      # a star marks 2 steps, the largest tried
        assert cell.rstrip(" |").endswith("*") == ("x 2 " in cell)
    assert R.main([str(sweep), "--out", str(out), "--k", "10"]) == 2
    assert "--k: the runs have no k = 10" in capsys.readouterr().err
