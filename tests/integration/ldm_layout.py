"""Write a diffusers model as a single-file checkpoint in the original (LDM / A1111) key layout, the way people's
SD 1.5 and SDXL checkpoints are laid out, so the loader's conversion can be tested on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from loracle.generation.base_models import BaseModel

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, table: dict[str, str]) -> str:
    head, _, leaf = key.rpartition(".")
    for new, old in table.items():
        if head == new or head.startswith(new + "."):
            return old + head[len(new):] + "." + leaf
    return key


def unet_to_ldm(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    cfg = unet.config
    per = cfg.layers_per_block + 1
    names: dict[str, str] = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
                             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
                             "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
                             "mid_block.resnets.1": "middle_block.2"}
    for i in range(len(cfg.block_out_channels)):
        for j in range(cfg.layers_per_block):
            names[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{per * i + j + 1}.0"
            names[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{per * i + j + 1}.1"
        names[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{per * (i + 1)}.0.op"
        has_attention = "CrossAttn" in cfg.up_block_types[i]
        for j in range(per):
            names[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{per * i + j}.0"
            names[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{per * i + j}.1"
        names[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{per * i + per - 1}.{2 if has_attention else 1}.conv"
    out = {}
    for key, value in unet.state_dict().items():
        head = next((h for h in sorted(names, key=len, reverse=True) if key.startswith(h + ".")), None)
        rest = key[len(head) + 1:] if head else key
        if head and ".resnets." in head:
            rest = _rename(rest, RESNET)
        out["model.diffusion_model." + (names[head] + "." + rest if head else key)] = value
    return out


def vae_to_ldm(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    n = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_norm_out", "norm_out").replace("mid_block.resnets.0", "mid.block_1")
        new = new.replace("mid_block.resnets.1", "mid.block_2").replace("mid_block.attentions.0", "mid.attn_1")
        for i in range(n):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")
        if ".mid.attn_1." in new:
            new = ".".join(new.split(".")[:3]) + "." + _rename(".".join(new.split(".")[3:]), VAE_ATTENTION)
            if value.dim() == 2:
                value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        elif ".block" in new:
            new = _rename(new, {k: v for k, v in [(p + k, p + v) for p in _prefixes(new) for k, v in VAE_RESNET.items()]})
        out["first_stage_model." + new] = value
    return out


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) + "." for i in range(1, len(parts))]


def open_clip_to_ldm(text_encoder: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """SDXL's second text encoder in OpenCLIP's layout (fused q/k/v, transposed projection)."""
    sd = text_encoder.state_dict()
    out = {prefix + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
           prefix + "text_projection": sd["text_projection.weight"].T.contiguous()}
    for i in range(text_encoder.config.num_hidden_layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([sd[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[dst + f"attn.out_proj.{kind}"] = sd[src + f"self_attn.out_proj.{kind}"]
            out[dst + f"ln_1.{kind}"] = sd[src + f"layer_norm1.{kind}"]
            out[dst + f"ln_2.{kind}"] = sd[src + f"layer_norm2.{kind}"]
            out[dst + f"mlp.c_fc.{kind}"] = sd[src + f"mlp.fc1.{kind}"]
            out[dst + f"mlp.c_proj.{kind}"] = sd[src + f"mlp.fc2.{kind}"]
    return out


def write_checkpoint(model: BaseModel, file: Path) -> Path:
    """The model as one .safetensors file in the LDM layout of its family."""
    sd = {**unet_to_ldm(model.unet), **vae_to_ldm(model.vae)}
    clip_prefix = "conditioner.embedders.0.transformer." if model.family == "sdxl" else "cond_stage_model.transformer."
    # A1111 keeps transformers' older key names, under text_model. (transformers 5.6 flattened CLIPTextModel's)
    sd.update({clip_prefix + (k if k.startswith("text_model.") else "text_model." + k): v
               for k, v in model.text_encoder.state_dict().items()})
    if model.family == "sdxl":
        sd.update(open_clip_to_ldm(model.text_encoder_2, "conditioner.embedders.1.model."))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(file))
    return file


def write_configs(model: BaseModel, folder: Path) -> Path:
    """A folder of the model's diffusers configs (no weights), with its own tokenizer(s)."""
    model.unet.save_config(folder / "unet")
    model.vae.save_config(folder / "vae")
    model.text_encoder.config.save_pretrained(folder / "text_encoder")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    if model.family == "sdxl":
        model.text_encoder_2.config.save_pretrained(folder / "text_encoder_2")
        model.tokenizer_2.save_pretrained(folder / "tokenizer_2")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(model.scheduler_config))
    return folder
