"""Damaged and concurrent state: run-folder files torn or garbled, an experiment folder's own
files damaged, a study journal cut or missing, two submitters on one folder, a search on this
machine. Folders are built by hand (a --dry-run sweep, files written as train.py writes them)
wherever no training is needed. Each test is a row of RELIABILITY.md."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment, train

TINY = {**TINY_TRAINER, "pipeline": ["train"], "comet": {"mode": "disabled"}}


def sweep(tmp_path: Path, runs: list[dict] | int = 2, name: str = "dmg") -> Path:
    """A sweep written but not submitted (--dry-run, the live code): its folder."""
    entries = [{"repeat": runs}] if isinstance(runs, int) else runs
    exp = tmp_path / f"{name}.yaml"
    exp.write_text(yaml.safe_dump({"experiment": {"name": name, "base_dir": str(tmp_path), "seed": 0, "config": TINY},
                                   "sbatch": {"cpus": 1}, "runs": entries}))
    experiment(f"--experiment={exp}", "--dry-run", "--no-snapshot", check_rc=0)
    return tmp_path / name


def finish(run: Path, results: dict | None = None) -> None:
    """What train.py leaves in a run folder that ran to the end."""
    results = results or {"train": {"steps": 4, "best_val_loss": 0.5, "seconds": 1.0}}
    (run / "state.json").write_text(json.dumps({"state": "done", "stage": None, "stages_done": ["train"],
                                                "results": results, "restarts": 0, "requeues": 0,
                                                "progress": "stages 1/1"}, indent=1) + "\n")
    (run / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"time": 1.0 + s, "stage": "train", "step": s, "loss": 1 / s})
                                               + "\n" for s in (1, 2, 3, 4)))


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


def rows(status: str) -> dict[str, str]:
    """{run: its status cell} of `experiment.py status`'s table."""
    lines = status.splitlines()
    start, end = lines[0].index("status"), lines[0].index("stage")
    return {line.split()[0]: line[start:end].strip() for line in lines[1:] if line.startswith("run_")}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """experiment.py in this process (where one case of many is tried: a process costs ~1 s here);
    an exception escaping main() fails the test as a traceback would."""
    from hypersal.experiment.cli import main
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def strict_json(text: str):
    def refuse(word):
        raise AssertionError(f"{word} is not JSON")
    return json.loads(text, parse_constant=refuse)


# --- run folders -------------------------------------------------------------------------------

CUT = b'{\n "state": "done",\n "stage": null,\n "stages_d'
DAMAGE = {   # run: (file, bytes written over it, what the warning says)
    "run_001": ("state.json", CUT, "not JSON (unterminated string at line 4, column 2, cut short?)"),
    "run_002": ("state.json", b"", "the file is empty"),
    "run_003": ("state.json", b"\x00\xff\xfe\x13binary\x00", "not text (byte 2 is not UTF-8)"),
    "run_004": ("state.json", b'["done"]\n', "expected a mapping, got a list"),
    "run_005": ("state.json", b'{"state": "finished"}\n', "an unknown state 'finished'"),
    "run_006": ("results.json", b'{"train": {"steps": 4, "best_v',
                "not JSON (unterminated string at line 1, column 24, cut short?)"),
    "run_007": ("results.json", b"\x89PNG\r\n\x1a\n\x00\x00", "not text (byte 1 is not UTF-8)"),
    "run_008": ("results.json", b"[0.5, 0.7]\n", "expected a mapping, got a list"),
    "run_009": ("run.yaml", b"\xff\xfe\x00\x01", "cannot read the file (UnicodeDecodeError"),
    "run_010": ("run.yaml", b"- a\n- b\n", "expected a mapping, got a list"),
    "run_011": ("run.yaml", b"comet_key: [unclosed\n", "invalid YAML"),
}


