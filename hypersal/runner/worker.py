"""train.py --worker EXP_DIR [--slots P]: many runs of one sweep in one process (one allocation).

The worker takes the next run of the sweep that is neither finished nor held (a lease:
hypersal/experiment/lease.py), runs it, releases it and takes the next, until nothing is left to
start; then it exits 0: it never idles holding an allocation. With P slots it runs P at once,
each with the worker's CPUs // P threads (HYPERSAL_CPUS).

In an adaptive sweep (a search) the run folders are empty until their run starts: a child runs
what the search's job array runs, `train.py --trial EXP_DIR --index I` (runner/trial.py), so it
asks the study for its trial (under the sweep's ask lock) and writes its folder, or, taken over from a
worker that died, finds its trial in run.yaml and resumes it as the same trial. One trial per
run folder, and `trials` folders: never more trials than that. A pruned trial ends its child
(state `pruned`, a finished state), and its slot takes the next run at once.

Each run is a child process forked from this one once torch, torchvision, comet_ml and the
stages are imported but before any torch op (so before any thread pool or CUDA exists): the
child skips the interpreter's and those imports' start-up, yet nothing of one run (RNG states,
torch settings, Comet state, open files) reaches the next. The child runs exactly what
`train.py --config RUN_DIR/config.yaml` runs (cli.main), from the run folder, its stdout and
stderr appended to RUN_DIR/worker-<worker id>.out (one log per worker that ran it, as Slurm
writes one slurm-<job>.out per job); it dies with the worker (PR_SET_PDEATHSIG), so a run never
trains on without a holder renewing its lease.

This process only waits on its children (os.waitpid, no threads), renews their leases every
RENEW_S seconds and writes its record, EXP_DIR/workers/<worker id>.json. SIGTERM, SIGUSR2 and
SIGINT stop it: each child gets SIGTERM and checkpoints (state `stopped`) as train.py does; the
worker releases their leases and exits 143 (130 for SIGINT), after `scontrol requeue`ing its
own job on SIGUSR2 inside Slurm. The children get SIGTERM, not the USR2 itself, since each would
then requeue the worker's job on its own. A child that fails, or is killed, fails its run once
(state `failed`); the worker records it and goes on with the next run.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hypersal import yamlio
from hypersal.errors import UserError
from hypersal.experiment import lease as L
from hypersal.experiment.executors import SlurmExecutor
from hypersal.experiment.folder import load_summary
from hypersal.files import write_atomic
from hypersal.log import say, warn
from hypersal.runfolder import RunFolder, now
from hypersal.runner import gpu_share
from hypersal.search import journal_path as search_journal
from hypersal.train import signals

RENEW_S = 5.0            # leases and the record are rewritten this often (a quarter of a shorter timeout)
POLL_S = 0.2             # how often the children are looked at
STOPS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)
CODE = Path(__file__).resolve().parents[2]
_stop: list[str] = []    # the signal that stops the worker, once one came


def preload(comet: bool = True) -> None:
    """What every run imports, imported once here: each forked run starts with it. Importing runs
    no torch op, so no thread pool, OpenMP state or CUDA context exists yet to be forked.
    comet_ml (~1 s) only when `comet`: a sweep whose runs have Comet disabled never needs it (a
    later run that does imports it itself)."""
    if comet:
        os.environ.setdefault("COMET_AUTO_LOG_ENV_DETAILS", "false")   # as tracking.Tracker sets them
        os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")
        import comet_ml  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    from hypersal import stages, tracking  # noqa: F401
    from hypersal.runner import job, pipeline, trial  # noqa: F401
    from hypersal.train import cpus, distributed  # noqa: F401


def uses_comet(run_dir: Path) -> bool:
    """Whether the run's config.yaml logs to Comet (True when it cannot be read: the run itself
    then says what is wrong, and importing comet_ml costs only time)."""
    try:
        return (yamlio.load(run_dir / "config.yaml").get("comet") or {}).get("mode") != "disabled"
    except Exception:
        return True


def preload_search() -> None:
    """A search's runs import optuna too (~1 s here): once, before the first fork. It starts no
    thread either (tests/test_workers.py checks both)."""
    import optuna  # noqa: F401
    from hypersal import search  # noqa: F401
    from hypersal.search import journal  # noqa: F401


def process_age() -> float | None:
    """Seconds since this process started (the interpreter's own start-up included)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Slot:
    """One run this worker's child trains."""
    claim: L.Claim
    pid: int
    started: str
    t0: float
    lost: bool = False        # its lease was taken over: the child was killed, nothing is released
    pidfd: int | None = None  # readable once the child has ended (None where Linux gives none)


def open_pidfd(pid: int) -> int | None:
    """A file descriptor that select() sees readable when the process ends (Linux 5.3+)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


@dataclass
class Worker:
    exp_dir: Path
    leases: L.Leases
    slots: int
    trials: dict[Path, int] | None = None    # a search: each run folder's run index (its child asks its trial)
    cpus: int = 1
    running: dict[int, Slot] = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    born: float = field(default_factory=time.monotonic)
    startup: float | None = None       # seconds from the process's start to its first run
    ready: float | None = None         # monotonic time then
    busy: float = 0.0                  # run seconds of this start, of the runs ended
    count: int = 0                     # runs ended in this start
    stopping: bool = False
    next_claim: float = 0.0
    next_tick: float = 0.0

    @property
    def me(self) -> L.Holder:
        return self.leases.holder

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        for sig in STOPS:
            signal.signal(sig, lambda signum, frame: _stop.append(signal.Signals(signum).name))
        self.open_record()
        first = self.claim()
        if first is not None and not _stop:
            preload(comet=uses_comet(first.run_dir))
            if self.trials is not None:
                preload_search()
            from hypersal.train.cpus import job_cpus
            self.cpus = job_cpus()
        self.ready = time.monotonic()
        self.startup = self.age()
        if first is not None:
            say(f"worker {self.me.worker}: ready in {self.startup:.1f} s, {self.slots} slot{'s' * (self.slots > 1)}"
                f", {self.per_run_cpus()} CPU thread{'s' * (self.per_run_cpus() > 1)} a run")
        pending = [first] if first is not None else []
        while True:
            if _stop and not self.stopping:
                self.stopping = True
                for claim in pending:
                    self.leases.release(claim)
                pending = []
                self.forward()
            while not _stop and len(self.running) < self.slots:
                claim = pending.pop() if pending else self.claim()
                if claim is None:
                    break
                self.start(claim)
            if not self.running:
                break
            ended = self.reap()
            self.tick()
            if not ended:          # else a slot is free now: fill it first
                self.wait(POLL_S)
        return self.end()

    def wait(self, seconds: float) -> None:
        """Until a child ends or `seconds` pass: the next run starts as soon as a slot is free,
        not at the next look (a 12-trial search spent ~2.7 slot-seconds between runs so)."""
        fds = [slot.pidfd for slot in self.running.values() if slot.pidfd is not None]
        if len(fds) < len(self.running) or not fds:
            time.sleep(seconds)
        else:
            select.select(fds, [], [], seconds)

    def claim(self) -> L.Claim | None:
        """The next run, at most once per RENEW_S while nothing was left (claiming reads every
        unfinished run's files)."""
        if time.monotonic() < self.next_claim:
            return None
        claim = self.leases.claim()
        if claim is None:
            self.next_claim = time.monotonic() + RENEW_S
        elif claim.took_over:
            say(f"worker {self.me.worker}: taking over {claim.run_dir.name} from {claim.took_over}")
        return claim

    @property
    def renew_every(self) -> float:
        """Well within the lease timeout, which others judge this worker by."""
        return min(RENEW_S, self.me.timeout / 4)

    def per_run_cpus(self) -> int:
        return max(1, self.cpus // self.slots)

    def start(self, claim: L.Claim) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)   # none may reach the child before its handlers
        pid = os.fork()
        if pid == 0:
            code = 1
            for slot in self.running.values():      # its siblings' pidfds are the worker's, not its own
                if slot.pidfd is not None:
                    os.close(slot.pidfd)
            try:
                index = self.trials[claim.run_dir] if self.trials is not None else None
                code = child(claim, self.me, self.per_run_cpus(), old, index, self.slots)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.running[pid] = Slot(claim, pid, now(), time.monotonic(), pidfd=open_pidfd(pid))
        say(f"worker {self.me.worker}: {claim.run_dir.name} started (attempt {claim.lease['attempt']}, "
            f"pid {pid}, log {claim.run_dir / log_name(self.me.worker)})")
        self.write_record()

    def reap(self) -> int:
        """The children that have ended, settled; how many."""
        count = 0
        for pid, slot in list(self.running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del self.running[pid]
                if slot.pidfd is not None:
                    os.close(slot.pidfd)
                self.ended(slot, os.waitstatus_to_exitcode(status))
                count += 1
        return count

    def ended(self, slot: Slot, code: int) -> None:
        seconds = time.monotonic() - slot.t0
        self.busy += seconds
        self.count += 1
        run = slot.claim.run_dir
        if slot.lost:
            words = "stopped: its lease was taken over"
        else:
            words = self.settle(run, code)
            self.leases.release(slot.claim)
        self.record["runs"].append({"run": run.name, "started": slot.started, "ended": now(), "exit": code,
                                    "seconds": round(seconds, 2), "attempt": slot.claim.lease["attempt"]})
        say(f"worker {self.me.worker}: {run.name} {words} ({code_words(code)}) in {seconds:.1f} s")
        self.write_record()

    def settle(self, run: Path, code: int) -> str:
        """What the run's end means; a child that failed without saying so in state.json (killed,
        crashed) fails its run there, so that no worker takes it again."""
        folder = RunFolder(run)
        state = L.run_state(run)
        if code in (0, 143, 130) or state.get("state") in L.FINISHED:
            return state.get("state") or "ended"
        if code == 2:        # a search's run can stop so before its run folder is written (runner/trial.py)
            why = f"stopped on a mistake in its input (exit 2): its log, {log_name(self.me.worker)}, says which"
        else:
            why = (f"ended ({code_words(code)}) without saying why: out of memory, or killed by hand? The workers "
                   f"do not start it again; its log is {log_name(self.me.worker)}")
        state.update(state="failed", updated=now(), error=f"its process in worker {self.me.worker} {why}")
        folder.write_state(state)
        return "failed"

    def tick(self) -> None:
        """Every renew_every seconds: renew each child's lease (a lease taken over kills its child at once: two
        processes must never train one run) and rewrite the record."""
        if time.monotonic() < self.next_tick:
            return
        self.next_tick = time.monotonic() + self.renew_every
        for slot in self.running.values():
            if not slot.lost and not self.leases.renew(slot.claim):
                slot.lost = True
                os.kill(slot.pid, signal.SIGKILL)
                say(f"worker {self.me.worker}: the lease of {slot.claim.run_dir.name} was taken over by "
                    "another worker (this one was judged gone): its process is killed")
        self.write_record()

    def forward(self) -> None:
        say(f"worker {self.me.worker}: {_stop[0]}: stopping {len(self.running)} run(s); each checkpoints")
        for slot in self.running.values():
            try:
                os.kill(slot.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def end(self) -> int:
        code = 0
        if _stop:
            code = 130 if _stop[0] == "SIGINT" else 143
            if _stop[0] == "SIGUSR2" and self.me.job:
                from hypersal.runner.cli import requeue
                self.record["requeued"] = requeue()
        else:
            say(f"worker {self.me.worker}: nothing left to start; {self.count} run(s) ran here")
        self.write_record("ended", exit=code)
        self.write_summary()
        return code

    def write_summary(self) -> None:
        """summary.yaml's per-worker seconds, with this worker's last ones (experiment.py status and
        summary readers see them without reading every record)."""
        from hypersal.experiment import workers
        try:
            workers.write_summary(self.exp_dir)
        except (UserError, OSError) as e:    # the runs are done: a summary it cannot write is not a failure
            warn(f"worker {self.me.worker}: could not write the workers' seconds into summary.yaml ({e})")

    # --- the record: EXP_DIR/workers/<id>.json ----------------------------------------------
    def open_record(self) -> None:
        """A worker started again (its job requeued: the same id) keeps its earlier runs and time."""
        path = self.record_path
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        old = old if isinstance(old, dict) else {}
        me = self.me
        self.record = {"worker": me.worker, "job": me.job, "host": me.host, "pid": me.pid, "slots": self.slots,
                       "started": now(), "updated": now(), "state": "idle",
                       "restarts": int(old.get("restarts", -1)) + 1 if old else 0,
                       "runs": list(old.get("runs") or []), "job_seconds": 0.0, "run_seconds": 0.0,
                       "startup_seconds": 0.0, "idle_seconds": 0.0}
        self._before = {k: _number(old.get(k)) for k in ("job_seconds", "run_seconds", "startup_seconds", "idle_seconds")}
        self.write_record()

    @property
    def record_path(self) -> Path:
        return self.exp_dir / L.WORKERS / f"{self.me.worker}.json"

    def write_record(self, state: str | None = None, **extra) -> None:
        """job_seconds: seconds since the process started (the allocation's, one slot or many);
        run_seconds: seconds of runs (P at once count P times); startup_seconds: from the
        process's start to its first run; idle_seconds: slot-seconds since then that held no run.
        A worker started again (its job requeued) adds this start's to the earlier ones'."""
        clock = time.monotonic()
        running = sum(clock - s.t0 for s in self.running.values())
        ready = self.ready if self.ready is not None else clock
        mine = {"job_seconds": self.age(), "run_seconds": self.busy + running,
                "startup_seconds": self.startup or self.age(),
                "idle_seconds": max(0.0, self.slots * (clock - ready) - self.busy - running)}
        self.record.update({k: round(self._before[k] + v, 2) for k, v in mine.items()}, updated=now(),
                           state=state or ("running" if self.running else "idle"), **extra)
        self.record_path.parent.mkdir(exist_ok=True)
        write_atomic(self.record_path, lambda f: f.write((json.dumps(self.record, indent=1) + "\n").encode()))

    def age(self) -> float:
        """Seconds since the process started (since this object was made where /proc cannot say)."""
        age = process_age()
        return age if age is not None else time.monotonic() - self.born


def _number(value) -> float:
    """A record's seconds, 0 where it holds none (or something else: a record damaged from outside)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def log_name(worker: str) -> str:
    return f"worker-{worker}.out"


def code_words(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


# --- the child: one run, as train.py --config would run it -------------------------------------
def child(claim: L.Claim, me: L.Holder, cpus: int, mask, trial_index: int | None = None, slots: int = 1) -> int:
    """`trial_index`: a search's run, run as its job array's task would run it (train.py --trial).
    With several slots the run also gets its share of the GPU (hypersal/runner/gpu_share.py)."""
    die_with_parent(me.pid)
    run = claim.run_dir
    fd = os.open(run / log_name(me.worker), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(run)                                  # where exp.sh starts train.py
    os.environ["HYPERSAL_CPUS"] = str(cpus)
    if "SLURM_CPUS_PER_TASK" in os.environ:         # read first by train.cpus: the run's share
        os.environ["SLURM_CPUS_PER_TASK"] = str(cpus)
    os.environ.pop("SLURM_RESTART_COUNT", None)    # the worker's restarts, not this run's requeues
    os.environ["HYPERSAL_WORKER"] = me.worker
    os.environ.update(gpu_share.child_env(slots))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signals.reset()
    signals.install()                              # cli.main installs them again: the same handlers
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    print(f"hypersal: worker {me.worker} (job {me.job or 'local'}) on {me.host} at {now()}, "
          f"attempt {claim.lease['attempt']}, pid {os.getpid()}", file=sys.stderr, flush=True)
    from hypersal.runner import cli
    if trial_index is not None:
        return cli.main(["--trial", str(run.parent), "--index", str(trial_index)])
    return cli.main(["--config", str(run / "config.yaml")])


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the worker ends, however it ends (Linux's PR_SET_PDEATHSIG): a
    run never trains on after its holder is gone, when another worker may take it over."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:       # the worker died before the call
        os._exit(1)


# --- the entry point --------------------------------------------------------------------------
def main(exp_dir: Path, slots: int = 1, timeout: float = L.TIMEOUT_S) -> int:
    exp_dir = Path(exp_dir).absolute()
    if slots < 1:
        raise UserError(f"--slots {slots}: a worker runs at least one run at a time", fix="use --slots 1 or more")
    if not timeout > 0:
        raise UserError(f"--lease-timeout {timeout}: must be a positive number of seconds",
                        fix=f"leave it out (the default is {L.TIMEOUT_S:.0f} s)")
    summary = load_summary(exp_dir)
    if summary.get("search") and not search_journal(exp_dir).is_file():   # else every run would fail on it
        from hypersal.search import MISSING_FIX
        raise UserError("the search's study is missing", file=search_journal(exp_dir), fix=MISSING_FIX)
    code = (summary.get("code") or {})
    if code.get("snapshot") and code.get("folder") and Path(code["folder"]).resolve() != CODE:
        warn(f"this worker runs the code in {CODE}, not the sweep's snapshot {code['folder']} "
             f"(start {Path(code['folder']) / 'train.py'} --worker to run what was submitted)")
    runs = [exp_dir / r["dir"] for r in sorted(summary["runs"], key=lambda r: r["index"])]
    holder = L.me(timeout)
    queue = SlurmExecutor().queue if holder.job else None
    trials = {exp_dir / r["dir"]: r["index"] for r in summary["runs"]} if summary.get("search") else None
    return Worker(exp_dir, L.Leases(exp_dir, runs, holder, queue), slots, trials).run()
