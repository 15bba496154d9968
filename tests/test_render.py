"""Rendering sbatch scripts: golden files, and hostile values that must stay inert."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from hypersal.experiment.render import Template, quote

from helpers.cli import ROOT, experiment, write

GOLDEN = Path(__file__).parent / "golden"
HOSTILE = [
    "plain",
    "with space",
    "$(touch {marker})",
    "`touch {marker}`",
    "a'; touch {marker}; echo '",
    '"; touch {marker}; echo "',
    "line one\ntouch {marker}",
    "tab\there\rand\x07bell",
    "ünïcødé ✓ 😀",
    "$HOME ~ * ? [a] {{b}} \\ ; & | < > #",
    "",
]


def job(base: str, array: str | None = None) -> dict:
    return dict(name="demo-003", dir=f"{base}/run_003", output=f"{base}/run_003/slurm-%j.out", array=array,
                python="/usr/bin/python3", args=["/code/train.py", "--config", f"{base}/run_003/config.yaml"])


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/<name>; a missing golden file is written and the test fails
    (delete the file to accept a deliberate change, then look at the diff)."""
    path = GOLDEN / name
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        pytest.fail(f"wrote the golden file {path}: check it and commit it")
    assert text == path.read_text(), f"{name} differs from its golden file (delete it if the change is meant)"


def test_default_template_golden():
    t = Template(ROOT / "templates" / "sbatch.sh")
    text = t.render({"cpus": 8, "mem": "32G", "gpus": 1, "time": "04:00:00", "partition": "gpu",
                     "account": "lab", "modules": ["cuda/12.1", "python/3.11"], "conda_env": "sal",
                     "env": {"OMP_NUM_THREADS": 8}}, job("/scratch/runs/demo"))
    check_golden("exp.sh", text)


def test_default_template_golden_array_minimal():
    t = Template(ROOT / "templates" / "sbatch.sh")
    j = job("/scratch/runs/demo", array="0-9%4")
    j.update(name="demo", dir="/scratch/runs/demo", output="/scratch/runs/demo/run_%3a/slurm-%A_%a.out",
             args=["/code/train.py", "--sweep", "/scratch/runs/demo"])
    check_golden("array.sh", t.render({}, j))


@pytest.mark.parametrize("value", HOSTILE)
def test_quote_roundtrips_through_bash_and_runs_nothing(tmp_path, value):
    marker = tmp_path / "pwned"
    value = value.format(marker=marker)
    out = tmp_path / "out.bin"
    script = f"printf '%s' {quote(value)} > {quote(str(out))}\n"
    subprocess.run(["bash", "-c", script], check=True, cwd=tmp_path)
    assert out.read_bytes() == value.encode()
    assert not marker.exists()


def test_quote_keeps_control_characters_on_one_line():
    assert "\n" not in quote("a\nb") and quote("a\nb") == "$'a\\nb'"
    assert quote(["a b", "c"]) == "'a b' c" and quote(True) == "true" and quote(None) == "''"


def test_every_template_value_is_quoted_even_in_sbatch_lines(tmp_path):
    marker = tmp_path / "pwned"
    t = Template(ROOT / "templates" / "sbatch.sh")
    values = {k: f"x\n$(touch {marker})\ny" for k in ("mem", "time", "partition", "account", "qos", "signal")}
    text = t.render(values, job(str(tmp_path / "a b")))
    for line in text.splitlines():
        assert "$(touch" not in line or "'" in line      # only inside quotes
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    sbatch_lines = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert len(sbatch_lines) == 11                          # no directive broke into two lines


def test_hostile_paths_and_values_stay_inert_when_the_script_runs(tmp_path):
    """A sweep under a base_dir full of shell syntax, with hostile template values: the rendered
    exp.sh passes `bash -n`, and run with a recorder in place of python it passes every path
    and value through byte for byte and executes nothing."""
    marker = tmp_path / "pwned"
    base = tmp_path / f"we ird $(touch {marker}) 'q' \"dq\" `x` ü\nnewline"
    recorder = write(tmp_path / "rec.sh", f"""
        #!/bin/bash
        printf '%s\\0' "$@" > {quote(str(tmp_path / 'argv.bin'))}
        printf '%s' "$HOSTILE" > {quote(str(tmp_path / 'env.bin'))}
        """)
    os.chmod(recorder, 0o755)
    hostile = f"a'; touch {marker}; echo '\n$(touch {marker}) `touch {marker}`"
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "experiment": {"name": "hostile", "base_dir": str(base)},
        "sbatch": {"python": str(recorder), "requeue": False, "env": {"HOSTILE": hostile},
                   "partition": f"p\n$(touch {marker})"},
        "runs": [{"trainer": {"notes": f"$(touch {marker})"}, "comet": {"note": hostile}}],
    }))
    proc = experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = base / "hostile" / "run_000"
    script = run_dir / "exp.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    subprocess.run(["bash", str(script)], check=True, cwd=tmp_path, capture_output=True)
    argv = (tmp_path / "argv.bin").read_bytes().split(b"\0")[:-1]
    code = next((base / ".code").iterdir())                      # the hostile base_dir holds the snapshot too
    assert argv == [str(code / "train.py").encode(), b"--config", str(run_dir / "config.yaml").encode()]
    assert (tmp_path / "env.bin").read_bytes() == hostile.encode()
    assert not marker.exists()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["notes"] == f"$(touch {marker})"
    assert yaml.safe_load((run_dir / "run.yaml").read_text())["comet"]["note"] == hostile


def test_default_template_golden_multi_node():
    """Several tasks: srun starts one process per GPU, and the warning goes to them (no B:)."""
    t = Template(ROOT / "templates" / "sbatch.sh")
    check_golden("multinode.sh", t.render({"nodes": 2, "gpus": 4, "cpus": 8, "mem": "200G"},
                                          job("/scratch/runs/big")))