def test_damaged_run_files_show_the_run_as_damaged_naming_the_file(tmp_path):
    exp = sweep(tmp_path, 12)
    nan = {"train": {"steps": 4, "best_val_loss": float("nan"), "final_val_loss": float("inf"), "seconds": 1.0}}
    for i in range(12):
        finish(exp / f"run_{i:03d}", nan if i == 0 else None)
    (exp / "jobs.tsv").write_text("".join(f"run_{i:03d}\tlocal\n" for i in range(12)))
    with open(exp / "run_000" / "metrics.jsonl", "ab") as f:     # lines status and report pass over
        f.write(b'\xff\xfe garbage\n[1, 2]\n{"time": 9.0, "stage": "train", "step": 5, "loss": "high"}\n'
                b'{"time": 9.5, "stage": "train", "step": 6, "loss": 0.125}\n{"time": 10, "stage": "tr')
    for run, (name, data, _) in DAMAGE.items():
        (exp / run / name).write_bytes(data)
    before = files(exp)

    status = experiment("status", str(exp), check_rc=0)
    no_traceback(status)
    table = rows(status.stdout)
    assert table["run_000"] == "done" and "0.125" in status.stdout.splitlines()[1]   # the last good loss
    for run, (name, _, what) in DAMAGE.items():
        assert table[run] == f"damaged ({name})", (run, table[run])
        assert f"warning: {exp / run / name}: damaged: {what}" in status.stderr, (run, status.stderr)
    assert "not run" not in status.stdout and "12 runs: 11 damaged, 1 done" in status.stdout
    assert f"warning: {exp / 'run_000' / 'metrics.jsonl'}: skipping 3 torn or damaged lines" in status.stderr

    collect = experiment("collect", str(exp), "--all", check_rc=0)
    no_traceback(collect)
    states = {line.split()[0]: line.split()[1] for line in collect.stdout.splitlines()[1:13]}
    assert states == {"run_000": "done", **{run: "damaged" for run in DAMAGE}}
    out = experiment("collect", str(exp), "--json", check_rc=0)
    by_run = {row["run"]: row for row in strict_json(out.stdout)}      # NaN and Infinity are null
    assert by_run["run_000"]["train.best_val_loss"] is None and by_run["run_000"]["train.final_val_loss"] is None
    intact = [run for run, (name, _, _) in DAMAGE.items() if name != "results.json"]
    assert all(by_run[run]["train.best_val_loss"] == 0.5 for run in intact)    # their results still shown
    assert all(by_run[run]["state"] == "damaged" for run in DAMAGE)

    report = experiment("report", str(exp), check_rc=0)
    no_traceback(report)
    assert ">damaged</td>" in Path(report.stdout.strip()).read_text()
    after = files(exp)
    assert {k: v for k, v in after.items() if k not in ("collect.csv", "report.html")} == before   # nothing changed


def test_train_py_refuses_a_damaged_state_json_and_leaves_it_as_it_is(tmp_path):
    exp = sweep(tmp_path, 1)
    state = exp / "run_000" / "state.json"
    state.write_bytes(CUT)
    proc = train("--config", str(exp / "run_000" / "config.yaml"), check_rc=2)
    no_traceback(proc)
    assert proc.stderr.strip().splitlines()[-1] == (
        f"hypersal: error: {state}: damaged: not JSON (unterminated string at line 4, column 2, cut short?). "
        "Fix: restore it from a backup, or delete it to run every stage again (a stage's checkpoints are kept: an "
        "unfinished stage resumes where it was).")
    assert state.read_bytes() == CUT and not (exp / "run_000" / "metrics.jsonl").exists()


# --- the experiment folder's own files ----------------------------------------------------------

def summary_damage(text: str) -> dict[str, tuple[bytes, str]]:
    last = text.rindex("- index: 2")
    return {
        "cut inside an entry": (text[:text.rindex("comet_key:")].encode(),
                                "runs[2] (run_002) lacks its index or comet_key (the file may have been cut short)"),
        "empty": (b"", "the file is empty"),
        "binary": (b"\x00\x01\xff\xfe" * 8, "cannot read the file (UnicodeDecodeError"),
        "a list": (b"- run_000\n- run_001\n", "expected a mapping, got a list"),
        "no runs": (text[:text.index("runs:")].encode(), "it lists no runs"),
        "not YAML": (text[:last].encode() + b"- index: [2\n", "invalid YAML"),
    }


