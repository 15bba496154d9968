"""JSON Schemas of the experiment file and of a trainer config, derived from the declarations
(shared/trainer/defaults.yaml for keys, types and defaults; hypersal.config.choices for names;
hypersal.config.options for ranges; schema.NULL_TYPES for null defaults), so an editor completes keys
and underlines bad values while the file is typed:

    python experiment.py schema > hypersal.schema.json      # the experiment file
    python experiment.py schema --trainer > trainer.schema.json    # a trainer config (config.yaml)

then, at the top of an experiment file, `# yaml-language-server: $schema=hypersal.schema.json`
(VS Code's YAML extension, and any editor using the YAML language server). What a schema cannot
say (rules between options, a task the data lacks) experiment.py still says on the login node.
"""
from __future__ import annotations

import json
from typing import Any

from hypersal import yamlio
from hypersal.config import choices, options, schema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def sample_spec() -> dict:
    """`{sample: ..., from: [...]}`: any trainer value may be drawn (the sampling module checks the rest)."""
    from hypersal.sampling import SAMPLERS
    return {"type": "object", "required": ["sample", "from"], "additionalProperties": False,
            "properties": {"sample": {"enum": sorted(SAMPLERS)}, "from": {"type": "array"}}}


def _range(path: tuple) -> dict:
    r = options.range_of(path)
    if r is None:
        return {}
    out = {k: v for k, v in (("minimum", r.ge), ("exclusiveMinimum", r.gt), ("maximum", r.le),
                             ("exclusiveMaximum", r.lt)) if v is not None}
    return out


def _names(path: tuple) -> dict:
    rule = tuple(path) if tuple(path) in choices.ONE_OF else choices.rule_path(path)
    if rule in choices.ONE_OF:
        return {"enum": list(choices.ONE_OF[rule][1])}
    if rule in choices.EACH_OF:
        return {"items": {"enum": list(choices.EACH_OF[rule][1])}}
    return {}


def _leaf(default: Any, path: tuple) -> dict:
    if default is None:
        kind = schema.null_type(path)
        out: dict = {} if kind is object else {"type": [_JSON_TYPES[kind], "null"]}
    elif default == "auto":
        out = {"type": ["string", "number"]}
    else:
        out = {"type": "number" if isinstance(default, float) else _JSON_TYPES[type(default)]}
        out["default"] = default
    out.update(_range(path))
    names = _names(path)
    if "enum" in names:             # the names say the type (and null, where null is one of them)
        out.pop("type", None)
    out.update(names)
    return out


def _node(default: Any, path: tuple, sampled: bool) -> dict:
    if isinstance(default, dict):
        if not default:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": False,
                "properties": {str(k): _node(v, path + (k,), sampled) for k, v in default.items()}}
    leaf = _leaf(default, path)
    return {"anyOf": [leaf, {"$ref": "#/$defs/sample"}]} if sampled else leaf


def trainer(defaults: dict | None = None, sampled: bool = False) -> dict:
    """A trainer layer's schema (the training stages offering train's keys); `sampled`: every
    value may be a sample spec (in an experiment file)."""
    defaults = defaults if defaults is not None else yamlio.load(schema.DEFAULTS_FILE)
    return _node(yamlio.to_plain(schema.trainer_schema(defaults)), (), sampled)


def trainer_document() -> dict:
    return {"$schema": DIALECT, "title": "hypersal trainer config", **trainer()}


def experiment_document() -> dict:
    """The experiment file: `experiment:`, `sbatch:` (the template's values, free-form: each
    template has its own), `runs:`."""
    from hypersal.experiment.spec import EXPERIMENT_SCHEMA, MODES, RUN_SCHEMA
    exp = {}
    for key, default in EXPERIMENT_SCHEMA["experiment"].items():
        exp[key] = _leaf(default, ("experiment", key)) if not isinstance(default, dict) else {"type": "object"}
    exp["mode"] = {"enum": list(MODES), "default": "jobs"}
    exp["config"] = {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/trainer"}, {"type": "null"}]}
    exp["search"] = {"type": ["object", "null"]}
    run = {"type": "object", "additionalProperties": False, "properties": {
        "trainer": {"$ref": "#/$defs/trainer"},
        "sbatch": {"type": "object"},
        "comet": {"type": "object", "additionalProperties": False,
                  "properties": {"note": {"type": "string"}, "tags": {"type": ["array", "string"]}}},
        "repeat": {"type": "integer", "minimum": 1}}}
    assert set(run["properties"]) == set(RUN_SCHEMA)
    return {"$schema": DIALECT, "title": "hypersal experiment file", "type": "object",
            "required": ["experiment", "runs"], "additionalProperties": False,
            "properties": {"experiment": {"type": "object", "additionalProperties": False, "required": ["name"],
                                          "properties": exp},
                           "sbatch": {"type": "object"},
                           "runs": {"type": "array", "minItems": 1, "items": run}},
            "$defs": {"trainer": trainer(sampled=True), "sample": sample_spec()}}


def dumps(document: dict) -> str:
    return json.dumps(document, indent=1, sort_keys=False) + "\n"

