"""The world judge's pieces: its JSON carries the network's shape and per-style thresholds (and a judge saved
before either existed still loads), renders a style cannot show are not counted against it, and the styled pool
it trains on holds exactly the renders `apply_styles` makes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from loracle.evals.world.data import Split
from loracle.evals.world.judge import StyledPool, unseen_styles
from loracle.evals.world.styles import STYLE_NAMES, apply_styles, compatible
from loracle.generation.world.judge import Judge, JudgeConfig, JudgeNet, judge_meta, load_judge


def _save(folder, net: JudgeNet, meta: dict) -> None:
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "judge.safetensors"))
    (folder / "judge.json").write_text(json.dumps(meta))


def test_a_judge_saved_before_configs_loads_as_the_first_shape(tmp_path):
    torch.manual_seed(0)
    net = JudgeNet(len(STYLE_NAMES))
    _save(tmp_path / "old", net, {"styles": list(STYLE_NAMES), "threshold": 0.5})
    judge = load_judge(tmp_path / "old")
    assert judge.net.config == JudgeConfig() and judge.thresholds == {}
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    assert torch.equal(judge.present(x), torch.sigmoid(net.eval()(x)[1]) > 0.5)


def test_network_shape_and_per_style_thresholds_round_trip(tmp_path):
    torch.manual_seed(0)
    net = JudgeNet(len(STYLE_NAMES), JudgeConfig(widths=(8, 12, 24), feature_dim=32))
    thresholds = {s: 0.5 for s in STYLE_NAMES} | {"bold": 0.0, "thin": 1.0}  # always seen / never seen
    _save(tmp_path / "new", net, judge_meta(Judge(net, STYLE_NAMES, thresholds=thresholds)))
    judge = load_judge(tmp_path / "new")
    assert judge.net.config.widths == (8, 12, 24) and judge.thresholds == thresholds
    seen = judge.detect(torch.rand(6, 1, 16, 16) * 2 - 1)
    assert all("bold" in s and "thin" not in s for s in seen)
    with pytest.raises(ValueError, match="three positive conv widths"):
        JudgeConfig(widths=(8, 0, 8))


def _digits(n: int) -> torch.Tensor:
    """Digit-like images: ink anywhere inside the world's 2-pixel paper margin."""
    x = torch.full((n, 1, 16, 16), -1.0)
    x[..., 2:14, 2:14] = torch.rand(n, 1, 12, 12) * 2 - 1
    return x


def test_boxed_on_an_inverted_render_and_mirrored_symmetric_digits_count_either_way():
    x = _digits(4)
    # why "boxed" is not counted on an inverted render: the frame is pixel-identical to the inverted border
    assert torch.equal(apply_styles(x, ["inverted", "boxed"]), apply_styles(x, ["inverted"]))
    assert not torch.equal(apply_styles(x, ["boxed"]), x)
    styles = STYLE_NAMES
    targets = torch.stack([torch.tensor([float(s in c) for s in styles])
                           for c in (("inverted", "boxed"), ("boxed",), ("mirrored",), ("mirrored",))])
    free = unseen_styles(torch.tensor([3, 3, 8, 2]), targets, styles)
    boxed, mirrored = styles.index("boxed"), styles.index("mirrored")
    assert free[:, boxed].tolist() == [True, False, False, False]
    assert free[:, mirrored].tolist() == [False, False, True, False]
    assert free.sum() == 2


def test_styled_pool_holds_every_compatible_set_rendered_exactly():
    torch.manual_seed(0)
    data = Split(_digits(3), torch.tensor([1, 2, 3]))
    pool = StyledPool(data, STYLE_NAMES)
    for k, n_sets in ((0, 1), (1, 8), (2, 26), (3, 44)):
        x, labels, targets = pool.with_count(k)
        assert len(x) == 3 * n_sets and (targets.sum(1) == k).all()
        i = len(x) - 1  # the last set, last digit
        combo = [s for s, on in zip(STYLE_NAMES, targets[i].tolist()) if on]
        assert compatible(combo) and torch.equal(x[i], apply_styles(data.images, combo)[2])
        assert labels[i] == 3
    x, labels, targets = pool.sample(200, (0.0, 0.0, 0.0, 1.0), torch.Generator().manual_seed(0))
    assert (targets.sum(1) == 3).all() and len(set(map(tuple, targets.tolist()))) > 20