def test_a_damaged_summary_is_an_error_naming_it_and_nothing_runs(tmp_path, capsys):
    exp = sweep(tmp_path, 3)
    path = exp / "summary.yaml"
    text = path.read_text()
    for case, (data, what) in summary_damage(text).items():
        path.write_bytes(data)
        for command in ("status", "collect", "submit"):
            code, _, err = cli(capsys, command, str(exp), *(["--executor=local"] if command == "submit" else []))
            where = f"{path}:26" if case == "not YAML" else path          # the line YAML stopped at
            assert code == 2 and err.startswith(f"hypersal: error: {where}: damaged: ") and what in err, (case, err)
            assert "Fix: experiment.py writes it whole, so something else changed it: restore it" in err
        assert path.read_bytes() == data and not list(exp.glob("run_*/local.out")), case
    path.write_bytes(summary_damage(text)["cut inside an entry"][0])     # and as a user runs it
    proc = experiment("status", str(exp), check_rc=2)
    no_traceback(proc)
    assert proc.stderr.startswith(f"hypersal: error: {path}: damaged: runs[2] (run_002) lacks its index or comet_key")
    # Cut at the end of an entry it reads as a smaller sweep: the run folders it no longer lists are named.
    path.write_text(text[:text.rindex("- index: 2")])
    code, _, err = cli(capsys, "status", str(exp))
    assert code == 0 and f"warning: {path} lists 2 runs, but {exp} also holds run_002: the file may have been cut" in err


def test_a_damaged_jobs_tsv_is_skipped_by_status_and_stops_submit(tmp_path, capsys):
    exp = sweep(tmp_path, 3)
    jobs = exp / "jobs.tsv"
    for data, line, what in ((b"run_000\t101\nrun_001\t10", 2, "'run_001\\t10' is cut short"),
                             (b"run_000\t101\n\xff\xfe\x00\x00\nrun_002\t103\n", 2, "is not text"),
                             (b"run_000\t101\n[1, 2]\n", 2, "'[1, 2]' is not a run folder, a tab and a job id")):
        jobs.write_bytes(data)
        code, out, err = cli(capsys, "status", str(exp), "--executor=local")
        assert code == 0 and f"warning: {jobs}:{line}: skipping a damaged line" in err and what in err, err
        assert rows(out)["run_000"] == "ended before train.py started (see its log)"
        code, _, err = cli(capsys, "submit", str(exp), "--executor=local")
        assert code == 2 and err.startswith(f"hypersal: error: {jobs}:{line}: the line ") and what in err, err
        assert "Fix: find the run's job (squeue, or slurm-*.out / local.out in its folder)" in err
        assert jobs.read_bytes() == data and not list(exp.glob("run_*/local.out"))
    submit = experiment("submit", str(exp), "--executor=local", check_rc=2)      # as a user runs it
    no_traceback(submit)
    assert submit.stderr.startswith(f"hypersal: error: {jobs}:2: the line '[1, 2]' is not a run folder")


# --- the study journal --------------------------------------------------------------------------

def search(tmp_path: Path, trials: int = 3, **section) -> Path:
    trainer = {**TINY, "train": {**TINY["train"], "epochs": 2, "steps_per_epoch": 2}}
    doc = {"experiment": {"name": "srch", "base_dir": str(tmp_path), "seed": 0, "config": trainer,
                          "search": {"sampler": "random", "pruner": "none", "metric": "val_loss", "trials": trials,
                                     "min_epochs": 1, **section}},
           "sbatch": {"cpus": 1},
           "runs": [{"trainer": {"train": {"optim": {"lr": {"sample": "loguniform", "from": [1e-4, 0.1]}}}}}]}
    exp = tmp_path / "srch.yaml"
    exp.write_text(yaml.safe_dump(doc))
    return exp


def study_with_trials(tmp_path: Path) -> tuple[Path, Path]:
    """A search written but not submitted, whose study holds 3 finished trials, run by hand."""
    from hypersal import search as search_mod
    import optuna
    experiment(f"--experiment={search(tmp_path)}", "--dry-run", "--no-snapshot", check_rc=0)
    exp = tmp_path / "srch"
    study = search_mod.load(exp)
    for value in (0.3, 0.2, 0.1):
        trial = study.ask({"train.optim.lr": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)})
        trial.report(value + 0.05, 1)
        study.tell(trial, value)
    return exp, exp / "search" / "study.journal"


