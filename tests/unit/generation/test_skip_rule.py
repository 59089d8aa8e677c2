"""The skip rule on trajectories where a wrong rule decides differently (a linear one makes every rule agree).

The rule: after d_(i-2), d_(i-1), d_i (mean |x_i - x_(i-1)|), skip the next step when
|(d_i + d_(i-2)) / 2 - d_(i-1)| <= threshold * d_(i-1). Each case below is computed by hand from that formula.
"""

from __future__ import annotations

import pytest
import torch

from loracle.generation.skipping import SkipSettings, SkipState


def masks_for(positions: list[float] | list[list[float]], settings: SkipSettings | None) -> list[list[bool]]:
    """The compute mask at every step for latents at `positions` (x_-1, x_0, ...; one list per sample)."""
    rows = [positions] if not isinstance(positions[0], list) else positions
    xs = torch.tensor(rows, dtype=torch.float32).T  # (steps + 1, batch)
    steps, batch = xs.shape[0] - 1, xs.shape[1]
    state = SkipState(settings, batch, steps)
    state.start(xs[0].view(batch, 1, 1, 1).expand(batch, 2, 2, 2))
    out = []
    for i in range(steps):
        out.append(state.compute_mask(i).tolist())
        state.observe(xs[i + 1].view(batch, 1, 1, 1).expand(batch, 2, 2, 2))
    return out


def periodic(steps: int, max_skip: int, warmup: int = 3) -> list[bool]:
    """Every eligible step skipped: warmup calls, then max_skip skips and one forced call, the last step called."""
    pattern = [True] * warmup + [(i - warmup) % (max_skip + 1) == max_skip for i in range(warmup, steps)]
    pattern[-1] = True
    return pattern


def test_quadratic_trajectory_skips():
    """x_i = i^2: the first difference grows (2i - 1) but the third-order difference is zero, so every eligible
    step skips. A rule on the first difference, or on the differences in the wrong order, calls the model."""
    steps = 14
    positions = [float(i * i) for i in range(steps + 1)]
    got = [m[0] for m in masks_for(positions, SkipSettings(threshold=0.01, max_skip=3))]
    assert got == periodic(steps, 3)
    falling = [-p for p in positions]  # the rule reads distances, not directions
    assert [m[0] for m in masks_for(falling, SkipSettings(threshold=0.01, max_skip=3))] == periodic(steps, 3)


def test_cubic_trajectory_calls_the_model():
    """x_i = i^3: the second difference of d is 6 against d_(i-1) ~ 3i^2, far above threshold 0.01 early on."""
    positions = [float(i**3) for i in range(9)]
    assert all(m[0] for m in masks_for(positions, SkipSettings(threshold=0.01, max_skip=3)))


@pytest.mark.parametrize("diffs, skip", [
    ((1.0, 1.0, 0.82), True),   # |0.91 - 1| = 0.09 <= 0.1 * d_(i-1) = 0.1 (but > 0.1 * d_i = 0.082)
    ((0.5, 1.0, 1.68), True),   # |1.09 - 1| = 0.09 <= 0.1 (but > 0.1 * d_(i-2) = 0.05)
    ((1.0, 1.0, 1.22), False),  # 0.11 > 0.1 (but <= 0.1 * d_i = 0.122)
    ((1.0, 1.2, 1.0), False),   # |1.0 - 1.2| = 0.2 > 0.12, though d_i == d_(i-2)
    ((1.0, 1.0, 1.5), True),    # 0.25 <= 0.25 * 1.0: the bound itself skips (exact in binary)
    ((2.0, 2.0, 1.64), True),   # |1.82 - 2| = 0.18 <= 0.1 * 2 (a threshold divided by d_(i-1) gives 0.05)
])
def test_the_rule_scales_by_the_middle_difference(diffs, skip):
    """One decision (for step 3) after three differences, near the threshold, where scaling by d_i or d_(i-2)
    instead of d_(i-1), or `<` instead of `<=`, flips it."""
    threshold = 0.25 if diffs[2] == 1.5 else 0.1
    positions = [0.0, diffs[0], diffs[0] + diffs[1], sum(diffs), sum(diffs) + 1.0, sum(diffs) + 2.0]
    mask = masks_for(positions, SkipSettings(threshold=threshold, max_skip=2))
    assert mask[:3] == [[True]] * 3
    assert mask[3] == [not skip]


def test_one_decision_for_the_batch_when_not_per_sample():
    """per_sample=False: the batch's mean difference decides for every sample; sample 1 (cubic) keeps both calling
    where per-sample decisions let the smooth sample 0 skip."""
    smooth = [float(i) for i in range(10)]
    curved = [float(i**3) for i in range(10)]
    shared = masks_for([smooth, curved], SkipSettings(threshold=0.01, max_skip=3, per_sample=False))
    assert all(a == b for a, b in shared)
    assert all(a for a, _ in shared)
    own = masks_for([smooth, curved], SkipSettings(threshold=0.01, max_skip=3))
    assert [a for a, _ in own] == periodic(9, 3) and all(b for _, b in own)


