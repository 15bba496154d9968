"""A toy optimizer that a test declares at run time (tests/test_editor_schema.py): adding one
is a line in hypersal.config.choices.OPTIMIZERS plus a function like this."""
import torch


def toy_sgd(params, cfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg["lr"])
