"""The draws of one task and k adapted at once (study.vectorise), for the arms in VECTOR_ARMS:
those that adapt the generated tensors on cached encoder features, and finetune_all (plain_b
and scratch write BatchNorm statistics as they train, so they stay one by one). Every draw's
parameters are stacked on a leading axis, the draws' losses computed in one `torch.func.vmap`
over the main network's functional call, and one Adam steps them all. Adam is elementwise and
the draws' losses are independent, so each slice follows the steps the draw takes alone (its
own batches, from its own seed): the same numbers up to float rounding in the batched
convolutions (tests/test_vectorised.py). The saliency arm's starts are more rows of the same
stack; each draw keeps the start whose final loss on its k pairs is lowest, as one by one.
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import torch
from torch import nn

from hypersal.study import arms as A

VECTOR_ARMS = ("embedding", "saliency", "encoder_saliency", "finetune_decoder", "finetune_all")
# Vectorised on a GPU only: on a CPU core the batched convolutions of whole networks ran 13%
# slower than the draws one by one (bench/fewshot_draws.py, BENCHMARKS.md); the others ran ~2x faster.
GPU_ONLY = ("finetune_all",)


def applies(arm: str, device: torch.device, weight_pull: float = 0.0) -> bool:
    """Whether study.vectorise runs this arm's draws at once on this device: not with a weight
    pull (study.weight_pulls), which the stacked finetune_all has no term for."""
    return arm in VECTOR_ARMS and (arm not in GPU_ONLY or device.type == "cuda") and not weight_pull


def run_draws(arm: str, settings: list[A.Setting], steps: list[int], lr: float,
              mnet_args: dict | None = None) -> list[dict[int, float]]:
    """A.run(arm, s, steps, lr, mnet_args) for every setting (one model and task, one k), at once."""
    if arm == "finetune_all":
        return _finetune_all(settings, steps, lr, mnet_args or {})
    model = settings[0].model
    owner, starts = [], []                       # per row: its draw, and (params, anchors)
    for d, s in enumerate(settings):
        for params, anchors in _starts(arm, s):
            owner.append(d)
            starts.append((params, anchors))
    if arm == "finetune_decoder":
        tensors_of = dict
    else:
        names = A.saliency_names(model)
        tensors_of = lambda p: model.generated_params(embedding=p["emb"], offsets={n: p[n] for n in names if n in p})  # noqa: E731
    rows = _fit_rows(settings, owner, starts, tensors_of, steps, lr, own_loss=arm in A.PULL_ARMS)
    out: list[dict[int, float]] = []
    for d in range(len(settings)):
        mine = [r for r, o in zip(rows, owner) if o == d]
        out.append({step: (min(r[step] for r in mine)[1] if isinstance(mine[0][step], tuple) else mine[0][step])
                    for step in steps})
    return out


def timed_draws(arm: str, settings: list[A.Setting], steps: list[int], lr: float,
                mnet_args: dict | None = None) -> tuple[list[dict], float]:
    """run_draws()'s scores and the milliseconds to adapt *per draw* (the batch's wall time less
    scoring, divided by the draws)."""
    for s in settings:
        s.scoring = 0.0
    device = settings[0].support.x.device
    A.sync(device)
    t0 = time.perf_counter()
    scores = run_draws(arm, settings, steps, lr, mnet_args)
    A.sync(device)
    elapsed = time.perf_counter() - t0 - sum(s.scoring for s in settings)
    return scores, 1000 * elapsed / len(settings)


def _starts(arm: str, s: A.Setting) -> list[tuple[dict, dict]]:
    """(initial parameters, anchors the offsets are pulled to) of each row this draw gets."""
    if arm == "embedding":
        return [({"emb": s.model.start_embedding().detach()}, {})]
    if arm == "finetune_decoder":
        return [(A.start_tensors(s), {})]
    starts = [A.encoded_task(s)] if arm == "encoder_saliency" else A.saliency_starts(s)
    return [({"emb": emb, **offsets}, offsets) for emb, offsets in starts]


def _fit_rows(settings: list[A.Setting], owner: list[int], starts: list[tuple[dict, dict]],
              tensors_of: Callable, steps: list[int], lr: float, own_loss: bool) -> list[dict]:
    """A._fit for every row at once: Adam on the stacked parameters, each row's batches from its
    draw's seed; each row's score (with its own loss on the k pairs: own_loss) after each budget."""
    s0 = settings[0]
    params = {n: nn.Parameter(torch.stack([p[n].detach() for p, _ in starts])) for n in starts[0][0]}
    anchors = {n: torch.stack([a[n].detach() for _, a in starts]) for n in starts[0][1]}
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    gens = [torch.Generator().manual_seed(settings[d].seed) for d in owner]
    k = len(s0.support)
    b = min(k, s0.batch_size)
    has_low = s0.support.encoded[1] is not None
    bank = s0.model.bn_bank.for_task(s0.task) if s0.model.bn_bank is not None else {}

    on_images = s0.model.generates_encoder         # the features depend on the generated tensors

    def logits(tensors: dict, deep: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        if on_images:                               # `deep` holds the images then
            return s0.model._run({**tensors, **bank}, deep)
        return s0.model._run({**tensors, **bank}, None, encoded=(deep, low), size=s0.size)

    def loss_one(p: dict, a: dict, deep, low, y) -> torch.Tensor:
        fit = s0.loss_fn(logits(tensors_of(p), deep, low if has_low else None), y)
        return fit + s0.pull * sum(((p[n] - a[n]) ** 2).sum() for n in a) if a else fit

    batched = torch.func.vmap(loss_one)
    out: list[dict] = [{} for _ in owner]
    for step in range(1, max(steps) + 1):
        idx = [torch.randperm(k, generator=g)[:b] for g in gens]
        rows = [settings[d] for d in owner]
        deep = torch.stack([(s.support.x if on_images else s.support.encoded[0])[i] for s, i in zip(rows, idx)])
        low = (torch.stack([s.support.encoded[1][i] for s, i in zip(rows, idx)]) if has_low and not on_images
               else deep[:, :0])                      # vmap takes tensors only: an empty one for none
        y = torch.stack([s.support_y[i] for s, i in zip(rows, idx)])
        opt.zero_grad(set_to_none=True)
        batched(params, anchors, deep, low, y).sum().backward()
        opt.step()
        if step in steps:
            for r, d in enumerate(owner):
                out[r][step] = _score_row(settings[d], tensors_of({n: v[r].detach() for n, v in params.items()}),
                                          own_loss)
    return out


def _score_row(s: A.Setting, tensors: dict, own_loss: bool):
    """A row's score on its draw's query images (with its loss on all k pairs first: own_loss)."""
    if not own_loss:
        return s.score(lambda im: A._generated(s, tensors, im))
    with torch.no_grad():
        own = float(s.loss_fn(A._generated(s, tensors, s.support), s.support_y))
    return own, s.score(lambda im: A._generated(s, tensors, im))


def _finetune_all(settings: list[A.Setting], steps: list[int], lr: float, mnet_args: dict) -> list[dict[int, float]]:
    """finetune_all for every draw at once: the exported networks' parameters stacked
    (torch.func.stack_module_state), each draw's images through its own copy (eval mode: the
    BatchNorm statistics are read, never written, so they can be shared)."""
    s0 = settings[0]
    nets = [A.plain_network(s, mnet_args, "finetune_all")[0] for s in settings]
    params, buffers = torch.func.stack_module_state(nets)
    params = {n: nn.Parameter(p.detach()) for n, p in params.items()}
    shape = copy.deepcopy(nets[0]).to("meta").eval()      # the module's code, no storage

    def loss_one(p: dict, b: dict, x, y) -> torch.Tensor:
        return s0.loss_fn(torch.func.functional_call(shape, (p, b), (x,)), y)

    batched = torch.func.vmap(loss_one)
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    gens = [torch.Generator().manual_seed(s.seed) for s in settings]
    k = len(s0.support)
    b = min(k, s0.batch_size)
    out: list[dict] = [{} for _ in settings]
    for step in range(1, max(steps) + 1):
        idx = [torch.randperm(k, generator=g)[:b] for g in gens]
        x = torch.stack([s.support.x[i] for s, i in zip(settings, idx)])
        y = torch.stack([s.support_y[i] for s, i in zip(settings, idx)])
        opt.zero_grad(set_to_none=True)
        batched(params, buffers, x, y).sum().backward()
        opt.step()
        if step in steps:
            for d, s in enumerate(settings):
                own = ({n: v[d].detach() for n, v in params.items()}, {n: v[d] for n, v in buffers.items()})
                out[d][step] = s.score(lambda im, own=own: torch.func.functional_call(shape, own, (im.x,)))
    return out
