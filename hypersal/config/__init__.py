"""The trainer config as an attribute tree (addict), strict: a key that is not there is an
error, never a silent empty Dict (addict's default, which turns typos into wrong results)."""
from __future__ import annotations

from pathlib import Path

import addict

from hypersal import tree as T, yamlio
from hypersal.config import overrides, schema
from hypersal.errors import UserError


class Config(addict.Dict):
    def __missing__(self, key):
        raise KeyError(f"the trainer config has no key '{key}'")

    def __getattr__(self, item):
        try:
            return self.__getitem__(item)
        except KeyError as e:
            raise AttributeError(str(e)) from None

    def to_dict(self) -> dict:
        return addict.Dict.to_dict(self)


def load(path: Path | str, defaults_file: Path | str = schema.DEFAULTS_FILE, cli: list[str] = ()) -> Config:
    """A trainer config file, checked against the defaults (keys, types and allowed values, as
    experiment.py checked it) and completed by them (a config written by hand may set only what it
    changes); paths resolved against its folder. `cli`: KEY.PATH=VALUE overrides from the command
    line, one more layer. The training stages then inherit from `train` (schema.inherit)."""
    path = Path(path).absolute()
    layer = yamlio.load(path) or {}
    if not isinstance(layer, dict):
        raise UserError("a trainer config must be a mapping", file=path, fix="write keys like `seed: 0`")
    defaults = yamlio.load(defaults_file)
    tree_schema = schema.trainer_schema(defaults)
    schema.check_trainer(layer, tree_schema, file=path)
    layer = T.expand_paths(layer, path.parent, file=path)
    cli_layer = overrides.parse(cli)
    schema.check_trainer(cli_layer, tree_schema, file=overrides.PLACE)
    cli_layer = T.expand_paths(cli_layer, Path.cwd(), file=overrides.PLACE)
    merged = T.merge(defaults, layer)
    return Config(schema.inherit(T.merge(merged, _follow_train(schema.inherit(merged), cli_layer))))


def _follow_train(cfg: dict, cli_layer: dict) -> dict:
    """A config.yaml written by experiment.py holds every stage resolved, so an inherited value
    looks set. A command-line `train.K` therefore also goes to each training stage whose K equals
    train's K in the file (it was inherited), unless the command line sets that stage's K too."""
    out = T.merge({}, cli_layer)
    for path, value in T.leaves(cli_layer.get("train", {})):
        if not path:
            continue
        for stage in schema.TRAINING_STAGES:
            try:
                inherited = T.get(cfg[stage], path) == T.get(cfg["train"], path)
            except (KeyError, TypeError):
                continue
            try:
                T.get(cli_layer.get(stage, {}), path)
            except (KeyError, TypeError):
                if inherited:
                    T.set_(out.setdefault(stage, {}), path, value)
    return out
