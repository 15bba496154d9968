"""Workers (`train.py --worker EXP_DIR`): many runs of a dry-run sweep in one process, real
processes on this machine (no Slurm). Leases and their staleness rules as unit tests, then
workers racing on one sweep, a run in a worker against the same run alone, a worker SIGKILLed
or SIGTERMed mid-run, and runs that fail."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from hypersal import config as config_mod
from hypersal.experiment import lease as L
from hypersal.experiment.executors import QueueEntry
from hypersal.runfolder import RunFolder

from helpers.runs import checkpoint_step, epochs, same_weights
from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment, train
from helpers.slurm import wait_until

# Comet off (its import and its ~1 s end a run): the tests of a run's Comet archive in a worker
# set it to offline themselves.
TRAINER = {**TINY_TRAINER, "deterministic": True, "pipeline": ["train"], "comet": {"mode": "disabled"},
           "train": {**TINY_TRAINER["train"], "epochs": 1, "steps_per_epoch": 2}}
LONG = {**TRAINER, "train": {**TRAINER["train"], "epochs": 3, "steps_per_epoch": 10, "checkpoint": {"every_steps": 2}}}
NAN = {"train": {"epochs": 3, "steps_per_epoch": 8, "log_every": 1,
                 "optim": {"name": "sgd", "lr": 1.0e+30, "weight_decay": 0.0, "momentum": 0.0}}}
ENV = {"HYPERSAL_CPUS": "1"}


# --- helpers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The tiny generated dataset, made once here, so that workers racing do not each make it."""
    from hypersal.runner.job import Job
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(TRAINER))
    Job(cfg=config_mod.load(path), folder=RunFolder(path.parent), tracker=None, device=torch.device("cpu"))._synth()


def sweep(tmp_path: Path, runs: list, trainer: dict = TRAINER, name: str = "wk") -> Path:
    exp_file = tmp_path / f"{name}.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": name, "base_dir": str(tmp_path), "config": trainer, "seed": 0},
        "sbatch": {"cpus": 1, "mem": "1G"}, "runs": runs}))
    experiment(f"--experiment={exp_file}", "--dry-run", check_rc=0)
    return tmp_path / name


def start(exp: Path, log: Path, *args: str, env: dict | None = None, session: bool = False,
          host: str | None = None) -> subprocess.Popen:
    """`train.py --worker EXP` as a user starts it; its own lines go to `log`. With `host`, as if on
    another node: in a UTS namespace of its own, named `host` (the pid stays the worker's)."""
    where = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host] if host else []
    with open(log, "ab") as out:
        return subprocess.Popen([*where, PYTHON, str(ROOT / "train.py"), "--worker", str(exp), *args], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV, **(env or {})},
                                start_new_session=session)


