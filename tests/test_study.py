"""The study's pipeline at CPU-test size: baselines, leave-one-task-out runs with the few-shot
comparison, an ablation, and the report (tables and the CC-vs-k plot)."""
from __future__ import annotations


from PIL import Image

from helpers.cli import PYTHON, ROOT, experiment, run


def test_the_small_study_runs_and_reports(tmp_path):
    experiment(f"--experiment={ROOT / 'shared' / 'experiment' / 'study_small.yaml'}", "--executor=local",
               "--parallelism=2", "--base-dir", str(tmp_path), timeout=600, check_rc=0)
    proc = run([PYTHON, "-m", "hypersal.report", str(tmp_path / "study-small"), "--out", str(tmp_path / "out")],
               check_rc=0)
    text = (tmp_path / "out" / "results.md").read_text()
    assert proc.stdout.strip() == text.strip()
    mt = text.split("## Multi-task")[1].split("## A new task")[0]
    assert all(f"| {t} |" in mt for t in ("center_bias", "dog_contrast", "frequency_tuned"))
    assert "a plain network per task, 3 steps" in text        # 6 multi-task steps over 2 tasks
    longer = text.split("## Baselines with more steps")[1].split("## A new task")[0]
    assert "| task | baseline CC, 3 steps | baseline CC, 6 steps | multi-task CC |" in longer
    assert "| center_bias |" in longer and longer.count("–") == 2   # only dog_contrast has 6 steps
    few = text.split("## A new task")[1].split("## Ablations")[0]
    assert "| dog_contrast | 5 |" in few and "| mean over held-out tasks | k=1 | k=5 |" in few
    ablations, short = text.split("## Ablations")[1].split("## Short ablations (multi-task test only)")
    assert "| shared BN statistics | 6 | none | 0 | " in short     # no adapt/fewshot: nothing held out
    assert "| default | 3 |" in ablations and "| shared BN statistics | 1 |" in ablations
    plot = Image.open(tmp_path / "out" / "cc_vs_k.png")
    assert plot.size == (720, 480)
    panels = Image.open(tmp_path / "out" / "cc_vs_k_per_task.png")   # one panel per held-out task (3)
    assert panels.size == (960, 280)
    assert "| shared BN statistics | 1 |" in ablations and ablations.count("| – | – |") == 1   # default: no pair


def test_the_report_needs_finished_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run([PYTHON, "-m", "hypersal.report", str(tmp_path / "empty")])
    assert proc.returncode == 2 and "no finished multi-task run" in proc.stderr
