"""Hostile or careless input that would leak or blow up: the code snapshot (links out of the
checkout, secrets, data), URLs from Comet settings, YAML alias bombs and mistyped values. Every
refusal exits 2, names the setting, file or key, prints no traceback and writes nothing. Each test
is a row of RELIABILITY.md."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment, write

FAKE = "Zq" + "9fake7secret4value"     # split: a literal assignment would read as a secret
QUIET_TRAINER = {**TINY_TRAINER, "comet": {"mode": "disabled", "workspace": "ws"}}


def exp_file(folder: Path, runs: int = 1, trainer: dict | None = None) -> Path:
    doc = {"experiment": {"name": "sec", "base_dir": "out", "seed": 0, "config": QUIET_TRAINER},
           "sbatch": {"cpus": 1, "mem": "1G"}, "runs": [{"trainer": trainer or {}} for _ in range(runs)]}
    return write(folder / "exp.yaml", yaml.safe_dump(doc, sort_keys=False))


def clean_env(home: Path, **extra: str) -> dict:
    """No Comet setting of the developer's: HOME elsewhere, no COMET_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMET_")}
    return {**env, "HOME": str(home), **extra}


def sweep(args: list[str], cwd: Path, env: dict, script: Path = ROOT / "experiment.py") -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def refused(proc: subprocess.CompletedProcess, nothing_in: Path, *said: str) -> None:
    """Exit 2, one paragraph naming what it must, no traceback, nothing written."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("hypersal: error: "), proc.stderr   # after any warning
    for text in said:
        assert text in proc.stderr, (text, proc.stderr)
    assert not nothing_in.exists(), sorted(p.name for p in nothing_in.iterdir())


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def checkout_with_hazards(tmp_path: Path) -> Path:
    """A git checkout of this repository's files, then what a careless one holds: committed
    secrets (.env, .comet.config, forced past .gitignore), links out of it (to a file holding a
    fake secret, to /proc/self/environ), untracked keys and token files, and links inside it."""
    repo = tmp_path / "checkout"
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file() and not (ROOT / name).is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    git(repo, "init", "-q")
    write(repo / ".env", f"COMET_API_KEY={FAKE}\n")
    write(repo / ".comet.config", f"[comet]\napi_key = {FAKE}\n")
    os.symlink("/proc/self/environ", repo / "shared" / "environ")
    git(repo, "add", "-A")
    git(repo, "add", "-f", ".env", ".comet.config")
    git(repo, "commit", "-qm", "copy")
    outside = write(tmp_path / "elsewhere" / "secret.txt", f"{FAKE}\n")
    os.symlink(outside, repo / "outside_link")                               # untracked, not ignored
    block = "PRIVATE " + "KEY-----"                 # split, as FAKE
    write(repo / "key.pem", f"-----BEGIN {block}\n{FAKE}\n-----END {block}\n")
    write(repo / "notes.txt", f"remember\nMY_SERVICE_TOKEN={FAKE}\n")
    os.symlink("trainer/defaults.yaml", repo / "shared" / "alias.yaml")     # inside: stays a link
    os.symlink(repo / "train.py", repo / "train_link.py")                   # inside, absolute: made relative
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nan uncommitted change\n")
    write(repo / ".env", f"COMET_API_KEY={FAKE}\nOTHER_TOKEN={FAKE}2\n")  # a tracked secret's change
    return repo


def test_the_snapshot_leaves_out_links_out_secrets_and_data_and_refuses_its_limit(tmp_path):
    repo = checkout_with_hazards(tmp_path)
    with open(repo / "huge.bin", "wb") as f:                 # over MAX_FILE_BYTES (20 MB): data
        f.truncate(21 * 2**20)
    write(repo / "data.csv", "x\n" * (3 * 2**19))           # 3 MB: counts against the limit
    exp, env = exp_file(tmp_path, runs=2), clean_env(tmp_path / "home", COMET_API_KEY=FAKE)

    started = time.monotonic()
    over = sweep([f"--experiment={exp}", "--dry-run", "experiment.snapshot_max_mb=2"], tmp_path, env,
                 script=repo / "experiment.py")
    refused(over, tmp_path / "out", "would be ", "more than experiment.snapshot_max_mb (2 MB)",
            "its largest files: data.csv (3.0 MB)", "add them to .gitignore", "--no-snapshot")

    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "\n/data.csv\n")   # the fix it gives
    done = sweep([f"--experiment={exp}", "--dry-run"], tmp_path, env, script=repo / "experiment.py")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    code = next((tmp_path / "out" / ".code").iterdir())
    copied = {str(p.relative_to(code)) for p in code.rglob("*")}
    for name in (".env", ".comet.config", "key.pem", "notes.txt", "outside_link", "shared/environ",
                 "huge.bin", "data.csv"):
        assert name not in copied, name
    for path in code.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert FAKE.encode() not in path.read_bytes(), path
    assert (code / "train.py").read_bytes() == (repo / "train.py").read_bytes()
    assert os.readlink(code / "shared" / "alias.yaml") == "trainer/defaults.yaml"
    assert os.readlink(code / "train_link.py") == "train.py"
    assert (code / "shared" / "alias.yaml").resolve().parent == (code / "shared" / "trainer").resolve()
    said = done.stderr
    assert f"left out 2 link(s) that lead out of the checkout (not followed): outside_link -> " \
           f"{tmp_path / 'elsewhere' / 'secret.txt'}, shared/environ -> /proc/self/environ" in said, said
    assert "left out 4 file(s) that look like secrets (never copied: the base folder may be shared): " \
           ".comet.config, .env, key.pem, notes.txt (holds MY_SERVICE_TOKEN=...)" in said, said
    assert "left out 1 file(s) over 20 MB (data, not code): huge.bin" in said, said

    # The diff: once for the sweep, named by every run's hash.txt, without the secret's change.
    exp_dir = tmp_path / "out" / "sec"
    patch = (exp_dir / "diff.patch").read_text()
    assert "+an uncommitted change" in patch and "# untracked: notes.txt" in patch
    assert FAKE not in patch and "# left out: the changes of .env (it looks like a secret)" in patch
    for run_dir in (exp_dir / "run_000", exp_dir / "run_001"):
        assert not (run_dir / "diff.patch").exists()
        assert (run_dir / "hash.txt").read_text().splitlines()[1:] == ["dirty", f"code {code}",
                                                                      f"diff {exp_dir / 'diff.patch'}"]
    for path in exp_dir.rglob("*"):
        assert not path.is_file() or FAKE.encode() not in path.read_bytes(), path


def test_the_diff_leaves_out_the_changes_of_a_secret_file(tmp_path):
    from hypersal.experiment import repro
    repo = tmp_path / "code"
    write(repo / "a.py", "x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    write(repo / ".comet.config", f"[comet]\napi_key = {FAKE}\n")
    git(repo, "add", "-f", ".comet.config")
    write(repo / "a.py", "x = 2\n")
    state = repro.git_state(repo)
    assert state.dirty and "+x = 2" in state.diff and FAKE not in state.diff
    assert "# left out: the changes of .comet.config" in state.diff


BAD_URLS = ["javascript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>", "file:///etc/passwd",
            "https://comet.example.org/\nclientlib", "//comet.example.org/clientlib/"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_comet_url_that_is_not_http_is_refused_from_the_environment(tmp_path, url):
    proc = sweep([f"--experiment={exp_file(tmp_path)}", "--dry-run"], tmp_path,
                 clean_env(tmp_path / "home", COMET_URL_OVERRIDE=url))
    refused(proc, tmp_path / "out", "the environment: COMET_URL_OVERRIDE: expects an http:// or https:// address")


@pytest.mark.parametrize("where", ["here", "home"])
@pytest.mark.parametrize("url", BAD_URLS[:3])
def test_a_comet_url_that_is_not_http_is_refused_from_a_comet_config(tmp_path, url, where):
    home = tmp_path / "home"
    config = write((tmp_path if where == "here" else home) / ".comet.config", f"[comet]\nurl_override = {url}\n")
    proc = sweep([f"--experiment={exp_file(tmp_path)}", "--dry-run"], tmp_path, clean_env(home))
    refused(proc, tmp_path / "out", f"{config}: [comet] url_override: expects an http:// or https:// address")


class _Links(HTMLParser):
    """Every href and src of a page's tags (script bodies are text to this parser)."""
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [(tag, name, value) for name, value in attrs if name in ("href", "src", "action")]


