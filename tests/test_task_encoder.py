"""The task encoder (model.task_encoder): k pairs in, an embedding and head offsets out, with
no gradient step; trained in train.episodic's episodes; the study's encoder arms."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from hypersal.errors import UserError
from hypersal.study import arms as A

from helpers.fewshot import MNET, episode, setting, small


def trained_looking(model):
    """The encoder with random heads: zero-initialised ones would make every check below trivial."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.task_encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def pairs(model, k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(k, 3, 32, 32, generator=gen)
    y = torch.rand(k, 1, 32, 32, generator=gen)
    with torch.no_grad():
        return model(x, encode_only=True), y


@pytest.mark.parametrize("k", [1, 2, 10, 50])
def test_the_encoder_takes_any_k_and_the_order_of_the_pairs_does_not_matter(k):
    model = trained_looking(small())
    encoded, y = pairs(model, k)
    emb, offsets = model.encode_task(encoded, y)
    assert emb.shape == model.start_embedding().shape and torch.isfinite(emb).all()
    shapes = {n: t.shape for n, t in model.generated_params(task=0).items()}
    assert sorted(offsets) == sorted(A.saliency_names(model)) and all(offsets[n].shape == shapes[n] for n in offsets)
    order = torch.randperm(k, generator=torch.Generator().manual_seed(k))
    emb2, offsets2 = model.encode_task(tuple(e[order] for e in encoded), y[order])
    torch.testing.assert_close(emb2, emb)
    for name in offsets:
        torch.testing.assert_close(offsets2[name], offsets[name])
    if k > 1:                                          # the pairs matter: another set, another task
        other, y_other = pairs(model, k, seed=1)
        assert not torch.allclose(model.encode_task(other, y_other)[0], emb)


def test_an_untrained_encoder_gives_the_start_and_its_arm_scores_as_k0_start():
    s = setting(small())
    encoded, y = pairs(s.model, 4)
    emb, offsets = s.model.encode_task(encoded, y)
    assert torch.equal(emb, s.model.start_embedding()) and all(not d.any() for d in offsets.values())
    assert A.run("encoder", s, [3], 0.0, MNET)[3] == pytest.approx(A.k0(s, best=False), abs=1e-6)
    assert A.run("encoder_saliency", s, [2], 0.0, MNET)[2] == pytest.approx(A.k0(s, best=False), abs=1e-6)


def test_a_model_without_an_encoder_says_which_key_gives_it_one():
    model = small(encoder=0)
    assert model.task_encoder is None
    with pytest.raises(UserError, match="model.task_encoder.width"):
        model.encode_task(*pairs(model, 2))


def test_one_episodic_step_trains_the_encoder_with_no_nan():
    model = small().train()
    loss, changed = episode(model, weight=0.0, encoder_weight=1.0)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert {"task_encoder.to_embedding.weight", "task_encoder.to_offsets.weight"} <= changed
    assert "hnet.start" in changed and "hnet.base" in changed       # the query loss reaches them through it
    assert any(p is model.task_encoder.to_offsets.weight for p in model.shared_parameters())


def test_timed_leaves_the_scoring_out_of_the_adaptation_time():
    s = setting(trained_looking(small()))
    scores, ms = A.timed("encoder_saliency", s, [3], 0.01, MNET)
    assert set(scores) == {3} and -1 <= scores[3] <= 1
    assert ms > 0 and s.scoring > 0                   # scored once per budget, and timed apart
    again, _ = A.timed("encoder_saliency", setting(trained_looking(small())), [3], 0.01, MNET)
    assert again == scores                            # reruns identically: what a resumed stage relies on


def test_an_episode_of_a_film_model_trains_on_the_images_with_no_nan():
    model = small(generate="decoder+film").train()
    assert model.generates_encoder and not small().generates_encoder
    loss, changed = episode(model, encoder_weight=1.0)
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())
    assert {"task_encoder.to_offsets.weight", "hnet.start", "hnet.base"} <= changed


def test_encoder_finetune_starts_from_the_encoder_s_network_and_then_trains_every_weight():
    s = setting(trained_looking(small()))
    net, fresh = A.plain_network(s, MNET, "encoder_finetune")
    assert fresh is None and not net.training
    with torch.no_grad():
        ours = torch.sigmoid(net(s.query.x).float())[:, 0]
        emb, offsets = A.encoded_task(s)
        tensors = s.model.generated_params(embedding=emb, offsets=offsets)
        theirs = torch.sigmoid(A._generated(s, tensors, s.query).float())[:, 0]
    assert torch.allclose(ours, theirs, atol=1e-5)              # the encoder arm's network, exported
    start, _ = A.plain_network(s, MNET, "finetune_all")
    with torch.no_grad():
        assert not torch.allclose(torch.sigmoid(start(s.query.x).float())[:, 0], ours, atol=1e-3)   # not the start's
    scores = A.run("encoder_finetune", s, [2], 0.01, MNET)
    assert set(scores) == {2} and -1 <= scores[2] <= 1
    assert A.run("encoder_finetune", setting(trained_looking(small())), [2], 0.01, MNET) == scores   # reruns identically


def test_a_weight_pull_holds_full_fine_tuning_nearer_its_start(monkeypatch):
    """study.weight_pulls (L2-SP): the squared distance of every weight to the start's, weighted,
    joins the loss of encoder_finetune and finetune_all; 0 leaves them as they were."""
    built, real = [], A.plain_network
    monkeypatch.setattr(A, "plain_network", lambda *args: built.append(real(*args)) or built[-1])

    def fine_tuned(arm: str, pull: float) -> tuple[dict, float]:
        s = dataclasses.replace(setting(trained_looking(small())), weight_pull=pull)
        start = [p.detach().clone() for p in real(s, MNET, arm)[0].parameters()]
        scores = A.run(arm, s, [3, 8], 0.01, MNET)
        moved = sum(((p.detach() - q) ** 2).sum() for p, q in zip(built[-1][0].parameters(), start))
        return scores, float(moved)
    for arm in A.WEIGHT_PULL_ARMS:
        (free, free_moved), (pulled, pulled_moved) = fine_tuned(arm, 0.0), fine_tuned(arm, 10.0)
        assert free_moved > 0 and pulled_moved < free_moved / 2, (arm, free_moved, pulled_moved)
        assert pulled != free and fine_tuned(arm, 0.0)[0] == free        # a rerun is the same: the pull made the change
