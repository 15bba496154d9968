"""Episodic training (train.episodic): the hypernetwork is trained *to be adapted*, beside the
multitask loss, in the manner of CAVIA (Zintgraf et al. 2019), first order.

Each batch holds images of one task. It is split into a support set (the first
`support` share) and a query set (the rest). The multitask loss is computed on the whole
batch with the task's own embedding, as usual. The episode starts a *new* embedding at
model.hypernet.start (learned, or the trained tasks' mean), takes `inner_steps` normalised
gradient steps of length `inner_lr` on the support loss (the encoder's features computed once:
only the decoder depends on the embedding), and scores the adapted embedding on the query set. The query loss, times
`weight`, joins the multitask loss; its gradient reaches the shared parameters and, first
order (the inner steps treated as constants), the learned start:

    loss = L(batch | e_task) + weight * L(query | e_0 + stop_grad(e_n - e_0))
                             + encoder_weight * L(query | task_encoder(support pairs))

The last term trains the task encoder (model.task_encoder): the support pairs in, the query
loss of the embedding and head offsets it emits out, with no gradient step. Either weight may
be 0; the support features are detached in both (the multitask loss trains the encoder).
"""
from __future__ import annotations

from typing import Callable

import torch

from hypersal.errors import UserError
from hypersal.train.steps import images_to_input, maps_to_target


def adapt_embedding(model, start: torch.Tensor, encoded: tuple | None, target: torch.Tensor, size, loss_fn: Callable,
                    steps: int, lr: float, task: int = 0, images: torch.Tensor | None = None) -> torch.Tensor:
    """`steps` normalised gradient steps on the embedding alone (each of length `lr` in embedding
    space, whatever the gradient's scale, which grows by orders of magnitude while the
    hypernetwork trains), from `start`, on given encoder features (or, for a model that generates
    encoder tensors, whose features depend on the embedding, on `images`): the adapted embedding, detached."""
    emb = start.detach().clone()
    for _ in range(steps):
        emb.requires_grad_(True)
        logits = (model(images, task=task, embedding=emb) if images is not None
                  else model(None, task=task, embedding=emb, encoded=encoded, size=size))
        loss = loss_fn(logits, target)
        grad, = torch.autograd.grad(loss, emb)
        emb = (emb - lr * grad / grad.norm().clamp_min(1e-12)).detach()
    return emb


class EpisodicTrainStep:
    """One optimizer step on the multitask loss plus an episode's query loss (see above)."""

    def __init__(self, loss_fn: Callable, cfg, clip_grad: float = 0.0):
        self.loss_fn, self.clip_grad = loss_fn, clip_grad
        self.weight, self.inner_steps, self.inner_lr = float(cfg.weight), int(cfg.inner_steps), float(cfg.inner_lr)
        self.encoder_weight = float(cfg.encoder_weight)
        self.support = float(cfg.support)     # in (0, 1), inner_steps >= 1: hypersal.config.options' ranges

    def __call__(self, trainer, batch) -> torch.Tensor:
        model, opt, device = trainer.model, trainer.optimizer, trainer.device
        x, y = images_to_input(batch.images, device), maps_to_target(batch.maps, device)
        n_support = int(round(self.support * x.shape[0]))
        if not 1 <= n_support < x.shape[0]:
            raise UserError(f"a batch of {x.shape[0]} cannot be split into a support and a query set",
                            key="train.batch_size", fix="use batches of at least 2 (e.g. 16)")
        opt.zero_grad(set_to_none=True)
        size = x.shape[-2:]
        encoded = model(x, task=batch.task, encode_only=True)
        loss = self.loss_fn(model(None, task=batch.task, encoded=encoded, size=size), y)
        support = tuple(None if e is None else e[:n_support].detach() for e in encoded)
        query = tuple(None if e is None else e[n_support:] for e in encoded)
        # A model that generates encoder tensors (decoder+film, decoder+encoder): the task's own
        # features would carry its identity, so every network of the episode runs on the images,
        # and the task encoder reads the features the start gives (as the study's arms do).
        on_images = model.generates_encoder
        if on_images:
            with torch.no_grad():
                support = model(x[:n_support], task=batch.task, embedding=model.start_embedding().detach(),
                                encode_only=True)

        def query_logits(embedding, offsets=None):
            if on_images:
                return model(x[n_support:], task=batch.task, embedding=embedding, offsets=offsets)
            return model(None, task=batch.task, embedding=embedding, offsets=offsets, encoded=query, size=size)
        total = loss
        if self.weight > 0:
            start = model.start_embedding()
            adapted = adapt_embedding(model, start, support, y[:n_support], size, self.loss_fn,
                                      self.inner_steps, self.inner_lr, batch.task,
                                      images=x[:n_support] if on_images else None)
            first_order = start + (adapted - start.detach())       # d(query)/d(start) = d(query)/d(adapted)
            total = total + self.weight * self.loss_fn(query_logits(first_order), y[n_support:])
        if self.encoder_weight > 0:
            embedding, offsets = model.encode_task(support, y[:n_support])
            total = total + self.encoder_weight * self.loss_fn(query_logits(embedding, offsets), y[n_support:])
        total.backward()
        if self.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.clip_grad)
        opt.step()
        if trainer.scheduler is not None:
            trainer.scheduler.step()
        return total.detach()
