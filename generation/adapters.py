"""LoRA adapters: safe file access, format conversion, compatibility checks, and two bounded caches.

* Files are read only from the configured adapter folders (no `..`, no symlinks out), as safetensors unless
  pickle is explicitly allowed (then `torch.load(weights_only=True)`).
* kohya / A1111 files are converted with diffusers' own `lora_state_dict`; diffusers/peft files pass through.
* Before an adapter touches the model we check its declared base family and that every key maps to a module
  of the base model with matching shapes (diffusers only warns about unmatched keys; we refuse, naming the file).
* State dicts live in an LRU RAM cache bounded by bytes; adapters injected into the model live in an LRU
  "pipeline cache" bounded by count (evicted with `delete_adapters`); a mix switch is only `set_adapters`.

Adapter state is global on the model's modules: callers must hold `AdapterManager.lock` from `activate()`
until the model calls for that mix are done (the Engine does this for every generate call).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loracle.generation.base_models import BaseModel, PickleRefusedError, refuse_pickle
from loracle.generation.output import ADAPTER_SUFFIXES


class AdapterError(ValueError):
    """Base class for adapter problems; the message always names the adapter (never a folder of this machine),
    and `ref` is the reference it was asked for by, so a caller can tell which adapter of a mix failed."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


class AdapterPickleRefused(AdapterError, PickleRefusedError):
    """A pickle-based adapter file, refused because it can run code when loaded (allow_pickle was not given)."""


class AdapterPathError(AdapterError):
    """The adapter reference points outside the configured adapter folders, or does not exist."""


class AdapterIncompatibleError(AdapterError):
    """The adapter was made for another base model family or does not fit the base model's layers."""


__all__ = [
    "AdapterError", "AdapterPathError", "AdapterIncompatibleError", "AdapterPickleRefused", "PickleRefusedError", "LoraFile",
    "resolve_adapter_path", "read_lora", "declared_family", "check_compatible",
    "StateDictCache", "AdapterManager",
]

# ------------------------------------------------------------------------------------------------ files


def resolve_adapter_path(ref: str | os.PathLike, adapter_dirs: list[Path]) -> Path:
    """Map a name or path to a real file inside one of `adapter_dirs`; refuse anything that escapes them."""
    if not adapter_dirs:
        raise AdapterPathError(f"Adapter '{ref}': no adapter folders are configured.", ref=os.fspath(ref))
    roots = [Path(os.path.realpath(d)) for d in adapter_dirs]
    ref_s = os.fspath(ref)
    if "\x00" in ref_s:
        raise AdapterPathError(f"Adapter {ref_s!r}: invalid name.", ref=ref_s)
    candidates: list[Path] = []
    p = Path(ref_s)
    if p.is_absolute():
        candidates.append(p)
    else:
        for root in roots:
            candidates.append(root / p)
            if p.suffix.lower() not in ADAPTER_SUFFIXES:
                candidates.extend(root / (ref_s + s) for s in ADAPTER_SUFFIXES)
    for cand in candidates:
        real = Path(os.path.realpath(cand))
        if not any(real.is_relative_to(root) for root in roots):
            raise AdapterPathError(f"Adapter '{ref_s}' resolves outside the adapter folders; refusing to read it.",
                                   ref=ref_s)
        if real.is_file():
            return real
    if "/" not in ref_s and os.sep not in ref_s:  # a bare name: look one folder deep, like A1111's Lora/ tree
        for root in roots:
            for s in ADAPTER_SUFFIXES:
                for hit in sorted(root.glob(f"*/{ref_s}{s}")):
                    real = Path(os.path.realpath(hit))
                    if real.is_file() and any(real.is_relative_to(r) for r in roots):
                        return real
    raise AdapterPathError(f"Adapter '{ref_s}' not found in the adapter folders.", ref=ref_s)


@dataclass
class LoraFile:
    """One adapter file, converted to diffusers' prefixed layout (`unet.`, `text_encoder.`, `text_encoder_2.`)."""

    name: str
    path: Path
    state_dict: dict[str, torch.Tensor]
    network_alphas: dict[str, float] | None
    metadata: dict[str, str]
    source_format: str  # "kohya" or "diffusers"
    nbytes: int = 0
    modules: dict[str, dict[str, tuple[torch.Size, torch.Size]]] = field(default_factory=dict)


def _read_raw(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    refuse_pickle(path, allow_pickle, "adapter")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}


def _is_kohya(keys: list[str]) -> bool:
    return all(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys)


