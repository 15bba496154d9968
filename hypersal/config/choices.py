"""Every allowed value of the trainer config, without torch: experiment.py checks every run with
these tables on the login node, before anything is written, and train.py checks config.yaml
again with the same ones. The registries of code (decoders, hypernetworks, optimizers,
schedules, losses, actions) are declared here, each name with the dotted path of what
implements it, imported only when train.py uses it: adding an optimizer is one line below
plus its function (docs/options.md shows it). tests/test_registries.py builds every entry.

A rule is keyed by its path in the trainer tree; the training stages that inherit from `train`
(stagelist.TRAINING_STAGES) share train's rules.
"""
from __future__ import annotations

from typing import Any

from hypersal import tree as T
from hypersal.errors import UserError, name_of, shorten, suggest, unknown_name
from hypersal.registry import Declared
from hypersal.config.stagelist import TRAINING_STAGES

DECODERS = Declared("decoder", {
    "light": "hypersal.models.decoders:LightDecoder",          # predicts at 1/8 (or the skip's grid)
    "kdsalbox": "hypersal.models.decoders:KDSalBoxDecoder",    # the seed's, full resolution
    "inception": "hypersal.models.decoders:InceptionDecoder",  # QUICKSAL's
})
HYPERNETS = Declared("hypernet", {
    "chunked": "hypersal.models.hypernet:ChunkedHypernet",
    "simple": "hypersal.models.hypernet:SimpleHypernet",
})
GENERATE = ("decoder", "decoder+encoder", "decoder+film", "none")
GENERATE_ENCODER = ("decoder+encoder", "decoder+film")    # also generate encoder blocks (from encoder_from)
# An optimizer is fn(params, cfg) -> torch.optim.Optimizer; cfg is the stage's `optim` section.
OPTIMIZERS = Declared("optimizer", {
    "adam": "hypersal.train.optim:adam",
    "adamw": "hypersal.train.optim:adamw",
    "sgd": "hypersal.train.optim:sgd",
})
# A schedule is fn(optimizer, cfg, steps) -> an lr scheduler stepped once per optimizer step.
SCHEDULES = Declared("schedule", {
    "none": "hypersal.train.optim:constant",
    "exponential": "hypersal.train.optim:exponential",
    "staircase": "hypersal.train.optim:staircase",
    "cosine": "hypersal.train.optim:cosine",
    "cyclic": "hypersal.train.optim:cyclic",
})
# A loss is fn(logits (B, 1, H, W), target (B, 1, H, W)) -> a scalar tensor.
LOSSES = Declared("loss", {
    "bce": "hypersal.train.losses:bce",
    "kld": "hypersal.train.losses:kld",
    "cc": "hypersal.train.losses:cc",
    "nss": "hypersal.train.losses:nss",
    "l1": "hypersal.train.losses:l1",
    "mse": "hypersal.train.losses:mse",
    "huber": "hypersal.train.losses:huber",
})
PRECISIONS = ("bf16", "fp16", "fp32")
METRICS = ("auc_borji", "auc_judd", "cc", "fbeta", "info_gain", "kld", "mae", "nss", "sauc", "sim")
# The classical tasks and the members of the parametric families (hypersal/data/families.py).
FAMILY_SIZES = {"contrast": 8, "frequency": 8, "prior": 8, "region": 8}
SYNTH_TASKS = tuple(sorted(("boolean_map", "center_bias", "dog_contrast", "fine_grained", "frequency_tuned",
                            "image_signature", "spectral_residual")
                           + tuple(f"{fam}-{k}" for fam, n in FAMILY_SIZES.items() for k in range(n))))
# The few-shot study's arms, in the report's order (hypersal/study/arms.py implements them).
STUDY_ARMS = ("k0_start", "k0_best", "encoder", "embedding", "saliency", "encoder_saliency", "encoder_finetune",
              "finetune_decoder", "finetune_all", "finetune_lora", "plain_b", "scratch")
UNTRAINED_ARMS = ("k0_start", "k0_best", "encoder")      # no step: no learning rate, no budget to choose
ENCODER_ARMS = ("encoder", "encoder_saliency", "encoder_finetune")   # adapt with the task encoder (model.task_encoder)
COMET_MODES = ("disabled", "offline", "online")
# An action's name -> (the class that implements it, its options: the constructor's keyword arguments).
_ACTIONS = {
    "batch_logger": ("hypersal.train.actions:BatchLogger", ("every",)),
    "early_stopping": ("hypersal.train.actions:EarlyStopping", ("patience", "min_delta", "monitor")),
    "freeze_encoder": ("hypersal.train.actions:FreezeEncoder", ("epochs",)),
    "freeze_hnet_for_catchup": ("hypersal.train.actions:FreezeHNETForCatchup", ("epochs",)),
    "log_epoch_losses": ("hypersal.train.actions:LogEpochLosses", ()),
    "lr_decay": ("hypersal.train.actions:LrDecay", ("factor", "every")),
    "maps_tracker": ("hypersal.train.actions:MapsTracker", ("every", "images")),
    "weight_watcher": ("hypersal.train.actions:WeightWatcher", ("every",)),
}
ACTIONS: dict[str, tuple[str, ...]] = {name: opts for name, (_, opts) in _ACTIONS.items()}
ACTION_CLASSES = Declared("action", {name: path for name, (path, _) in _ACTIONS.items()})

