"""The main network (mnet) and the hypernetwork model that generates part of its parameters.

The mnet is a plain nn.Module (MobileNetV2 encoder + decoder). HyperSaliency runs it
unmodified through `torch.func.functional_call`, with
- the generated tensors (decoder, optionally encoder blocks) in place of its own parameters,
- per-task BatchNorm running statistics (a bank with one row per task) in place of its buffers.
The names and shapes of the generated tensors are read off the mnet itself (`generated`),
which replaces the seed's custom-weights layers. `export(task)` turns (hypernet, task) into a
state dict that loads into a plain MainNet, with no hypernetwork at all.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from hypersal.config import choices, options
from hypersal.errors import UserError, shorten
from hypersal.models.decoders import DECODERS, SaliencyOutput
from hypersal.models.encoder import CHANNELS, Encoder
from hypersal.models.hypernet import HYPERNETS
from hypersal.models.task_encoder import TaskEncoder

GENERATE = choices.GENERATE   # declared in hypersal/config/choices.py


class MainNet(nn.Module):
    """Image (B, 3, H, W) -> saliency logits (B, 1, H, W). `skip` N: the decoder also takes the
    output of the first N encoder blocks (a finer grid: stride 4 for N = 3 or 4)."""

    def __init__(self, cutoff: int = 14, weights: str | None = None, weights_path: str | None = None,
                 decoder: str = "light", width: int | None = None, skip: int | None = None, prior: int = 0):
        super().__init__()
        self.encoder = Encoder(cutoff, weights, weights_path)
        kind = DECODERS.get(decoder, key="model.decoder.name")
        self.skip = skip
        if prior and not (isinstance(prior, int) and prior > 0):
            raise UserError(f"prior {shorten(prior)} must be a number of Gaussian maps (0: none)", key="model.decoder.prior",
                            fix="e.g. 4")
        # Saliency-shaped parameters on the logits (output.*): generated with the decoder.
        self.output = SaliencyOutput(prior) if prior else None
        if skip is None:
            self.decoder = kind(self.encoder.out_channels, width)
            return
        options.enforce_range("model.decoder.skip", skip)
        options.enforce({"model": {"decoder": {"name": decoder, "skip": skip}, "encoder": {"cutoff": cutoff}}},
                        options.skip_needs_light, options.skip_before_cutoff)
        self.decoder = kind(self.encoder.out_channels, width, skip_channels=CHANNELS[skip - 1])

    def encode(self, x: torch.Tensor) -> tuple:
        """(deepest features, the skip's features or None): what the decoder reads."""
        if self.skip is None:
            return self.encoder(x), None
        return self.encoder.forward_with_skip(x, self.skip)

    def decode(self, encoded: tuple, size) -> torch.Tensor:
        deep, low = encoded
        logits = self.decoder(deep, size) if low is None else self.decoder(deep, size, low)
        return logits if self.output is None else self.output(logits)

    def forward(self, x: torch.Tensor | None, encoded: tuple | None = None, size=None,
                encode_only: bool = False):
        """Logits for images x; `encode_only`: the encoder's output only; `encoded` (with the
        output `size`): decode given features, skipping the encoder (the few-shot study caches
        them). One forward with these modes, so HyperSaliency's functional call reaches each."""
        if encode_only:
            return self.encode(x)
        if encoded is None:
            encoded, size = self.encode(x), x.shape[-2:]
        return self.decode(encoded, size)


def generated_names(mnet: MainNet, generate: str, encoder_from: int | None) -> list[str]:
    """Which mnet parameters the hypernetwork emits, in the mnet's own order."""
    if generate not in GENERATE:
        raise UserError(f"unknown value '{generate}'", key="model.hypernet.generate",
                        fix=f"use one of: {', '.join(GENERATE)}")
    if generate == "none":
        return []
    if generate in choices.GENERATE_ENCODER and encoder_from is None:
        raise UserError(f"generate: {generate} needs the first generated encoder block",
                        key="model.hypernet.encoder_from", fix="set encoder_from, e.g. 10")
    # decoder+film: of those blocks, only the BatchNorm layers' scale and shift (FiLM: a per-task,
    # per-channel modulation of the shared encoder's features, a few thousand numbers)
    norms = {f"{n}.{p}" for n, m in mnet.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for p in ("weight", "bias")}

    def wanted(name: str) -> bool:
        if name.startswith(("decoder.", "output.")):       # output: the saliency-shaped parameters
            return True
        if generate in choices.GENERATE_ENCODER and name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) >= encoder_from and (generate == "decoder+encoder" or name in norms)
        return False
    return [n for n, _ in mnet.named_parameters() if wanted(n)]