def read_lora(
    path: Path, *, family: str = "sd15", unet_config=None, allow_pickle: bool = False, name: str | None = None
) -> LoraFile:
    """Read a LoRA file and convert it to diffusers keys with diffusers' own converter."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    raw, metadata = _read_raw(path, allow_pickle)
    if not raw:
        raise AdapterError(f"Adapter '{path.name}' contains no tensors.")
    kohya = _is_kohya(list(raw))
    loader = StableDiffusionXLLoraLoaderMixin if family == "sdxl" else StableDiffusionLoraLoaderMixin
    kwargs = {"unet_config": unet_config} if family == "sdxl" and unet_config is not None else {}
    if not kohya and not any(k.startswith(("unet.", "text_encoder.", "text_encoder_2.")) for k in raw):
        raw = {f"unet.{k}": v for k, v in raw.items()}  # bare UNet keys (older diffusers saves)
    state_dict, alphas = loader.lora_state_dict(dict(raw), **kwargs)
    lora = LoraFile(
        name=name or path.stem, path=path, state_dict=state_dict, network_alphas=alphas or None,
        metadata=metadata, source_format="kohya" if kohya else "diffusers",
        nbytes=sum(t.numel() * t.element_size() for t in state_dict.values()),
    )
    lora.modules = _lora_modules(lora)
    return lora


def _lora_modules(lora: LoraFile) -> dict[str, dict[str, tuple[torch.Size, torch.Size]]]:
    """{component: {module path: (down/A shape, up/B shape)}} after normalising keys to peft layout."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft

    out: dict[str, dict[str, list]] = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        part = {k[len(comp) + 1:]: v for k, v in lora.state_dict.items() if k.startswith(comp + ".")}
        if not part:
            continue
        if not any("lora_A" in k for k in part):
            if comp == "unet":
                part = convert_unet_state_dict_to_peft(part)
            else:
                part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
        mods: dict[str, list] = {}
        for k, v in part.items():
            for tag, slot in ((".lora_A.", 0), (".lora_B.", 1)):
                if tag in k and k.endswith("weight"):
                    mods.setdefault(k.split(tag)[0], [None, None])[slot] = v.shape
        out[comp] = mods
    unknown = [k for k in lora.state_dict if not k.startswith(("unet.", "text_encoder.", "text_encoder_2."))]
    if unknown:
        out["?"] = {k: [None, None] for k in unknown}
    return {c: {m: tuple(s) for m, s in mods.items()} for c, mods in out.items()}


def declared_family(lora: LoraFile) -> str | None:
    """The base family the file says it was trained for (kohya / modelspec metadata, SDXL-only key names)."""
    md = {k.lower(): str(v).lower() for k, v in lora.metadata.items()}
    version = md.get("ss_base_model_version", "") or md.get("modelspec.architecture", "")
    if "xl" in version:
        return "sdxl"
    if version.startswith(("sd_v1", "stable-diffusion-v1")):
        return "sd15"
    if version.startswith(("sd_v2", "stable-diffusion-v2")):
        return "sd2"
    if version:
        return version
    if any(k.startswith("text_encoder_2.") for k in lora.state_dict):
        return "sdxl"
    return None


_FAMILY_NAMES = {"sd15": "SD 1.5", "sdxl": "SDXL", "sd2": "SD 2.x"}


def check_compatible(lora: LoraFile, base: BaseModel) -> None:
    """Raise AdapterIncompatibleError (naming the adapter) unless every LoRA key fits the base model."""
    fam = declared_family(lora)
    if fam is not None and fam != base.family:
        raise AdapterIncompatibleError(
            f"Adapter '{lora.name}' ({lora.path.name}) was made for {_FAMILY_NAMES.get(fam, fam)} but the base "
            f"model '{base.name}' is {_FAMILY_NAMES[base.family]}; choose an adapter for "
            f"{_FAMILY_NAMES[base.family]}."
        )
    components = base.modules()
    problems: list[str] = []
    for comp, mods in lora.modules.items():
        model = components.get(comp)
        if model is None:
            problems.append(f"{len(mods)} keys for '{comp}', which {base.name} does not have")
            continue
        named = dict(model.named_modules())
        for path, (a_shape, b_shape) in mods.items():
            module = named.get(path)
            if module is None:
                problems.append(f"{comp}.{path}: no such layer")
                continue
            w = getattr(getattr(module, "base_layer", module), "weight", None)
            if w is None or a_shape is None or b_shape is None:
                problems.append(f"{comp}.{path}: incomplete LoRA pair or layer without weight")
                continue
            if a_shape[1] != w.shape[1] or b_shape[0] != w.shape[0]:
                problems.append(
                    f"{comp}.{path}: LoRA maps {a_shape[1]}->{b_shape[0]}, layer is {w.shape[1]}->{w.shape[0]}"
                )
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise AdapterIncompatibleError(
            f"Adapter '{lora.name}' ({lora.path.name}) does not fit base model '{base.name}' "
            f"({_FAMILY_NAMES[base.family]}): " + "; ".join(problems[:3]) + more
        )


