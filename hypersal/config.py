"""The trainer config as an attribute tree (addict), strict: a key that is not there is an
error, never a silent empty Dict (addict's default, which turns typos into wrong results)."""
from __future__ import annotations

from pathlib import Path

import addict

from hypersal import schema, tree as T, yamlio
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


def load(path: Path | str, defaults_file: Path | str = schema.DEFAULTS_FILE) -> Config:
    """A trainer config file, checked against the defaults and completed by them (a config
    written by hand may set only what it changes); paths resolved against its folder."""
    path = Path(path).absolute()
    layer = yamlio.load(path) or {}
    if not isinstance(layer, dict):
        raise UserError("a trainer config must be a mapping", file=path, fix="write keys like `seed: 0`")
    defaults = yamlio.load(defaults_file)
    schema.check(layer, defaults, file=path)
    layer = T.expand_paths(layer, path.parent, file=path)
    return Config(T.merge(defaults, layer))
