"""Sweeps submitted as worker jobs (experiment.workers: N, docs/workers.md): the settings' mistakes,
what is submitted (a 500-run sweep on 8 workers is 8 jobs; arrays split by MaxArraySize; a submit
limit; cancel), the local executor starting N workers here, and on the real local Slurm cluster a
12-run sweep on 2 workers x 2 runs, a worker SIGKILLed mid-run whose runs `resume` finishes, and
a worker requeued by the time-limit warning."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml


from helpers.runs import checkpoint_step, epochs, same_weights
from helpers.cli import TINY_TRAINER, experiment, write
from helpers.slurm import release_when_requeued, squeue, wait_until

TRAINER = {**TINY_TRAINER, "deterministic": True, "pipeline": ["train"], "comet": {"mode": "disabled"},
           "train": {**TINY_TRAINER["train"], "epochs": 1, "steps_per_epoch": 2}}
# ~5 s a run here: long enough to stop one worker and kill the other while both train
LONG = {**TRAINER, "train": {**TRAINER["train"], "epochs": 3, "steps_per_epoch": 40, "checkpoint": {"every_steps": 2}}}


def exp_file(folder: Path, runs: list, trainer: dict = TRAINER, name: str = "wk", sbatch: dict | None = None,
             **experiment_keys) -> Path:
    doc = {"experiment": {"name": name, "base_dir": str(folder / "out"), "config": trainer, "seed": 0,
                          **experiment_keys},
           "sbatch": sbatch or {"cpus": 1, "mem": "1G"}, "runs": runs}
    return write(folder / f"{name}.yaml", yaml.safe_dump(doc))


def state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def tsv(exp: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in (exp / "jobs.tsv").read_text().splitlines()]




# --- the settings' mistakes -------------------------------------------------------------------
SEARCH = {"search": {"trials": 2, "sampler": "random", "pruner": "none", "metric": "train_loss"}}
LR = [{"trainer": {"train": {"optim": {"lr": {"sample": "loguniform", "from": [1.0e-4, 1.0e-2]}}}}}]


@pytest.mark.parametrize("keys, runs, sbatch, args, message", [
    ({"workers": 0}, None, None, [], "wk.yaml:35: experiment.workers: expects a whole number >= 1, got 0. Fix: write e.g. 2."),
    ({}, None, None, ["--workers", "-1"], "command line: --workers: expects a whole number >= 1, got -1."),
    ({"runs_per_worker": 2}, None, None, [],
     "experiment.runs_per_worker: runs_per_worker 2 without experiment.workers: runs go one per job, so it would "
     "be ignored. Fix: set experiment.workers: N (or --workers N) too, or remove runs_per_worker."),
    ({"workers": 2, "parallelism": 2}, None, None, [],
     "experiment.parallelism: parallelism 2 with workers: at most workers x runs_per_worker runs are running at "
     "once, so it would be ignored."),
    ({"workers": 2, "search": {**SEARCH["search"], "parallelism": 2}}, LR, None, [],
     "experiment.search.parallelism: search parallelism 2 with workers: at most workers x runs_per_worker trials "
     "are running at once, so it would be ignored. Fix: remove experiment.search.parallelism, and size "
     "experiment.workers instead."),
    ({"workers": 2}, [{"repeat": 1}, {"sbatch": {"mem": "2G"}}], None, [],
     "experiment.workers: a worker job runs any run of the sweep, so every run needs the same sbatch values, but "
     "run 1 differs from run 0 in mem. Fix: remove experiment.workers (one job per run), or give all runs the "
     "same values."),
    ({"workers": 2}, None, {"cpus": 1, "nodes": 2}, [],
     "experiment.workers: a worker runs its runs in one process on one node, but these runs ask for several tasks "
     "or nodes (DDP)."),
], ids=["zero", "flag", "slots-alone", "parallelism", "search", "mixed-resources", "ddp"])
def test_worker_settings_that_cannot_work_exit_2_naming_the_key(tmp_path, keys, runs, sbatch, args, message):
    path = exp_file(tmp_path, runs or [{"repeat": 2}], sbatch=sbatch, **keys)
    proc = experiment(f"--experiment={path}", "--dry-run", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("hypersal: error: ") and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "wk").exists()


# --- what is submitted: a recording sbatch (the local cluster has no submit limit) --------------
FAKE_SBATCH = """#!/bin/bash
# Records its arguments, answers a job id; refuses past FAKE_SUBMIT_LIMIT submissions.
n=$(cat "$FAKE_DIR/submitted" 2>/dev/null || echo 0)
if [ "$n" -ge "${FAKE_SUBMIT_LIMIT:-1000}" ]; then
    echo "refused $*" >> "$FAKE_DIR/calls"
    echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2
    exit 1
