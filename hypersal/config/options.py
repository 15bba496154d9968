"""What an option's type cannot say: its range, and the rules that tie it to other options.
No torch: experiment.py checks every run with them on the login node, before anything is
written, and train.py checks config.yaml with the same code (`check`) before any stage starts,
so a job never learns after its queue wait what the login node could have said.

The keys, their types and defaults are shared/trainer/defaults.yaml (what a user reads); the
allowed names are hypersal.config.choices. Here:
- RANGES: path -> Range, for numbers (a null value, or "auto", is not a number: it passes);
- RULES: one function per rule between options, registered with `@rule(keys, bad=...)`.
  `keys` are what it reads (the first is the key its errors name), `bad` a layer that
  breaks it (tests/test_options.py runs every rule's `bad` through experiment.py's plan
  and train.py's config check, so no rule is applied by one side only).
A training stage (stagelist.TRAINING_STAGES) follows train's ranges and rules, under its own key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from hypersal import tree as T
from hypersal.config.choices import ENCODER_ARMS, FAMILY_SIZES, GENERATE_ENCODER, UNTRAINED_ARMS, rule_path
from hypersal.errors import UserError
from hypersal.config.stagelist import TRAINING_STAGES


@dataclass(frozen=True)
class Range:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    whole: bool = False                 # a whole number (an int key whose default is null)

    def problem(self, value: Any) -> str | None:
        """Why `value` is outside the range (None: inside, or not a number)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.whole and not float(value).is_integer():
            return f"must be a whole number, got {value}"
        inside = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                  and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return None if inside else f"must be {self.describe()}, got {value}"

    def describe(self) -> str:
        low = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        high = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else ""
        return " and ".join(p for p in (low, high) if p)

    def example(self) -> float:
        """A value just outside the range (tests, the docs' table)."""
        if self.ge is not None:
            return self.ge - 1
        if self.gt is not None:
            return self.gt - (1 if self.gt >= 1 else 0.5) if self.gt else -1
        return (self.le if self.le is not None else self.lt) + 1


POSITIVE = Range(ge=1, whole=True)       # a count of at least one
COUNT = Range(ge=0, whole=True)          # a count that may be zero
RATE = Range(gt=0)                       # a learning rate, a step length
SHARE = Range(ge=0, le=1)                # a probability

RANGES: dict[str, Range] = {
    "seed": COUNT,
    "data.hflip": SHARE,
    "data.workers": POSITIVE,
    "data.synth.n": POSITIVE,
    "data.synth.seed": COUNT,
    "model.encoder.cutoff": Range(ge=1, le=19, whole=True),
    "model.decoder.width": POSITIVE,
    "model.decoder.skip": POSITIVE,
    "model.decoder.prior": COUNT,
    "model.hypernet.encoder_from": COUNT,
    "model.hypernet.embedding_dim": POSITIVE,
    "model.hypernet.chunk_size": POSITIVE,
    "model.hypernet.chunk_embedding_dim": POSITIVE,
    "model.task_encoder.width": COUNT,
    "model.task_encoder.grid": POSITIVE,
    "train.epochs": POSITIVE,
    "train.steps_per_epoch": POSITIVE,
    "train.batch_size": POSITIVE,
    "train.device_batch_size": POSITIVE,
    "train.batches_per_task": POSITIVE,
    "train.val_batches": COUNT,
    "train.val_batch_size": POSITIVE,
    "train.log_every": POSITIVE,
    "train.optim.lr": RATE,
    "train.optim.weight_decay": Range(ge=0),
    "train.optim.momentum": Range(ge=0, lt=1),
    "train.schedule.warmup_steps": COUNT,
    "train.schedule.decay_steps": POSITIVE,
    "train.schedule.min_lr": Range(ge=0),
    "train.schedule.max_lr": RATE,
    "train.schedule.cycle_steps": POSITIVE,
    "train.clip_grad": Range(ge=0),
    "train.episodic.weight": Range(ge=0),
    "train.episodic.inner_steps": POSITIVE,
    "train.episodic.inner_lr": RATE,
    "train.episodic.support": Range(gt=0, lt=1),
    "train.episodic.encoder_weight": Range(ge=0),
    "train.checkpoint.every_steps": COUNT,
    "train.checkpoint.every_minutes": RATE,
    "adapt.shots": POSITIVE,
    "adapt.shot_seed": COUNT,
    "adapt.finetune_epochs": COUNT,
    "adapt.finetune_lr": RATE,
    "study.draws": POSITIVE,
    "study.draw_seed": COUNT,
    "study.select_draws": POSITIVE,
    "study.select_images": POSITIVE,
    "study.test_images": POSITIVE,
    "study.batch_size": POSITIVE,
    "study.pull": Range(ge=0),
    "study.starts": COUNT,
    "study.lora_rank": POSITIVE,
    "test.images": POSITIVE,
    "test.batch_size": POSITIVE,
    "test.grid_images": COUNT,
    "test.seed": COUNT,
    "run.batch_size": POSITIVE,
    "run.workers": POSITIVE,
    "distributed.reference_batch": POSITIVE,
    "preemption.max_requeues": COUNT,
}


