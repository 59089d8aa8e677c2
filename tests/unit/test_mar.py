"""MAR: schedules, shapes, seeded reproducibility, a tiny training run, and a peft LoRA changing outputs."""

from __future__ import annotations

import pytest
import torch

from loracle.generation.mar import MAR, SIZES, MARConfig
from loracle.generation.mar.sampling import MARSampleSettings, cfg_schedule, mask_schedule, sample

TINY = MARConfig(encoder_embed_dim=32, decoder_embed_dim=32, diffloss_w=32, diffloss_d=2, num_sampling_steps=10)


@pytest.mark.parametrize("n,k", [(64, 4), (64, 8), (64, 16), (64, 64), (16, 16), (16, 1), (256, 64)])
def test_mask_schedule_predicts_every_token_exactly_once(n, k):
    torch.manual_seed(0)
    lens = mask_schedule(n, k)
    assert len(lens) == k and lens[-1] == 0
    counts = [a - b for a, b in zip([n] + lens[:-1], lens)]
    assert all(c >= 1 for c in counts) and sum(counts) == n
    order = torch.randperm(n)
    seen = torch.zeros(n, dtype=torch.long)
    prev = torch.ones(n, dtype=torch.bool)
    for m in lens:
        nxt = torch.zeros(n, dtype=torch.bool)
        nxt[order[:m]] = True
        seen += (prev & ~nxt).long()
        prev = nxt
    assert seen.eq(1).all()


def test_mask_schedule_rejects_bad_steps():
    with pytest.raises(ValueError, match="AR steps"):
        mask_schedule(16, 17)
    with pytest.raises(ValueError, match="AR steps"):
        mask_schedule(16, 0)


def test_cfg_ramps_from_one_to_cfg():
    lens = mask_schedule(64, 8)
    cfgs = cfg_schedule(3.0, 64, lens)
    assert cfgs[-1] == pytest.approx(3.0)
    assert 1.0 <= cfgs[0] < 1.5
    assert all(a <= b for a, b in zip(cfgs, cfgs[1:]))


def test_sizes_match_the_paper():
    counts = {}
    for name in ("base", "large", "huge"):
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in MAR(SIZES[name]).parameters()) / 1e6
    assert counts["base"] == pytest.approx(208, abs=1)
    assert counts["large"] == pytest.approx(479, abs=1)
    assert counts["huge"] == pytest.approx(943, abs=1)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        MARConfig(encoder_embed_dim=30, encoder_num_heads=4)
    with pytest.raises(ValueError, match="text_dim"):
        MARConfig(cond="text")
    with pytest.raises(ValueError, match="patch_size"):
        MARConfig(img_size=16, patch_size=3)


def test_shapes_and_seeded_reproducibility():
    torch.manual_seed(0)
    model = MAR(TINY)
    x = torch.randn(2, 1, 16, 16)
    assert model.patchify(x).shape == (2, 64, 4)
    assert torch.equal(model.unpatchify(model.patchify(x)), x)
    s = MARSampleSettings(num_iter=4, cfg=2.0)
    a = sample(model, torch.tensor([3, 5]), [7, 8], s)
    b = sample(model, torch.tensor([3]), [7], s)
    assert a.images.shape == (2, 1, 16, 16)
    assert torch.allclose(a.images[:1], b.images, atol=1e-5)  # an image depends only on its seed
    assert a.nfe == [8, 8] and a.model_calls == 4
    c = sample(model, torch.tensor([3, 5]), [9, 8], s)
    assert not torch.allclose(a.images[0], c.images[0])


def test_bad_condition_is_refused():
    model = MAR(TINY)
    with pytest.raises(ValueError, match="class labels"):
        sample(model, torch.tensor([10]), [0], MARSampleSettings(num_iter=2))


def test_tiny_training_loss_falls():
    torch.manual_seed(0)
    model = MAR(TINY)
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 16, 16)
    x[:, :, 4:12, 6:10] = 1.0
    x = x * 2 - 1
    labels = torch.zeros(16, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = model(x, labels, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_peft_lora_changes_outputs():
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = MAR(TINY)
    for layer in (model.diffloss.net.final_layer.linear, model.diffloss.net.final_layer.adaLN_modulation[-1]):
        torch.nn.init.normal_(layer.weight, std=0.05)  # an untrained head is zero-initialised: blind to z
    s = MARSampleSettings(num_iter=4)
    before = sample(model, torch.tensor([1]), [0], s).images
    inject_adapter_in_model(LoraConfig(r=4, target_modules=r".*(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)$",
                                       init_lora_weights=False), model)
    after = sample(model, torch.tensor([1]), [0], s).images
    assert not torch.allclose(before, after, atol=1e-4)


def test_learned_sigma_head_trains_its_variance():
    """learn_sigma: the VLB term is finite, moves only the variance outputs, and the loss falls."""
    from loracle.generation.mar.diffloss import DiffLoss

    torch.manual_seed(0)
    head = DiffLoss(4, 8, depth=2, width=32, num_sampling_steps=10, learn_sigma=True)
    gen = torch.Generator().manual_seed(0)
    target, z = torch.randn(256, 4) * 0.5, torch.randn(256, 8)
    t = torch.arange(256) % 1000
    out = head.net(head.train_diffusion.q_sample(target, t, torch.randn(256, 4)), t, z)
    assert out.shape == (256, 8)
    out.retain_grad()
    vb = head.train_diffusion.vb_term(out, torch.randn(256, 4), target, t, 4)
    assert torch.isfinite(vb).all() and (vb >= -1e-4).all()
    vb.mean().backward()
    assert out.grad[:, :4].abs().sum() == 0 and out.grad[:, 4:].abs().sum() > 0
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = head(target, z, None, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10])
