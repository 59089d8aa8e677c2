"""Base models: SD 1.5 / SDXL components from a folder or a single file, and a tiny offline model.

A base model is a plain bundle of components (no diffusers pipeline object), because the project owns
the denoising loop (`generation.loop`) and every model, tiny or real, goes through that same loop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

Family = Literal["sd15", "sdxl"]

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


class PickleRefusedError(ValueError):
    """A weights file needs unpickling and the caller did not pass allow_pickle=True."""


def refuse_pickle(path: str | os.PathLike, allow_pickle: bool, what: str = "weights file") -> None:
    """Pickle files can run code when loaded; refuse them unless explicitly allowed."""
    if Path(path).suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise PickleRefusedError(
            f"Refusing to load {what} '{path}': pickle-based formats ({', '.join(PICKLE_SUFFIXES)}) can run "
            "arbitrary code. Convert it to .safetensors, or pass allow_pickle=True if you trust it."
        )


@dataclass
class BaseModel:
    """The components the denoising loop needs; `vae=None` means pixel space (latents are images in [-1, 1])."""

    family: Family
    name: str
    tokenizer: Any
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    scheduler_config: dict
    vae: torch.nn.Module | None = None
    tokenizer_2: Any = None
    text_encoder_2: torch.nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    weights_file: Path | None = None  # the checkpoint (or a folder's UNet weights) the `Model hash` is taken of

    @property
    def short_hash(self) -> str | None:
        """A1111's `Model hash` (sha256 of the checkpoint file, 10 hex digits); None for a model built in memory."""
        from loracle.generation.hashes import model_short_hash

        return model_short_hash(self.weights_file) if self.weights_file is not None else None

    @property
    def pixel_space(self) -> bool:
        return self.vae is None

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels the loop denoises (an inpainting UNet takes more input channels than it predicts)."""
        if self.vae is not None:
            return int(self.vae.config.latent_channels)
        return int(self.unet.config.out_channels)

    @property
    def sample_size(self) -> int:
        """Default image size in pixels."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def modules(self) -> dict[str, torch.nn.Module]:
        """The torch modules that LoRA adapters can attach to, by diffusers' prefix name."""
        mods = {"unet": self.unet, "text_encoder": self.text_encoder}
        if self.text_encoder_2 is not None:
            mods["text_encoder_2"] = self.text_encoder_2
        return mods


def pick_device(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """cuda -> fp16, mps -> fp16, cpu -> fp32 (CPU half precision is slow and lossy)."""
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    device = torch.device(device)
    dtype = torch.float16 if device.type in ("cuda", "mps") else torch.float32
    return device, dtype


# ----------------------------------------------------------------------------------------------- tiny model


def tiny_tokenizer(model_max_length: int = 77):
    """A byte-level CLIP tokenizer with no merges, built in memory (no download, ~514 tokens)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab.setdefault(c + suffix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


TINY_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def build_tiny_model(family: Family = "sd15", seed: int = 0, *, with_vae: bool = True) -> BaseModel:
    """Seeded random tiny SD-shaped model (32x32 images, 8x8 latents) for tests, demos and benchmarks.

    Sizes follow diffusers' own pipeline tests; a 50-step generation takes a fraction of a second on CPU.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if family not in ("sd15", "sdxl"):
        raise ValueError(f"family must be 'sd15' or 'sdxl', got {family!r}")
    torch.manual_seed(seed)
    text_cfg = dict(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=514,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
    )
    unet_kwargs: dict[str, Any] = dict(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=(2, 4), cross_attention_dim=32,
    )
    text_encoder_2 = tokenizer_2 = None
    if family == "sdxl":
        unet_kwargs.update(
            cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=32 + 6 * 8, use_linear_projection=True,
        )
    if not with_vae:  # pixel space, like the digits world: the UNet sees 3-channel images directly
        unet_kwargs.update(in_channels=3, out_channels=3, sample_size=32)
    unet = UNet2DConditionModel(**unet_kwargs)
    vae = None
    if with_vae:
        vae = AutoencoderKL(
            block_out_channels=[8, 8, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
            down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3, sample_size=32,
        )
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    if family == "sdxl":
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg))
        tokenizer_2 = tiny_tokenizer()
    model = BaseModel(
        family=family, name=f"tiny-{family}", tokenizer=tiny_tokenizer(), text_encoder=text_encoder, unet=unet,
        scheduler_config=dict(TINY_SCHEDULER_CONFIG), vae=vae, tokenizer_2=tokenizer_2,
        text_encoder_2=text_encoder_2,
    )
    return _finish(model, None)