@dataclass(frozen=True)
class Rule:
    name: str
    keys: tuple[str, ...]               # what it reads; keys[0] is the key its errors name
    check: Callable[[dict], "Broken | None"]
    bad: dict = field(default_factory=dict)   # a trainer layer that breaks it
    per_stage: bool = False             # a train rule, applied to every training stage too


@dataclass(frozen=True)
class Broken:
    message: str
    fix: str
    key: str | None = None              # when not keys[0] (relative to the section for per_stage rules)


RULES: list[Rule] = []


def rule(*keys: str, bad: dict, per_stage: bool = False):
    """Register a rule. A per_stage rule gets the section (train, adapt, ...) and its keys are
    relative to it; any other gets the whole config."""
    def add(fn):
        RULES.append(Rule(fn.__name__, keys, fn, bad, per_stage))
        return fn
    return add


# --- training sections (train and the stages that inherit from it) -------------------------

@rule("device_batch_size", "batch_size", per_stage=True,
      bad={"train": {"batch_size": 8, "device_batch_size": 3}})
def device_batch_divides(s):
    d, b = s["device_batch_size"], s["batch_size"]
    if isinstance(d, int) and isinstance(b, int) and d >= 1 and b % d:
        return Broken(f"batch_size {b} is not a multiple of device_batch_size {d}",
                      "choose a divisor of batch_size, or null")


@rule("schedule", "schedule.min_lr", "schedule.max_lr", per_stage=True,
      bad={"train": {"schedule": {"name": "cyclic", "min_lr": 0.01, "max_lr": 0.001}}})
def cyclic_bounds(s):
    sch = s["schedule"]
    if sch["name"] == "cyclic" and not 0 < sch["min_lr"] < sch["max_lr"]:
        return Broken(f"cyclic needs 0 < min_lr < max_lr, got min_lr {sch['min_lr']} and max_lr {sch['max_lr']}",
                      "e.g. min_lr: 1.0e-4, max_lr: 1.0e-3")


def episodes(train: dict) -> bool:
    """Whether the train stage runs episodes: for the embedding's steps (weight) or the task
    encoder (encoder_weight). They run in the train stage only (the stages inheriting
    train.episodic ignore it)."""
    e = train["episodic"]
    return e["weight"] > 0 or e["encoder_weight"] > 0


@rule("train.episodic.weight", "train.precision", "train.device_batch_size",
      bad={"train": {"episodic": {"weight": 1.0}, "precision": "bf16"}})
def episodic_whole_batches(cfg):
    s = cfg["train"]
    if not episodes(s):
        return None
    if s["precision"] != "fp32":
        return Broken("episodic training runs one process, fp32, whole batches", "use fp32", key="train.precision")
    if s["device_batch_size"] not in (None, s["batch_size"]):
        return Broken("episodic training runs one process, fp32, whole batches", "set it to null",
                      key="train.device_batch_size")


@rule("train.episodic.support", "train.batch_size",
      bad={"train": {"batch_size": 2, "episodic": {"weight": 1.0, "support": 0.9}}})