fi
echo $((n + 1)) > "$FAKE_DIR/submitted"
id=$((500 + n))
echo "sbatch $*" >> "$FAKE_DIR/calls"
echo "$id" >> "$FAKE_DIR/queue"
echo "$id"
"""
FAKE_SQUEUE = """#!/bin/bash
# Every job submitted is still pending (none may start: nothing runs in this test).
echo "squeue $*" >> "$FAKE_DIR/calls"
for id in $(cat "$FAKE_DIR/queue" 2>/dev/null); do echo "$id|PENDING|Priority"; done
"""
FAKE_SCONTROL = """#!/bin/bash
echo "MaxArraySize            = ${FAKE_MAX_ARRAY_SIZE:-1001}"
echo "MaxJobCount             = 10000"
"""
FAKE_SCANCEL = """#!/bin/bash
echo "scancel $*" >> "$FAKE_DIR/calls"
"""


def fake_slurm(tmp_path: Path, **env: str) -> tuple[Path, dict]:
    fake = tmp_path / "fake"
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE), ("scontrol", FAKE_SCONTROL),
                       ("scancel", FAKE_SCANCEL)):
        write(fake / "bin" / name, text).chmod(0o755)
    return fake, {"PATH": f"{fake / 'bin'}:{os.environ['PATH']}", "FAKE_DIR": str(fake), **env}


def calls(fake: Path, word: str) -> list[str]:
    return [line for line in (fake / "calls").read_text().splitlines() if line.startswith(word)]


@pytest.mark.slow   # ~9 s: 500 run folders written, and seven experiment.py calls over them
def test_a_500_run_sweep_on_8_workers_is_8_jobs_and_a_submit_limit_never_submits_a_worker_twice(tmp_path):
    path = exp_file(tmp_path, [{"repeat": 500}])
    experiment(f"--experiment={path}", "--dry-run", "--workers", "8", check_rc=0)
    exp = tmp_path / "out" / "wk"
    script = (exp / "workers.sh").read_text()
    assert "#SBATCH --job-name=wk-worker\n" in script and f"#SBATCH --output={exp}/workers/slurm-%j.out\n" in script
    assert "#SBATCH --cpus-per-task=1\n#SBATCH --mem=1G\n" in script and "--array" not in script
    code = yaml.safe_load((exp / "summary.yaml").read_text())["code"]
    assert code["snapshot"] and "/.code/" in code["folder"]               # the sweep's code snapshot, as runs
    assert script.rstrip().endswith(f"{code['folder']}/train.py --worker {exp} --slots 1")
    fake, env = fake_slurm(tmp_path, FAKE_SUBMIT_LIMIT="3")
    proc = experiment("submit", str(exp), env=env)
    assert proc.returncode == 1, proc.stderr
    assert ("could not submit worker 4 of 8: sbatch: error: QOSMaxSubmitJobPerUserLimit. That is your per-user "
            "submit limit (MaxSubmitJobs of your QOS or association). Worker jobs submitted, and staying so: 500, "
            "501, 502.") in proc.stderr
    env["FAKE_SUBMIT_LIMIT"] = "1000"
    proc = experiment("submit", str(exp), "--follow", env=env, check_rc=0)
    assert "worker 5 of 5 submitted as job 507 (each runs 1 run at once)" in proc.stderr
    assert calls(fake, "sbatch") == [f"sbatch --parsable {exp}/workers.sh"] * 8      # 8 jobs, none twice
    assert tsv(exp) == [(f"worker_{k}", str(500 + k)) for k in range(8)]
    assert yaml.safe_load((exp / "summary.yaml").read_text())["worker_jobs"] == [str(500 + k) for k in range(8)]
    again = experiment("submit", str(exp), env=env, check_rc=0)
    assert f"the 8 worker(s) of {exp} are submitted already (see jobs.tsv)" in again.stderr
    resumed = experiment("resume", str(exp), env=env, check_rc=0)     # 8 still queued: they take the runs
    assert "500 run(s) left and 8 worker job(s) of the sweep still queued or running" in resumed.stderr
    status = experiment("status", str(exp), env=env, check_rc=0).stdout
    assert "500 runs: 500 waiting for a worker" in status and "8 workers: 8 pending" in status
    experiment("cancel", str(exp), env=env, check_rc=0)
    assert calls(fake, "scancel") == ["scancel " + " ".join(str(500 + k) for k in range(8))]
    assert len(calls(fake, "sbatch")) == 8


def test_worker_arrays_are_split_by_max_array_size(tmp_path):
    path = exp_file(tmp_path, [{"repeat": 20}], mode="array", workers=8, runs_per_worker=2)
    experiment(f"--experiment={path}", "--dry-run", check_rc=0)
    exp = tmp_path / "out" / "wk"
    script = (exp / "workers.sh").read_text()
    assert "#SBATCH --array=0-7\n" in script and script.rstrip().endswith(f"--worker {exp} --slots 2")
    assert not (exp / "array.sh").exists()                                # no run is its own task
    fake, env = fake_slurm(tmp_path, FAKE_MAX_ARRAY_SIZE="5")
    proc = experiment("submit", str(exp), env=env, check_rc=0)
    assert calls(fake, "sbatch") == [f"sbatch --parsable --array=0-4 {exp}/workers.sh",
                                     f"sbatch --parsable --array=0-2 {exp}/workers.sh"]
    assert "5 worker(s) submitted as job array 500 (--array=0-4; each runs 2 runs at once)" in proc.stderr
    assert tsv(exp) == [(f"worker_{k}", f"500_{k}") for k in range(5)] + [(f"worker_{5 + k}", f"501_{k}")
                                                                          for k in range(3)]


# --- the local executor: N workers on this machine --------------------------------------------
NAN = {"train": {"epochs": 1, "steps_per_epoch": 4, "log_every": 1,
                 "optim": {"name": "sgd", "lr": 1.0e+30, "weight_decay": 0.0, "momentum": 0.0}}}


@pytest.mark.slow
def test_the_local_executor_runs_the_sweep_on_n_workers_here_and_status_shows_them(tmp_path):
    """2 workers here on 5 runs, one of which diverges: it fails once; `resume` offers it again."""
    path = exp_file(tmp_path, [{"repeat": 4}, {"trainer": NAN}], workers=2)
    proc = experiment(f"--experiment={path}", "--executor=local", env={"HYPERSAL_CPUS": "1"}, check_rc=1)
    exp = tmp_path / "out" / "wk"
    assert "on 2 worker jobs" in proc.stderr and "worker 2 of 2 running here (each runs 1 run at once" in proc.stderr
    assert "hypersal: error: 1 of 5 runs failed here: run_004 (their logs are worker-*.out in each run folder)" \
        in proc.stderr
    assert "the loss became nan" in state(exp / "run_004")["error"]
    assert sorted(tsv(exp)) == [("worker_0", "local"), ("worker_1", "local")]     # recorded as each ended
    records = {p.stem: json.loads(p.read_text()) for p in (exp / "workers").glob("*.json")}
    assert len(records) == 2
    assert sorted(r["run"] for rec in records.values() for r in rec["runs"]) == [f"run_{i:03d}" for i in range(5)]
    for i in range(4):
        run = exp / f"run_{i:03d}"
        assert state(run)["state"] == "done" and state(run)["worker"] in records
    status = experiment("status", str(exp), check_rc=0).stdout
    assert "5 runs: 4 done, 1 failed" in status and "2 workers: 2 ended" in status
    table = {line.split()[0]: line.split() for line in status.splitlines() if line.strip()}
    assert table["worker"] == ["worker", "job", "host", "state", "runs", "job_s", "run_s", "startup_s", "idle_s"]
    for wid, rec in records.items():
        assert table[wid][:5] == [wid, "local", rec["host"], "ended", str(len(rec["runs"]))]
    summary = yaml.safe_load((exp / "summary.yaml").read_text())
    assert set(summary["worker_seconds"]) == set(records) and summary["workers"] == 2
    for wid, seconds in summary["worker_seconds"].items():
        assert seconds["state"] == "ended" and seconds["runs"] == len(records[wid]["runs"])
        assert seconds["job_seconds"] >= seconds["startup_seconds"] > 0 and seconds["run_seconds"] > 0
    assert "run_000" in experiment("collect", str(exp), check_rc=0).stdout
    again = experiment("resume", str(exp), "--executor=local", env={"HYPERSAL_CPUS": "1"}, check_rc=1)
    assert "1 failed run(s) offered to the workers again: run_004" in again.stderr
    assert "worker 1 of 1 running here" in again.stderr and "1 of 1 runs failed here: run_004" in again.stderr
    assert state(exp / "run_004")["restarts"] == 1 and state(exp / "run_004")["state"] == "failed"
    assert [k for k, _ in tsv(exp)][-1] == "worker_2"


# --- on the real local Slurm cluster ----------------------------------------------------------
def sweep_jobs(name: str) -> list[str]:
    """The jobs Slurm queues under a sweep's worker job name (every task of an array)."""
    out = subprocess.run(["squeue", "-h", "-r", "-n", f"{name}-worker", "-o", "%i"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def wait_for_sweep(name: str, timeout: float, peak: list | None = None) -> None:
    """Until no worker job of the sweep is queued; `peak` gets the most seen at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = sweep_jobs(name)
        if peak is not None:
            peak.append(len(jobs))
        if not jobs:
            return
        time.sleep(0.5)
    raise AssertionError(f"the workers of {name} still queued after {timeout} s: {squeue()}")


def slurm_log(exp: Path, job: str) -> str:
    return "\n".join(p.read_text() for p in sorted((exp / "workers").glob(f"slurm-{job.split('_')[0]}*.out")))


@pytest.fixture
def cancel_after(slurm):
    """scancel the sweep's jobs after the test, however it ended: a failed test must not leave its
    workers in the queue of the tests after it."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["scancel", "-n", name], check=False)


def test_a_12_run_sweep_on_2_workers_x_2_runs_is_2_jobs_and_each_run_equals_its_own_job(cancel_after, tmp_path):
    cancel_after += ["wk-worker", "twin-000"]
    path = exp_file(tmp_path, [{"repeat": 12}], mode="array", workers=2, runs_per_worker=2)
    proc = experiment(f"--experiment={path}", check_rc=0)
    exp = tmp_path / "out" / "wk"
    assert "2 worker(s) submitted as job array" in proc.stderr and "each runs 2 runs at once" in proc.stderr
    # The same run as a job of its own, submitted once both workers run (the node's 2 CPUs): it
    # runs when a worker has ended. Submitted before, it could take the second CPU from worker 1,
    # and worker 0 ran all 12 runs alone (seen in CI).
    wait_until(lambda: [squeue().get(j, ("",))[0] for _, j in tsv(exp)] == ["RUNNING"] * 2,
               60, "both workers running")
    twin = exp_file(tmp_path, [{"repeat": 1}], name="twin")
    experiment(f"--experiment={twin}", check_rc=0)
    twin = tmp_path / "out" / "twin" / "run_000"
    peak: list[int] = []
    wait_for_sweep("wk", 180, peak)
    (array,) = {job.split("_")[0] for _, job in tsv(exp)}
    assert tsv(exp) == [("worker_0", f"{array}_0"), ("worker_1", f"{array}_1")] and max(peak) <= 2
    wait_until(lambda: (twin / "state.json").exists() and state(twin)["state"] == "done", 120, "the twin job")
    code = yaml.safe_load((exp / "summary.yaml").read_text())["code"]["folder"]
    ran = {}
    for i in range(12):
        run = exp / f"run_{i:03d}"
        saved = state(run)
        assert saved["state"] == "done" and saved["worker"] in (f"{array}_0", f"{array}_1"), slurm_log(exp, array)
        ran.setdefault(saved["worker"], []).append(run.name)
        assert same_weights(run, twin), run
        log = (run / f"worker-{saved['worker']}.out").read_text()
        assert log.count("hypersal: done") == 1 and f"code: {code}\n" in log     # the sweep's code snapshot
    assert len(ran) == 2                                                  # both workers took runs
    status = experiment("status", str(exp), check_rc=0).stdout
    rows = {line.split()[0]: line.split() for line in status.splitlines() if line.strip()}
    assert "12 runs: 12 done" in status and "2 workers: 2 ended" in status
    for worker, runs in ran.items():
        assert all(rows[run][:3] == [run, worker, "done"] for run in runs)
        assert rows[worker][:5] == [worker, worker, rows[worker][2], "ended", str(len(runs))]
    seconds = yaml.safe_load((exp / "summary.yaml").read_text())["worker_seconds"]
    assert sorted(seconds) == sorted(ran) and all(s["run_seconds"] > 0 and s["job_seconds"] > 0 for s in seconds.values())
    assert experiment("collect", str(exp), check_rc=0).stdout.count("run_0") == 12
    assert experiment("report", str(exp), check_rc=0).stdout.strip() == str(exp / "report.html")


def test_a_killed_worker_s_run_and_a_requeued_worker_s_run_are_finished_by_resume_as_the_same_runs(cancel_after, tmp_path):
    """Two workers on 3 runs: the time-limit warning (USR2) requeues one worker (its run stopped at a
    checkpoint); the other is SIGKILLed (its node lost: its lease left behind). `resume` submits one
    worker (one is still queued); it and the requeued worker finish every run from its checkpoint."""
    cancel_after.append("wk-worker")
    path = exp_file(tmp_path, [{"repeat": 3}], trainer=LONG, workers=2)
    experiment(f"--experiment={path}", check_rc=0)
    exp = tmp_path / "out" / "wk"
    runs = [exp / f"run_{i:03d}" for i in range(3)]

    leases: dict = {}

    def held() -> bool:
        leases.update({r: json.loads((r / "lease.json").read_text()) for r in runs[:2] if (r / "lease.json").exists()})
        return len(leases) == 2 and all(checkpoint_step(r) >= 2 for r in leases)
    wait_until(held, 120, "both workers' runs at their first checkpoints")
    (a_run, a), (b_run, b) = sorted(leases.items(), key=lambda item: item[1]["job"])
    # A first, while it is surely mid-run: waiting for B's requeue first let A finish every run
    # and exit (seen in CI). B runs on meanwhile with its one slot busy, so it takes nothing of A's.
    os.kill(a["pid"], signal.SIGKILL)                                            # A: the node is lost
    subprocess.run(["scancel", "-b", "--signal=USR2", b["job"]], check=True)     # B: the time-limit warning
    wait_until(lambda: squeue().get(b["job"], ("",))[0] == "PENDING" and state(b_run)["state"] == "stopped", 60,
               "worker B stopped and requeued")
    wait_until(lambda: a["job"] not in squeue(), 60, "worker A's job to end")
    assert json.loads((a_run / "lease.json").read_text())["job"] == a["job"]    # left behind
    status = experiment("status", str(exp), check_rc=0).stdout
    rows = {line.split()[0]: line for line in status.splitlines() if line.strip()}
    assert "lost (its worker is gone" in rows[a_run.name] and "waiting for a worker (stopped at a checkpoint)" in rows[b_run.name]
    assert "lost (its job left squeue without ending)" in rows[a["job"]] and "pending (requeued)" in rows[b["job"]]
    resumed = experiment("resume", str(exp), check_rc=0)
    assert "worker 1 of 1 submitted as job" in resumed.stderr, resumed.stderr
    c = tsv(exp)[-1][1]
    assert [k for k, _ in tsv(exp)] == ["worker_0", "worker_1", "worker_2"]
    release_when_requeued(b["job"])
    wait_for_sweep("wk", 180)
    logs = slurm_log(exp, a["job"]) + slurm_log(exp, b["job"]) + slurm_log(exp, c)
    assert f"taking over {a_run.name} from worker {a['job']} (attempt 1): its job {a['job']} is no longer in squeue" in logs
    assert f"job {b['job']} requeued: it resumes from its checkpoint when it runs again" in logs
    for run in runs:
        assert state(run)["state"] == "done" and epochs(run) == [1, 2, 3], logs   # each epoch once
        assert not (run / "lease.json").exists()
    for run in (a_run, b_run):
        text = "".join(p.read_text() for p in run.glob("worker-*.out"))
        # last.pt, or next.pt where a process was killed between writing a checkpoint and rotating it
        # in (restore() reads it then, by design; which of the two runs it was is not known)
        assert re.search(r"train: resumed from (last|next)\.pt at step", text), text
    assert same_weights(a_run, runs[2]) and same_weights(b_run, runs[2])        # run_002: never interrupted
    record = json.loads((exp / "workers" / f"{b['job']}.json").read_text())
    assert record["restarts"] == 1 and record["runs"][0]["exit"] == 143 and record["state"] == "ended"
    status = experiment("status", str(exp), check_rc=0).stdout
    assert "3 runs: 3 done" in status and "3 workers: 2 ended, 1 lost" in status

