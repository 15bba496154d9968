"""The package's layering, read from its imports (every `import`, lazy ones too): no loop
between folders, and the package root's modules import no folder but the configuration.

    login node:   experiment/  (plan, write, submit, status, the sweep page)   search/
    compute node: runner/ (train.py) > stages/ > train/ (the engine) > models/ data/ evaluation/ study/
    both:         config/ (declarations and checks) > the root modules (errors, tree, yamlio, ...)
"""
from __future__ import annotations

import ast

from helpers.cli import ROOT

PACKAGE = ROOT / "hypersal"


def unit(module: str) -> str:
    """hypersal.train.fit -> hypersal.train (a folder); hypersal.tree -> hypersal.tree."""
    return ".".join(module.split(".")[:2])


def imports() -> dict[str, dict[str, str]]:
    """{unit: {unit it imports: where (file:line)}}."""
    edges: dict[str, dict[str, str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hypersal":
                targets = [f"hypersal.{a.name}" for a in node.names] if node.module == "hypersal" else [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "hypersal"]
            else:
                continue
            for target in targets:
                if unit(target) != unit(module):
                    edges.setdefault(unit(module), {}).setdefault(unit(target), f"{path.relative_to(ROOT)}:{node.lineno}")
    return edges


def test_no_import_loop_between_folders():
    edges = imports()

    def path_to(start, goal, seen=()):
        for nxt in edges.get(start, {}):
            if nxt == goal:
                return [start, goal]
            if nxt not in seen:
                rest = path_to(nxt, goal, seen + (start,))
                if rest:
                    return [start] + rest
        return None

    for a in sorted(edges):
        loop = path_to(a, a)
        assert loop is None, "import loop: " + " -> ".join(
            f"{x} ({edges[x][y]})" for x, y in zip(loop, loop[1:]))


def is_folder(u: str) -> bool:
    return (PACKAGE / u.split(".")[1]).is_dir()


def test_the_package_roots_modules_use_only_the_root_and_the_configuration():
    for source, targets in imports().items():
        if is_folder(source):
            continue
        allowed = {"hypersal.config", "hypersal.evaluation"} if source == "hypersal.metrics" else {"hypersal.config"}
        bad = {t: where for t, where in targets.items() if is_folder(t) and t not in allowed}
        assert not bad, f"{source} imports {bad}"


def test_the_folders_are_what_the_readme_maps():
    readme = (ROOT / "README.md").read_text()
    for folder in sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert f"{folder}/" in readme, f"README's map of the code does not name hypersal/{folder}/"
