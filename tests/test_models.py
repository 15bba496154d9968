"""Every registered decoder, hypernet and generation mode: forward, backward, no NaN; export."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import mobilenet_v2

from hypersal.errors import UserError
from hypersal.models.decoders import DECODERS
from hypersal.models.hyper import GENERATE, HyperSaliency, MainNet
from hypersal.models.hypernet import HYPERNETS

SMALL = dict(embedding_dim=4, hidden=[8])


def make(decoder="light", hypernet="chunked", generate="decoder", per_task_bn=True, cutoff=7, tasks=3):
    torch.manual_seed(0)
    options = dict(SMALL, chunk_size=512, chunk_embedding_dim=4) if hypernet == "chunked" else dict(SMALL)
    return HyperSaliency(MainNet(cutoff=cutoff, decoder=decoder, width=16), [f"t{i}" for i in range(tasks)],
                         generate=generate, encoder_from=4 if generate in ("decoder+encoder", "decoder+film") else None,
                         hypernet=hypernet, hypernet_options=options, per_task_bn=per_task_bn)


@pytest.mark.parametrize("decoder", DECODERS.names())
@pytest.mark.parametrize("hypernet", HYPERNETS.names())
@pytest.mark.parametrize("generate", GENERATE)
def test_forward_backward_finite(decoder, hypernet, generate):
    model = make(decoder, hypernet, generate)
    x = torch.randn(2, 3, 40, 56)
    out = model(x, task=1)
    assert out.shape == (2, 1, 40, 56) and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if generate == "none":
        assert model.hnet is None
    else:
        assert model.hnet.task_embeddings.grad[1].abs().sum() > 0       # task 1 learns
        assert model.hnet.task_embeddings.grad[0].abs().sum() == 0      # task 0 does not


@pytest.mark.parametrize("decoder", DECODERS.names())
@pytest.mark.parametrize("generate", ["decoder", "decoder+encoder", "decoder+film"])
def test_export_gives_a_plain_mnet_with_the_same_maps(decoder, generate):
    model = make(decoder, generate=generate)
    torch.nn.init.normal_(model.hnet.mlp[-1].weight, std=0.05)   # as if trained: tasks differ
    x = torch.randn(2, 3, 32, 32)
    model.train()
    for task in range(3):                     # give every task its own BN statistics
        model(x + task, task=task)
    model.eval()
    plain = MainNet(cutoff=7, decoder=decoder, width=16)
    plain.load_state_dict(model.export("t2"))
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(model(x, task=2), plain(x), atol=1e-5)
        assert not torch.allclose(model(x, task=0), plain(x), atol=1e-3)


def test_generated_names_follow_the_config():
    dec = make(generate="decoder")
    assert all(n.startswith("decoder.") for n in dec.generated)
    both = make(generate="decoder+encoder")
    enc = [n for n in both.generated if n.startswith("encoder.")]
    assert enc and all(int(n.split(".")[2]) >= 4 for n in enc)
    assert all(not p.requires_grad for n, p in both.mnet.named_parameters() if n in both.generated)
    film = make(generate="decoder+film")       # of those blocks, the BatchNorm scales and shifts only
    modules = dict(film.mnet.named_modules())
    enc = [n for n in film.generated if n.startswith("encoder.")]
    assert enc and set(enc) < {n for n in both.generated if n.startswith("encoder.")}
    assert all(isinstance(modules[n.rsplit(".", 1)[0]], torch.nn.BatchNorm2d) for n in enc)
    assert {n.rsplit(".", 1)[1] for n in enc} == {"weight", "bias"}


def test_per_task_batchnorm_updates_only_that_tasks_row():
    model = make()
    bank = model.bn_bank
    key = bank._key("encoder.blocks.0.1.running_mean")
    before = getattr(bank, key).clone()
    model.train()
    model(torch.randn(4, 3, 32, 32) * 3 + 1, task=2)
    after = getattr(bank, key)
    assert torch.equal(before[:2], after[:2]) and not torch.equal(before[2], after[2])


def test_shared_batchnorm_statistics_when_asked():
    model = make(per_task_bn=False)
    assert model.bn_bank is None
    model.train()
    model(torch.randn(4, 3, 32, 32), task=0)
    assert model.mnet.encoder.blocks[0][1].num_batches_tracked.item() == 1


def test_add_task_starts_from_the_mean_embedding():
    model = make()
    idx = model.add_task("new")
    emb = model.hnet.task_embeddings
    assert idx == 3 and emb.shape[0] == 4
    assert torch.allclose(emb[3], emb[:3].mean(0))
    with pytest.raises(UserError, match="exists already"):
        model.add_task("new")


def test_encoder_weights_from_a_local_file(tmp_path):
    reference = mobilenet_v2(weights=None)
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    net = MainNet(cutoff=19, weights_path=str(tmp_path / "w.pth"))
    assert torch.equal(net.encoder.blocks[3].conv[0][0].weight, reference.features[3].conv[0][0].weight)
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not a MobileNetV2 state dict"):
        MainNet(weights_path=str(tmp_path / "bad.pth"))


def test_imagenet_weights_without_the_cached_file_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as e:
        MainNet(weights="imagenet")
    assert "mobilenet_v2-b0353104.pth" in str(e.value) and "on a machine with internet" in str(e.value)


def test_imagenet_weights_load_offline_through_torchvision_from_the_cache(tmp_path, monkeypatch):
    """torchvision's own weights API reads the cached file (a stand-in made here, as nothing may
    be downloaded); a truncated file is reported as damaged."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    cached.parent.mkdir(parents=True)
    stand_in = mobilenet_v2(weights=None)
    torch.save(stand_in.state_dict(), cached)
    net = MainNet(cutoff=19, weights="imagenet")
    assert torch.equal(net.encoder.blocks[18][0].weight, stand_in.features[18][0].weight)
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.raises(UserError, match="damaged"):
        MainNet(weights="imagenet")