# ------------------------------------------------------------------------------------------------ caches


class StateDictCache:
    """LRU of converted LoRA files in RAM, bounded by total tensor bytes; keyed by (path, mtime, size)."""

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, LoraFile] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(path: Path) -> tuple:
        st = path.stat()
        return (str(path), st.st_mtime_ns, st.st_size)

    def get(self, key: tuple) -> LoraFile | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: tuple, lora: LoraFile) -> None:
        with self._lock:
            self._items[key] = lora
            self._items.move_to_end(key)
            while len(self._items) > 1 and self.total_bytes() > self.max_bytes:
                self._items.popitem(last=False)

    def total_bytes(self) -> int:
        return sum(x.nbytes for x in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


class AdapterManager:
    """Loads, caches and switches LoRA adapters on one base model. Hold `lock` around activate + sampling."""

    def __init__(
        self,
        base: BaseModel,
        adapter_dirs: list[str | os.PathLike],
        *,
        ram_cache_bytes: int = 512 * 2**20,
        max_loaded: int = 8,
        allow_pickle: bool = False,
    ):
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {max_loaded}")
        self.base = base
        self.adapter_dirs = [Path(d) for d in adapter_dirs]
        self.allow_pickle = allow_pickle
        self.max_loaded = max_loaded
        self.ram_cache = StateDictCache(ram_cache_bytes)
        self.lock = threading.RLock()
        self._loaded: OrderedDict[str, str] = OrderedDict()  # peft adapter name -> cache key str
        self._names: dict[str, str] = {}  # resolved path -> peft name
        self.loads = 0
        self.evictions = 0
        self.active: dict[str, float] = {}  # peft name -> weight of the current mix
        self._enabled = True
        self._layers: list | None = None  # cached peft tuner layers, reset on inject/delete

    @classmethod
    def for_model(cls, base: BaseModel, adapter_dirs: list[str | os.PathLike], **kwargs) -> AdapterManager:
        """The one manager of a base model: adapter state lives on the model's modules, so two managers on one
        model would fight over it. Reused when the settings match, refused when they differ."""
        existing: AdapterManager | None = getattr(base, "_adapter_manager", None)
        if existing is None:
            base._adapter_manager = cls(base, adapter_dirs, **kwargs)
            return base._adapter_manager
        same = ([Path(d) for d in adapter_dirs] == existing.adapter_dirs
                and kwargs.get("max_loaded", existing.max_loaded) == existing.max_loaded
                and kwargs.get("allow_pickle", existing.allow_pickle) == existing.allow_pickle)
        if not same:
            raise ValueError(f"Base model '{base.name}' already has an adapter manager with other settings; "
                             "use one Engine per base model (or load another copy of the model).")
        return existing

    # -- files
    def resolve(self, ref: str | os.PathLike) -> Path:
        return resolve_adapter_path(ref, self.adapter_dirs)

    def get(self, ref: str | os.PathLike) -> LoraFile:
        """Converted and compatibility-checked LoRA file, from the RAM cache when possible. Whatever goes wrong
        is an AdapterError carrying `ref` (a damaged file raises the reader's own errors otherwise)."""
        path = self.resolve(ref)
        key = StateDictCache.key(path)
        lora = self.ram_cache.get(key)
        if lora is None:
            name = str(ref) if os.sep not in str(ref) else path.stem
            try:
                lora = read_lora(path, family=self.base.family, unet_config=self.base.unet.config,
                                 allow_pickle=self.allow_pickle, name=name)
                check_compatible(lora, self.base)
            except AdapterError as exc:
                exc.ref = exc.ref or os.fspath(ref)
                raise
            except PickleRefusedError as exc:
                raise AdapterPickleRefused(f"Adapter '{name}' ({path.name}) is a pickle-based file, which can run code "
                                           "when loaded: convert it to .safetensors, or pass allow_pickle=True if you "
                                           "trust it", ref=os.fspath(ref)) from exc
            except Exception as exc:  # safetensors, torch and diffusers errors on a damaged or foreign file
                raise AdapterError(f"Adapter '{name}' ({path.name}) could not be read: {type(exc).__name__}",
                                   ref=os.fspath(ref)) from exc
            self.ram_cache.put(key, lora)
        return lora

    # -- model state
    @staticmethod
    def peft_name(path: Path) -> str:
        return "lora_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]

    @property
    def loaded(self) -> list[str]:
        """peft names of the adapters currently injected into the model (LRU order)."""
        return list(self._loaded)

    def _inject(self, lora: LoraFile, name: str) -> None:
        from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

        mixin = StableDiffusionXLLoraLoaderMixin if self.base.family == "sdxl" else StableDiffusionLoraLoaderMixin
        self._layers = None
        sd, alphas = lora.state_dict, lora.network_alphas
        with warnings.catch_warnings():  # peft warns on every second adapter; several adapters is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            if "unet" in lora.modules:
                mixin.load_lora_into_unet(dict(sd), alphas, self.base.unet, adapter_name=name)
            for comp in ("text_encoder", "text_encoder_2"):
                module = getattr(self.base, comp)
                if comp in lora.modules and module is not None:
                    mixin.load_lora_into_text_encoder(dict(sd), alphas, module, prefix=comp, adapter_name=name)

    def _delete(self, name: str) -> None:
        from diffusers.utils.peft_utils import delete_adapter_layers

        self._layers = None
        if name in getattr(self.base.unet, "peft_config", {}):
            self.base.unet.delete_adapters([name])
        for te in (self.base.text_encoder, self.base.text_encoder_2):
            if te is not None and name in getattr(te, "peft_config", {}):
                delete_adapter_layers(te, name)
        self._loaded.pop(name, None)
        self.evictions += 1

    def ensure_loaded(self, refs: list[str]) -> dict[str, str]:
        """Inject every ref of a mix (LRU-evicting others beyond `max_loaded`); returns ref -> peft name."""
        if len(refs) > self.max_loaded:
            raise ValueError(f"A mix of {len(refs)} adapters exceeds max_loaded={self.max_loaded}.")
        with self.lock:
            out: dict[str, str] = {}
            files = {ref: self.get(ref) for ref in refs}  # check everything before touching the model
            for ref, lora in files.items():
                name = self.peft_name(lora.path)
                if name in self._loaded:
                    self._loaded.move_to_end(name)
                else:
                    wanted = {self.peft_name(f.path) for f in files.values()}
                    for victim in [n for n in self._loaded if n not in wanted]:
                        if len(self._loaded) < self.max_loaded:
                            break
                        self._delete(victim)
                    self._inject(lora, name)
                    self._loaded[name] = str(lora.path)
                    self.loads += 1
                out[ref] = name
            return out

    def activate(self, mix: Mapping[str, float]) -> None:
        """Make exactly `mix` ({ref: weight}) active; an empty mix leaves only the base model."""
        with self.lock:
            names = self.ensure_loaded(list(mix))
            self._switch({names[r]: float(w) for r, w in mix.items()})

    def _tuner_layers(self) -> list:
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._layers = [m for module in self.base.modules().values() for m in module.modules()
                            if isinstance(m, BaseTunerLayer)]
        return self._layers

    def _switch(self, weights: dict[str, float]) -> None:
        """What `set_adapters` does (active list + per-adapter scale on every LoRA layer), without peft's
        requires_grad pass over every adapter parameter, which dominates switch time (diffusers #11816) and
        is useless at inference. Layers without any adapter of the mix fall back to the base weights."""
        for layer in self._tuner_layers():
            present = [n for n in weights if n in layer.scaling]
            layer._active_adapter = present
            for n in present:
                layer.set_scale(n, weights[n])
        self.active = dict(weights)

    def set_enabled(self, enabled: bool) -> None:
        """Toggle all LoRA layers without changing the active set (a flag per layer, as peft's
        `enable_adapters` does, minus its requires_grad pass)."""
        self._enabled = enabled
        for layer in self._tuner_layers():
            layer._disable_adapters = not enabled

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base model without adapters (autoguidance's default guide), then re-enable them."""
        with self.lock:
            before = self._enabled
            self.set_enabled(False)
            try:
                yield
            finally:
                self.set_enabled(before)