def episodic_split(cfg):
    s = cfg["train"]
    if not episodes(s) or not isinstance(s["episodic"]["support"], (int, float)):
        return None
    b = s["device_batch_size"] or s["batch_size"]
    if not 1 <= round(s["episodic"]["support"] * b) < b:
        return Broken(f"a batch of {b} cannot be split into a support and a query set at support "
                      f"{s['episodic']['support']}", "use batches of at least 2 (e.g. 16) and a support between")


# --- the model ------------------------------------------------------------------------------

@rule("model.decoder.skip", "model.decoder.name", bad={"model": {"decoder": {"name": "inception", "skip": 4}}})
def skip_needs_light(cfg):
    d = cfg["model"]["decoder"]
    if d["skip"] is not None and d["name"] != "light":
        return Broken(f"the {d['name']} decoder takes no skip", "use decoder light, or set skip: null")


# The output stride of each of MobileNetV2's 19 feature blocks (hypersal/models/encoder.py uses it).
STRIDES = (2, 2, 4, 4, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)


@rule("model.decoder.skip", "model.encoder.cutoff", bad={"model": {"encoder": {"cutoff": 7}, "decoder": {"skip": 7}}})
def skip_before_cutoff(cfg):
    skip, cutoff = cfg["model"]["decoder"]["skip"], cfg["model"]["encoder"]["cutoff"]
    if not (isinstance(skip, int) and isinstance(cutoff, int) and 1 <= cutoff <= len(STRIDES) and skip >= 1):
        return None
    if not (skip < cutoff and STRIDES[skip - 1] < STRIDES[cutoff - 1]):
        return Broken(f"skip {skip} must be a number of encoder blocks, at least 1, before the cutoff "
                      f"{cutoff}, at a finer stride than the last block's {STRIDES[cutoff - 1]}",
                      "e.g. 4 (stride 4, 24 channels) with cutoff 14")


@rule("model.hypernet.encoder_from", "model.hypernet.generate", "model.encoder.cutoff",
      bad={"model": {"hypernet": {"generate": "decoder+encoder"}}})
def encoder_from_set(cfg):
    h, cutoff = cfg["model"]["hypernet"], cfg["model"]["encoder"]["cutoff"]
    if h["generate"] not in GENERATE_ENCODER:
        return None
    if h["encoder_from"] is None:
        return Broken(f"generate: {h['generate']} needs the first generated encoder block", "set encoder_from, e.g. 10")
    if isinstance(cutoff, int) and isinstance(h["encoder_from"], int) and h["encoder_from"] >= cutoff:
        return Broken(f"encoder_from {h['encoder_from']} is not one of the {cutoff} encoder blocks kept",
                      f"use a block from 0 to {cutoff - 1}")


HYPERNET_STAGES = ("pretrain_weights", "train_catchup", "adapt", "fewshot_study")


@rule("pipeline", "model.hypernet.generate", bad={"pipeline": ["train", "train_catchup"],
                                                  "model": {"hypernet": {"generate": "none"}}})
def stages_need_hypernet(cfg):
    if cfg["model"]["hypernet"]["generate"] != "none":
        return None
    for name in cfg["pipeline"]:
        if name in HYPERNET_STAGES:
            return Broken(f"stage {name} needs a hypernetwork, but model.hypernet.generate is none",
                          f"remove {name} from the pipeline, or generate decoder weights")
    if episodes(cfg["train"]) and "train" in cfg["pipeline"]:
        return Broken("stage train with episodic.weight or encoder_weight > 0 needs a hypernetwork, but "
                      "model.hypernet.generate is none", "set both to 0, or generate decoder weights")


@rule("train.episodic.encoder_weight", "model.task_encoder.width",
      bad={"train": {"episodic": {"encoder_weight": 1.0}}, "model": {"task_encoder": {"width": 0}}})
def encoder_weight_needs_encoder(cfg):
    if cfg["train"]["episodic"]["encoder_weight"] > 0 and cfg["model"]["task_encoder"]["width"] == 0:
        return Broken("encoder_weight > 0 trains the task encoder, but model.task_encoder.width is 0 (none)",
                      "give the task encoder a width, e.g. model.task_encoder.width: 64")


@rule("model.task_encoder.width", "model.hypernet.generate",
      bad={"model": {"task_encoder": {"width": 64}, "hypernet": {"generate": "none"}}})