def saliency_names(generated: list[str]) -> list[str]:
    """The generated tensors that shape the saliency map directly: the decoder's head and the
    output layer (prior, blur, gain, bias). The saliency arm adapts them; the task encoder
    emits offsets on them."""
    return [n for n in generated if n.startswith(("output.", "decoder.head."))]


class BatchNormBank(nn.Module):
    """One row of running statistics per task for every BatchNorm buffer of the mnet."""

    def __init__(self, mnet: nn.Module, n_tasks: int):
        super().__init__()
        self.names = [n for n, _ in mnet.named_buffers()]
        for name, buf in mnet.named_buffers():
            # (T, *shape): each task starts from the mnet's own statistics.
            self.register_buffer(self._key(name), buf.detach().unsqueeze(0).repeat(n_tasks, *[1] * buf.dim()).clone())

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def for_task(self, task: int) -> dict[str, torch.Tensor]:
        """Views into the bank: BatchNorm's in-place updates land in this task's row."""
        return {name: getattr(self, self._key(name))[task] for name in self.names}

    def mean_row(self, name: str) -> torch.Tensor:
        """One statistic averaged over the tasks (counts: the max)."""
        bank = getattr(self, self._key(name))
        return bank.float().mean(0).to(bank.dtype) if bank.is_floating_point() else bank.max(0).values

    def add_row(self) -> None:
        """A new task: its statistics start as the mean of the others."""
        for name in self.names:
            bank = getattr(self, self._key(name))
            setattr(self, self._key(name), torch.cat([bank, self.mean_row(name).unsqueeze(0)]))


