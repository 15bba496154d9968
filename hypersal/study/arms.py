"""The arms of the few-shot study: ways of getting a saliency model for a new task from k
image-map pairs, starting from a trained multi-task hypernetwork (or not).

| arm              | starts from                                   | learns                                |
|------------------|-----------------------------------------------|---------------------------------------|
| k0_start         | the start embedding (model.hypernet.start)    | nothing (k = 0 pairs used)            |
| k0_best          | the trained embedding with the lowest loss    | nothing (the k pairs only choose)     |
|                  | on the k pairs                                |                                       |
| encoder          | the task encoder's embedding and offsets for  | nothing: one forward pass, no         |
|                  | the k pairs (model.task_encoder)              | gradient step                         |
| embedding        | the start embedding                           | the embedding                         |
| saliency         | the start and the `starts` best trained       | the embedding, and the generated      |
|                  | embeddings; keeps the start whose final loss  | head and output (prior, blur, gain,   |
|                  | on the k pairs is lowest                      | bias) as offsets pulled back to 0     |
| encoder_saliency | the task encoder's embedding and offsets      | as saliency, the offsets pulled back  |
|                  |                                               | to the encoder's                      |
| encoder_finetune | the network the task encoder's output         | every parameter, as a plain network   |
|                  | generates, exported (the hnet's weights as    | (finetune_all from the encoder's      |
|                  | the start of full fine-tuning)                | network instead of the start's)       |
| finetune_decoder | the exported network of the start embedding   | the decoder and output                |
| finetune_all     | the exported network of the start embedding   | every parameter                       |
| finetune_lora    | the exported network of the start embedding   | the tensors the hypernetwork          |
|                  |                                               | generates, and a rank-`lora_rank`     |
|                  |                                               | change of every other pointwise conv  |
|                  |                                               | of the encoder (LoRA): what a         |
|                  |                                               | generator of such changes could reach |
| plain_b          | a plain network: the multi-task encoder,      | every parameter                       |
|                  | a random decoder (the old study's arm b)      |                                       |
| scratch          | a plain network, random weights               | every parameter                       |

Every arm uses Adam on batches of at most `batch_size` of the k pairs, no augmentation, and
the trained BatchNorm statistics in eval mode (never re-estimated from k images); the layers
an arm initialises at random (plain_b's decoder, scratch) average their statistics over the
steps instead. The arms whose encoder is frozen run the decoder on cached encoder features.
`run(arm, ...)` trains to the largest of `steps` and returns the score after each of them;
`timed(...)` also returns the milliseconds the arm took to adapt, from the k pairs to a network
that predicts (scoring left out; the encoder arms include encoding the k images, which the arms
on cached features do not count: one forward of k images, less than one of their steps).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from hypersal.config import choices
from hypersal.evaluation import metrics as M
from hypersal.models.hyper import HyperSaliency, MainNet, saliency_names as generated_saliency

ARMS = choices.STUDY_ARMS   # declared in hypersal/config/choices.py
UNTRAINED = choices.UNTRAINED_ARMS                        # no step: no budget to choose
TRAINED = tuple(a for a in ARMS if a not in UNTRAINED)
IMAGE_ARMS = ("encoder_finetune", "finetune_all", "finetune_lora", "plain_b", "scratch")   # the encoder learns: no cached features
ENCODER_ARMS = choices.ENCODER_ARMS                       # need model.task_encoder
PULL_ARMS = ("saliency", "encoder_saliency")             # their offsets are pulled back (Setting.pull)
WEIGHT_PULL_ARMS = ("encoder_finetune", "finetune_all")  # every weight pulled to its start's (Setting.weight_pull)
HNET_ARMS = ("k0_start", "k0_best", "encoder", "embedding", "saliency", "encoder_saliency", "encoder_finetune")
FINETUNE_ARMS = ("finetune_decoder", "finetune_all", "finetune_lora", "plain_b", "scratch")


@dataclass
class Images:
    """Images of one split as the model takes them, with their cached encoder features."""
    x: torch.Tensor                 # (N, 3, H, W) normalised
    encoded: tuple                  # the encoder's output for x (deep, skip or None)

    def take(self, idx) -> "Images":
        return Images(self.x[idx], tuple(None if e is None else e[idx] for e in self.encoded))

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class Setting:
    """One adaptation problem: the model, the k pairs, what to score on, how to train."""
    model: HyperSaliency            # eval mode; its last task is the new one (add_task)
    task: int                       # the new task's index: its embedding is the start
    support: Images
    support_y: torch.Tensor         # (k, 1, H, W) in [0, 1]
    query: Images
    query_y: torch.Tensor           # (N, H', W') reference maps, any size
    loss_fn: Callable
    batch_size: int
    seed: int                       # batches and random initialisations
    pull: float = 0.1
    weight_pull: float = 0.0        # L2-SP: weight of the squared distance of every weight to the start's
    starts: int = 2
    lora_rank: int = 8              # finetune_lora: the rank of each pointwise convolution's change
    scoring: float = 0.0            # seconds spent scoring (timed() leaves them out)

    @property
    def size(self):
        return self.support.x.shape[-2:]

    def score(self, predict: Callable) -> float:
        """score() on the query images, its time counted apart from the adaptation's (a GPU's
        queued adaptation work finished first: CUDA runs asynchronously)."""
        sync(self.support.x.device)
        t0 = time.perf_counter()
        try:
            return score(predict, self.query, self.query_y)
        finally:
            self.scoring += time.perf_counter() - t0


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU's), so that a clock read after it is true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def score(predict: Callable, query: Images, target: torch.Tensor, chunk: int = 64) -> float:
    """Mean per-image CC of sigmoid(predict(images)) against the reference maps."""
    preds = torch.cat([torch.sigmoid(predict(query.take(slice(i, i + chunk))).float())[:, 0]
                       for i in range(0, len(query), chunk)])
    return float(M.cc(preds, target).mean())


def _hnet(s: Setting, emb: torch.Tensor, images: Images, offsets: dict | None = None) -> torch.Tensor:
    """The hypernetwork's network for an embedding (plus offsets on some generated tensors)."""
    return _generated(s, s.model.generated_params(embedding=emb, offsets=offsets), images)