def task_encoder_needs_hypernet(cfg):
    if cfg["model"]["task_encoder"]["width"] > 0 and cfg["model"]["hypernet"]["generate"] == "none":
        return Broken("the task encoder emits a task embedding for the hypernetwork, but "
                      "model.hypernet.generate is none", "set the task encoder's width to 0, or generate decoder weights")


@rule("train.precision", "device", bad={"device": "cpu", "train": {"precision": "fp16"}})
def fp16_needs_gpu(cfg):
    if cfg["device"] == "cpu" and any(cfg[s]["precision"] == "fp16" for s in ("train", *TRAINING_STAGES)
                                      if isinstance(cfg.get(s), dict) and "precision" in cfg[s]):
        return Broken("precision fp16 needs a GPU, and device is cpu", "use bf16 on a CPU, or device: cuda")


# --- data and tasks -------------------------------------------------------------------------

@rule("data.crop_scale", bad={"data": {"crop_scale": [0.9, 0.5]}})
def crop_scale_range(cfg):
    c = cfg["data"]["crop_scale"]
    if not (isinstance(c, list) and len(c) == 2 and all(_number(v) for v in c) and 0 < c[0] <= c[1] <= 1):
        return Broken(f"crop_scale must be [low, high] with 0 < low <= high <= 1, got {c!r}",
                      "e.g. [0.6, 1.0], or [1.0, 1.0] for no crop")


@rule("data.size", bad={"data": {"size": [64, 0]}})
def size_pair(cfg):
    for key, size in (("data.size", cfg["data"]["size"]), ("data.synth.size", cfg["data"]["synth"]["size"])):
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 and v >= 8 for v in size)):
            return Broken(f"expects [height, width], two whole numbers of at least 8, got {size!r}",
                          "e.g. [64, 64]", key=key)


@rule("model.hypernet.hidden", bad={"model": {"hypernet": {"hidden": [64, 0]}}})
def hidden_widths(cfg):
    hidden = cfg["model"]["hypernet"]["hidden"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hidden):
        return Broken(f"hidden layers' widths must be whole numbers >= 1, got {hidden!r}", "e.g. [64, 64]")


@rule("data.maps_dir", "data.images_dir", bad={"data": {"images_dir": "/data/images"}})
def maps_with_images(cfg):
    if cfg["data"]["images_dir"] is not None and cfg["data"]["maps_dir"] is None:
        return Broken("data.images_dir is set but data.maps_dir is not",
                      "point it at the folder with one subfolder of maps per task")


def generated_tasks(cfg) -> list[str] | None:
    """The tasks of the generated dataset (None: the data are files, whose tasks the login node
    does not read)."""
    return list(cfg["data"]["synth"]["tasks"]) if cfg["data"]["images_dir"] is None else None


@rule("tasks", "data.synth.tasks", bad={"tasks": ["fine_grained"]})
def tasks_generated(cfg):
    have = generated_tasks(cfg)
    missing = [t for t in cfg["tasks"] if have is not None and t not in have]
    if missing:
        return Broken(f"the generated dataset has no task {', '.join(map(str, missing))}",
                      f"use tasks of data.synth.tasks ({', '.join(have)}), or add them there")


@rule("adapt.task", "tasks", "data.synth.tasks",
      bad={"pipeline": ["train", "adapt"], "adapt": {"task": "fine_grained"}})
def adapt_task_exists(cfg):
    task, have = cfg["adapt"]["task"], generated_tasks(cfg)
    if "adapt" not in cfg["pipeline"] or task is None:
        return None
    if have is not None and task not in have:
        return Broken(f"the new task must be one of the dataset's tasks, got {task!r}",
                      f"set adapt.task to one of: {', '.join(sorted(have))}")
    trained = list(cfg["tasks"]) or have
    if trained and not [t for t in trained if t != task]:
        return Broken(f"adapting to {task!r} leaves no task to train on", "train on more tasks than the new one")


@rule("pretrain_one_task.task", "tasks", bad={"pipeline": ["pretrain_one_task", "train"],
                                              "pretrain_one_task": {"task": "fine_grained"}})