def test_a_torn_last_journal_line_is_read_around_and_repaired_by_the_next_writer(tmp_path, capsys):
    import optuna
    from hypersal import search as search_mod
    exp, journal = study_with_trials(tmp_path)
    whole = journal.read_bytes()
    assert whole.count(b"\n") == 13 and whole.endswith(b"\n")
    journal.write_bytes(whole[:-40])             # killed while telling trial 2 its value
    before = files(exp / "search")
    for command in ("status", "collect"):
        proc = experiment(command, str(exp), check_rc=0)
        no_traceback(proc)
        assert (f"warning: {journal}: its last line (line 13: trial 2's state and value) is cut short (a writer "
                "killed, or the disk full, while writing it): the study is read up to line 12") in proc.stderr
    assert "best so far: trial 1, val_loss 0.2" in experiment("status", str(exp), check_rc=0).stdout
    assert files(exp / "search") == before       # status and collect wrote nothing, repaired nothing
    # The next writer (a job asking for its values) moves the cut line aside, then appends whole lines.
    study = search_mod.load(exp)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, 0.05)
    err = capsys.readouterr().err
    assert (f"warning: {journal}: its last line (line 13: trial 2's state and value) was cut short by a writer "
            "that died (killed, or the disk full): moved it to study.journal.torn") in err
    assert journal.with_name("study.journal.torn").read_bytes() == whole[whole.rindex(b"\n", 0, -1) + 1:-40] + b"\n"
    trials = search_mod.view(exp).trials
    assert [(t.number, t.state.name, t.value) for t in trials] == [
        (0, "COMPLETE", 0.3), (1, "COMPLETE", 0.2), (2, "RUNNING", None), (3, "COMPLETE", 0.05)]
    assert trials[2].intermediate_values == {1: pytest.approx(0.15)}     # what came before the cut is kept
    assert journal.read_bytes().startswith(whole[:whole.rindex(b"\n", 0, -1) + 1])
    # A last entry that lacks only its newline is whole: read as it is, and the next writer ends it.
    journal.write_bytes(journal.read_bytes()[:-1])
    assert search_mod.view(exp).trials[3].value == 0.05
    search_mod.load(exp)
    assert journal.read_bytes().endswith(b"}\n") and "lacked its newline: added it" in capsys.readouterr().err


MID = {   # what replaces line 6 of the journal: (bytes, what the error says)
    "a half-written line, then another": (b'{"op_code":5,"worker_id":"w","trial_id":1,"param_na{"op_code":7}\n',
                                          "not JSON"),
    "binary garbage": (b"\x00\xff\xfe\x01\x02\n", "byte 2 of the line is not UTF-8"),
    "a JSON list": (b"[5, 1]\n", "not an Optuna journal entry: no op_code"),
    "an entry Optuna cannot replay": (b'{"op_code":5,"worker_id":"w"}\n',
                                      "the study cannot be replayed: KeyError: 'trial_id' (from line 6)"),
}


