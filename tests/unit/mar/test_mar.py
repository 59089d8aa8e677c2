"""MAR's schedules, shapes, seeded sampling and a tiny training run (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from generation.mar import MAR, MARConfig
from generation.mar.sampling import MARSampleSettings, cfg_schedule, mask_schedule, sample


@pytest.mark.parametrize(("n", "k"), [(64, 1), (64, 4), (64, 16), (64, 64), (16, 7)])
def test_every_token_leaves_the_mask_exactly_once(n: int, k: int) -> None:
    lens = mask_schedule(n, k)
    assert len(lens) == k and lens[-1] == 0
    unmasked_per_step = [a - b for a, b in zip([n] + lens[:-1], lens)]
    assert all(u >= 1 for u in unmasked_per_step)
    assert sum(unmasked_per_step) == n


def test_mask_schedule_rejects_more_steps_than_tokens() -> None:
    with pytest.raises(ValueError, match="AR steps"):
        mask_schedule(16, 17)


def test_linear_cfg_ramps_from_about_one_to_cfg() -> None:
    lens = mask_schedule(64, 8)
    cfgs = cfg_schedule(3.0, 64, lens)
    assert cfgs == sorted(cfgs)
    assert cfgs[0] < 1.5 and cfgs[-1] == pytest.approx(3.0)


def _tiny() -> MAR:
    torch.manual_seed(0)
    return MAR(MARConfig(num_sampling_steps=10))


def test_sampling_shapes_nfe_and_seeded_reproducibility() -> None:
    model = _tiny()
    labels = torch.tensor([3, 7])
    settings = MARSampleSettings(num_iter=4, cfg=2.0)
    first = sample(model, labels, [1, 2], settings)
    again = sample(model, labels, [1, 2], settings)
    other = sample(model, labels, [1, 5], settings)
    assert first.images.shape == (2, 1, 16, 16)
    assert first.nfe == [8, 8] and first.model_calls == 4
    assert torch.equal(first.images, again.images)
    assert torch.equal(first.images[0], other.images[0])  # an image depends only on its own seed
    assert not torch.equal(first.images[1], other.images[1])


def test_a_tiny_training_run_lowers_the_loss() -> None:
    model = _tiny()
    model.train()
    gen = torch.Generator().manual_seed(0)
    imgs = (torch.rand(16, 1, 16, 16, generator=gen) > 0.5).float() * 2 - 1
    imgs[:, :, :8] = -1.0  # structure to learn: the top half is always dark
    labels = torch.randint(0, 10, (16,), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(60):
        loss = model(imgs, labels, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10, losses