def primed_task_trained(cfg):
    task = cfg["pretrain_one_task"]["task"]
    if "pretrain_one_task" not in cfg["pipeline"] or task is None:
        return None
    trained = list(cfg["tasks"]) or generated_tasks(cfg)
    if trained is not None and task not in trained:
        return Broken(f"task '{task}' is not a training task", f"use one of: {', '.join(trained)}")


@rule("pretrain_weights.weights_dir", "pipeline", bad={"pipeline": ["pretrain_weights", "train"]})
def pretrain_weights_files(cfg):
    if "pretrain_weights" in cfg["pipeline"] and cfg["pretrain_weights"]["weights_dir"] is None:
        return Broken("pretrain_weights needs per-task weight files",
                      "point it at a folder of <task>.pth files (e.g. a run's export/ folder)")


@rule("pretrain_weights.loss", bad={"pretrain_weights": {"loss": "bce"}})
def pretrain_weights_mse(cfg):
    loss = cfg["pretrain_weights"]["loss"]
    if loss != "mse":
        return Broken(f"pretrain_weights fits parameters by their mean squared error; loss '{loss}' cannot apply",
                      "remove the key")


# --- the few-shot study ---------------------------------------------------------------------

def _members(cfg) -> list[tuple[str, Any]]:
    st = cfg["study"]
    return ([("study.train_members", m) for m in st["train_members"]] + [("study.test_members", m) for m in st["test_members"]]
            + [("study.select_member", st["select_member"]), ("study.seen_member", st["seen_member"])])


@rule("study.test_members", bad={"pipeline": ["fewshot_study"], "study": {"family": "prior", "test_members": [1, 8]}})
def study_members_exist(cfg):
    if "fewshot_study" not in cfg["pipeline"] or cfg["study"]["family"] not in FAMILY_SIZES:
        return None
    size = min(FAMILY_SIZES.values())
    for key, m in _members(cfg):
        if not (isinstance(m, int) and not isinstance(m, bool) and 0 <= m < size):
            return Broken(f"a family has members 0..{size - 1}, not {m!r}", f"use member numbers from 0 to {size - 1}",
                          key=key)
    st = cfg["study"]
    used = list(st["train_members"]) + [st["select_member"], st["seen_member"]]
    if len(set(used)) != len(used):
        return Broken("train_members, select_member and seen_member overlap",
                      "give each training family's members one role each", key="study.train_members")


@rule("study.seen_shots", "study.shots", bad={"pipeline": ["fewshot_study"], "study": {"family": "prior",
                                                                                       "seen_shots": [3]}})
def study_shots(cfg):
    st = cfg["study"]
    if "fewshot_study" not in cfg["pipeline"]:
        return None
    if not all(isinstance(k, int) and k >= 1 for k in st["shots"]):
        return Broken(f"shots must be numbers of pairs >= 1, got {st['shots']!r}", "e.g. [1, 5, 10, 50]",
                      key="study.shots")
    if not set(st["seen_shots"]) <= set(st["shots"]):
        return Broken("seen_shots must be some of shots (their budgets are chosen for those)",
                      f"use some of {st['shots']}")
    if not st["steps"] or not all(isinstance(s, int) and s >= 1 for s in st["steps"]):
        return Broken("steps must list budgets of at least 1 step", "e.g. [10, 25, 50]", key="study.steps")


@rule("study.arms", "study.seen_arms", "study.lrs", "model.task_encoder.width",
      bad={"pipeline": ["fewshot_study"], "study": {"family": "prior", "arms": ["k0_start", "encoder"]}})
def study_arms_can_run(cfg):
    st = cfg["study"]
    if "fewshot_study" not in cfg["pipeline"]:
        return None
    used = [a for a in [*st["arms"], *st["seen_arms"]] if isinstance(a, str)]
    needs_encoder = [a for a in used if a in ENCODER_ARMS]
    if needs_encoder and cfg["model"]["task_encoder"]["width"] == 0:
        return Broken(f"arm {needs_encoder[0]} adapts with the task encoder, but model.task_encoder.width is 0 (none)",
                      "train one: model.task_encoder.width: 64 and train.episodic.encoder_weight: 1.0")
    lrs = st["lrs"] if isinstance(st["lrs"], dict) else {}
    missing = [a for a in used if a not in UNTRAINED_ARMS and not lrs.get(a)]
    if missing:
        return Broken(f"no learning rates for arm '{missing[0]}'", "list the learning rates its budget is chosen "
                      "from, e.g. [0.001, 0.01]", key=f"study.lrs.{missing[0]}")