def other_nodes_here() -> str | None:
    """Why this machine cannot start a process under another host name (unshare needs the right)."""
    proc = subprocess.run(["unshare", "--uts", "hostname", "node2"], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"unshare --uts is refused here ({proc.stderr.strip()})"


def finish(proc: subprocess.Popen, log: Path, rc: int = 0, timeout: float = 120) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text()
    assert proc.returncode == rc, f"worker exited {proc.returncode}, expected {rc}:\n{text}"
    return text


def state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def record(exp: Path, worker: str) -> dict:
    return json.loads((exp / "workers" / f"{worker}.json").read_text())


def worker_id(proc: subprocess.Popen) -> str:
    return f"{socket.gethostname()}-{proc.pid}"





def logs(run: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(run.glob("worker-*.out")))


# --- leases: the staleness rules --------------------------------------------------------------
class Squeue:
    """A recording stand-in for SlurmExecutor.queue (no Slurm in this file): {job: state}."""

    def __init__(self, jobs: dict[str, str]):
        self.jobs, self.calls = jobs, 0

    def __call__(self):
        self.calls += 1
        return {j: QueueEntry(j, s, "") for j, s in self.jobs.items()}


def runs_with_leases(tmp_path: Path, leases: list[dict | None]) -> list[Path]:
    runs = []
    for i, lease in enumerate(leases):
        run = tmp_path / f"run_{i:03d}"
        run.mkdir()
        if lease is not None:
            L.write(run, {"worker": f"w{i}", "pid": 1, "attempt": 1, **lease})
        runs.append(run)
    return runs


def holder(**kw) -> L.Holder:
    me = L.me()
    return L.Holder(**{**me.__dict__, **kw})


def test_a_lease_whose_job_left_squeue_or_is_pending_again_is_stale_and_squeue_is_asked_once_a_pass(tmp_path):
    far = {"host": "node7"}          # another host: only squeue and the file's age can tell
    runs = runs_with_leases(tmp_path, [{**far, "job": "101"}, {**far, "job": "102"}, {**far, "job": "103"},
                                       {**far, "job": "200", "restart": 0}, {**far, "job": "104"}])
    queue = Squeue({"102": "RUNNING", "103": "PENDING", "200": "RUNNING", "104": "RUNNING"})
    leases = L.Leases(tmp_path, runs, holder(worker="200", job="200", restart=1), queue)
    first = leases.claim()
    assert first.run_dir == runs[0] and queue.calls == 1
    assert first.took_over == "worker w0 (attempt 1): its job 101 is no longer in squeue"
    assert first.lease["attempt"] == 2 and json.loads((runs[0] / L.LEASE).read_text()) == first.lease
    second = leases.claim()                    # 102 runs: its run is passed over
    assert second.run_dir == runs[2] and "its job 103 is pending again (requeued)" in second.took_over
    third = leases.claim()                     # this worker's own job, an earlier start of it
    assert third.run_dir == runs[3] and "its job 200 was restarted (restart 1)" in third.took_over
    assert leases.claim() is None and queue.calls == 4
    assert json.loads((runs[1] / L.LEASE).read_text())["worker"] == "w1"        # untouched

    def down():
        raise OSError("squeue: error: slurm_load_jobs error: Unable to contact slurm controller")
    alone = L.Leases(tmp_path, [runs[4]], holder(worker="200", job="200"), down)
    assert alone.claim() is None               # squeue down: nobody is called gone for it


def test_a_lease_older_than_the_judges_own_file_is_stale(tmp_path):
    runs = runs_with_leases(tmp_path, [{"host": "node7"}, {"host": "node7"}, {"host": "node7", "timeout": 30}])
    clock = L.file_clock(tmp_path)
    for run, age in zip(runs, (200, 60, 60)):
        os.utime(run / L.LEASE, (clock - age, clock - age))
    assert not list(tmp_path.glob(".clock-*"))     # the judge's own file is gone after reading it
    leases = L.Leases(tmp_path, runs, holder())
    first = leases.claim()
    assert first.run_dir == runs[0] and "it was last renewed 200 s ago (its holder promised every 120 s)" in first.took_over
    second = leases.claim()                        # 60 s is within 120 s, but not within its own 30 s
    assert second.run_dir == runs[2] and "promised every 30 s" in second.took_over
    assert leases.claim() is None


def test_a_damaged_lease_is_judged_by_its_age_alone(tmp_path):
    runs = runs_with_leases(tmp_path, [None, None])
    (runs[0] / L.LEASE).write_text("{not json")
    (runs[1] / L.LEASE).write_text(json.dumps({"job": 7, "restart": "x", "attempt": "two", "pid": "1"}))
    leases = L.Leases(tmp_path, runs, holder(job="7", restart=3))
    assert leases.claim() is None                       # fresh: they may belong to live holders
    clock = L.file_clock(tmp_path)
    for run in runs:
        os.utime(run / L.LEASE, (clock - 200, clock - 200))
    taken = [leases.claim() for _ in range(2)]
    assert [(c.run_dir, c.lease["attempt"]) for c in taken] == [(runs[0], 1), (runs[1], 1)]
    assert taken[0].took_over.startswith("worker ? (attempt ?): it was last renewed 200 s ago")


def test_a_lease_whose_process_here_is_gone_or_reused_is_stale(tmp_path):
    ended = subprocess.Popen(["true"])
    ended.wait()
    zombie = subprocess.Popen(["true"])           # ended, never waited for: a zombie
    wait_until(lambda: L._stat(zombie.pid)[0] == "Z", 10, "a zombie")
    alive = subprocess.Popen(["sleep", "60"])
    trainer = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)", "train.py"])   # a train.py, frozen
    try:
        here = {"host": socket.gethostname()}
        runs = runs_with_leases(tmp_path, [
            {**here, "pid": ended.pid}, {**here, "pid": zombie.pid},
            {**here, "pid": alive.pid, "start": "another-boot:123"},         # the pid reused since
            {**here, "pid": alive.pid, "start": L.process_start(alive.pid)},
            {**here, "pid": trainer.pid}])
        clock = L.file_clock(tmp_path)          # the last one is old, but its trainer is seen alive here
        os.utime(runs[4] / L.LEASE, (clock - 200, clock - 200))
        RunFolder(runs[4]).write_state({"state": "running", "host": socket.gethostname(), "pid": trainer.pid})
        leases = L.Leases(tmp_path, runs, holder())
        claims = [leases.claim() for _ in range(4)]
        assert [c.run_dir for c in claims[:3]] == runs[:3] and claims[3] is None
        assert claims[0].took_over.endswith(f"its process {ended.pid} on {socket.gethostname()} is gone")
        assert f"its process {zombie.pid} " in claims[1].took_over and f"its process {alive.pid} " in claims[2].took_over
        trainer.kill()
        trainer.wait()
        assert leases.claim().run_dir == runs[4]                        # gone now: taken
    finally:
        for proc in (alive, trainer):
            proc.kill()
            proc.wait()
        zombie.wait()