def save_base_model(model: BaseModel, folder: str | os.PathLike) -> Path:
    """Write a diffusers-style folder (unet/, text_encoder/, tokenizer/, scheduler/, optional vae/)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.unet.save_pretrained(folder / "unet")
    model.text_encoder.save_pretrained(folder / "text_encoder")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    if model.vae is not None:
        model.vae.save_pretrained(folder / "vae")
    if model.text_encoder_2 is not None:
        model.text_encoder_2.save_pretrained(folder / "text_encoder_2")
        model.tokenizer_2.save_pretrained(folder / "tokenizer_2")
    (folder / "scheduler").mkdir(exist_ok=True)
    cfg = {"_class_name": "DDIMScheduler", **model.scheduler_config}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "loracle_model.json").write_text(json.dumps({"family": model.family, "name": model.name}))
    return folder


# ------------------------------------------------------------------------------------------------ loading


def load_base_model(
    spec: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    device: str | torch.device | None = None,
    config: str | os.PathLike | None = None,
) -> BaseModel:
    """Load "tiny", a local diffusers folder, or a single checkpoint file (`config`: a folder of diffusers
    configs to read its architecture from; unset: the shipped SD 1.5 / SDXL configs, see `_load_single_file`)."""
    if str(spec) in ("tiny", "tiny-sd15"):
        return _finish(build_tiny_model("sd15"), device)
    if str(spec) == "tiny-sdxl":
        return _finish(build_tiny_model("sdxl"), device)
    path = Path(spec)
    if path.is_dir():
        return _finish(_load_folder(path, allow_pickle), device)
    if path.is_file():
        return _finish(_load_single_file(path, allow_pickle, config), device)
    raise ValueError(f"Base model spec '{spec}' is not 'tiny', 'tiny-sdxl', a folder, or a file that exists.")


def _finish(model: BaseModel, device: str | torch.device | None) -> BaseModel:
    model.device, model.dtype = pick_device(device)
    for module in [model.unet, model.text_encoder, model.vae, model.text_encoder_2]:
        if module is not None:
            module.to(device=model.device)
            if next(module.parameters()).dtype != model.dtype:  # skip no-op casts (and diffusers' warning)
                module.to(dtype=model.dtype)
            module.eval().requires_grad_(False)
    if model.vae is not None and model.dtype == torch.float16 and model.family == "sdxl":
        model.vae.to(torch.float32)  # the SDXL VAE overflows in fp16 (diffusers upcasts it too)
    return model


def _load_folder(path: Path, allow_pickle: bool) -> BaseModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    for sub in ("unet", "text_encoder", "tokenizer"):
        if not (path / sub).is_dir():
            raise ValueError(f"Model folder '{path}' has no '{sub}/' subfolder.")
    if not allow_pickle:
        for sub in ("unet", "text_encoder", "vae", "text_encoder_2"):
            d = path / sub
            if d.is_dir() and not any(f.suffix == ".safetensors" for f in d.iterdir()):
                raise PickleRefusedError(
                    f"'{d}' has no .safetensors weights (only pickle formats); pass allow_pickle=True if you trust it."
                )
    st = not allow_pickle
    unet = UNet2DConditionModel.from_pretrained(path / "unet", use_safetensors=st or None)
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", use_safetensors=st or None)
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
    vae = AutoencoderKL.from_pretrained(path / "vae", use_safetensors=st or None) if (path / "vae").is_dir() else None
    text_encoder_2 = tokenizer_2 = None
    if (path / "text_encoder_2").is_dir():
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            path / "text_encoder_2", use_safetensors=st or None
        )
        tokenizer_2 = CLIPTokenizer.from_pretrained(path / "tokenizer_2")
    sched_file = path / "scheduler" / "scheduler_config.json"
    scheduler_config = dict(TINY_SCHEDULER_CONFIG)
    if sched_file.is_file():
        scheduler_config = {k: v for k, v in json.loads(sched_file.read_text()).items() if not k.startswith("_")}
    family: Family = "sdxl" if text_encoder_2 is not None else "sd15"
    name = path.name
    meta = path / "loracle_model.json"
    if meta.is_file():
        name = json.loads(meta.read_text()).get("name", name)
    weights = sorted((path / "unet").glob("*.safetensors"))
    return BaseModel(
        family=family, name=name, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
        scheduler_config=scheduler_config, vae=vae, tokenizer_2=tokenizer_2, text_encoder_2=text_encoder_2,
        weights_file=weights[0] if weights else None,
    )


def checkpoint_family(keys: list[str]) -> Family:
    """SDXL checkpoints carry a second text encoder under `conditioner.embedders.1`."""
    return "sdxl" if any(k.startswith("conditioner.embedders.1") for k in keys) else "sd15"


FAMILY_NAMES: dict[Family, str] = {"sd15": "SD 1.5", "sdxl": "SDXL"}
PIPELINES = Path(__file__).parent / "pipelines"  # configs of SD 1.5 and SDXL, and CLIP's BPE vocabulary


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """CLIP's tokenizer from the vocabulary shipped with the package (SDXL's second one pads with "!")."""
    from transformers import CLIPTokenizer

    folder = PIPELINES / "clip-tokenizer"
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token, model_max_length=77)


def _load_single_file(path: Path, allow_pickle: bool, config: str | os.PathLike | None) -> BaseModel:
    """A single-file checkpoint in the original (LDM) key layout, converted with diffusers' converters. Its
    architecture comes from `config` (a folder of diffusers JSON configs, with a `tokenizer/` of its own if it
    needs one) or the SD 1.5 / SDXL configs shipped in `pipelines/`: nothing is read from the hub."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    refuse_pickle(path, allow_pickle, "checkpoint")
    if path.suffix.lower() == ".safetensors":
        checkpoint = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint = raw.get("state_dict", raw)
    family = checkpoint_family(list(checkpoint))
    folder = Path(config) if config is not None else PIPELINES / family
    where = {"config": str(folder), "local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", **where)
    except ValueError as error:  # diffusers names the first tensor whose shape differs from the config's
        source = "of the given config folder" if config is not None else "this package ships"
        raise ValueError(
            f"Checkpoint '{path.name}' does not have the {FAMILY_NAMES[family]} architecture {source} "
            f"({str(error).split('. ')[0]}). Pass config= a folder of its diffusers configs "
            "(unet/, vae/, text_encoder/, scheduler/)."
        ) from error
    vae = AutoencoderKL.from_single_file(checkpoint, subfolder="vae", **where)
    text_encoder = create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint, subfolder="text_encoder", **where)
    own = folder / "tokenizer"
    tokenizer = CLIPTokenizer.from_pretrained(own) if own.is_dir() else clip_tokenizer()
    text_encoder_2 = tokenizer_2 = None
    if family == "sdxl":
        # only OpenCLIP's keys, or diffusers takes the first encoder's when both have one width (tiny models)
        open_clip = {k: v for k, v in checkpoint.items() if k.startswith("conditioner.embedders.1.")}
        text_encoder_2 = create_diffusers_clip_model_from_ldm(CLIPTextModelWithProjection, open_clip,
                                                              subfolder="text_encoder_2", **where)
        own = folder / "tokenizer_2"
        tokenizer_2 = CLIPTokenizer.from_pretrained(own) if own.is_dir() else clip_tokenizer(pad_token="!")
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if not scheduler_file.is_file():
        scheduler_file = PIPELINES / family / "scheduler" / "scheduler_config.json"
    scheduler = json.loads(scheduler_file.read_text())
    return BaseModel(
        family=family, name=path.stem, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
        scheduler_config={k: v for k, v in scheduler.items() if not k.startswith("_")}, vae=vae,
        tokenizer_2=tokenizer_2, text_encoder_2=text_encoder_2, weights_file=path,
    )