def _pull_grid(cfg, key: str, fix: str):
    pulls = cfg["study"][key]
    if "fewshot_study" in cfg["pipeline"] and not all(_number(p) and p >= 0 for p in pulls):
        return Broken(f"{key} must be weights >= 0, got {pulls!r}", fix)


@rule("study.pulls", bad={"pipeline": ["fewshot_study"], "study": {"family": "prior", "pulls": [0.1, -1.0]}})
def study_pulls(cfg):
    return _pull_grid(cfg, "pulls", "e.g. [0.0, 0.1], or [] for study.pull alone")


@rule("study.weight_pulls", bad={"pipeline": ["fewshot_study"], "study": {"family": "prior", "weight_pulls": [-0.01]}})
def study_weight_pulls(cfg):
    return _pull_grid(cfg, "weight_pulls", "e.g. [0.0, 0.001, 0.01], or [] for none")


# --- applying them ----------------------------------------------------------------------------

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def range_of(path: tuple) -> Range | None:
    """The range of a key path; a training stage's keys take train's."""
    return RANGES.get(".".join(map(str, path))) or RANGES.get(".".join(map(str, rule_path(path))))


# The candidates a sample spec can draw that a range can judge before the draw: every item of a
# list or grid, both ends of an interval.
_ENDS = ("uniform", "loguniform", "randint", "range")


def check_ranges(tree: dict, *, file=None, prefix: T.KeyPath = (), root: Any = None) -> None:
    """Every number of a trainer tree (a layer as written, or a whole config) within its range.
    Of a sample spec, what it can draw is judged before the draw (items, an interval's ends;
    other draws after it), with the line it is on where the tree was read from a file."""
    root = tree if root is None else root
    for path, value in T.leaves(tree):
        if T.is_leaf_mapping(value):
            items = value.get("from") if isinstance(value.get("from"), list) else []
            candidates = items if value.get("sample") in ("list", "grid") else items[:2] if value.get("sample") in _ENDS else []
        elif _number(value):
            candidates = [value]
        else:
            continue
        r = range_of(path) if candidates else None
        for item in candidates if r else ():
            problem = r.problem(item)
            if problem:
                raise UserError(problem, file=file, key=T.fmt(tuple(prefix) + path), line=T.line_of(root, path),
                                fix=f"use a value {r.describe()}")


def sections(cfg: dict) -> list[str]:
    return ["train", *(s for s in TRAINING_STAGES if isinstance(cfg.get(s), dict))]


def check_rules(cfg: dict, *, file=None, prefix: T.KeyPath = ()) -> None:
    """Every rule on a whole, resolved config (every layer merged, every value drawn, the
    training stages inheriting from train)."""
    for r in RULES:
        for section in (sections(cfg) if r.per_stage else [None]):
            broken = r.check(cfg[section] if section else cfg)
            if broken:
                key = broken.key or r.keys[0]
                key = f"{section}.{key}" if section and not key.startswith(f"{section}.") else key
                raise UserError(broken.message, file=file, key=T.fmt(tuple(prefix) + tuple(key.split("."))),
                                fix=broken.fix)


def check(cfg: dict, *, file=None, prefix: T.KeyPath = ()) -> None:
    """Ranges, then rules, of a whole resolved config: what experiment.py asks of every run and
    train.py of config.yaml."""
    check_ranges(cfg, file=file, prefix=prefix)
    check_rules(cfg, file=file, prefix=prefix)


def enforce(cfg: dict, *fns: Callable) -> None:
    """Apply these rules (their functions) to a config fragment: for code that builds a part
    from arguments (a model from its constructor's), so it holds the same rule as a config."""
    for r in RULES:
        if r.check in fns and (broken := r.check(cfg)):
            raise UserError(broken.message, key=broken.key or r.keys[0], fix=broken.fix)


def enforce_range(path: str, value: Any) -> None:
    problem = RANGES[path].problem(value)
    if problem:
        raise UserError(problem, key=path, fix=f"use a value {RANGES[path].describe()}")