def test_http_urls_are_written_and_the_page_links_only_http_files_and_fragments(tmp_path):
    env = clean_env(tmp_path / "home", COMET_URL_OVERRIDE="http://comet.example.org:8080/clientlib/")
    proc = sweep([f"--experiment={exp_file(tmp_path, runs=2)}", "--dry-run", "--no-snapshot"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    exp_dir = tmp_path / "out" / "sec"
    url = (exp_dir / "run_001" / "comet_url.txt").read_text()
    assert url.startswith("http://comet.example.org:8080/ws/hypersal/"), url
    (exp_dir / "run_000" / "comet_url.txt").write_text("javascript:alert(1)\n")   # written by hand, or before
    page = sweep(["report", str(exp_dir)], tmp_path, env)
    assert page.returncode == 0, page.stderr
    parser = _Links()
    parser.feed((exp_dir / "report.html").read_text())
    assert ("a", "href", url.strip()) in parser.links and ("a", "href", "run_000/") in parser.links
    for tag, name, value in parser.links:
        assert urlsplit(value).scheme in ("", "http", "https", "file"), (tag, name, value)
    assert "javascript:" not in "".join(v for _, _, v in parser.links)


def bomb(levels: int) -> str:
    """Nested aliases, nine of each: a few hundred bytes that stand for 9**(levels+1) strings."""
    items = ['&a0 [' + ", ".join(["lol"] * 9) + "]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


def test_an_alias_bomb_on_the_command_line_is_refused_at_once(tmp_path):
    exp = exp_file(tmp_path)
    for key in ("trainer.comet.workspace", "sbatch.partition", "trainer.notes"):
        started = time.monotonic()
        proc = experiment(f"--experiment={exp}", "--dry-run", f"{key}={bomb(8)}", cwd=tmp_path)
        assert time.monotonic() - started < 10
        assert len(proc.stderr) < 2000, len(proc.stderr)
        refused(proc, tmp_path / "out", f"command line: {key}: cannot read the value of", "an alias bomb?")


def test_an_alias_bomb_in_an_experiment_file_is_refused_at_once(tmp_path):
    exp = write(tmp_path / "exp.yaml", f"""
        experiment: {{name: sec, base_dir: out, seed: 0}}
        runs:
          - trainer:
              comet:
                workspace: {bomb(8)}
        """)
    started = time.monotonic()
    proc = experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path)
    assert time.monotonic() - started < 10 and len(proc.stderr) < 2000
    refused(proc, tmp_path / "out", f"{exp}:5: runs[0].trainer.comet.workspace: its aliases (*name) expand to",
            "an alias bomb?")


def test_a_value_that_holds_itself_or_nests_too_deep_is_refused():
    from hypersal import yamlio
    from hypersal.errors import UserError
    with pytest.raises(UserError, match="f.yaml:1: an alias refers to the value that holds it"):
        yamlio.loads("a: &a [1, *a]\n", "f.yaml")
    with pytest.raises(UserError, match="f.yaml: the YAML is nested too deeply"):
        yamlio.loads("[" * 5000 + "]" * 5000, "f.yaml")
    merged = yamlio.loads("base: &b {lr: 1}\nrun: {<<: *b, epochs: 2}\nmore: [*b, *b]\n")
    assert merged["run"] == {"lr": 1, "epochs": 2} and merged["more"] == [{"lr": 1}] * 2   # aliases still work


def test_a_list_is_not_a_string_where_a_null_default_takes_one(tmp_path):
    exp = exp_file(tmp_path)
    proc = experiment(f"--experiment={exp}", "--dry-run", "trainer.comet.workspace=[a, b]", cwd=tmp_path)
    refused(proc, tmp_path / "out", "command line: trainer.comet.workspace: expects a string or null, got ['a', 'b']")
    proc = experiment(f"--experiment={exp}", "--dry-run", f"trainer.comet.workspace={bomb(3)}", cwd=tmp_path)
    refused(proc, tmp_path / "out", "expects a string or null, got [['lol', 'lol'")
    assert len(proc.stderr) < 400, proc.stderr
    in_file = exp_file(tmp_path, trainer={"adapt": {"task": ["x"]}})
    proc = experiment(f"--experiment={in_file}", "--dry-run", cwd=tmp_path)
    refused(proc, tmp_path / "out", "runs[0].trainer.adapt.task: expects a string or null, got ['x']")


def test_every_null_default_declares_its_type():
    from hypersal import tree as T, yamlio
    from hypersal.config import schema
    from hypersal.experiment.spec import EXPERIMENT_SCHEMA
    nulls = [p for p, v in T.leaves(yamlio.load(schema.DEFAULTS_FILE)) if v is None]
    nulls += [("experiment", k) for k, v in EXPERIMENT_SCHEMA["experiment"].items() if v is None]
    assert nulls and [p for p in nulls if p not in schema.NULL_TYPES] == []
    assert schema.null_type(("adapt", "device_batch_size")) is int          # inherited from train


def test_messages_quote_a_short_prefix_of_any_value():
    from hypersal.errors import shorten
    huge = ["lol"] * 9
    for _ in range(8):
        huge = [huge] * 9                         # 9**9 strings, shared: its repr would be gigabytes
    started = time.monotonic()
    text = shorten(huge)
    assert time.monotonic() - started < 0.1
    assert text.startswith("[[[[[[[[['lol', 'lol', ") and text.endswith("...") and len(text) == 60
    for small in (1, "abc", {"a": [1, (2,)], "b": None}, (1,), [], 2.5):
        assert shorten(small) == repr(small)
