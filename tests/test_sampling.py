import math

import pytest

from hypersal.errors import UserError
from hypersal import sampling as S


def draw(spec, n=200, seed=0):
    """n draws of one spec (one per run entry, so each has its own generator)."""
    return [S.expand({"x": spec}, seed, entry, 1)[0][0]["x"] for entry in range(n)]


@pytest.mark.parametrize("spec, check", [
    ({"sample": "list", "from": ["a", 2, 3.5]}, lambda v: v in ("a", 2, 3.5)),
    ({"sample": "range", "from": [0, 10, 3]}, lambda v: v in (0, 3, 6, 9) and isinstance(v, int)),
    ({"sample": "range", "from": [0.1, 0.5, 0.1]}, lambda v: v in (0.1, 0.2, 0.3, 0.4)),
    ({"sample": "uniform", "from": [2, 3]}, lambda v: 2 <= v < 3 and type(v) is float),
    ({"sample": "loguniform", "from": [1e-4, 1e-2]}, lambda v: 1e-4 <= v <= 1e-2 and type(v) is float),
    ({"sample": "normal", "from": [5, 0.1]}, lambda v: 4 < v < 6 and type(v) is float),
    ({"sample": "randint", "from": [1, 3]}, lambda v: v in (1, 2, 3) and type(v) is int),
])
def test_every_sampler_draws_plain_values_in_its_range(spec, check):
    values = draw(spec)
    assert all(check(v) for v in values), values[:10]
    assert len(set(values)) > 1


def test_range_with_float_steps_has_no_float_noise():
    assert set(draw({"sample": "range", "from": [0.1, 0.5, 0.1]})) == {0.1, 0.2, 0.3, 0.4}


def test_randint_includes_both_ends():
    assert set(draw({"sample": "randint", "from": [1, 3]}, n=300)) == {1, 2, 3}


def test_loguniform_is_uniform_in_log_space():
    values = draw({"sample": "loguniform", "from": [1e-4, 1e-0]}, n=2000)
    low_decade = sum(v < 1e-3 for v in values) / len(values)
    assert 0.2 < low_decade < 0.3   # a quarter of the 4 decades


def test_grid_is_the_cartesian_product_times_repeat():
    tree = {"a": {"sample": "grid", "from": [1, 2]}, "b": {"sample": "grid", "from": ["x", "y", "z"]},
            "c": {"sample": "uniform", "from": [0, 1]}}
    runs = S.expand(tree, seed=0, entry=0, repeat=2)
    assert len(runs) == 12
    combos = [(r["a"], r["b"]) for r, _ in runs]
    assert sorted(set(combos)) == [(a, b) for a in (1, 2) for b in "xyz"]
    assert all(combos.count(c) == 2 for c in set(combos))
    assert len({r["c"] for r, _ in runs}) == 12     # every run draws its own c
    assert runs[0][1] == {"a": 1, "b": "x", "c": runs[0][0]["c"]}


def test_same_seed_same_draws_other_seed_other_draws():
    tree = {"lr": {"sample": "uniform", "from": [0, 1]}}
    assert S.expand(tree, 7, 0, 3) == S.expand(tree, 7, 0, 3)
    assert [r["lr"] for r, _ in S.expand(tree, 7, 0, 3)] != [r["lr"] for r, _ in S.expand(tree, 8, 0, 3)]


def test_adding_a_key_does_not_change_the_other_draws():
    one = {"lr": {"sample": "uniform", "from": [0, 1]}}
    two = {**one, "wd": {"sample": "uniform", "from": [0, 1]}}
    assert [r["lr"] for r, _ in S.expand(one, 3, 0, 4)] == [r["lr"] for r, _ in S.expand(two, 3, 0, 4)]


def test_nested_specs_are_replaced_and_the_rest_kept():
    tree = {"train": {"optim": {"lr": {"sample": "list", "from": [0.1]}, "name": "adam"}}}
    resolved, sampled = S.expand(tree, 0, 0, 1)[0]
    assert resolved == {"train": {"optim": {"lr": 0.1, "name": "adam"}}}
    assert sampled == {"train.optim.lr": 0.1}


@pytest.mark.parametrize("spec, message", [
    ({"sample": "lst", "from": [1]}, "unknown sampler 'lst'. Fix: use one of: grid, list, loguniform, "
                                     "normal, randint, range, uniform. Did you mean 'list'?"),
    ({"sample": "list"}, "sample: list has no `from`"),
    ({"sample": "list", "from": []}, "expects `from:` a non-empty list"),
    ({"sample": "uniform", "from": [2, 1]}, "needs low < high"),
    ({"sample": "uniform", "from": [1, 2, 3]}, "expects `from: [low, high]`, 2 numbers"),
    ({"sample": "loguniform", "from": [0, 1]}, "needs 0 < low"),
    ({"sample": "normal", "from": [0, -1]}, "needs std >= 0"),
    ({"sample": "randint", "from": [1.5, 3]}, "2 integers"),
    ({"sample": "range", "from": [0, 1, 0]}, "needs a step other than 0"),
    ({"sample": "range", "from": [0, 1, -1]}, "gives no value"),
    ({"sample": "list", "from": [1], "size": 3}, "takes only the keys `sample` and `from`, not 'size'"),
])
def test_bad_specs_are_errors_naming_where(spec, message):
    with pytest.raises(UserError) as e:
        S.check_spec(spec, file="e.yaml", line=4, key="runs[0].trainer.lr")
    text = str(e.value)
    assert text.startswith("e.yaml:4: runs[0].trainer.lr: ")
    assert message in text


def test_uniform_draws_cover_the_interval():
    values = draw({"sample": "uniform", "from": [0, 1]}, n=1000)
    assert math.isclose(sum(values) / len(values), 0.5, abs_tol=0.05)
