"""Seeing a sweep: the demo learns, `status --watch` follows it to its end, `collect` fits a
terminal, and `report` makes a page that a real browser (Debian's chromium) draws without a
script error, for a finished sweep and for one with a run still running and one failed."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import browser
from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment, write


@pytest.fixture(scope="session")
def chromium():
    why = browser.missing()
    if why:
        if os.environ.get("HYPERSAL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"no browser for the report tests: {why}")
        pytest.skip(f"no browser for the report tests: {why}")
    driver = browser.open_browser()
    yield driver
    driver.quit()


def results(exp: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(exp.glob("run_*/results.json"))}


def test_the_demo_learns_its_tasks(demo):
    exp, _, _ = demo
    found = results(exp)
    assert len(found) == 4
    for run, res in found.items():
        assert res["train"]["steps"] == 200
        assert res["test"]["mean"]["cc"] >= 0.5, (run, res["test"])
        image_tasks = [t for t in res["test"] if isinstance(res["test"][t], dict) and t not in ("mean", "center_bias")]
        assert len(image_tasks) == 3 and all(res["test"][t]["cc"] > 0.4 for t in image_tasks), (run, res["test"])
        assert len(list((exp / run / "test").glob("*.png"))) == 4


def test_status_watch_follows_the_sweep_and_ends_by_itself(demo):
    exp, out, _ = demo
    frames = [f for f in out.split("\n\n") if f.strip()]
    assert len(frames) >= 3, out                                   # it refreshed while the runs ran
    assert "still queued or running" in frames[0]
    assert frames[-1].rstrip().endswith("every run has ended") and "4 runs: 4 done" in frames[-1]
    assert len(set(frames)) == len(frames)                         # each frame says something new
    header = frames[0].splitlines()[0].split()
    assert header[:8] == ["run", "job", "status", "stage", "progress", "loss", "eta", "batch_size"]
    # While training, some frame showed a run's epoch, its latest loss and its ETA.
    assert re.search(r"running\s+train\s+train epoch \d/4\s+\d\.\d+\s+\d\d:\d\d", out), out
    # Without a terminal nothing is redrawn in place: no escape codes in a log.
    assert "\033[" not in out


def test_collect_fits_a_terminal_best_first_and_gives_everything_on_request(demo):
    exp, _, _ = demo
    out = experiment("collect", str(exp), check_rc=0).stdout
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120, out
    assert lines[0].split() == ["run", "state", "batch_size", "lr", "cc", "kld", "sim", "best_val_loss"]
    ccs = [float(line.split()[4]) for line in lines[1:5]]
    assert ccs == sorted(ccs, reverse=True)                        # best first
    assert "sorted by test.mean.cc (higher is better)" in out and "lr = trainer.train.optim.lr" in out
    every = experiment("collect", str(exp), "--all", check_rc=0).stdout
    assert "train.final_val_loss" in every and "test.dog_contrast.cc" in every
    rows = json.loads(experiment("collect", str(exp), "--json", check_rc=0).stdout)
    csv_header = (exp / "collect.csv").read_text().splitlines()[0].split(",")
    assert [r["run"] for r in rows] == [line.split()[0] for line in lines[1:5]]
    assert set(rows[0]) == set(csv_header) and rows[0]["test.mean.cc"] == pytest.approx(ccs[0], rel=1e-3)
    by_loss = experiment("collect", str(exp), "--metric", "train.best_val_loss", check_rc=0).stdout
    assert "sorted by train.best_val_loss (lower is better)" in by_loss
    bad = experiment("collect", str(exp), "--metric", "test.mean.ccc", check_rc=2)
    assert "no run has the metric 'test.mean.ccc'" in bad.stderr and "test.mean.cc" in bad.stderr


def page_facts(driver) -> dict:
    """What the drawn page holds, read from the charts plotly made and from the table."""
    return driver.execute_script("""
        const pc = document.getElementById('parcoords').data[0];
        const curves = document.getElementById('curves').data;
        return {
          parcoords_lines: pc.dimensions.map(d => d.values.length),
          parcoords_labels: pc.dimensions.map(d => d.label),
          drawn_axes: document.querySelectorAll('#parcoords .y-axis').length,
          train_lines: curves.filter(t => t.meta.kind === 'train').map(t => [t.meta.run, t.x.length]),
          val_lines: curves.filter(t => t.meta.kind === 'val').map(t => [t.meta.run, t.x.length]),
          rows: Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.cells[0].textContent.trim()),
          states: Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.cells[1].textContent.trim()),
          pictures: document.querySelectorAll('.card img').length,
          loaded: performance.getEntriesByType('resource').map(e => e.name),
        };""")


def test_the_report_of_the_demo_draws_in_a_real_browser(demo, chromium, tmp_path):
    exp, _, _ = demo
    proc = experiment("report", str(exp), check_rc=0)
    page = Path(proc.stdout.strip())
    assert page == exp / "report.html" and f"open {page.as_uri()}" in proc.stderr
    html = page.read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", html)   # nothing to fetch: all inlined
    browser.load(chromium, page)
    assert browser.errors(chromium) == []
    facts = page_facts(chromium)
    assert facts["parcoords_lines"] == [4, 4, 4]                       # batch size, lr, the metric
    assert facts["parcoords_labels"] == ["batch_size", "lr", "test.mean.cc"]
    assert facts["drawn_axes"] == 3
    assert sorted(run for run, _ in facts["train_lines"]) == [f"run_00{i}" for i in range(4)]
    assert all(n == 20 for _, n in facts["train_lines"])               # 200 steps, logged every 10
    assert all(n == 4 for _, n in facts["val_lines"])                  # one validation per epoch
    collect_order = [line.split()[0] for line in experiment("collect", str(exp)).stdout.splitlines()[1:5]]
    assert facts["rows"] == collect_order                              # one row per run, best first
    assert facts["pictures"] == 3 * 4                                  # 3 best runs x 4 tasks
    assert all(url.startswith(("file:", "data:")) for url in facts["loaded"]), facts["loaded"]
    # The table sorts: click the lr header, the rows follow lr.
    chromium.find_element("xpath", "//table[@id='runs']//th[text()='lr']").click()
    lrs = chromium.execute_script(
        "return Array.from(document.querySelectorAll('#runs tbody tr')).map(r => Number(r.cells[3].dataset.sort))")
    assert lrs == sorted(lrs)
    # Every link is a web page (Comet) or a file: nothing a click would run. The file links are
    # clicked (the web ones would leave this offline machine) and open file: pages.
    hrefs = chromium.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    assert hrefs and all(h.split(":")[0] in ("http", "https", "file") for h in hrefs), hrefs
    files = sorted({h for h in hrefs if h.startswith("file:") and "#" not in h})
    assert files                                                       # the run folders at least
    for href in files:
        chromium.find_element("css selector", f"a[href='{href[len(page.parent.as_uri()) + 1:]}']").click()
        assert chromium.current_url.startswith("file:"), chromium.current_url
        chromium.back()
    shot = browser.screenshot(chromium, tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def mixed_sweep(tmp_path: Path) -> Path:
    """Three runs by the local executor: one that finishes, one whose loss diverges (failed),
    one that trains for long (still running while the report is made)."""
    tiny = {**TINY_TRAINER, "pipeline": ["train", "test"], "comet": {"mode": "disabled"},
            "train": {**TINY_TRAINER["train"], "log_every": 1}}
    entries = [
        {"trainer": {"train": {"optim": {"lr": {"sample": "grid", "from": [0.001]}}}}},
        {"trainer": {"train": {"optim": {"name": "sgd", "momentum": 0.0, "lr": {"sample": "grid", "from": [1.0e+30]}}}}},
        {"trainer": {"train": {"epochs": 5000, "optim": {"lr": {"sample": "grid", "from": [0.002]}}}}},
    ]
    exp_file = write(tmp_path / "mixed.yaml", yaml.safe_dump({
        "experiment": {"name": "mixed", "base_dir": str(tmp_path), "seed": 0, "config": tiny},
        "sbatch": {"cpus": 1}, "runs": entries}))
    return exp_file


def test_the_report_of_a_sweep_with_a_failed_and_a_running_run(chromium, tmp_path):
    exp_file = mixed_sweep(tmp_path)
    proc = subprocess.Popen([PYTHON, str(ROOT / "experiment.py"), f"--experiment={exp_file}", "--executor=local"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    exp = tmp_path / "mixed"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = json.loads((exp / "run_002" / "state.json").read_text()) if (exp / "run_002" / "state.json").is_file() else {}
            metrics = exp / "run_002" / "metrics.jsonl"   # written a moment after state.json
            lines = metrics.read_text().count("\n") if state and metrics.is_file() else 0
            if state.get("state") == "running" and lines >= 5:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the long run did not start training in 240 s")
        status = experiment("status", str(exp), "--executor=local", check_rc=0).stdout
        assert re.search(r"run_002\s+-\s+running\s+train\s+train epoch", status), status   # alive here, not yet recorded
        page = Path(experiment("report", str(exp), check_rc=0).stdout.strip())
        browser.load(chromium, page)
        assert browser.errors(chromium) == []
        facts = page_facts(chromium)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert facts["rows"] == ["run_000", "run_001", "run_002"]           # the one with a metric first
    assert facts["states"][0] == "done" and facts["states"][1] == "failed"
    assert facts["states"][2].startswith("running (train epoch")
    assert facts["parcoords_lines"] == [1, 1]                           # only the finished run has a metric
    lines = dict(facts["train_lines"])
    assert set(lines) == {"run_000", "run_001", "run_002"} and lines["run_002"] >= 5
    assert facts["pictures"] == len(list((exp / "run_000" / "test").glob("*.png"))) == 4   # the finished run's
    html = page.read_text()
    assert "the loss became nan" in html                                # the failure's reason, in the state's title


def test_short_names_and_axes():
    from hypersal.experiment.report import dimension, trailing_mean
    from hypersal.experiment.runs import direction, short_names
    assert short_names(["trainer.train.optim.lr", "trainer.adapt.optim.lr", "trainer.train.batch_size"]) == {
        "trainer.train.optim.lr": "train.optim.lr", "trainer.adapt.optim.lr": "adapt.optim.lr",
        "trainer.train.batch_size": "batch_size"}
    assert direction("test.mean.cc") == "maximize" and direction("train.best_val_loss") == "minimize"
    assert direction("test.mean.kld") == "minimize"
    axis = dimension("lr", [1e-4, 1e-3, 1e-2])
    assert axis["label"] == "lr (log)" and axis["values"] == pytest.approx([-4, -3, -2])
    assert axis["ticktext"][0] == "0.0001" and axis["ticktext"][-1] == "0.01"
    assert dimension("bs", [8, 16]) == {"label": "bs", "values": [8, 16]}
    cats = dimension("tasks", [["a"], ["b"], ["a"]])
    assert cats["values"] == [0, 1, 0] and cats["ticktext"] == ["['a']", "['b']"]
    assert trailing_mean([1, 3, 5, 7, 9, 11], 3) == [1, 2, 3, 5, 7, 9]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