@pytest.mark.parametrize("settings, message", [
    (dict(max_skip=-1), "max_skip"), (dict(warmup=2), "warmup"), (dict(threshold=-0.1), "threshold"),
])
def test_settings_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SkipSettings(**settings)


def test_bounds_of_the_settings_are_allowed_and_disable():
    """threshold 0 and max_skip 0 are valid and each turns skipping off; warmup 3 is the smallest allowed."""
    assert not SkipSettings(threshold=0.0).enabled
    assert not SkipSettings(max_skip=0).enabled
    assert SkipSettings(warmup=3, threshold=1e-9, max_skip=1).enabled
    positions = [float(i) for i in range(8)]
    assert all(m[0] for m in masks_for(positions, SkipSettings(max_skip=0)))
    assert [m[0] for m in masks_for(positions, SkipSettings(warmup=4, max_skip=1))] == periodic(7, 1, warmup=4)


def test_forecast_extrapolates_in_log_sigma_with_unequal_spacing():
    """Two computed predictions at log sigma 2 and 1.5, then a skipped step at 0.5: the forecast continues the
    line (p(1.5) + (p(1.5) - p(2)) * (0.5 - 1.5) / (1.5 - 2)), which differs from reuse and from a forecast that
    swaps the two or forgets the spacing."""
    state = SkipState(SkipSettings(threshold=0.01), 1, 6)
    yes, no = torch.tensor([True]), torch.tensor([False])
    p2, p15 = torch.full((1, 1, 2, 2), 4.0), torch.full((1, 1, 2, 2), 3.0)  # slope 2 per unit of log sigma
    state.fill(p2, yes, 2.0)
    state.fill(p15, yes, 1.5)
    got = state.fill(p15.clone(), no, 0.5)
    assert torch.allclose(got, torch.full_like(got, 1.0))
    assert torch.allclose(state.fill(p15.clone(), no, 0.0), torch.full_like(got, 0.0)), "a skip forgets nothing"
    state.forget()
    stale = torch.full_like(got, 7.0)
    assert torch.equal(state.fill(stale, no, -0.5), stale), "after forget, nothing to extrapolate from"


def test_defaults_are_the_agents_documented_ones():
    """Callers without settings (tools.sample) skip as the agent does by default (README: 0.01, 4), forecasting."""
    from loracle.agent.settings import Settings

    fields = Settings.model_fields
    default = SkipSettings()
    assert (default.threshold, default.max_skip) == (fields["skip_threshold"].default, fields["max_skip"].default)
    assert default.forecast and default.per_sample


def test_decisions_follow_the_latest_three_differences():
    """A trajectory that is curved at first and straight later: skipping starts once the last three differences
    agree, whatever the first three said."""
    increments = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    positions = [0.0]
    for inc in increments:
        positions.append(positions[-1] + inc)
    got = [m[0] for m in masks_for(positions, SkipSettings(threshold=0.01, max_skip=2))]
    assert got[:6] == [True] * 6, "curved: every step calls the model"
    assert got[6:] == [False, False, True, False, True], "straight: skips, forced calls, the last step"


def test_no_settings_means_no_skipping():
    positions = [float(i) for i in range(10)]
    assert all(m[0] for m in masks_for(positions, None))


def test_settings_are_immutable_values():
    import dataclasses

    assert hash(SkipSettings(threshold=0.02)) == hash(SkipSettings(threshold=0.02))
    with pytest.raises(dataclasses.FrozenInstanceError):
        SkipSettings().threshold = 0.5


def test_forecast_needs_two_computed_predictions():
    """One computed prediction is not a line: the next skipped step reuses it, after a forget() too."""
    yes, no = torch.tensor([True]), torch.tensor([False])
    for forget in (False, True):
        state = SkipState(SkipSettings(threshold=0.01), 1, 6)
        if forget:
            state.fill(torch.full((1, 1, 2, 2), 9.0), yes, 3.0)
            state.fill(torch.full((1, 1, 2, 2), 8.0), yes, 2.5)
            state.forget()
        state.fill(torch.full((1, 1, 2, 2), 4.0), yes, 2.0)
        cached = torch.full((1, 1, 2, 2), 4.0)
        assert torch.equal(state.fill(cached, no, 1.5), cached), forget


def test_forecast_from_two_predictions_at_one_noise_level_stays_finite():
    """Karras spacing can repeat a sigma: two computed predictions at the same log sigma must not divide by zero."""
    state = SkipState(SkipSettings(threshold=0.01), 1, 6)
    yes, no = torch.tensor([True]), torch.tensor([False])
    state.fill(torch.full((1, 1, 2, 2), 1.0), yes, 1.0)
    state.fill(torch.full((1, 1, 2, 2), 2.0), yes, 1.0)
    assert torch.isfinite(state.fill(torch.zeros(1, 1, 2, 2), no, 0.5)).all()
