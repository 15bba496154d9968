"""Every registered loss, optimizer, schedule, action and stage gets exercised."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hypersal.data.cache import SplitArrays
from hypersal.data.provider import MultitaskBatchProvider
from hypersal.errors import UserError
from hypersal.models.hyper import HyperSaliency, MainNet
from hypersal.stages import STAGES
from hypersal.config.stagelist import NEEDS
from hypersal.tracking import Tracker
from hypersal.train import actions as A
from hypersal.train.api import Trainer
from hypersal.train.losses import LOSSES, parse, weighted
from hypersal.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from hypersal.train.steps import MultitaskTrainStep

OPTIM = {"lr": 0.01, "weight_decay": 0.0, "momentum": 0.9}
SCHEDULE = {"warmup_steps": 2, "decay_steps": 3, "min_lr": 0.001, "max_lr": 0.02, "cycle_steps": 2}


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_finite_differentiable_and_lowest_near_the_target(name):
    target = torch.rand(2, 1, 8, 8)
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    loss = LOSSES.get(name)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    good = torch.logit(target.clamp(0.02, 0.98))
    assert LOSSES.get(name)(good, target) < LOSSES.get(name)(-good, target)


def test_weighted_loss_is_the_sum_of_its_terms():
    logits, target = torch.randn(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    total = weighted("bce + 0.5 * cc")(logits, target)
    assert torch.allclose(total, LOSSES.get("bce")(logits, target) + 0.5 * LOSSES.get("cc")(logits, target))
    assert parse("2 * kld + mse") == [("kld", 2.0), ("mse", 1.0)]


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
@pytest.mark.parametrize("schedule", SCHEDULES.names())
def test_every_optimizer_and_schedule_steps(optimizer, schedule):
    w = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer([w], {"name": optimizer, **OPTIM})
    sched = make_schedule(opt, {"name": schedule, **SCHEDULE}, total_steps=10)
    lrs = []
    for _ in range(10):
        (w ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert torch.isfinite(w).all() and (w < 1).all()
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs)
    if schedule == "cosine":
        assert lrs[-1] == pytest.approx(0.001)
    if schedule == "staircase":
        assert lrs[-1] == pytest.approx(0.01 * 0.5 ** 2)   # 8 steps after warmup: halved twice


def test_unknown_optimizer_and_schedule_list_the_valid_ones():
    with pytest.raises(UserError, match="unknown optimizer 'adma'. Fix: use one of: adam, adamw, sgd. Did you mean 'adam'"):
        make_optimizer([torch.nn.Parameter(torch.ones(1))], {"name": "adma", **OPTIM})
    with pytest.raises(UserError, match="unknown schedule 'cosin'"):
        make_schedule(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1), {"name": "cosin", **SCHEDULE}, 5)


class Recorder(Tracker):
    """A tracker that keeps what it was asked to log (no files, no Comet)."""

    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step, stage, epoch=None):
        self.logged.append((stage, step, dict(metrics)))


def tiny_trainer(actions, epochs=3, validate=None) -> Trainer:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    arrays = SplitArrays(images=rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8),
                         maps=[rng.integers(0, 255, (8, 16, 16), dtype=np.uint8) for _ in range(2)],
                         tasks=["a", "b"], stems=[str(i) for i in range(8)], sizes=[(16, 16)] * 8, paths=[""] * 8)
    model = HyperSaliency(MainNet(cutoff=4, width=8), ["a", "b"], hypernet_options={"embedding_dim": 4,
                          "hidden": [8], "chunk_size": 256, "chunk_embedding_dim": 4})
    provider = MultitaskBatchProvider(arrays, [0, 1], batch_size=4)
    opt = make_optimizer(model.shared_parameters() + model.hnet.task_parameters(), {"name": "adam", **OPTIM})
    return Trainer(name="t", model=model, train_step=MultitaskTrainStep(weighted("bce")), provider=provider,
                   optimizer=opt, epochs=epochs, steps_per_epoch=2, validate=validate, actions=actions,
                   tracker=Recorder(), log_every=1, prefetch=False)


def test_lr_decay_halves_every_epoch():
    trainer = tiny_trainer(A.build([{"name": "lr_decay", "factor": 0.5, "every": 1}], "a"))
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 / 8)


def test_freeze_encoder_freezes_for_its_epochs_then_releases():
    class Probe(A.Action):
        def on_batch_end(self, trainer, batch, loss):
            self.seen = getattr(self, "seen", []) + [(trainer.epoch, trainer.model.mnet.encoder.blocks[0][0].weight.requires_grad)]
    probe = Probe()
    trainer = tiny_trainer(A.build([{"name": "freeze_encoder", "epochs": 2}], "a") + [probe])
    before = trainer.model.mnet.encoder.blocks[0][0].weight.detach().clone()
    trainer.fit()
    assert [f for e, f in probe.seen] == [False, False, False, False, True, True]
    assert not torch.equal(before, trainer.model.mnet.encoder.blocks[0][0].weight)   # trained in epoch 3


def test_freeze_hnet_for_catchup_trains_task_embeddings_only():
    trainer = tiny_trainer(A.build(["freeze_hnet_for_catchup"], "a"))
    shared = [p.detach().clone() for p in trainer.model.shared_parameters()]
    emb = trainer.model.hnet.task_embeddings.detach().clone()
    trainer.fit()
    assert all(torch.equal(a, b) for a, b in zip(shared, trainer.model.shared_parameters()))
    assert not torch.equal(emb, trainer.model.hnet.task_embeddings)
    assert all(p.requires_grad for p in trainer.model.shared_parameters())          # released at the end


def test_logging_actions_print(capsys):
    tiny_trainer(A.build(["log_epoch_losses", {"name": "batch_logger", "every": 2}], "a")).fit()
    err = capsys.readouterr().err
    assert err.count("hypersal: t epoch ") == 3 and "img/s, ETA" in err
    assert err.count("hypersal: t step ") == 3 and "loss" in err


def test_weight_watcher_logs_norms():
    trainer = tiny_trainer(A.build([{"name": "weight_watcher", "every": 2}], "a"))
    trainer.fit()
    norms = [m for _, _, m in trainer.tracker.logged if "weights/hnet_shared_norm" in m]
    assert len(norms) == 3
    assert all(m["weights/hnet_task_grad_norm"] > 0 and m["weights/mnet_norm"] > 0 for m in norms)


def test_early_stopping_stops_when_the_metric_stalls():
    values = iter([1.0, 0.9, 0.95, 0.95, 0.95, 0.95])
    trainer = tiny_trainer(A.build([{"name": "early_stopping", "patience": 2}], "a"), epochs=6,
                           validate=lambda t: {"val_loss": next(values)})
    trainer.fit()
    assert trainer.epoch == 4 and "early stopping" in trainer.stop_reason


def test_action_options_are_checked():
    with pytest.raises(UserError, match=r"action 'lr_decay' has no option evry. Fix: its options are: factor, every"):
        A.build([{"name": "lr_decay", "evry": 2}], "train.actions")
    with pytest.raises(UserError, match="unknown action 'freeze_decoder'"):
        A.build(["freeze_decoder"], "train.actions")


def test_gradient_accumulation_gives_the_full_batch_gradient():
    """accumulate=2 over a batch of 8 = one step on 8 (a model without BatchNorm, whose batch
    statistics would legitimately differ between micro-batches)."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x, task=0):
            return self.conv(x)
    from hypersal.data.provider import Batch
    batch = Batch(task=0, images=torch.randint(0, 255, (8, 3, 8, 8), dtype=torch.uint8),
                  maps=torch.randint(0, 255, (8, 1, 8, 8), dtype=torch.uint8), indices=np.arange(8))
    grads = []
    for accumulate in (1, 2, 4):
        torch.manual_seed(0)
        net = Net()
        t = type("T", (), {})()
        t.forward_model = net
        t.optimizer = torch.optim.SGD(net.parameters(), lr=0.0)   # keep the weights, read the grads
        t.device, t.scheduler = torch.device("cpu"), None
        loss = MultitaskTrainStep(weighted("bce + cc"), accumulate=accumulate)(t, batch)
        grads.append((loss.item(), net.conv.weight.grad.clone()))
    # bce is a mean over pixels (additive over micro-batches); cc a mean over images: both add up
    assert all(abs(l - grads[0][0]) < 1e-6 and torch.allclose(g, grads[0][1], atol=1e-6) for l, g in grads)