class HyperSaliency(nn.Module):
    def __init__(self, mnet: MainNet, task_names: list[str], generate: str = "decoder",
                 encoder_from: int | None = None, hypernet: str = "chunked", hypernet_options: dict | None = None,
                 per_task_bn: bool = True, start: str = "mean", n_trained: int | None = None,
                 task_encoder: dict | None = None):
        super().__init__()
        self.mnet = mnet
        self.task_names = list(task_names)
        # The first n_trained tasks have trained embeddings; add_task appends new ones after them.
        self.n_trained = len(self.task_names) if n_trained is None else n_trained
        self.generated = generated_names(mnet, generate, encoder_from)
        params = dict(mnet.named_parameters())
        self.shapes = [params[n].shape for n in self.generated]
        self.hnet = None
        if self.generated:
            base = torch.cat([params[n].detach().flatten() for n in self.generated])
            self.hnet = HYPERNETS.get(hypernet, key="model.hypernet.name")(
                base, len(self.task_names), **(hypernet_options or {}))
            for name in self.generated:  # replaced at every call: never trained in place
                params[name].requires_grad_(False)
            if start == "learned":       # a shared parameter: episodic training learns it
                self.hnet.start = nn.Parameter(torch.zeros(self.hnet.task_embeddings.shape[1]))
        if start not in ("mean", "learned"):
            raise UserError(f"unknown value '{start}'", key="model.hypernet.start", fix="use mean or learned")
        self.bn_bank = BatchNormBank(mnet, len(self.task_names)) if per_task_bn else None
        # model.task_encoder (width 0: none): k pairs -> an embedding and saliency offsets.
        self.task_encoder = None
        if (task_encoder or {}).get("width") and self.hnet is not None:
            shapes = dict(zip(self.generated, self.shapes))
            self.task_encoder = TaskEncoder(mnet.encoder.out_channels, self.hnet.task_embeddings.shape[1],
                                            {n: shapes[n] for n in saliency_names(self.generated)},
                                            width=task_encoder["width"], grid=task_encoder.get("grid", 8))
        self._run = self._run_mnet

    def _run_mnet(self, tensors: dict, x: torch.Tensor | None, **mode) -> torch.Tensor:
        return functional_call(self.mnet, tensors, (x,), mode) if tensors else self.mnet(x, **mode)

    def compile(self, **options) -> "HyperSaliency":
        """torch.compile the main network's run, not the whole forward: its inputs are the
        generated tensors and statistics (fixed names, new values), so switching tasks reuses
        the compiled graph, where a task index would make it recompile per task."""
        self._run = torch.compile(self._run_mnet, **options)
        return self

    @property
    def generates_encoder(self) -> bool:
        """Whether some encoder tensors are generated (decoder+film, decoder+encoder): then the
        features depend on the embedding, and decoding cached features would freeze that part."""
        return any(n.startswith("encoder.") for n in self.generated)

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    def task_index(self, task: int | str) -> int:
        if isinstance(task, str):
            if task not in self.task_names:
                raise UserError(f"unknown task '{task}'", fix=f"use one of: {', '.join(self.task_names)}")
            return self.task_names.index(task)
        return task

    def generated_params(self, task: int | None = None, embedding: torch.Tensor | None = None,
                         offsets: dict | None = None) -> dict:
        """{mnet parameter name: tensor} for a task (or a given embedding), plus `offsets` on
        some of them (the task encoder's, the saliency arm's)."""
        if self.hnet is None:
            return {}
        if embedding is None:
            embedding = self.hnet.task_embeddings[task]                   # (E,)
        flat = self.hnet(embedding)                                        # (N,)
        pieces = flat.split([s.numel() for s in self.shapes])
        tensors = {n: t.view(s) for n, t, s in zip(self.generated, pieces, self.shapes)}
        for name, delta in (offsets or {}).items():
            tensors[name] = tensors[name] + delta
        return tensors

    def encode_task(self, encoded: tuple, maps: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The task encoder's (embedding, offsets) for k pairs: their encoder output (as
        `forward(..., encode_only=True)` gives it) and their maps (k, 1, H, W) in [0, 1]."""
        if self.task_encoder is None:
            raise UserError("the model has no task encoder", key="model.task_encoder.width",
                            fix="train a model with model.task_encoder.width > 0, e.g. 64")
        return self.task_encoder(encoded[0], maps, self.start_embedding())

    def forward(self, x: torch.Tensor | None, task: int = 0, embedding: torch.Tensor | None = None,
                offsets: dict | None = None, **mode) -> torch.Tensor:
        """Images (B, 3, H, W) of one task -> logits (B, 1, H, W). The weights are generated once
        per batch, not per sample. `mode`: MainNet.forward's encode_only, or encoded and size."""
        tensors = self.generated_params(task, embedding, offsets)
        if self.bn_bank is not None:
            tensors.update(self.bn_bank.for_task(task))
        return self._run(tensors, x, **mode)

    def start_embedding(self) -> torch.Tensor:
        """Where a new task's embedding starts (model.hypernet.start): the learned start, or the
        mean of the trained tasks' embeddings (detached: not a parameter)."""
        start = getattr(self.hnet, "start", None)
        return start if start is not None else self.hnet.task_embeddings.detach()[: self.n_trained].mean(0)

    def add_task(self, name: str) -> int:
        """Room for a new task (few-shot adaptation): its embedding starts at start_embedding()
        (the mean of the others, or the learned start), its BatchNorm statistics likewise. Returns its index."""
        if name in self.task_names:
            raise UserError(f"task '{name}' exists already", fix="adapt to a task the model was not trained on")
        if self.hnet is not None:
            emb = self.hnet.task_embeddings
            first = self.start_embedding().detach().view(1, -1)
            self.hnet.task_embeddings = nn.Parameter(torch.cat([emb.data, first]))
        if self.bn_bank is not None:
            self.bn_bank.add_row()
        self.task_names.append(name)
        return self.n_tasks - 1

    def shared_parameters(self) -> list[nn.Parameter]:
        """Learned directly: the mnet's non-generated parameters and the hypernet's shared ones.
        Chosen by name, not by requires_grad, which actions switch while they freeze them."""
        generated = set(self.generated)
        own = [p for n, p in self.mnet.named_parameters() if n not in generated]
        encoder = list(self.task_encoder.parameters()) if self.task_encoder is not None else []
        return own + (self.hnet.shared_parameters() if self.hnet is not None else []) + encoder

    @torch.no_grad()
    def export(self, task: int | str, embedding: torch.Tensor | None = None,
               offsets: dict | None = None) -> dict[str, torch.Tensor]:
        """A plain MainNet state dict for one task: generated weights and its BN statistics in.
        The weights are the task's own, or those of `embedding` plus `offsets` (the task encoder's)."""
        task = self.task_index(task)
        state = {k: v.detach().clone() for k, v in self.mnet.state_dict().items()}
        generated = self.generated_params(task, embedding=embedding, offsets=offsets)
        state.update({k: v.detach().clone() for k, v in generated.items()})
        if self.bn_bank is not None:
            state.update({k: v.clone() for k, v in self.bn_bank.for_task(task).items()})
        return state
