"""study.vectorise: the draws of one task and k adapted at once equal the draws run one by one."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from hypersal.study import arms as A, vectorised as V

from helpers.fewshot import MNET, setting, small


def draws(n: int = 3, **model) -> list[A.Setting]:
    """n draws of one new task: their own k = 4 pairs and seeds, the same model and query."""
    first = setting(small(**model))
    gen = torch.Generator().manual_seed(11)
    out = []
    for d in range(n):
        x, y = torch.randn(4, 3, 32, 32, generator=gen), torch.rand(4, 1, 32, 32, generator=gen)
        with torch.no_grad():
            support = A.Images(x, first.model(x, task=first.task, encode_only=True))
        out.append(dataclasses.replace(first, support=support, support_y=y, seed=d))
    return out


@pytest.mark.parametrize("arm, generate", [(arm, "decoder") for arm in V.VECTOR_ARMS]
                         + [("embedding", "decoder+film"), ("encoder_saliency", "decoder+film")])
def test_the_vectorised_draws_equal_the_draws_run_one_by_one(arm, generate):
    settings = draws(generate=generate)
    model, gen = settings[0].model, torch.Generator().manual_seed(2)
    with torch.no_grad():                                   # as if trained: embeddings and pairs matter
        model.hnet.mlp[-1].weight.normal_(0, 0.05, generator=gen)
        for p in model.task_encoder.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    together = V.run_draws(arm, settings, [1, 3], 0.05 if arm != "finetune_all" else 0.005, MNET)
    alone = [A.run(arm, s, [1, 3], 0.05 if arm != "finetune_all" else 0.005, MNET) for s in settings]
    assert len(together) == 3
    for t, a in zip(together, alone):
        assert set(t) == {1, 3}
        for step in (1, 3):
            assert t[step] == pytest.approx(a[step], abs=1e-5)
    assert len({t[3] for t in together}) == 3               # the draws differ: not one draw three times
    assert together[0][3] != together[0][1]                # and the steps moved them


def test_the_time_to_adapt_is_per_draw_and_leaves_the_scoring_out():
    settings = draws(2)
    scores, ms = V.timed_draws("embedding", settings, [2], 0.05)
    assert len(scores) == 2 and ms > 0 and all(s.scoring > 0 for s in settings)


def test_whole_networks_are_vectorised_on_a_gpu_only_and_plain_b_never():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert V.applies("saliency", cpu) and V.applies("finetune_all", cuda)
    assert not V.applies("finetune_all", cpu)               # measured slower on a CPU core
    assert not V.applies("plain_b", cuda) and not V.applies("scratch", cuda) and not V.applies("encoder", cpu)
    assert not V.applies("finetune_all", cuda, weight_pull=0.001)    # its stacked fit has no L2-SP term


def test_with_generated_film_the_arms_run_the_images_not_the_cached_features():
    """decoder+film: the features depend on the embedding, so decoding the cached ones (made with
    the start's) would freeze the generated encoder part."""
    s = setting(small(generate="decoder+film"))
    with torch.no_grad():
        s.model.hnet.mlp[-1].weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(4))
    emb = s.model.start_embedding().detach() + 1.0
    tensors = s.model.generated_params(embedding=emb)
    got = A._generated(s, tensors, s.query)
    with torch.no_grad():
        torch.testing.assert_close(got, s.model(s.query.x, task=s.task, embedding=emb))
        cached = s.model._run(tensors, None, encoded=s.query.encoded, size=s.size)
    assert not torch.allclose(got, cached, atol=1e-4)