def test_bad_encoder_cutoff():
    with pytest.raises(UserError, match="model.encoder.cutoff: must be >= 1 and <= 19, got 20"):
        MainNet(cutoff=20)


def test_compiled_model_equals_eager_and_never_recompiles_across_tasks():
    """torch.compile wraps the main network's run, whose inputs are the generated tensors: one
    graph serves every task (a task index would make it recompile per task). Whether dynamo
    recompiles does not depend on the backend: `aot_eager` traces the same graph, forward and
    backward, without inductor's C++ build (20 s warm, 70-170 s on a fresh 2-core machine)."""
    import torch._dynamo
    model = HyperSaliency(MainNet(cutoff=2, width=8), ["a", "b", "c"], hypernet_options=dict(
        embedding_dim=4, hidden=[8], chunk_size=512, chunk_embedding_dim=4))
    torch.nn.init.normal_(model.hnet.mlp[-1].weight, std=0.05)
    x = torch.randn(2, 3, 16, 16)
    eager = [model(x, task=t).detach() for t in range(3)]
    model.compile(backend="aot_eager")
    model(x, task=0).mean().backward()                           # compiles (train mode, one graph)
    torch._dynamo.config.error_on_recompile = True
    try:
        for task in (1, 2, 0, 2):
            out = model(x, task=task)
            out.mean().backward()
            assert torch.allclose(out, eager[task], atol=1e-5)
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_a_decoder_skip_predicts_on_a_finer_grid_generated_and_exported():
    """model.decoder.skip: the light decoder adds an early encoder block's output; the
    hypernetwork generates the new layers with the rest of the decoder; export keeps them."""
    torch.manual_seed(0)
    options = dict(SMALL, chunk_size=512, chunk_embedding_dim=4)
    model = HyperSaliency(MainNet(cutoff=7, decoder="light", width=16, skip=4), ["t0", "t1"],
                          hypernet_options=options)
    assert {"decoder.lateral.0.weight", "decoder.fuse.0.weight"} <= set(model.generated)
    x = torch.randn(2, 3, 64, 64)
    out = model(x, task=1)
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert model.hnet.task_embeddings.grad[1].abs().sum() > 0
    # The prediction's own grid with the default cutoff (stride 16): 16x16 at 64x64 (stride 4),
    # where the plain light decoder predicts on 8x8.
    grid = {}
    for skip in (None, 4):
        net = MainNet(cutoff=14, decoder="light", width=16, skip=skip).eval()
        seen = []
        net.decoder.head.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
        with torch.no_grad():
            net(x)
        grid[skip] = seen[0]
    assert grid == {None: (8, 8), 4: (16, 16)}, grid
    model.eval()
    plain = MainNet(cutoff=7, decoder="light", width=16, skip=4)
    plain.load_state_dict(model.export("t1"))
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(model(x, task=1), plain(x), atol=1e-5)


