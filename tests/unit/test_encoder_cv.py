"""The fine-tuned encoder experiment (evals/encoder_cv.py): its cached lower layers are MiniLM's, and its loss
treats a prompt's other picks as no negatives."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from loracle.evals.encoder_cv import EncoderSettings, _query_side_loss, encode, lower_states, tuned_model  # noqa: E402

TEXTS = ["x", "a watercolor painting of a fox in a misty forest", "neon cyberpunk streets at night, rain, reflections"]


def test_tuned_layers_over_cached_states_start_as_minilm() -> None:
    settings = EncoderSettings(top_layers=2)
    model = tuned_model(settings)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name and (".layer.4." in name or ".layer.5." in name) for name in trainable)
    # texts of different lengths share a batch: padding must not reach attention or the mean
    cached = encode(model, lower_states(model, TEXTS, settings), settings)
    reference = model.encode(TEXTS, normalize_embeddings=True)
    assert np.min(np.sum(cached * reference, axis=1)) > 0.999  # bfloat16 where the CPU has it


def test_other_picks_of_a_prompt_are_not_its_negatives() -> None:
    cards = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    query = cards[:1].clone()
    usable = torch.tensor([True, True, True])
    one_pick = _query_side_loss(query, [[0]], cards, usable, 0.05)
    both = _query_side_loss(query, [[0, 1]], cards, usable, 0.05)
    # card 1 is near card 0: as a negative it costs the single pick a lot, as a pick it costs nothing extra
    assert one_pick.item() > 0.5 and both.item() < 0.01
    unusable = _query_side_loss(query, [[0]], cards, torch.tensor([True, False, True]), 0.05)
    assert unusable.item() < 0.01  # a blocklisted card is no negative either
