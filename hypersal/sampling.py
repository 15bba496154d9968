"""Sampled values: `{sample: NAME, from: ARGS}` anywhere in a run's trainer or sbatch tree.

| sample     | from                | draws                                              |
|------------|---------------------|----------------------------------------------------|
| list       | [a, b, ...]         | one of the items                                   |
| range      | [start, stop, step] | one of start, start+step, ... (< stop)             |
| uniform    | [low, high]         | a float in [low, high)                             |
| loguniform | [low, high]         | a float whose log is uniform (0 < low < high)      |
| normal     | [mean, std]         | a float from N(mean, std^2)                        |
| randint    | [low, high]         | an int in [low, high], both ends included          |
| grid       | [a, b, ...]         | every item in turn: the run entry becomes one run  |
|            |                     | per combination of its grid keys (cartesian)       |

Every draw comes from its own generator seeded by (experiment seed, run entry, grid
combination, repetition, key path): the same seed gives the same sweep, and adding a key or
a run entry does not change the draws of the others. Values are plain Python numbers and
strings, never numpy scalars.
"""
from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hypersal import tree as T
from hypersal.errors import UserError, shorten, unknown_name


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(n: int, what: str) -> Callable[[Any], str | None]:
    def check(args: Any) -> str | None:
        if not isinstance(args, list) or len(args) != n or not all(_is_number(a) for a in args):
            return f"expects `from: [{what}]`, {n} numbers"
        return None
    return check


def _check_items(args: Any) -> str | None:
    if not isinstance(args, list) or not args:
        return "expects `from:` a non-empty list of values"
    return None


def _check_low_high(args: Any) -> str | None:
    return _numbers(2, "low, high")(args) or (None if args[0] < args[1] else "needs low < high")


def _check_loguniform(args: Any) -> str | None:
    return _check_low_high(args) or (None if args[0] > 0 else "needs 0 < low (it draws a log)")


def _check_normal(args: Any) -> str | None:
    return _numbers(2, "mean, std")(args) or (None if args[1] >= 0 else "needs std >= 0")


def _check_randint(args: Any) -> str | None:
    if not isinstance(args, list) or len(args) != 2 or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in args):
        return "expects `from: [low, high]`, 2 integers"
    return None if args[0] <= args[1] else "needs low <= high"


def range_values(args: list) -> list:
    start, stop, step = args
    count = math.ceil((stop - start) / step - 1e-9)
    as_int = all(isinstance(a, int) for a in args)
    # round() keeps 0.1 + 2 * 0.1 from being written as 0.30000000000000004.
    return [start + k * step if as_int else round(start + k * step, 12) for k in range(count)]


def _check_range(args: Any) -> str | None:
    problem = _numbers(3, "start, stop, step")(args)
    if problem:
        return problem
    if args[2] == 0:
        return "needs a step other than 0"
    return None if range_values(args) else "gives no value (check the sign of step)"


@dataclass(frozen=True)
class Sampler:
    check: Callable[[Any], str | None]           # a problem with `from`, or None
    draw: Callable[[np.random.Generator, Any], Any]


def _pick(rng: np.random.Generator, items: list) -> Any:
    return items[int(rng.integers(len(items)))]


SAMPLERS: dict[str, Sampler] = {
    "list": Sampler(_check_items, _pick),
    "range": Sampler(_check_range, lambda rng, a: _pick(rng, range_values(a))),
    "uniform": Sampler(_check_low_high, lambda rng, a: float(rng.uniform(a[0], a[1]))),
    "loguniform": Sampler(_check_loguniform, lambda rng, a: float(
        math.exp(rng.uniform(math.log(a[0]), math.log(a[1]))))),
    "normal": Sampler(_check_normal, lambda rng, a: float(rng.normal(a[0], a[1]))),
    "randint": Sampler(_check_randint, lambda rng, a: int(rng.integers(a[0], a[1] + 1))),
    "grid": Sampler(_check_items, lambda rng, a: None),  # expanded by expand(), never drawn
}


def check_spec(spec: dict, **where) -> None:
    """Raise a UserError naming `where` if a `{sample: ..., from: ...}` spec is malformed."""
    extra = sorted(set(spec) - {"sample", "from"})
    if extra:
        raise UserError(f"a sample spec takes only the keys `sample` and `from`, not "
                        f"{', '.join(repr(e) for e in extra)}",
                        fix="write {sample: NAME, from: [...]}; see the sampler table in docs/experiment-file.md", **where)
    name = spec["sample"]
    if name not in SAMPLERS:
        raise unknown_name("sampler", name, SAMPLERS, **where)
    if "from" not in spec:
        raise UserError(f"sample: {name} has no `from`", fix="add from: [...] with its arguments",
                        **where)
    problem = SAMPLERS[name].check(spec["from"])
    if problem:
        raise UserError(f"sample: {name} {problem}, got {shorten(spec['from'])}",
                        fix="see the sampler table in docs/experiment-file.md", **where)


def specs(tree: dict) -> list[tuple[T.KeyPath, dict]]:
    return [(p, v) for p, v in T.leaves(tree) if T.is_leaf_mapping(v)]


def _rng(seed: int, entry: int, combo: int, rep: int, path: T.KeyPath) -> np.random.Generator:
    return np.random.default_rng([seed, entry, combo, rep, zlib.crc32(T.fmt(path).encode())])


def expand(tree: dict, seed: int, entry: int, repeat: int) -> list[tuple[dict, dict]]:
    """All runs of one run entry: a list of (tree with every spec replaced, {key: value drawn}).

    One run per combination of the grid keys (sorted by key path) times `repeat`.
    """
    found = specs(tree)
    grid = sorted(((p, s) for p, s in found if s["sample"] == "grid"), key=lambda ps: T.fmt(ps[0]))
    drawn = [(p, s) for p, s in found if s["sample"] != "grid"]
    runs = []
    combos = itertools.product(*[s["from"] for _, s in grid]) if grid else [()]
    for combo_index, combo in enumerate(combos):
        for rep in range(repeat):
            values = {p: v for (p, _), v in zip(grid, combo)}
            for path, spec in drawn:
                values[path] = SAMPLERS[spec["sample"]].draw(
                    _rng(seed, entry, combo_index, rep, path), spec["from"])
            resolved = T.map_leaves(tree, lambda p, v: values.get(p, v) if T.is_leaf_mapping(v) else v)
            runs.append((resolved, {T.fmt(p): values[p] for p in sorted(values, key=T.fmt)}))
    return runs
