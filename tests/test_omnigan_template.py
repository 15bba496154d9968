"""sbatch templates written for omnigan's experiment.py render and run unchanged: {{cpu}}, {{gpu}},
{{mem}}, {{time}}, {{output_path}}, {{main_partition}} and {{config}} are filled (omnigan.TEMPLATE),
omnigan's train.py flags render empty and are each noted once, and bad templates still fail
with exit status 2 naming what is wrong."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from hypersal.experiment import omnigan
from hypersal.experiment.render import Template, quote

from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment, experiment_here, write
from helpers.slurm import jobs_of, wait_for

# omnigan's template, as its users wrote them; {python_line} is theirs too (cd + python train.py).
TEMPLATE = """\
#!/bin/bash
#SBATCH --cpus-per-task={{{{cpu}}}}
#SBATCH --gres={{{{gpu}}}}
#SBATCH --mem={{{{mem}}}}
#SBATCH --time={{{{time}}}}
#SBATCH -o {{{{output_path}}}}
{{{{main_partition}}}}

{{{{zip_command}}}}
{{{{cp_unzip_command}}}}

echo "Starting job"
{cd}
{python} train.py {{{{config}}}} {{{{no_comet}}}} {{{{exp_desc}}}} {{{{dev_mode}}}} {{{{note}}}} {{{{tags}}}}

echo 'done'
"""
FLAGS = {"zip_command": 9, "cp_unzip_command": 10, "no_comet": 14, "exp_desc": 14, "dev_mode": 14,
         "note": 14, "tags": 14}

# An experiment file in omnigan's spellings (sbatch.cpu, .gpu, .duration, no_comet, tags as a string).
EXPERIMENT = """\
experiment:
  name: omni
  base_dir: out
  exp_desc: an omnigan template
  config: trainer.yaml
  no_comet: true
sbatch:
  cpu: 1
  mem: 1G
  duration: "0:20:00"
  gpu: 0
runs:
  - comet: {{note: first, tags: "a b, c"}}
    sbatch: {{partition: {partition}}}
  - sbatch: {{gpu: "rtx8000:2"}}