def _generated(s: Setting, tensors: dict, images: Images) -> torch.Tensor:
    """The main network with given generated tensors (the decoder fine-tuned as plain tensors), on
    the cached features, or on the images when encoder tensors are generated (decoder+film,
    decoder+encoder: the features depend on them)."""
    if s.model.bn_bank is not None:
        tensors = {**tensors, **s.model.bn_bank.for_task(s.task)}
    if s.model.generates_encoder:
        return s.model._run(tensors, images.x)
    return s.model._run(tensors, None, encoded=images.encoded, size=s.size)


def _fit(s: Setting, params: list, loss_of: Callable, steps: list[int], lr: float, score_now: Callable,
         on_step: Callable | None = None) -> dict[int, float]:
    """Adam for max(steps) steps on random batches of the k pairs; the score after each budget."""
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(s.seed)
    k = len(s.support)
    out = {}
    for step in range(1, max(steps) + 1):
        idx = torch.randperm(k, generator=gen)[: min(k, s.batch_size)]
        opt.zero_grad(set_to_none=True)
        loss_of(idx).backward()
        opt.step()
        if on_step is not None:
            on_step()
        if step in steps:
            out[step] = score_now()
    return out


def support_losses(s: Setting, embeddings: torch.Tensor) -> torch.Tensor:
    """The loss on all k pairs of each embedding (rows)."""
    with torch.no_grad():
        return torch.stack([s.loss_fn(_hnet(s, e, s.support), s.support_y) for e in embeddings])


def trained_embeddings(s: Setting) -> torch.Tensor:
    return s.model.hnet.task_embeddings.detach()[: s.model.n_trained]


def k0(s: Setting, best: bool) -> float:
    emb = s.model.start_embedding().detach()
    if best:
        trained = trained_embeddings(s)
        emb = trained[int(support_losses(s, trained).argmin())]
    return s.score(lambda im: _hnet(s, emb, im))


def embedding(s: Setting, steps: list[int], lr: float) -> dict[int, float]:
    emb = nn.Parameter(s.model.start_embedding().detach().clone())
    return _fit(s, [emb], lambda idx: s.loss_fn(_hnet(s, emb, s.support.take(idx)), s.support_y[idx]),
                steps, lr, lambda: s.score(lambda im: _hnet(s, emb, im)))


def saliency_names(model: HyperSaliency) -> list[str]:
    """The generated tensors the saliency arm adapts directly: the head and the output layer."""
    return generated_saliency(model.generated)


@torch.no_grad()
def encoded_task(s: Setting) -> tuple[torch.Tensor, dict]:
    """The task encoder's (embedding, offsets) for the k pairs, the k images encoded again (not
    the cached features): the time to adapt counts everything from the pairs on."""
    return s.model.encode_task(s.model(s.support.x, task=s.task, encode_only=True), s.support_y)


def encoder(s: Setting) -> float:
    """The task encoder's network for the k pairs: one forward pass, the weights generated once."""
    emb, offsets = encoded_task(s)
    with torch.no_grad():
        tensors = s.model.generated_params(embedding=emb, offsets=offsets)
    return s.score(lambda im: _generated(s, tensors, im))


