"""peft LoRA adapters on a MAR: safe file access, a key/shape check that names the file, weighted mixes.

Files: safetensors with "transformer.<module>.lora_A.weight" / ".lora_B.weight" keys (peft layout, scale =
alpha / rank with alpha read from the file's `lora_alpha` metadata, default rank). Read only from the adapter
folders (`generation.adapters.resolve_adapter_path`), pickle refused unless allowed (then weights_only).
A mix switch sets each LoRA layer's active adapters and scale, as `generation.adapters.AdapterManager` does
for the UNet; hold `lock` from `activate` to the end of sampling.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from loracle.generation.adapters import AdapterError, AdapterIncompatibleError, _read_raw, resolve_adapter_path
from loracle.generation.mar.model import MAR

PREFIX = "transformer."


@dataclass
class MARLora:
    name: str
    path: Path
    tensors: dict[str, torch.Tensor]  # peft keys without the prefix
    rank: int
    alpha: float
    metadata: dict[str, str]

    @property
    def modules(self) -> list[str]:
        return sorted({k.split(".lora_")[0] for k in self.tensors})


def read_mar_lora(path: Path, model: MAR, allow_pickle: bool = False, name: str | None = None) -> MARLora:
    """Read and check a MAR LoRA: every key must be a LoRA pair on a linear layer of `model`, shapes matching."""
    raw, metadata = _read_raw(path, allow_pickle)
    label = f"Adapter '{name or path.stem}' ({path.name})"
    if not raw:
        raise AdapterError(f"{label} contains no tensors.")
    fam = metadata.get("loracle.family")
    if fam is not None and fam != "mar":
        raise AdapterIncompatibleError(f"{label} was made for a '{fam}' model, not a MAR.")
    bad = [k for k in raw if not k.startswith(PREFIX) or not k.endswith((".lora_A.weight", ".lora_B.weight"))]
    if bad:
        raise AdapterIncompatibleError(f"{label} is not a MAR LoRA: keys must be '{PREFIX}<layer>.lora_A/B.weight', "
                                       f"got e.g. {bad[:2]}")
    tensors = {k[len(PREFIX):]: v for k, v in raw.items()}
    named = dict(model.named_modules())
    problems, ranks = [], set()
    for mod in sorted({k.split(".lora_")[0] for k in tensors}):
        a, b = tensors.get(f"{mod}.lora_A.weight"), tensors.get(f"{mod}.lora_B.weight")
        layer = named.get(mod)
        layer = getattr(layer, "base_layer", layer)
        if not isinstance(layer, torch.nn.Linear):
            problems.append(f"{mod}: no such linear layer")
        elif a is None or b is None:
            problems.append(f"{mod}: incomplete LoRA pair")
        elif a.shape[1] != layer.in_features or b.shape[0] != layer.out_features or a.shape[0] != b.shape[1]:
            problems.append(f"{mod}: LoRA maps {a.shape[1]}->{b.shape[0]}, layer is {layer.in_features}->{layer.out_features}")
        else:
            ranks.add(a.shape[0])
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise AdapterIncompatibleError(f"{label} does not fit this MAR: " + "; ".join(problems[:3]) + more)
    if len(ranks) != 1:
        raise AdapterIncompatibleError(f"{label}: layers have different ranks {sorted(ranks)}")
    rank = ranks.pop()
    alpha = float(metadata.get("lora_alpha", rank))
    return MARLora(name or path.stem, path, tensors, rank, alpha, metadata)


class MARAdapters:
    """Loads, caches (LRU by count) and switches LoRAs on one MAR."""

    def __init__(self, model: MAR, adapter_dirs: list[str | os.PathLike], *, max_loaded: int = 8,
                 allow_pickle: bool = False):
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {max_loaded}")
        self.model = model
        self.adapter_dirs = [Path(d) for d in adapter_dirs]
        self.max_loaded = max_loaded
        self.allow_pickle = allow_pickle
        self.lock = threading.RLock()
        self._files: dict[Path, MARLora] = {}
        self._loaded: OrderedDict[str, Path] = OrderedDict()
        self.active: dict[str, float] = {}

    def get(self, ref: str | os.PathLike) -> MARLora:
        path = resolve_adapter_path(ref, self.adapter_dirs)
        if path not in self._files:
            self._files[path] = read_mar_lora(path, self.model, self.allow_pickle, name=str(ref))
        return self._files[path]

    @staticmethod
    def peft_name(path: Path) -> str:
        return "lora_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]

    def _layers(self) -> list:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.model.modules() if isinstance(m, LoraLayer)]

    def _inject(self, lora: MARLora, name: str) -> None:
        from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

        cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=lora.modules)
        with warnings.catch_warnings():  # peft warns on every second adapter; several adapters is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(cfg, self.model, adapter_name=name)
        result = set_peft_model_state_dict(self.model, lora.tensors, adapter_name=name)
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if missing:
            raise AdapterError(f"Adapter '{lora.name}': peft did not load {missing[:2]}")
        self.model.requires_grad_(False)

    def _delete(self, name: str) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for m in self.model.modules():
            if isinstance(m, BaseTunerLayer) and name in m.scaling:
                m.delete_adapter(name)
        self.model.peft_config.pop(name, None)
        self._loaded.pop(name, None)

    def activate(self, mix: Mapping[str, float]) -> None:
        """Make exactly `mix` ({ref: weight}) active; an empty mix leaves only the base MAR."""
        if len(mix) > self.max_loaded:
            raise ValueError(f"A mix of {len(mix)} adapters exceeds max_loaded={self.max_loaded}.")
        with self.lock:
            files = {ref: self.get(ref) for ref in mix}  # check everything before touching the model
            wanted = {self.peft_name(f.path) for f in files.values()}
            weights: dict[str, float] = {}
            for ref, lora in files.items():
                name = self.peft_name(lora.path)
                if name not in self._loaded:
                    for victim in [n for n in self._loaded if n not in wanted]:
                        if len(self._loaded) < self.max_loaded:
                            break
                        self._delete(victim)
                    self._inject(lora, name)
                self._loaded[name] = lora.path
                self._loaded.move_to_end(name)
                weights[name] = float(mix[ref])
            for layer in self._layers():
                present = [n for n in weights if n in layer.scaling]
                layer._active_adapter = present
                for n in present:
                    layer.set_scale(n, weights[n])
            self.active = weights

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base MAR without adapters (adapter guidance's guide), then switch them back on (peft's
        per-layer flag, as `generation.adapters.AdapterManager.disabled`)."""
        with self.lock:
            layers = self._layers()
            for layer in layers:
                layer._disable_adapters = True
            try:
                yield
            finally:
                for layer in layers:
                    layer._disable_adapters = False