"""


def setup(folder: Path, partition: str = "long", cd: str = "cd /network/home/user/omnigan",
          python: str = "python", experiment_text: str = EXPERIMENT, template: str = TEMPLATE) -> tuple:
    trainer = {**TINY_TRAINER, "train": {**TINY_TRAINER["train"], "epochs": 1, "steps_per_epoch": 2}}
    write(folder / "trainer.yaml", yaml.safe_dump(trainer))
    exp = write(folder / "exp.yaml", experiment_text.format(partition=partition))
    tpl = folder / "template.sh"
    tpl.write_text(template.format(cd=cd, python=python))
    return exp, tpl


def test_an_omnigan_template_renders_every_variable_and_notes_each_flag_once(tmp_path):
    exp, tpl = setup(tmp_path)
    proc = experiment(f"--experiment={exp}", f"--template={tpl}", "--dry-run", cwd=tmp_path, check_rc=0)
    out = tmp_path / "out" / "omni"
    scripts = [(out / f"run_00{i}" / "exp.sh").read_text() for i in range(2)]
    for i, (script, gres, partition) in enumerate(zip(scripts, ["gpu:0", "gpu:rtx8000:2"], ["#SBATCH -p long", ""])):
        run = out / f"run_00{i}"
        lines = script.splitlines()
        assert lines[:7] == ["#!/bin/bash", "#SBATCH --cpus-per-task=1", f"#SBATCH --gres={gres}",
                             "#SBATCH --mem=1G", "#SBATCH --time=0:20:00", f"#SBATCH -o {run}/slurm-%j.out",
                             partition]
        assert lines[8:10] == ["", ""]                                  # the data copies: nothing
        assert lines[13].rstrip() == f"python train.py --config={run / 'config.yaml'}"
        assert "''" not in script and "{{" not in script
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert sum(line.startswith("#SBATCH -p") for line in scripts[1].splitlines()) == 0
    # each flag noted once, at its line, saying what hypersal does instead
    for name, line in FLAGS.items():
        assert proc.stderr.count(f"{{{{ {name} }}}} is omnigan's, rendered empty") == 1, name
        assert f"{tpl}:{line}: {{{{ {name} }}}} is omnigan's, rendered empty: " in proc.stderr
    assert "{{ note }} is omnigan's, rendered empty: hypersal carries it in each run's run.yaml (comet.note" in proc.stderr
    assert proc.stderr.count("the jobs run the train.py of the folder it changes to, not the code snapshot") == 1
    # ... and it is there: the run folder carries what the flags carried
    run_yaml = yaml.safe_load((out / "run_000" / "run.yaml").read_text())
    assert run_yaml["comet"] == {"note": "first", "tags": ["a b", "c"]} and run_yaml["exp_desc"] == "an omnigan template"
    assert yaml.safe_load((out / "run_000" / "config.yaml").read_text())["comet"]["mode"] == "disabled"
    assert "dry run: nothing submitted" in proc.stderr


def job(base: str, array: str | None = None) -> dict:
    return dict(name="omni-003", dir=f"{base}/run_003", output=f"{base}/run_003/slurm-%j.out", array=array,
                python="/usr/bin/python3", args=["/code/train.py", "--config", f"{base}/run_003/config.yaml"])


def test_output_path_as_a_folder_array_mode_and_hostile_paths(tmp_path):
    """omnigan's own templates wrote `-o {{output_path}}/slurm-%j.out`: there it is the run folder.
    In a job array {{config}} names the sweep. Paths full of shell syntax stay one quoted word, and
    a template that runs `{{ job.python }} {{ job.args }}` (the frozen code) is not warned about."""
    tpl = write(tmp_path / "t.sh", """
        #!/bin/bash
        #SBATCH --cpus-per-task={{cpu}}
        #SBATCH -o {{output_path}}/slurm-%j.out
        {{main_partition}}
        {{ job.python }} {{ job.args }} # {{config}}
        """)
    template = Template(tpl)
    base = str(tmp_path / "we ird $(touch x) 'q'")
    text = template.render({"cpus": 2}, job(base))
    assert f"#SBATCH -o {quote(base + '/run_003')}/slurm-%j.out" in text
    assert f"# {quote('--config=' + base + '/run_003/config.yaml')}" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    array = job("/scratch/omni", array="0-9")
    array.update(dir="/scratch/omni", output="/scratch/omni/run_%3a/slurm-%A_%a.out",
                 args=["/code/train.py", "--sweep", "/scratch/omni"])
    text = template.render({"cpus": 2, "partition": "a,b"}, array)
    assert "#SBATCH -o /scratch/omni/run_%3a/slurm-%j.out\n#SBATCH -p a,b\n" in text
    assert text.endswith("# --sweep=/scratch/omni\n")


def test_an_omnigan_template_and_experiment_file_run_on_slurm(slurm, tmp_path):
    """As a user writes it: the template changes to this checkout and runs its train.py with a
    fixed python line; `gpu: 0` renders `--gres=gpu:0`, which Slurm takes."""
    exp, tpl = setup(tmp_path, partition="debug", cd=f"cd {quote(str(ROOT))}", python=quote(PYTHON),
                     experiment_text=EXPERIMENT.replace('gpu: "rtx8000:2"', "mem: 900M"))
    proc = experiment(f"--experiment={exp}", f"--template={tpl}", cwd=tmp_path, check_rc=0)
    out = tmp_path / "out" / "omni"
    jobs = jobs_of(out)
    assert len(jobs) == 2, proc.stderr
    wait_for(list(jobs.values()), timeout=300)
    for i in range(2):
        run = out / f"run_00{i}"
        logs = list(run.glob("slurm-*.out"))
        log = logs[0].read_text() if logs else "no log"
        assert json.loads((run / "state.json").read_text())["state"] == "done", log
        assert "#SBATCH --gres=gpu:0" in (run / "exp.sh").read_text()
        assert "Starting job" in log and log.rstrip().endswith("done")
        assert f"code: {ROOT}" in log           # the template's train.py, as the note said
    assert "#SBATCH -p debug" in (out / "run_000" / "exp.sh").read_text()
    status = experiment("status", str(out), check_rc=0).stdout
    assert "2 runs: 2 done" in status


GOOD = EXPERIMENT    # setup() fills in the partition
# (id, experiment file, template, extra arguments, the message's expected fragment)
BAD = [
    ("unknown-placeholder", GOOD, TEMPLATE.replace("{{{{main_partition}}}}", "{{{{main_partiton}}}}"), [],
     "template.sh:7: the template reads {{ main_partiton }}, which is none of the variables of omnigan's templates. "
     "Fix: did you mean {{ main_partition }}? hypersal fills in config, cp_unzip_command, cpu, dev_mode, "
     "exp_desc, gpu, main_partition, mem, no_comet, note, output_path, tags, time, zip_command."),
    ("filled-name-set", GOOD.replace("  mem: 1G\n", "  mem: 1G\n  config: mine.yaml\n"), TEMPLATE, [],
     "exp.yaml: sbatch.config: 'config' is one of omnigan's template variables, which hypersal fills in "
     "(`--config=<run>/config.yaml` (`--sweep=<experiment>` in array mode)), so it cannot be an sbatch value. "
     "Fix: remove it."),
    ("flag-set", GOOD.replace("  mem: 1G\n", "  mem: 1G\n  note: mine\n"), TEMPLATE, [],
     "exp.yaml: sbatch.note: 'note' is one of omnigan's template variables, which hypersal renders empty, so it "
     "cannot be an sbatch value. Fix: remove it: hypersal carries it in each run's run.yaml (comet.note, logged "
     "to Comet)."),
    ("cpu-on-the-command-line", GOOD, TEMPLATE, ["sbatch.cpu=2"],
     "command line: sbatch.cpu: 'cpu' is one of omnigan's template variables, which hypersal fills in "
     "(sbatch.cpus), so it cannot be an sbatch value. Fix: set sbatch.cpus instead."),
    ("cpu-missing", GOOD.replace("  cpu: 1\n", ""), TEMPLATE, [],
     "exp.yaml: runs[0].sbatch: the template template.sh reads {{ cpu }}, which is sbatch.cpus (omnigan: "
     "sbatch.cpu), and it is not set. Fix: set sbatch.cpus in the experiment file."),
    ("duration-missing", GOOD.replace('  duration: "0:20:00"\n', ""), TEMPLATE, [],
     "reads {{ time }}, which is sbatch.time (omnigan: sbatch.duration), and it is not set"),
    ("value-not-used", GOOD, TEMPLATE, ["sbatch.qos=high"],
     "command line: sbatch.qos: the template template.sh does not use the sbatch value 'qos', so it would be "
     "ignored. Fix: use one of: cpus, gpu_type, gpus, mem, partition, time."),
    ("hostile-partition", GOOD, TEMPLATE, ['sbatch.partition="long\\n#SBATCH --uid=0"'],
     "runs[0].sbatch.partition: the partition 'long\\n#SBATCH --uid=0' cannot go into {{ main_partition }}'s "
     "#SBATCH -p line"),
]


@pytest.mark.parametrize("case_id, text, template, extra, expected", BAD, ids=[c[0] for c in BAD])
def test_a_bad_omnigan_template_fails_clearly(tmp_path, case_id, text, template, extra, expected):
    exp, tpl = setup(tmp_path, experiment_text=text, template=template)
    proc = experiment_here(f"--experiment={exp}", f"--template={tpl}", "--dry-run", *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("hypersal: error: ")]
    assert len(error) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected in error[0]
    assert not (tmp_path / "out" / "omni").exists()


def test_the_docs_table_is_the_declared_one():
    """docs/experiment-file.md shows omnigan.TEMPLATE as template_table() writes it: docs and checks agree."""
    assert omnigan.template_table() in (ROOT / "docs" / "experiment-file.md").read_text()
    assert set(omnigan.TEMPLATE) == {"cpu", "gpu", "mem", "time", "output_path", "main_partition", "config",
                                     *FLAGS}