def saliency_starts(s: Setting) -> list[tuple[torch.Tensor, dict]]:
    """The saliency arm's starts, (embedding, zero offsets on the saliency-shaped tensors): the
    start embedding and the `starts` trained embeddings with the lowest loss on the k pairs."""
    trained = trained_embeddings(s)
    order = support_losses(s, trained).argsort()[: s.starts]
    starts = [s.model.start_embedding().detach()] + [trained[int(i)] for i in order]
    shapes = {n: t.shape for n, t in s.model.generated_params(embedding=starts[0]).items()
              if n in saliency_names(s.model)}
    zeros = {n: torch.zeros(shape, device=s.support.x.device) for n, shape in shapes.items()}
    return [(start, zeros) for start in starts]


def saliency(s: Setting, steps: list[int], lr: float) -> dict[int, float]:
    """From each start, the embedding and offsets on the saliency-shaped tensors; at every
    budget, the score of the start whose loss on the k pairs is then lowest."""
    return _saliency_from(s, saliency_starts(s), steps, lr)


def encoder_saliency(s: Setting, steps: list[int], lr: float) -> dict[int, float]:
    """The saliency arm's steps from the task encoder's embedding and offsets."""
    return _saliency_from(s, [encoded_task(s)], steps, lr)


def _saliency_from(s: Setting, starts: list[tuple[torch.Tensor, dict]], steps: list[int], lr: float) -> dict[int, float]:
    """From each (embedding, offsets) start, the embedding and the offsets (pulled back to the
    start's); at every budget, the score of the start whose loss on the k pairs is then lowest."""
    runs = []
    for start, start_offsets in starts:
        emb = nn.Parameter(start.detach().clone())
        offsets = {n: nn.Parameter(d.detach().clone()) for n, d in start_offsets.items()}
        anchors = {n: d.detach() for n, d in start_offsets.items()}

        def loss_of(idx, emb=emb, offsets=offsets, anchors=anchors):
            fit = s.loss_fn(_hnet(s, emb, s.support.take(idx), offsets), s.support_y[idx])
            return fit + s.pull * sum(((d - anchors[n]) ** 2).sum() for n, d in offsets.items())

        def both(emb=emb, offsets=offsets) -> tuple:
            with torch.no_grad():
                own = float(s.loss_fn(_hnet(s, emb, s.support, offsets), s.support_y))
            return own, s.score(lambda im: _hnet(s, emb, im, offsets))
        runs.append(_fit(s, [emb, *offsets.values()], loss_of, steps, lr, both))
    return {step: min(run[step] for run in runs)[1] for step in steps}


def start_tensors(s: Setting) -> dict[str, torch.Tensor]:
    """The generated tensors of the start embedding, detached: where finetune_decoder starts."""
    return {n: t.detach() for n, t in s.model.generated_params(embedding=s.model.start_embedding().detach()).items()}


def finetune_decoder(s: Setting, steps: list[int], lr: float) -> dict[int, float]:
    tensors = {n: nn.Parameter(t.clone()) for n, t in start_tensors(s).items()}
    return _fit(s, list(tensors.values()),
                lambda idx: s.loss_fn(_generated(s, tensors, s.support.take(idx)), s.support_y[idx]),
                steps, lr, lambda: s.score(lambda im: _generated(s, tensors, im)))


def plain_network(s: Setting, mnet_args: dict, kind: str) -> tuple[MainNet, nn.Module | None]:
    """finetune_all: the exported network of the start; encoder_finetune: the exported network of
    the task encoder's output for the k pairs; plain_b: the multi-task encoder and a random
    decoder; scratch: random weights (seeded). With the part initialised at random."""
    net = _seeded_network(mnet_args, s.seed).to(s.support.x.device)   # built on the CPU (seeded there)
    if kind == "scratch":
        return _averaging_bn(net, net)
    # The new task's row, the start (add_task); encoder_finetune: the task encoder's for the k pairs.
    emb, offsets = encoded_task(s) if kind == "encoder_finetune" else (None, None)
    state = s.model.export(s.task, embedding=emb, offsets=offsets)
    if kind == "plain_b":
        state = {**net.state_dict(), **{n: v for n, v in state.items() if n.startswith("encoder.")}}
    net.load_state_dict(state)
    return _averaging_bn(net, net.decoder if kind == "plain_b" else None)


_BUILT: dict[str, tuple[MainNet, torch.Tensor]] = {}