# path -> (what the value is called in messages, the allowed values)
ONE_OF: dict[tuple, tuple[str, tuple]] = {
    ("device",): ("device", ("auto", "cpu", "cuda")),
    ("data", "task_images"): ("value", ("all", "own")),
    ("model", "decoder", "name"): ("decoder", DECODERS),
    ("model", "hypernet", "name"): ("hypernet", HYPERNETS),
    ("model", "hypernet", "generate"): ("value", GENERATE),
    ("train", "optim", "name"): ("optimizer", OPTIMIZERS),
    ("train", "schedule", "name"): ("schedule", SCHEDULES),
    ("train", "precision"): ("precision", PRECISIONS),
    ("train", "on_nan"): ("value", ("skip", "stop")),
    ("test", "split"): ("split", ("test", "train", "val")),
    ("distributed", "lr_scaling"): ("value", ("linear", "none", "sqrt")),
    ("comet", "mode"): ("Comet mode", COMET_MODES),
    ("adapt", "bn_stats"): ("value", ("keep", "update")),       # adapt's own key: not train's rules
    ("model", "hypernet", "start"): ("value", ("learned", "mean")),
    ("study", "family"): ("family", (None, *FAMILY_SIZES)),
    ("run", "resize"): ("value", ("auto", "device", "host")),
}
# path -> (what one item is called, the allowed items): lists whose every item must be allowed
EACH_OF: dict[tuple, tuple[str, tuple]] = {
    ("test", "metrics"): ("metric", METRICS),
    ("study", "arms"): ("study arm", STUDY_ARMS),
    ("study", "seen_arms"): ("study arm", STUDY_ARMS),
    ("data", "synth", "tasks"): ("saliency task", SYNTH_TASKS),
}


def rule_path(path: tuple) -> tuple:
    """A training stage's keys follow train's rules: ("adapt", "optim", "name") -> ("train", ...)."""
    return ("train",) + tuple(path[1:]) if path and path[0] in TRAINING_STAGES else tuple(path)


def parse_loss(expression: Any, **where) -> list[tuple[str, float]]:
    """"bce + 0.5 * cc" -> [("bce", 1.0), ("cc", 0.5)]; unknown names are errors."""
    terms = []
    for term in str(expression).split("+"):
        parts = [p.strip() for p in term.split("*")]
        weight, name = None, ""
        if len(parts) == 1 and parts[0]:
            weight, name = 1.0, parts[0]
        elif len(parts) == 2:
            try:
                weight, name = float(parts[0]), parts[1]
            except ValueError:
                weight = None
        if weight is None or not name:
            raise UserError(f"cannot read the loss '{name_of(expression)}'", **where,
                            fix="write names joined by +, each with an optional weight: \"bce + 0.5 * cc\"")
        if name not in LOSSES:
            raise unknown_name("loss", name, LOSSES, **where)
        terms.append((name, weight))
    return terms


def action_specs(specs: Any, **where) -> list[tuple[str, dict]]:
    """An `actions:` list as (name, options) pairs; unknown names and options are errors."""
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise UserError(f"expects a list of actions, got {shorten(specs)}", **where,
                        fix="write e.g. [log_epoch_losses, {name: freeze_encoder, epochs: 1}]")
    out, key = [], where.pop("key", "actions")
    for i, spec in enumerate(specs):
        at = dict(where, key=f"{key}[{i}]")
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise UserError(f"an action must be a name or a mapping with `name`, got {shorten(spec)}", **at,
                            fix="write e.g. {name: freeze_encoder, epochs: 1}")
        if spec["name"] not in ACTIONS:
            raise unknown_name("action", spec["name"], ACTIONS, **dict(at, key=f"{at['key']}.name"))
        options = {k: v for k, v in spec.items() if k != "name"}
        valid = ACTIONS[spec["name"]]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise UserError(f"action '{spec['name']}' has no option {', '.join(unknown)}", **at,
                            fix=f"its options are: {', '.join(valid) or 'none'}.{suggest(unknown[0], valid)}")
        out.append((spec["name"], options))
    return out


_PARSED = (("train", "loss"), ("train", "actions"))


def _rule(path: tuple) -> tuple:
    return tuple(path) if tuple(path) in ONE_OF else rule_path(path)


def has_rule(path: tuple) -> bool:
    rule = _rule(path)
    return rule in ONE_OF or rule in EACH_OF or rule in _PARSED


def check_value(path: tuple, value: Any, **where) -> None:
    """Raise a UserError when the value at `path` (a trainer key path) is not allowed there."""
    rule = _rule(path)
    if rule in ONE_OF:
        kind, valid = ONE_OF[rule]
        if value not in valid:
            raise unknown_name(kind, value, valid, **where)
    elif rule in EACH_OF and isinstance(value, list):
        kind, valid = EACH_OF[rule]
        for item in value:
            if item not in valid:
                raise unknown_name(kind, item, valid, **where)
    elif rule == ("train", "loss"):
        parse_loss(value, **where)
    elif rule == ("train", "actions"):
        action_specs(value, **where)


def check(tree: dict, *, file=None, prefix: T.KeyPath = (), root: Any = None) -> None:
    """Every value of a trainer tree (a layer or a whole config) against the tables above.
    Sampled values are checked item by item for `list` and `grid` (their candidates are known);
    drawn numbers are checked after the draw. `root` is the tree as read from `file` (for lines).
    """
    root = tree if root is None else root
    for path, value in T.leaves(tree):
        if not has_rule(path):          # most keys: nothing to format (a sweep checks ~300 a run)
            continue
        where = dict(file=file, key=T.fmt(prefix + path), line=T.line_of(root, path))
        if T.is_leaf_mapping(value):
            if value.get("sample") in ("list", "grid") and isinstance(value.get("from"), list):
                for item in value["from"]:
                    check_value(path, item, **where)
            continue
        check_value(path, value, **where)
