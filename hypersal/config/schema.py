"""The trainer schema is `shared/trainer/defaults.yaml`: every key a config may set is there.

A layer (the experiment's `config`, a run's `trainer`, a run folder's `config.yaml`) is
checked against it key by key: unknown keys are errors that list the valid ones; a value must
have the default's type (an int is fine where the default is a float; a default of "auto" also
takes a number); a key whose default is `null` takes null or the type NULL_TYPES gives it (a
list is not a path, nor a workspace); an empty mapping `{}` in the defaults takes any keys
(free-form, e.g. loss weights by name). Sample specs stand for a value
and are checked by the sampling module. Allowed values (registry names, enums) are checked by
hypersal.config.choices.

The training stages (stagelist.TRAINING_STAGES) inherit from `train`: a layer may set any key of
`train` under them, and once every layer is merged, `inherit` fills each stage with the train
values it does not set itself. So `train.optim.lr` set anywhere reaches adapt too, while
`adapt.epochs` (set by the defaults) stays adapt's own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hypersal import tree as T
from hypersal.config import choices, options
from hypersal.errors import UserError, name_of, shorten, suggest
from hypersal.config.stagelist import TRAINING_STAGES
from hypersal.yamlio import line_of

DEFAULTS_FILE = Path(__file__).resolve().parents[2] / "shared" / "trainer" / "defaults.yaml"

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}

# What a key whose default is null takes besides null, by its path from the schema's root (a
# training stage's inherited keys follow train's: choices.rule_path). `object`: anything here,
# because the code that reads the key checks it (and says more than a type could). Every null
# default of shared/trainer/defaults.yaml and of the experiment section has a row
# (tests/test_security.py holds them to it).
NULL_TYPES: dict[tuple, type] = {
    ("data", "images_dir"): str, ("data", "maps_dir"): str, ("data", "fixations_dir"): str,
    ("data", "cache_dir"): str, ("data", "synth", "images_dir"): str,
    ("model", "encoder", "weights"): str, ("model", "encoder", "weights_path"): str,
    ("model", "decoder", "width"): int, ("model", "decoder", "skip"): int,
    ("model", "hypernet", "encoder_from"): int,
    ("train", "device_batch_size"): int,
    ("pretrain_weights", "weights_dir"): str, ("pretrain_one_task", "task"): str, ("adapt", "task"): str,
    ("study", "family"): str, ("study", "test_images"): int, ("test", "images"): int,
    ("run", "images_dir"): str, ("run", "out_dir"): str,
    ("comet", "workspace"): str,
    ("experiment", "defaults"): str, ("experiment", "rerun_of"): str, ("experiment", "code_snapshot"): str,
    ("experiment", "seed"): object, ("experiment", "config"): object,            # spec.load checks them
    ("experiment", "parallelism"): object, ("experiment", "search"): object,
    ("experiment", "workers"): object,
}


def null_type(path: tuple) -> type:
    """What the key at `path`, null by default, takes besides null (object: anything)."""
    path = tuple(path)
    if path in NULL_TYPES:
        return NULL_TYPES[path]
    return NULL_TYPES.get(choices.rule_path(path), object)


def inherit(cfg: dict) -> dict:
    """A merged trainer tree whose training stages hold train's values under their own. Applied
    after every layer is merged and every value drawn (a sampled train value is drawn once and
    shared); applying it again changes nothing."""
    if not isinstance(cfg.get("train"), dict):
        return cfg
    out = dict(cfg)
    for stage in TRAINING_STAGES:
        own = cfg.get(stage)
        if own is None or isinstance(own, dict):
            out[stage] = T.merge(cfg["train"], own or {})
    return out


def trainer_schema(defaults: dict) -> dict:
    """The tree a trainer layer is checked against: the defaults, each training stage offering
    every key of train besides its own."""
    return inherit(defaults)


def check_trainer(layer: Any, schema: dict, *, file=None, prefix: T.KeyPath = (), check_spec=None) -> None:
    """A trainer layer's keys and types (against `trainer_schema(defaults)`), then its values."""
    check(layer, schema, file=file, prefix=prefix, check_spec=check_spec)
    choices.check(layer, file=file, prefix=prefix)
    options.check_ranges(layer, file=file, prefix=prefix)


def _type_ok(default: Any, value: Any, path: tuple = ()) -> bool:
    if default is None:
        kind = null_type(path)
        return value is None or kind is object or _type_ok(kind(), value)
    if value is None and isinstance(default, (str, list, dict)):
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str) or (default == "auto" and isinstance(value, (int, float))
                                          and not isinstance(value, bool))
    return isinstance(value, type(default))


def _expected(default: Any, path: tuple = ()) -> str:
    if default is None:
        return f"{_TYPE_NAMES[null_type(path)]} or null"
    name = _TYPE_NAMES.get(type(default), type(default).__name__)
    return f"{name} or \"auto\"" if default == "auto" else name


def check(layer: Any, defaults: dict, *, file=None, prefix: T.KeyPath = (), check_spec=None) -> None:
    """Raise a UserError for the first key of `layer` the defaults do not know or mistype.

    `prefix` is where the layer sits in its file (e.g. ("runs", 2, "trainer")), for messages.
    `check_spec(spec, **where)` validates sample specs; None means specs are not allowed here.
    """
    _check(layer, defaults, file, prefix, (), layer, check_spec)


def _check(value, default, file, prefix, path, root, check_spec) -> None:
    def where():        # formatted for an error only: a sweep checks ~150,000 nodes
        return dict(file=file, key=T.fmt(prefix + path), line=line_of(root, path))
    if T.is_leaf_mapping(value):
        if check_spec is None:
            raise UserError("sampling is not allowed here", fix="write a plain value", **where())
        check_spec(value, **where())
        return
    if isinstance(default, dict) and not T.is_leaf_mapping(default):
        if not isinstance(value, dict):
            raise UserError(f"expects a mapping (keys {', '.join(map(str, default)) or 'of your choice'}),"
                            f" got {shorten(value)}", fix="indent the keys below it", **where())
        if not default:  # free-form mapping
            return
        for key, sub in value.items():
            if key not in default:
                valid = ", ".join(map(str, default))
                raise UserError(f"unknown key '{name_of(key)}'",
                                fix=f"valid keys here are: {valid}.{suggest(key, default)}",
                                file=file, key=T.fmt(prefix + path + (key,)),
                                line=line_of(root, path + (key,)))
            _check(sub, default[key], file, prefix, path + (key,), root, check_spec)
        return
    if not _type_ok(default, value, path):
        raise UserError(f"expects {_expected(default, path)}, got {shorten(value)}",
                        fix=f"write a value like the default ({default!r})" if default is not None
                        else "write one value of that type, or null (the default)", **where())