def _seeded_network(mnet_args: dict, seed: int) -> MainNet:
    """MainNet(**mnet_args) built at random under torch.manual_seed(seed), as a copy of the first
    one built so (and the global generator left where building it leaves it): every plain arm of
    every task and k builds the network of its draw's seed, and torchvision's constructor and
    initialisation take ~85 ms a time on a CPU core where a copy takes a few."""
    key = repr((seed, sorted(mnet_args.items())))
    if key not in _BUILT:
        torch.manual_seed(seed)
        net = MainNet(**{**mnet_args, "weights": None, "weights_path": None})
        _BUILT[key] = (copy.deepcopy(net), torch.get_rng_state())
        return net
    template, rng = _BUILT[key]
    torch.manual_seed(seed)            # every device's generator, as building it would leave them
    torch.set_rng_state(rng)           # the CPU's: where building it left it
    return copy.deepcopy(template)


def _averaging_bn(net: MainNet, fresh: nn.Module | None) -> tuple[MainNet, nn.Module | None]:
    """The layers initialised at random average their BatchNorm statistics over every step
    (momentum None) and learn them; the trained ones stay in eval mode."""
    net.eval()
    if fresh is not None:
        for m in fresh.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None
                m.reset_running_stats()
    return net, fresh


class LowRank(nn.Module):
    """A pointwise convolution's weight (out, in, 1, 1) plus B @ A of rank r: LoRA (Hu et al.
    2021). B starts at zero, so the network starts as it was; A at random (seeded by the draw)."""

    def __init__(self, weight: torch.Tensor, rank: int, gen: torch.Generator):
        super().__init__()
        out, inp = weight.shape[:2]
        self.a = nn.Parameter((torch.randn(rank, inp, generator=gen) / inp ** 0.5).to(weight.device))
        self.b = nn.Parameter(torch.zeros(out, rank, device=weight.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.b @ self.a).view_as(weight)


def low_rank(s: Setting, net: MainNet) -> list[nn.Parameter]:
    """finetune_lora's parameters on the exported network `net`, every other weight frozen: the
    tensors the hypernetwork generates (the decoder, its head and output, FiLM where it is
    generated) as they are, and a LowRank change of each of the encoder's pointwise
    convolutions that it does not generate."""
    generated = set(s.model.generated)
    free = [p for n, p in net.named_parameters() if n in generated]
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(s.seed)
    changes = []
    for name, m in net.encoder.named_modules():
        if (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
                and f"encoder.{name}.weight" not in generated):
            change = LowRank(m.weight.detach(), s.lora_rank, gen)
            parametrize.register_parametrization(m, "weight", change)
            changes += [change.a, change.b]
    for p in free:
        p.requires_grad_(True)
    return free + changes


def image_arm(s: Setting, kind: str, mnet_args: dict, steps: list[int], lr: float) -> dict[int, float]:
    net, fresh = plain_network(s, mnet_args, "finetune_all" if kind == "finetune_lora" else kind)
    params = low_rank(s, net) if kind == "finetune_lora" else list(net.parameters())
    anchors = [p.detach().clone() for p in params] if s.weight_pull and kind in WEIGHT_PULL_ARMS else None

    def loss_of(idx):
        if fresh is not None:
            fresh.train(True)
        loss = s.loss_fn(net(s.support.x[idx]), s.support_y[idx])
        if anchors is not None:   # L2-SP (Li et al. 2018): keep what the start knows, fit the rest
            loss = loss + s.weight_pull * sum(((p - a) ** 2).sum() for p, a in zip(params, anchors))
        return loss

    def score_now():
        net.eval()
        return s.score(lambda im: net(im.x))
    return _fit(s, params, loss_of, steps, lr, score_now)


def run(arm: str, s: Setting, steps: list[int], lr: float, mnet_args: dict) -> dict[int, float]:
    """The arm's score after each budget in `steps` (arms that do not train: one score, for
    every budget)."""
    if arm in UNTRAINED:
        value = encoder(s) if arm == "encoder" else k0(s, best=arm == "k0_best")
        return {step: value for step in steps}
    if arm in IMAGE_ARMS:
        return image_arm(s, arm, mnet_args, steps, lr)
    return {"embedding": embedding, "saliency": saliency, "encoder_saliency": encoder_saliency,
            "finetune_decoder": finetune_decoder}[arm](s, steps, lr)


def timed(arm: str, s: Setting, steps: list[int], lr: float, mnet_args: dict) -> tuple[dict[int, float], float]:
    """run()'s scores and the milliseconds the arm took to adapt (its wall time less scoring)."""
    s.scoring = 0.0
    sync(s.support.x.device)
    t0 = time.perf_counter()
    scores = run(arm, s, steps, lr, mnet_args)
    sync(s.support.x.device)
    return scores, 1000 * (time.perf_counter() - t0 - s.scoring)