@pytest.mark.parametrize("decoder, skip, cutoff, words", [
    ("kdsalbox", 4, 14, "the kdsalbox decoder takes no skip"),
    ("light", 14, 14, "skip 14 must be a number of encoder blocks, at least 1, before the cutoff 14"),
    ("light", 8, 10, "at a finer stride than the last block's 16"),
])
def test_a_bad_skip_says_why(decoder, skip, cutoff, words):
    with pytest.raises(UserError, match="model.decoder.skip") as e:
        MainNet(cutoff=cutoff, decoder=decoder, skip=skip)
    assert words in str(e.value)


def test_saliency_output_parameters_are_generated_per_task_and_exported():
    """model.decoder.prior: Gaussian priors, blur, gain and bias on the logits, generated by the
    hypernetwork per task, exported with the rest."""
    torch.manual_seed(0)
    options = dict(SMALL, chunk_size=512, chunk_embedding_dim=4)
    model = HyperSaliency(MainNet(cutoff=7, decoder="light", width=16, skip=3, prior=4), ["t0", "t1"],
                          hypernet_options=options)
    assert {"output.prior_weight", "output.prior_centre", "output.prior_log_width", "output.gain",
            "output.bias", "output.blur_logit"} <= set(model.generated)
    x = torch.randn(2, 3, 48, 64)
    out = model(x, task=0)
    assert out.shape == (2, 1, 48, 64) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert model.hnet.task_embeddings.grad[0].abs().sum() > 0
    torch.nn.init.normal_(model.hnet.mlp[-1].weight, std=0.05)
    model.eval()
    plain = MainNet(cutoff=7, decoder="light", width=16, skip=3, prior=4).eval()
    plain.load_state_dict(model.export("t1"))
    with torch.no_grad():
        assert torch.allclose(model(x, task=1), plain(x), atol=1e-5)


def test_the_prior_alone_learns_a_centre_bias_and_the_blur_smooths():
    from hypersal.models.decoders import SaliencyOutput
    torch.manual_seed(0)
    head = SaliencyOutput(4)
    ys, xs = torch.meshgrid(torch.linspace(-0.5, 0.5, 32), torch.linspace(-0.5, 0.5, 32), indexing="ij")
    target = torch.exp(-0.5 * (((ys - 0.1) / 0.15) ** 2 + ((xs + 0.05) / 0.2) ** 2))[None, None]
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):                 # logits of zeros: whatever the image, only the prior can fit
        loss = (head(torch.zeros(1, 1, 32, 32)) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3
    noise = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        head.blur_logit.fill_(-8.0)
        sharp = head.blur(noise)
        head.blur_logit.fill_(2.0)
        smooth = head.blur(noise)
    assert torch.allclose(sharp, noise, atol=1e-3)          # sigma near 0: the logits pass through
    assert smooth.std() < 0.3 * noise.std()                 # sigma ~9% of the side: smoothed out
