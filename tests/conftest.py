"""Shared fixtures: an isolated cache, the demo sweep and the local Slurm cluster. The helpers the
tests import live in tests/helpers/ (the CLIs, Slurm, the browser, Comet archives, benchmark copies)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from helpers.cli import ROOT, experiment
from helpers.slurm import LOCAL_SLURM_CONF, queue_is_free, slurm_ready

# One torch thread in the test processes too (read when torch is first imported, which the test
# modules do after this file): two test processes with two threads each on 2 cores made the
# fast loop slower in two processes (118 s) than in one (109 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def isolated_env(tmp_path_factory):
    """Caches in a temporary folder, no Comet key from the developer's machine, one CPU thread per
    training (HYPERSAL_CPUS; a Slurm job's own allocation still wins): the tests' models are tiny,
    and two trainings at once with two threads each on the 2-core CI machine run ~1.5x slower.
    The cache is one for both xdist processes (their base folders' parent): the same generated
    datasets are built once, under the cache's own locks, not once a process."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "hypersal-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("hypersal-cache")
    old = dict(os.environ)
    os.environ["HYPERSAL_CACHE"] = str(cache)
    for key in [k for k in os.environ if k.startswith("COMET_")]:
        del os.environ[key]
    os.environ["COMET_DISABLE_AUTO_LOGGING"] = "1"
    os.environ["HYPERSAL_CPUS"] = "1"
    yield cache
    os.environ.clear()
    os.environ.update(old)


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def signals_left_as_found(request):
    """A test that runs a command in this process (cli.main) may install its signal handlers or
    block signals: left so, they swallow a later test's Ctrl-C in the same xdist process. Put
    back, and the test that left them fails, named. (A module or session fixture's own changes
    are not seen: they are made before the first look.)"""
    def now():
        return [signal.getsignal(s) for s in SIGNALS], signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handlers, mask = now()
    yield
    if now() != (handlers, mask):
        for sig, handler in zip(SIGNALS, handlers):
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        pytest.fail(f"{request.node.nodeid} changed this process's signal handlers or mask and left them "
                    "changed (put back now): restore them in the test", pytrace=False)


@pytest.fixture(scope="session")
def demo(slurm, tmp_path_factory):
    """The real demo sweep (shared/experiment/demo.yaml) on the local Slurm cluster, submitted
    once for the session and followed by `status --watch 2` from its submission until it ends by
    itself: (its folder, what watch printed, seconds it took). test_report and test_runs read it."""
    import time
    base = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    proc = experiment(f"--experiment={ROOT / 'shared' / 'experiment' / 'demo.yaml'}", "--base-dir", str(base))
    assert proc.returncode == 0, proc.stderr
    exp = base / "demo"
    watch = experiment("status", str(exp), "--watch", "2", timeout=600)
    assert watch.returncode == 0, watch.stderr
    return exp, watch.stdout, time.monotonic() - started


@pytest.fixture(scope="session")
def slurm():
    """The local Slurm cluster. Skips (with the reason) where none runs or its queue is taken,
    unless HYPERSAL_REQUIRE_SLURM=1 (CI), where that is a failure."""
    conf = Path(LOCAL_SLURM_CONF)
    if "SLURM_CONF" not in os.environ and conf.exists():
        os.environ["SLURM_CONF"] = str(conf)
    ok, why = slurm_ready()
    if not ok:
        why += "; start one with: scripts/local-slurm.sh start"
    else:
        ok, why = queue_is_free()
    if not ok:
        message = f"no usable Slurm cluster: {why}"
        if os.environ.get("HYPERSAL_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return os.environ.get("SLURM_CONF")


# The tiers. `pytest -m "not slow"` is the developers' fast loop (README: under 2 minutes on 2
# cores): no Slurm, no browser, no training of more than a few steps. The full suite (what CI
# and the README's test command run) is every test. Slow: whatever uses the Slurm cluster or the
# demo sweep, the modules that train end to end, and the few long tests elsewhere (each measured
# over ~4 s on the 2-core machine, 2026-12-01).
SLOW_MODULES = {"test_pipeline", "test_preemption", "test_distributed", "test_benchmarks", "test_fewshot_study",
                "test_search", "test_runs", "test_limits", "test_submitted", "test_report", "test_faults",
                "test_train_cli", "test_damaged"}
SLOW_TESTS = {"test_compiled_model_equals_eager_and_never_recompiles_across_tasks",
              "test_an_omnigan_template_and_experiment_file_run_on_slurm",
              "test_train_py_stops_with_the_missing_map_message", "test_comet_url_uses_the_settings_comet_ml_reads",
              "test_rerun_from_exp_i_reproduces_config_byte_for_byte",
              "test_a_large_sweep_is_written_by_several_processes_completely",
              "test_the_snapshot_leaves_out_links_out_secrets_and_data_and_refuses_its_limit",
              # test_workers: the workers end to end (its lease tests stay in the fast loop)
              "test_four_workers_run_every_run_of_a_sweep_exactly_once",
              "test_the_worker_s_imports_start_no_thread_and_touch_no_cuda",
              "test_a_run_in_a_worker_is_the_run_train_py_runs_alone",
              "test_a_killed_worker_s_run_is_taken_over_and_resumed_as_the_same_run",
              "test_a_frozen_worker_s_run_is_taken_over_and_its_copy_killed_when_it_wakes",
              "test_a_stop_signal_stops_a_worker_s_runs_cleanly_and_a_new_worker_finishes_them",
              "test_a_failing_run_fails_once_and_the_worker_goes_on"}
SLOW_FIXTURES = {"slurm", "demo"}


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject.toml): the whole suite in two test processes per core, the fast loop
    in one. Most slow tests wait on processes they start (trainings, Slurm jobs, workers'
    leases): in one process per core the whole suite left a core idle a quarter of the time
    (2-core machine, 2026-12-02: 641 s in 2 processes, 600 s in 3, 569 s in 4). The fast loop's
    tests run in the test process itself: 48 s in 2 processes, 63 s in 4."""
    cores = len(os.sched_getaffinity(0))
    return cores if "not slow" in (config.getoption("markexpr") or "") else 2 * cores


# The test processes (pyproject.toml: `-n auto --dist loadgroup`, pytest-xdist): the tests on the
# one Slurm cluster go to one process, one after another (a test restarts the cluster, others
# count its jobs), while the rest runs beside them; most Slurm tests wait on jobs, not the CPU.
def uses_slurm(item) -> bool:
    return bool(item.get_closest_marker("slurm") or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        slurm = uses_slurm(item)
        if module in SLOW_MODULES or item.originalname in SLOW_TESTS or slurm:
            item.add_marker(pytest.mark.slow)
        if slurm:
            item.add_marker(pytest.mark.xdist_group("slurm"))
    # The slow tests first, the fast ones last (a stable sort: files keep their order within
    # each). xdist hands the Slurm group (the most tests) to one process first, then single
    # tests to whichever process is free, in this order: ending on tests of a fraction of a
    # second, the two processes finish together rather than one waiting on the other's last
    # 30-second test (it did: 33 s apart, 2026-12-01).
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