def test_every_action_and_stage_is_known_to_the_tests():
    # Adding one means adding its test here (and in test_pipeline.py for stages).
    assert A.ACTIONS.names() == ["batch_logger", "early_stopping", "freeze_encoder", "freeze_hnet_for_catchup",
                                 "log_epoch_losses", "lr_decay", "maps_tracker", "weight_watcher"]
    assert sorted(NEEDS) == STAGES.names()     # experiment.py checks pipelines with NEEDS
    assert STAGES.names() == ["adapt", "export", "fewshot_study", "pretrain_one_task", "pretrain_weights",
                              "run", "test", "train", "train_catchup"]


def test_the_login_node_tables_equal_the_registries():
    """experiment.py checks values with hypersal.config.choices, without torch; each table must be exactly
    what train.py accepts, or a value would pass the login node and fail hours later (or a valid
    one be refused)."""
    import inspect

    from hypersal.evaluation import metrics
    from hypersal.config import choices
    from hypersal.data.tasks import TASKS
    for declared in (choices.DECODERS, choices.HYPERNETS, choices.OPTIMIZERS, choices.SCHEDULES, choices.LOSSES,
                     choices.ACTION_CLASSES):
        for name in declared:
            assert callable(declared.get(name)), f"{declared.kind} {name}: {declared.entries[name]}"
    assert list(choices.METRICS) == sorted(metrics.METRICS)
    assert list(choices.SYNTH_TASKS) == TASKS.names()
    for name, options in choices.ACTIONS.items():
        params = [p.name for p in inspect.signature(A.ACTIONS.get(name).__init__).parameters.values()
                  if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert list(options) == params, name
    # Enums checked by the torch code: every allowed value is accepted there, a near miss is not.
    from hypersal.train.steps import Precision
    for name in choices.PRECISIONS:
        Precision(name)
    with pytest.raises(UserError):
        Precision("fp8")
    from hypersal.train.fit import scaled_lr
    from hypersal.config import Config
    for rule in choices.ONE_OF[("distributed", "lr_scaling")][1]:
        scaled_lr(Config(lr_scaling=rule, reference_batch=8), Config(batch_size=8), 0.1)
    from hypersal.runner.job import pick_device
    for device in choices.ONE_OF[("device",)][1]:
        if device != "cuda" or torch.cuda.is_available():
            pick_device(device)


def test_training_stages_inherit_what_they_do_not_set():
    from hypersal import yamlio
    from hypersal.config import schema
    defaults = yamlio.load(schema.DEFAULTS_FILE)
    cfg = schema.inherit({**defaults, "train": {**defaults["train"], "optim": {**defaults["train"]["optim"], "lr": 0.123}},
                          "train_catchup": {"optim": {"lr": 0.5}}})
    assert cfg["adapt"]["optim"]["lr"] == 0.123 and cfg["pretrain_one_task"]["optim"]["lr"] == 0.123
    assert cfg["train_catchup"]["optim"] == {**defaults["train"]["optim"], "lr": 0.5}   # its own value wins
    assert cfg["adapt"]["epochs"] == defaults["adapt"]["epochs"] != defaults["train"]["epochs"]
    assert schema.inherit(cfg) == cfg                                                   # idempotent