def test_a_damaged_journal_line_in_the_middle_is_an_error_naming_the_line(tmp_path, capsys):
    from hypersal.errors import UserError
    from hypersal.runner import trial
    exp, journal = study_with_trials(tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    before = None
    for case, (data, what) in MID.items():
        journal.write_bytes(b"".join(lines[:5]) + data + b"".join(lines[6:]))
        before = files(exp / "search")
        for command in ("status", "collect", "report"):
            code, _, err = cli(capsys, command, str(exp))
            assert code == 2 and err.startswith(f"hypersal: error: {journal}:6: ") and what in err, (case, err)
            assert "Fix: keep a copy of the file, then restore it from a backup" in err
        with pytest.raises(UserError) as job:             # what a job does first: its trial
            trial.prepare(exp, 0)
        assert str(job.value).startswith(f"{journal}:6: ") and what in str(job.value)
        assert files(exp / "search") == before and not (exp / "run_000" / "run.yaml").exists(), case
    proc = experiment("status", str(exp), check_rc=2)       # and as a user runs it
    no_traceback(proc)
    assert proc.stderr.startswith(f"hypersal: error: {journal}:6: the study cannot be replayed: KeyError")
    assert files(exp / "search") == before


def test_a_missing_or_empty_journal_is_an_error_and_never_made_again(tmp_path, capsys):
    experiment(f"--experiment={search(tmp_path)}", "--dry-run", "--no-snapshot", check_rc=0)
    exp = tmp_path / "srch"
    journal = exp / "search" / "study.journal"
    journal.unlink()
    fix = ("Fix: restore it from a backup: hypersal never makes it again, since a new, empty study would forget every "
           "trial (each run folder's run.yaml still names its trial and values).")
    for command in ("status", "collect", "report"):
        code, _, err = cli(capsys, command, str(exp))
        assert code == 2 and err == f"hypersal: error: {journal}: the search's study journal is missing. {fix}\n"
    from hypersal.errors import UserError
    from hypersal.runner import trial
    with pytest.raises(UserError) as job:             # a job of the sweep starting: its trial
        trial.prepare(exp, 0)
    assert str(job.value) == f"{journal}: the search's study journal is missing. {fix}"
    assert not journal.exists() and not (exp / "run_000" / "run.yaml").exists()
    for data in (b"", b'{"op_code":0,"worker_id":"w","study_na'):
        journal.write_bytes(data)
        code, _, err = cli(capsys, "status", str(exp))
        assert code == 2 and f"hypersal: error: {journal}: the study's journal holds no study (it is empty). {fix}" in err
        assert journal.read_bytes() == data


FULL_DISK = """
import resource, signal, sys
import optuna
from hypersal import search
study = search.load(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # a write past the limit fails with EFBIG instead
size = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 30, resource.RLIM_INFINITY))   # room for 30 bytes only
try:
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
except OSError as e:
    print("refused:", e.strerror)
"""


def test_a_journal_append_cut_by_a_full_disk_is_taken_back(tmp_path):
    """The file-size limit (RLIMIT_FSIZE) fails a write half way, as a full disk does."""
    from hypersal import search as search_mod
    exp, journal = study_with_trials(tmp_path)
    whole = journal.read_bytes()
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    proc = subprocess.run([PYTHON, str(script), str(exp), str(len(whole))], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0 and "refused: File too large" in proc.stdout, proc.stderr
    assert journal.read_bytes() == whole          # the 30 bytes that went in were taken back
    assert [t.state.name for t in search_mod.view(exp).trials] == ["COMPLETE"] * 3


# --- concurrent submitters, and a search on this machine ---------------------------------------

def steps(run: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_second_submitter_is_refused_and_a_run_training_here_is_never_started_twice(tmp_path):
    long = {"trainer": {"train": {"epochs": 12, "steps_per_epoch": 5, "log_every": 1}}}
    exp = sweep(tmp_path, [long, {"trainer": {"train": {"log_every": 1}}}])
    state = exp / "run_000" / "state.json"
    first = subprocess.Popen([PYTHON, str(ROOT / "experiment.py"), "submit", str(exp), "--executor=local"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    orphan = None
    try:
        wait(lambda: state.is_file() and json.loads(state.read_text()).get("pid"), 120, "run_000 to start")
        orphan = json.loads(state.read_text())["pid"]
        second = experiment("submit", str(exp), "--executor=local", check_rc=2)
        no_traceback(second)
        assert second.stderr.startswith(f"hypersal: error: {exp}: another experiment.py is submitting or running "
                                        f"this experiment's runs (pid {first.pid} on ")
        assert "Fix: wait for it to end" in second.stderr
        # The first submitter dies (SIGKILL); its run_000 trains on, an orphan. A new submission
        # may now go ahead: it trains run_001, and leaves run_000 to the process training it.
        first.kill()
        first.wait(timeout=30)
        third = experiment("submit", str(exp), "--executor=local", check_rc=0)
        assert (f"warning: run_000 is not started: it is running already (pid {orphan} on this machine)"
                in third.stderr) and "running run_000" not in third.stderr
        wait(lambda: json.loads(state.read_text())["state"] == "done", 180, "run_000 to end")
    finally:
        if orphan:
            try:
                os.kill(orphan, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for run, total in (("run_000", 60), ("run_001", 6)):
        assert steps(exp / run) == list(range(1, total + 1)), run     # trained once: every step once, in order
        assert json.loads((exp / run / "state.json").read_text())["restarts"] == 0
    assert (exp / "jobs.tsv").read_text() == "run_001\tlocal\n" and not (exp / "submit.lock").read_bytes()


def test_a_search_runs_to_the_end_with_the_local_executor(tmp_path):
    from hypersal import search as search_mod
    proc = experiment(f"--experiment={search(tmp_path, trials=2, parallelism=2)}", "--executor=local",
                      "--no-snapshot", timeout=300)
    assert proc.returncode == 0, proc.stderr
    exp = tmp_path / "srch"
    trials = search_mod.view(exp).trials
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE"]
    for i in range(2):
        run = exp / f"run_00{i}"
        assert json.loads((run / "state.json").read_text())["state"] == "done", (run / "local.out").read_text()
        info = yaml.safe_load((run / "run.yaml").read_text())
        assert trials[info["trial"]].params["train.optim.lr"] == info["sampled"]["train.optim.lr"]
    status = experiment("status", str(exp), check_rc=0).stdout
    best = min(trials, key=lambda t: t.value)
    assert "2 runs: 2 done" in status and f"best so far: trial {best.number}, val_loss {best.value:.6g}" in status