RACER = """
import json, sys, time
from pathlib import Path
from hypersal.experiment import lease as L
exp = Path(sys.argv[1])
while not (exp / "go").exists():
    time.sleep(0.001)
got = L.Leases(exp, sorted(exp.glob("run_*")), L.me()).claim()
print(json.dumps(got and {"run": got.run_dir.name, "attempt": got.lease["attempt"], "took_over": got.took_over}),
      flush=True)
while not (exp / "done").exists():   # alive until all have claimed: an ended racer's lease is stale
    time.sleep(0.01)
"""


def test_judges_racing_under_the_lock_take_a_stale_lease_once(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    here = socket.gethostname()
    runs_with_leases(tmp_path, [{"host": here, "pid": gone.pid}, {"host": here, "pid": os.getpid()}, None])
    racers = [subprocess.Popen([PYTHON, "-c", RACER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
              for _ in range(8)]
    time.sleep(1.0)                                   # every racer imported and waiting
    (tmp_path / "go").touch()
    got = [json.loads(r.stdout.readline()) for r in racers]
    (tmp_path / "done").touch()
    assert [r.wait(timeout=60) for r in racers] == [0] * 8
    taken = sorted((g["run"], g["attempt"]) for g in got if g)
    assert taken == [("run_000", 2), ("run_002", 1)], got
    assert got.count(None) == 6
    assert json.loads((tmp_path / "run_001" / L.LEASE).read_text())["pid"] == os.getpid()


def test_leases_and_the_worker_s_own_process_import_no_torch():
    """status reads leases on the login node; a worker with nothing left to do exits at once."""
    code = ("import sys; import hypersal.experiment.lease, hypersal.runner.worker; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'comet_ml', 'optuna'}))")
    assert subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout == "[]\n"


PRELOAD = """
import threading, torch
asked = []
for name in ("is_available", "device_count", "init", "current_device"):   # what would start CUDA
    real = getattr(torch.cuda, name)
    setattr(torch.cuda, name, lambda *a, _n=name, _r=real, **k: asked.append(_n) or _r(*a, **k))
from hypersal.runner import worker
worker.preload()
worker.preload_search()                 # a search's workers import optuna too
print(asked, torch.cuda.is_initialized(), [t.name for t in threading.enumerate()])
"""


def test_the_worker_s_imports_start_no_thread_and_touch_no_cuda():
    """What is forked must hold no thread pool and no CUDA context: the children start their own."""
    out = subprocess.run([PYTHON, "-c", PRELOAD], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out == "[] False ['MainThread']\n"


def test_a_worker_whose_first_run_has_comet_disabled_does_not_import_comet_ml(tmp_path):
    """comet_ml costs ~1 s a worker: preloaded only when the first run logs to Comet."""
    from hypersal.runner.worker import uses_comet
    for mode, expected in (("disabled", False), ("offline", True)):
        (tmp_path / mode).mkdir()
        (tmp_path / mode / "config.yaml").write_text(yaml.safe_dump({"comet": {"mode": mode}}))
        assert uses_comet(tmp_path / mode) is expected
    assert uses_comet(tmp_path / "missing") is True          # unreadable: the run says why, not the worker
    code = "import sys; from hypersal.runner import worker; worker.preload(comet=False); print('comet_ml' in sys.modules)"
    assert subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_worker_s_slots_share_its_gpu_memory_and_with_mps_its_compute():
    """No GPU here: torch.cuda is a stand-in that records what it was asked."""
    from hypersal.runner import gpu_share as G
    assert G.child_env(1, {}) == {}
    assert G.child_env(2, {}) == {"HYPERSAL_GPU_SHARE": "0.5"}
    assert G.child_env(3, {"CUDA_MPS_PIPE_DIRECTORY": "/tmp/mps"}) == {
        "HYPERSAL_GPU_SHARE": "0.333333", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "33"}
    assert G.child_env(2, {"CUDA_MPS_PIPE_DIRECTORY": "/tmp/mps", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "80"}) == {
        "HYPERSAL_GPU_SHARE": "0.5"}                                   # the job's own percentage stays

    class Recorder:
        def __init__(self):
            self.calls = []

        def current_device(self):
            return 0

        def set_per_process_memory_fraction(self, fraction, device):
            assert isinstance(device, int)                           # torch refuses a device without an index
            self.calls.append((fraction, device))
    cuda = Recorder()
    assert G.apply(torch.device("cuda"), {"HYPERSAL_GPU_SHARE": "0.5"}, cuda) == 0.5      # pick_device's
    assert G.apply(torch.device("cuda", 1), {"HYPERSAL_GPU_SHARE": "0.25"}, cuda) == 0.25  # a DDP rank's
    assert G.apply(torch.device("cpu"), {"HYPERSAL_GPU_SHARE": "0.5"}, cuda) is None
    assert G.apply(torch.device("cuda"), {}, cuda) is None
    assert cuda.calls == [(0.5, 0), (0.25, 1)]


def test_finished_runs_are_never_claimed_and_a_lost_lease_is_neither_renewed_nor_released(tmp_path):
    runs = runs_with_leases(tmp_path, [None, None, None, None, None])
    for run, word in zip(runs, ("done", "failed", "pruned", "running")):
        RunFolder(run).write_state({"state": word})
    (runs[3] / "state.json").write_text("{not json")          # damaged: train.py would stop on it
    mine = L.Leases(tmp_path, runs, holder())
    claim = mine.claim()
    assert claim.run_dir == runs[4] and mine.claim() is None
    assert mine.renew(claim)
    other = {**claim.lease, "worker": "thief", "pid": 1, "attempt": 2}
    L.write(runs[4], other)                                   # taken over meanwhile
    assert not mine.renew(claim)
    mine.release(claim)
    assert json.loads((runs[4] / L.LEASE).read_text()) == other


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """A plain sweep, a search's folder whose study is missing and a folder that is neither, for the
    mistakes below."""
    from hypersal.search import DEFAULTS
    tmp = tmp_path_factory.mktemp("mistakes")
    exp = sweep(tmp, [{"repeat": 1}])
    search = tmp / "search_sweep"
    (search / "search").mkdir(parents=True)
    summary = yaml.safe_load((exp / "summary.yaml").read_text())
    (search / "summary.yaml").write_text(yaml.safe_dump({**summary, "search": DEFAULTS}))
    return {"tmp": str(tmp), "exp": str(exp), "search": str(search)}


@pytest.mark.parametrize("args, message", [
    (["--worker", "{tmp}"], "{tmp}: not an experiment folder (no summary.yaml)"),
    (["--worker", "{exp}", "--slots", "0"], "--slots 0: a worker runs at least one run at a time"),
    (["--worker", "{exp}", "train.epochs=2"], "--worker runs each run as its config.yaml says"),
    (["--worker", "{exp}", "--skip", "train"], "--worker runs each run as its config.yaml says"),
    (["--config", "{exp}/run_000/config.yaml", "--slots", "2"], "--slots and --lease-timeout go with --worker"),
    (["--worker", "{search}"], "{search}/search/study.journal: the search's study is missing"),
])
def test_worker_mistakes_are_said_in_one_paragraph_with_exit_2(folders, capsys, args, message):
    from hypersal.runner import cli
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}   # cli.main installs its own
    try:
        assert cli.main([a.format(**folders) for a in args]) == 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    assert err.startswith("hypersal: error: ") and message.format(**folders) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    exp = Path(folders["exp"])
    assert not (exp / "workers").exists() and not (exp / "run_000" / "state.json").exists()


# --- workers, end to end ----------------------------------------------------------------------
def test_four_workers_run_every_run_of_a_sweep_exactly_once(tmp_path, dataset):
    """Four racing on a plain sweep's run folders (eight, on a search's trials, in
    test_workers_search.py: each worker's start imports torch, ~5 CPU-seconds of the 2 cores)."""
    exp = sweep(tmp_path, [{"repeat": 12}])
    procs = [start(exp, tmp_path / f"w{i}.log") for i in range(4)]
    texts = [finish(p, tmp_path / f"w{i}.log") for i, p in enumerate(procs)]
    ran = [r["run"] for p in procs for r in record(exp, worker_id(p))["runs"]]
    assert sorted(ran) == [f"run_{i:03d}" for i in range(12)], "\n".join(texts)      # none twice, none lost
    for i in range(12):
        run = exp / f"run_{i:03d}"
        assert state(run)["state"] == "done" and state(run)["restarts"] == 0
        (log,) = run.glob("worker-*.out")
        text = log.read_text()
        assert text.count("hypersal: worker ") == 1 and text.count(f"hypersal: run {run} on cpu (1 CPU thread)") == 1
        assert not (run / L.LEASE).exists()
    for p, text in zip(procs, texts):
        rec = record(exp, worker_id(p))
        assert rec["state"] == "ended" and rec["exit"] == 0 and rec["pid"] == p.pid
        assert all(r["exit"] == 0 for r in rec["runs"])
        assert text.rstrip().endswith(f"nothing left to start; {len(rec['runs'])} run(s) ran here")


def test_a_run_in_a_worker_is_the_run_train_py_runs_alone(tmp_path, dataset):
    exp = sweep(tmp_path, [{"repeat": 2}], {**TRAINER, "comet": {"mode": "offline", "workspace": "w"}})
    alone, in_worker = exp / "run_001", exp / "run_000"
    proc = train("--config", str(alone / "config.yaml"), cwd=alone, env=ENV)    # as exp.sh starts it
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "w.log"
    worker = start(exp, log)
    finish(worker, log)
    assert [r["run"] for r in record(exp, worker_id(worker))["runs"]] == ["run_000"]
    assert same_weights(alone, in_worker)

    def lines(run):
        return [{k: v for k, v in m.items() if k != "time"} for m in
                map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert lines(alone) == lines(in_worker)
    results = [{k: v for k, v in json.loads((r / "results.json").read_text())["train"].items() if k != "seconds"}
               for r in (alone, in_worker)]
    assert results[0] == results[1]
    for run in (alone, in_worker):
        key = yaml.safe_load((run / "run.yaml").read_text())["comet_key"]
        assert (run / "comet" / f"{key}.zip").is_file()
    text = logs(in_worker)
    assert f"hypersal: run {in_worker} on cpu (1 CPU thread), Comet key" in text and f"code: {ROOT}\n" in text
    assert f"hypersal: run {alone} on cpu (1 CPU thread), Comet key" in proc.stderr
    assert state(in_worker)["pid"] != worker.pid                                  # a process of its own
    status = experiment("status", str(exp), check_rc=0).stdout    # a worker started by hand: not "not submitted"
    rows = {line.split()[0]: line.split() for line in status.splitlines() if line.strip()}
    assert rows["run_000"][:3] == ["run_000", worker_id(worker), "done"] and rows["run_001"][:3] == ["run_001", "-", "done"]
    assert rows[worker_id(worker)][1:4] == ["local", socket.gethostname(), "ended"]


def test_a_killed_worker_s_run_is_taken_over_and_resumed_as_the_same_run(tmp_path, dataset):
    exp = sweep(tmp_path, [{"repeat": 2}], LONG)
    run = exp / "run_000"
    first = start(exp, tmp_path / "a.log")
    wait_until(lambda: checkpoint_step(run) >= 4, 120, "a checkpoint of run_000 at step 4")
    child = state(run)["pid"]
    first.send_signal(signal.SIGKILL)                       # the node is gone: no chance to save
    first.wait()
    wait_until(lambda: L.process_gone(child, None), 10, "the killed worker's run to die with it")
    held = json.loads((run / L.LEASE).read_text())
    assert held["pid"] == first.pid and held["attempt"] == 1    # left behind, stale
    assert state(run)["state"] == "running"
    second = start(exp, tmp_path / "b.log")
    text = finish(second, tmp_path / "b.log")
    assert (f"taking over run_000 from worker {worker_id(first)} (attempt 1): its process {first.pid} on "
            f"{socket.gethostname()} is gone") in text
    resumed = (run / f"worker-{worker_id(second)}.out").read_text()
    assert "attempt 2" in resumed and "train: resumed from last.pt at step" in resumed
    assert state(run)["state"] == "done" and not (run / L.LEASE).exists()
    assert epochs(run) == [1, 2, 3]                          # each epoch once
    assert same_weights(run, exp / "run_001")                # run_001: the same run, never interrupted
    assert [(r["run"], r["attempt"]) for r in record(exp, worker_id(second))["runs"]] == [("run_000", 2), ("run_001", 1)]


def freeze(proc: subprocess.Popen, exp: Path) -> None:
    """SIGSTOP a worker and its runs (a node that hangs), never while it holds the claims lock:
    a node frozen holding it would hold up every worker of the sweep (NOTES.md says so)."""
    import fcntl
    while True:
        os.killpg(proc.pid, signal.SIGSTOP)
        fd = os.open(exp / L.LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            os.close(fd)


def test_a_frozen_worker_s_run_is_taken_over_and_its_copy_killed_when_it_wakes(tmp_path, dataset):
    """A node that hangs past the lease timeout: a worker on another node (here: another host name,
    so that only the lease's age can tell) takes its run over; the frozen worker, waking, finds
    its lease gone and kills its copy of the run. On one host a frozen trainer is seen alive and
    its run is left alone (never two trainers)."""
    why = other_nodes_here()
    if why:
        pytest.skip(why)
    exp = sweep(tmp_path, [{"repeat": 2}], LONG)
    run = exp / "run_000"
    first = start(exp, tmp_path / "a.log", "--lease-timeout", "2", session=True)
    wait_until(lambda: checkpoint_step(run) >= 2, 120, "a checkpoint of run_000")
    freeze(first, exp)
    try:
        time.sleep(3)                                        # past its 2 s: judged by the lease's age alone
        second = start(exp, tmp_path / "b.log", host="node2")
        mine = run / f"worker-node2-{second.pid}.out"
        wait_until(lambda: mine.exists() and "train: resumed from" in mine.read_text(), 60, "the takeover")
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    text = finish(first, tmp_path / "a.log")
    assert "the lease of run_000 was taken over by another worker (this one was judged gone): its process is killed" in text
    assert "run_000 stopped: its lease was taken over (killed by SIGKILL)" in text
    taken = finish(second, tmp_path / "b.log")
    assert f"taking over run_000 from worker {worker_id(first)} (attempt 1): it was last renewed" in taken
    assert "(its holder promised every 2 s)" in taken
    assert state(run)["state"] == "done" and state(exp / "run_001")["state"] == "done"
    assert same_weights(run, exp / "run_001")
    assert mine.read_text().count("hypersal: done") == 1


def fake_slurm(folder: Path) -> tuple[dict, Path]:
    """scontrol and squeue that record their arguments (the cluster is not this file's), and a
    job's environment: the worker is job 4242."""
    calls = folder / "calls.txt"
    for tool in ("scontrol", "squeue"):
        script = folder / "bin" / tool
        script.parent.mkdir(exist_ok=True)
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        script.chmod(0o755)
    return {"PATH": f"{folder / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}, calls


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGUSR2"])
def test_a_stop_signal_stops_a_worker_s_runs_cleanly_and_a_new_worker_finishes_them(tmp_path, dataset, stop):
    """SIGTERM (scancel, preemption): stop, release, exit 143. SIGUSR2 (the time-limit warning) in a
    job: the same, and the worker requeues its job; started again it is the same worker."""
    exp = sweep(tmp_path, [{"repeat": 2}], LONG)
    runs = [exp / "run_000", exp / "run_001"]
    env, calls = fake_slurm(tmp_path) if stop == "SIGUSR2" else ({}, None)
    first = start(exp, tmp_path / "a.log", "--slots", "2", env={"HYPERSAL_CPUS": "2", **env})
    name = "4242" if env else worker_id(first)
    wait_until(lambda: all(checkpoint_step(r) >= 2 for r in runs), 120, "both runs' first checkpoints")
    first.send_signal(getattr(signal, stop))
    text = finish(first, tmp_path / "a.log", rc=143)
    assert f"{stop}: stopping 2 run(s); each checkpoints" in text
    for run in runs:
        assert state(run)["state"] == "stopped" and not (run / L.LEASE).exists()
        log = (run / f"worker-{name}.out").read_text()
        assert "stopped by signal SIGTERM: the run can resume from its last checkpoint" in log
        assert f"hypersal: run {run} on cpu (1 CPU thread)" in log      # 2 CPUs over 2 slots
    rec = record(exp, name)
    assert rec["state"] == "ended" and rec["exit"] == 143 and sorted(r["exit"] for r in rec["runs"]) == [143, 143]
    if env:
        assert calls.read_text() == "scontrol requeue 4242\n" and rec["requeued"] is True
        assert "job 4242 requeued: it resumes from its checkpoint when it runs again" in text
        env = {**env, "SLURM_RESTART_COUNT": "1"}                      # what Slurm sets when it runs again
    second = start(exp, tmp_path / "b.log", "--slots", "2", env={"HYPERSAL_CPUS": "2", **env})
    finish(second, tmp_path / "b.log")
    name = "4242" if env else worker_id(second)
    for run in runs:
        assert state(run)["state"] == "done" and epochs(run) == [1, 2, 3]
        assert "train: resumed from last.pt at step" in (run / f"worker-{name}.out").read_text()
    assert same_weights(*runs)
    if env:                         # one worker, two starts: its record keeps the first start's runs
        rec = record(exp, "4242")
        assert rec["restarts"] == 1 and [r["exit"] for r in rec["runs"]] == [143, 143, 0, 0]
        assert calls.read_text() == "scontrol requeue 4242\n"          # squeue: nothing needed asking


def test_a_failing_run_fails_once_and_the_worker_goes_on(tmp_path, dataset):
    exp = sweep(tmp_path, [{"repeat": 1}, {"trainer": NAN}, {"trainer": LONG}, {"repeat": 1}])
    log = tmp_path / "w.log"
    proc = start(exp, log)
    killed = exp / "run_002"
    wait_until(lambda: checkpoint_step(killed) >= 2, 120, "a checkpoint of run_002")
    os.kill(state(killed)["pid"], signal.SIGKILL)            # its run alone: out of memory, say
    text = finish(proc, log)
    runs = record(exp, worker_id(proc))["runs"]
    assert [(r["run"], r["exit"]) for r in runs] == [("run_000", 0), ("run_001", 1), ("run_002", -9), ("run_003", 0)]
    assert "run_001 failed (exit 1)" in text and "run_002 failed (killed by SIGKILL)" in text
    assert "the loss became nan" in state(exp / "run_001")["error"]
    assert state(killed)["state"] == "failed" and "ended (killed by SIGKILL) without saying why" in state(killed)["error"]
    assert [state(exp / f"run_{i:03d}")["state"] for i in (0, 3)] == ["done", "done"]
    again = start(exp, log)                                   # failed runs are not taken again
    assert finish(again, log).rstrip().endswith("nothing left to start; 0 run(s) ran here")
    assert record(exp, worker_id(again))["runs"] == []


def test_a_worker_waits_for_its_child_s_end_not_for_its_next_look():
    """Between runs a worker waits on its children's pidfds: it wakes when one ends, so the next
    run starts then, not at the end of the wait (here 30 s); without a child it sleeps the wait."""
    from types import SimpleNamespace
    from hypersal.runner.worker import Slot, Worker, open_pidfd
    pid = os.fork()
    if pid == 0:
        time.sleep(0.3)
        os._exit(0)
    slot = Slot(claim=None, pid=pid, started="", t0=0.0, pidfd=open_pidfd(pid))
    try:
        if slot.pidfd is None:
            pytest.skip("this kernel gives no pidfd (Linux 5.3+): the worker falls back to looking every 0.2 s")
        start = time.monotonic()
        Worker.wait(SimpleNamespace(running={pid: slot}), 30.0)
        assert 0.25 < time.monotonic() - start < 15
    finally:
        os.waitpid(pid, 0)
        if slot.pidfd is not None:
            os.close(slot.pidfd)
    start = time.monotonic()
    Worker.wait(SimpleNamespace(running={}), 0.3)
    assert time.monotonic() - start >= 0.3
