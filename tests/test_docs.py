"""The README and the guides (docs/*.md) as a reader meets them: every code block in them runs
here, or names the test that runs it; every relative link leads to a file; the code map is the
tree as it is.

How each fenced block is tested:
- ```yaml: a whole experiment file (`experiment:` and `runs:`) goes through `experiment.py
  --dry-run` (in process, its folder under tmp_path) and is validated against `experiment.py
  schema`; a trainer fragment (its keys are the defaults' top-level keys) the same way, as the
  trainer of a one-run experiment.
- ```bash / ```console: each cheap command line runs (`--dry-run`, `--help`, `schema`,
  `status` / `collect` of a folder this file writes with a dry run); any other line needs the
  block to be covered.
- ```python: run in a subprocess (short blocks only).
- Covered: an HTML comment on the line before the block, `<!-- tested by tests/test_x.py::test_name
  [, ...] -->`, whose every test exists. A covered block's cheap lines still run here; a block of
  any other kind, or an uncheap line, without one fails.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml

from hypersal import yamlio
from hypersal.config import choices, options, schema
from hypersal.errors import UserError
from hypersal.experiment import cli
from helpers.cli import PYTHON, ROOT, experiment_here

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
TESTED_BY = re.compile(r"^<!--\s*tested by\s+(.+?)\s*-->$")
REF = re.compile(r"^(tests/[\w/]+\.py)::(test_\w+)$")
INTERPRETERS = ("python", "python3", ".venv/bin/python")
PYTHON_BLOCK_MAX_LINES = 20         # longer Python is not "short": it needs a test of its own
# What no document may mention (spelt in pieces, so that this file does not mention them either).
FORBIDDEN = (".." + "/shared/", "DESIGN" + ".md", "STYLE" + ".md")


@dataclass
class Block:
    path: Path
    line: int                       # the opening fence's line, 1-based
    lang: str
    text: str
    tested_by: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            assert not lines[i].lstrip().startswith("```"), f"{path.name}:{i + 1}: an indented fence"
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{path.name}:{i + 1}: a code block that is never closed"
        comment = TESTED_BY.match(lines[i - 1].strip()) if i else None
        refs = [r.strip() for r in comment.group(1).split(",")] if comment else []
        blocks.append(Block(path, i + 1, opened.group(1), "\n".join(lines[i + 1:end]) + "\n", refs))
        i = end + 1
    return blocks


BLOCKS = [b for doc in DOCS for b in read_blocks(doc)]


def covered(block: Block) -> bool:
    return bool(block.tested_by)


def check_refs(block: Block) -> None:
    """Each test a block names exists: the file, and the function in it."""
    for ref in block.tested_by:
        m = REF.match(ref)
        assert m, f"{block.where}: cannot read the test reference {ref!r} (tests/test_x.py::test_name)"
        test_file = ROOT / m.group(1)
        assert test_file.is_file(), f"{block.where}: {m.group(1)} does not exist"
        assert re.search(rf"^def {m.group(2)}\(", test_file.read_text(), re.M), \
            f"{block.where}: {m.group(1)} has no test {m.group(2)}"


# --- running experiment.py in process ------------------------------------------------------------

def experiment_py(argv: list) -> tuple[int, str, str]:
    """experiment.py as a user types it, in this process: (exit status, stdout, stderr)."""
    proc = experiment_here(*argv)
    return proc.returncode, proc.stdout, proc.stderr


def dry_run(exp_file: Path, base: Path, *more: str) -> Path:
    rc, _, err = experiment_py(["--experiment", exp_file, "--dry-run", "--no-snapshot", "--base-dir", base, *more])
    assert rc == 0, err
    return base


@pytest.fixture(scope="module")
def validator():
    rc, out, err = experiment_py(["schema"])
    assert rc == 0, err
    doc = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def shipped_experiment(name: str) -> Path:
    """The shipped experiment file whose experiment.name is `name` (runs/<name> in the docs)."""
    for path in sorted((ROOT / "shared" / "experiment").glob("*.yaml")):
        if (yamlio.load(path).get("experiment") or {}).get("name") == name:
            return path
    raise AssertionError(f"the docs name runs/{name}, but no experiment in shared/experiment is called {name}")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """runs/<name> of the docs: a dry run of the shipped experiment of that name, made once."""
    base, made = tmp_path_factory.mktemp("runs"), {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = dry_run(shipped_experiment(name), base) / name
        return made[name]
    return get


# --- yaml blocks -----------------------------------------------------------------------------------

TRAINER_KEYS = set(yamlio.load(schema.DEFAULTS_FILE))


def as_experiment(block: Block, tmp_path: Path) -> tuple[Path, dict]:
    """The block as an experiment file: itself when it is a whole one, else a one-run experiment
    with the block as its trainer."""
    doc = yamlio.loads(block.text, block.where)
    assert isinstance(doc, dict), f"{block.where}: a yaml block must be a mapping"
    path = tmp_path / "exp.yaml"
    if "experiment" in doc and "runs" in doc:
        path.write_text(block.text)
        return path, yamlio.to_plain(doc)
    unknown = set(doc) - TRAINER_KEYS
    assert not unknown, (f"{block.where}: neither a whole experiment file (experiment: and runs:) nor a "
                         f"trainer fragment (unknown keys {sorted(unknown)}); cover it with a test")
    whole = {"experiment": {"name": "fragment", "base_dir": "runs"}, "runs": [{"trainer": yamlio.to_plain(doc)}]}
    path.write_text(yaml.safe_dump(whole, sort_keys=False))
    return path, whole


def check_yaml(block: Block, tmp_path: Path, validator) -> None:
    exp_file, doc = as_experiment(block, tmp_path)
    assert [e.message for e in validator.iter_errors(doc)] == [], f"{block.where}: not valid against the schema"
    rc, _, err = experiment_py(["--experiment", exp_file, "--dry-run", "--no-snapshot", "--base-dir", tmp_path / "base"])
    assert rc == 0, f"{block.where}: the dry run failed:\n{err}"
    assert list((tmp_path / "base").glob("*/summary.yaml")), f"{block.where}: no sweep was written"


# --- bash and console blocks ------------------------------------------------------------------------

def command_lines(block: Block) -> list[list[str]]:
    """The block's commands as words (continuations joined, comments dropped; in a console
    block only the `$ ` lines)."""
    text = block.text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def program(words: list[str]) -> tuple[str, list[str]]:
    """("experiment" | "train" | "module:<name>" | "other", arguments)."""
    if words[0] in INTERPRETERS and len(words) > 1:
        words = words[1:]
        if words[0] == "-m" and len(words) > 1:
            return f"module:{words[1]}", words[2:]
    if words[0] in ("experiment.py", "train.py"):
        return words[0][:-3], words[1:]
    return "other", words


def cheap(words: list[str]) -> bool:
    """Whether this file runs the line itself (seconds, nothing outside tmp_path)."""
    prog, args = program(words)
    args = redirected(args)[0]
    if any(w in ("&&", "|", ";", "||") for w in args):
        return False
    if prog in ("experiment", "train") or prog.startswith("module:"):
        if "--help" in args or "-h" in args:
            return True
    if prog != "experiment" or not args:
        return False
    if args[0] == "schema":
        return True
    if args[0] in ("status", "collect"):
        return "--watch" not in args
    return args[0] not in cli.COMMANDS and "--dry-run" in args


def redirected(args: list[str]) -> tuple[list[str], str | None]:
    if ">" in args:
        i = args.index(">")
        return args[:i], args[i + 1]
    return args, None


def rewrite(arg: str, folders) -> str:
    """runs/<name>/... in the docs -> the dry-run folder of the shipped experiment <name>."""
    prefix, value = "", arg
    if arg.startswith("--") and "=" in arg:
        prefix, value = arg.split("=", 1)
        prefix += "="
    if value.startswith("runs/"):
        name, _, rest = value[len("runs/"):].partition("/")
        value = str(folders(name) / rest) if rest else str(folders(name))
    return prefix + value


def run_line(words: list[str], where: str, tmp_path: Path, folders) -> None:
    prog, args = program(words)
    args, target = redirected(args)
    if prog == "experiment":
        args = [rewrite(a, folders) for a in args]
        if args[0] not in (*cli.COMMANDS, "schema") and "--help" not in args:
            args = ["--base-dir", str(tmp_path / "base"), *args]
        with contextlib.chdir(ROOT):
            rc, out, err = experiment_py(args)
        assert rc == 0, f"{where}: `{shlex.join(words)}` exited {rc}:\n{err}"
        if args[0] == "schema":
            jsonschema.Draft202012Validator.check_schema(json.loads(out))
        assert out.strip() or err.strip(), f"{where}: `{shlex.join(words)}` said nothing"
        if target:
            (tmp_path / Path(target).name).write_text(out)     # where the reader's file would be
        return
    command = [PYTHON, "train.py", *args] if prog == "train" else [PYTHON, "-m", prog.split(":", 1)[1], *args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{where}: `{shlex.join(words)}` exited {proc.returncode}:\n{proc.stderr}"
    assert "usage:" in proc.stdout, f"{where}: `{shlex.join(words)}` printed no usage"


# --- the blocks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_every_code_block_runs_or_names_its_test(block, tmp_path, validator, folders):
    check_refs(block)
    if block.lang in ("bash", "console"):
        lines = command_lines(block)
        assert lines, f"{block.where}: a shell block without a command"
        for words in lines:
            if cheap(words):
                run_line(words, block.where, tmp_path, folders)
            else:
                assert covered(block), (f"{block.where}: `{shlex.join(words)}` is not run here; put "
                                        "<!-- tested by tests/test_x.py::test_name --> on the line before the block")
    elif covered(block):
        return
    elif block.lang == "yaml":
        check_yaml(block, tmp_path, validator)
    elif block.lang == "python":
        assert block.text.count("\n") <= PYTHON_BLOCK_MAX_LINES, f"{block.where}: too long to run here; cover it"
        proc = subprocess.run([PYTHON, "-c", block.text], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{block.where}: the Python block failed:\n{proc.stderr}"
    else:
        pytest.fail(f"{block.where}: a ```{block.lang or '(no language)'} block that nothing tests; use yaml, "
                    "bash, console or python, or name its test")


def test_the_docs_have_blocks_of_every_kind_this_file_runs():
    """So that a parser gone wrong (no block found) cannot pass."""
    kinds = {b.lang for b in BLOCKS}
    assert {"yaml", "bash", "python"} <= kinds
    assert len(BLOCKS) >= 30
    assert sum(cheap(w) for b in BLOCKS if b.lang == "bash" for w in command_lines(b)) >= 8


# --- the worked examples of docs/options.md -------------------------------------------------------

def blocks_of(test_name: str) -> list[Block]:
    found = [b for b in BLOCKS if any(r.endswith(f"::{test_name}") for r in b.tested_by)]
    assert found, f"no block names {test_name}"
    return found


def declaration(blocks: list[Block], kind: str) -> tuple[str, dict]:
    """The `NAME = Declared(kind, {...})` a block shows: (NAME, its entries)."""
    for b in blocks:
        if b.lang != "python" or "Declared(" not in b.text:
            continue
        tree = ast.parse(b.text)
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                    and getattr(node.value.func, "id", "") == "Declared" \
                    and ast.literal_eval(node.value.args[0]) == kind:
                return node.targets[0].id, ast.literal_eval(node.value.args[1])
    raise AssertionError(f"no block declares a {kind}")


def function(blocks: list[Block], name: str, module) -> object:
    """The function a block defines, as if written in `module` (its imports at hand)."""
    for b in blocks:
        if b.lang == "python" and f"def {name}(" in b.text:
            namespace = dict(vars(module))
            exec(compile(b.text, b.where, "exec"), namespace)
            return namespace[name]
    raise AssertionError(f"no block defines {name}")


def usage(blocks: list[Block]) -> Block:
    return next(b for b in blocks if b.lang == "yaml")


def new_entry(shown: dict, registry) -> tuple[str, str]:
    """The doc shows the registry as it is in the code, plus exactly one line."""
    added = {k: v for k, v in shown.items() if registry.entries.get(k) != v}
    assert {k: v for k, v in shown.items() if k not in added} == registry.entries, "the doc's table is not the code's"
    assert len(added) == 1, f"the doc adds {len(added)} lines, not one: {added}"
    return next(iter(added.items()))


def worked_example(test_name: str, kind: str, table: str, module, tmp_path):
    """A guide's worked example: its blocks, the one entry it adds to choices.<table> (which must
    be the registry `module` uses), that entry's dotted path (in `module`), and the experiment
    file of its usage block: (blocks, name, path, experiment file, its document)."""
    blocks = blocks_of(test_name)
    name, shown = declaration(blocks, kind)
    assert name == table and getattr(choices, table) is getattr(module, table)
    new, where = new_entry(shown, getattr(choices, table))
    assert where == f"{module.__name__}:{new}"
    exp_file, doc = as_experiment(usage(blocks), tmp_path)
    return blocks, new, where, exp_file, doc


def test_adding_an_optimizer_is_one_declaration_plus_one_function(tmp_path, monkeypatch, validator):
    from hypersal.train import optim
    blocks, new, where, exp_file, doc = worked_example(
        "test_adding_an_optimizer_is_one_declaration_plus_one_function", "optimizer", "OPTIMIZERS", optim, tmp_path)
    assert not validator.is_valid(doc)                          # not yet declared: the schema refuses it

    monkeypatch.setattr(optim, new, function(blocks, new, optim), raising=False)
    monkeypatch.setitem(choices.OPTIMIZERS.entries, new, where)
    w = torch.nn.Parameter(torch.ones(3))
    opt = optim.make_optimizer([w], {"name": new, "lr": 0.01, "weight_decay": 0.0, "momentum": 0.9})
    assert isinstance(opt, torch.optim.Optimizer)
    for _ in range(3):
        (w ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
    assert (w < 1).all()
    rc, schema_text, err = experiment_py(["schema"])
    assert rc == 0 and jsonschema.Draft202012Validator(json.loads(schema_text)).is_valid(doc), err
    dry_run(exp_file, tmp_path / "base")
    config = yamlio.load(next((tmp_path / "base").glob("*/run_000/config.yaml")))
    assert config["train"]["optim"]["name"] == config["adapt"]["optim"]["name"] == new
    with pytest.raises(UserError, match=f"unknown optimizer '{new}s'.*Did you mean '{new}'"):
        choices.check_value(("train_catchup", "optim", "name"), f"{new}s")


def test_adding_a_loss_is_one_declaration_plus_one_function(tmp_path, monkeypatch, validator):
    from hypersal.train import losses
    blocks, new, where, exp_file, doc = worked_example(
        "test_adding_a_loss_is_one_declaration_plus_one_function", "loss", "LOSSES", losses, tmp_path)
    rc, _, err = experiment_py(["--experiment", exp_file, "--dry-run", "--no-snapshot", "--base-dir", tmp_path / "no"])
    assert rc == 2 and f"unknown loss '{new}'" in err          # not yet declared: refused

    monkeypatch.setattr(losses, new, function(blocks, new, losses), raising=False)
    monkeypatch.setitem(choices.LOSSES.entries, new, where)
    target = torch.rand(2, 1, 8, 8)
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    expression = yamlio.loads(usage(blocks).text)["train"]["loss"]
    loss = losses.weighted(expression)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    good = torch.logit(target.clamp(0.02, 0.98))
    assert losses.LOSSES.get(new)(good, target) < losses.LOSSES.get(new)(-good, target)
    dry_run(exp_file, tmp_path / "base")
    with pytest.raises(UserError, match=f"unknown loss '{new}s'.*Did you mean '{new}'"):
        choices.check_value(("train", "loss"), f"bce + 0.5 * {new}s")


def test_the_rule_shown_is_the_codes():
    (block,) = blocks_of("test_the_rule_shown_is_the_codes")
    assert block.text.strip() in inspect.getsource(options)


# --- the README's commands and what CI runs ---------------------------------------------------------

def readme_block(test_name: str, containing: str) -> Block:
    return next(b for b in blocks_of(test_name) if b.path.name == "README.md" and containing in b.text)


def test_the_install_and_test_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    (test_command,) = command_lines(readme_block("test_the_install_and_test_commands_are_the_ones_ci_runs", "pytest"))
    assert shlex.join(test_command) in ci.splitlines()          # .ci/run runs exactly the README's command
    (install,) = command_lines(readme_block("test_the_install_and_test_commands_are_the_ones_ci_runs", "pip"))
    steps = " ".join(install).split(" && ")
    assert len(steps) == 3
    apt = shlex.split(steps[0])
    packages = {w for w in apt[apt.index("install") + 1:] if not w.startswith("-")}
    ci_apt = next(shlex.split(line) for line in ci.splitlines() if "apt-get install" in line)
    assert packages == {w for w in ci_apt[ci_apt.index("install") + 1:] if not w.startswith("-") and w[0].isalpha()}
    assert shlex.split(steps[1])[:3] == ["python3", "-m", "venv"] and "python3 -m venv" in ci
    assert shlex.split(steps[2])[-2:] == ["-e", ".[dev]"] and 'install -q -e ".[dev]"' in ci


def test_the_fast_loop_deselects_a_declared_marker():
    (fast,) = command_lines(readme_block("test_the_fast_loop_deselects_a_declared_marker", "not slow"))
    (full,) = command_lines(readme_block("test_the_install_and_test_commands_are_the_ones_ci_runs", "pytest"))
    assert fast[:len(full)] == full and fast[len(full)] == "-m"   # the suite, with a marker expression
    names = set(re.findall(r"\w+", fast[len(full) + 1])) - {"not", "and", "or"}
    declared = {m.split(":")[0].strip() for m in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]}
    assert names and names <= declared, f"markers {sorted(names - declared)} are not declared in pyproject.toml"


# --- links, words, the code map, the tables -----------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if re.match(r"^#{1,6} ", line)}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_relative_link_leads_to_a_file(doc):
    links = LINK.findall(doc.read_text())
    assert links or doc.name != "README.md"
    for link in links:
        if re.match(r"^[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        assert path.exists(), f"{doc.name}: the link {link} leads to nothing"
        assert ROOT in path.parents or path == ROOT, f"{doc.name}: the link {link} leaves the repository"
        if anchor:
            assert path.suffix == ".md" and anchor in anchors(path), f"{doc.name}: {link}: no such heading"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_no_document_mentions_what_it_must_not(doc):
    text = doc.read_text()
    assert [w for w in FORBIDDEN if w in text] == []


def test_the_readme_is_short_and_links_every_guide():
    readme = (ROOT / "README.md").read_text()
    assert readme.count("\n") <= 200
    for guide in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{guide.name})" in readme, f"the README does not link docs/{guide.name}"


CODE = re.compile(r"`([^`]+)`")
REPO_PATH = re.compile(r"(?<![\w./~<$-])((?:hypersal|shared|templates|scripts|bench|tests|results|docs|\.ci)/[\w./-]*)(::test_\w+)?")
DOTTED = re.compile(r"(?<![\w.])(hypersal(?:\.\w+)+)")


def prose(doc: Path) -> str:
    """The document without its fenced blocks (whose fences would pair with inline backticks)."""
    out, inside = [], False
    for line in doc.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            out.append(line)
    return "\n".join(out)


def importable(dotted: str) -> bool:
    """`hypersal.a.b.c`: the longest importable module, then attributes for the rest."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[n:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_path_and_module_a_document_names_exists(doc):
    """What the docs name in `code` is there: files and folders of the repository (placeholders
    such as <task> or * aside), tests with their function, and hypersal.* modules and names."""
    missing = []
    for span in CODE.findall(prose(doc)):
        for path, test in REPO_PATH.findall(span):
            if re.search(r"[<>*{}]", span[span.index(path):].split()[0]):
                continue
            path = path.rstrip(".")
            if not (ROOT / path).exists():
                missing.append(path)
            elif test and not re.search(rf"^def {test[2:]}\(", (ROOT / path).read_text(), re.M):
                missing.append(path + test)
        missing += [d for d in DOTTED.findall(span) if not d.endswith(".json") and not importable(d)]
    assert missing == []


def map_rows() -> list[tuple[list[str], list[str]]]:
    """The README's code map: (paths of the first column, names of the second), row by row."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A map of the code"):]
    section = section[:section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and "`" in cells[0]:
            rows.append((re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", cells[1])))
    return rows


def test_the_code_map_is_the_tree():
    rows = map_rows()
    assert len(rows) >= 10
    for paths, names in rows:
        for p in paths:
            assert (ROOT / p).exists(), f"the code map names {p}, which does not exist"
        if len(paths) == 1 and paths[0].endswith("/"):
            for name in names:
                there = [ROOT / paths[0] / name, ROOT / paths[0] / f"{name}.py"]
                assert any(t.exists() for t in there), f"the code map names {name} in {paths[0]}, which has none"
    listed = {p for paths, _ in rows for p in paths}
    for package in sorted((ROOT / "hypersal").glob("*/__init__.py")):
        assert f"hypersal/{package.parent.name}/" in listed, f"the code map leaves out hypersal/{package.parent.name}/"


def test_every_malformed_case_is_in_the_table():
    from test_malformed import CASES
    text = (ROOT / "docs" / "experiment-file.md").read_text()
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
    assert [c[0] for c in CASES if c[0] not in rows] == []
