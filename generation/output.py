"""PNG output with A1111-style `parameters` text chunks, so other tools (A1111, Civitai, ComfyUI readers)
show the prompt, sampler, seed and `<lora:name:w>` weights of an image."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

SAMPLER_NAMES = {"ddim": "DDIM", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras",
                 "euler": "Euler", "euler_a": "Euler a"}


ADAPTER_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def lora_tag(ref: str, weight: float) -> str:
    """A1111's tag: the adapter's file stem (a mix names files by their path in an adapter folder)."""
    name = Path(ref).stem if ("/" in ref or os.sep in ref or ref.lower().endswith(ADAPTER_SUFFIXES)) else ref
    return f"<lora:{name}:{weight:g}>"


def format_parameters(
    *, prompt: str, negative_prompt: str, steps: int, sampler: str, cfg_scale: float, seed: int,
    width: int, height: int, model: str, mix: dict[str, float], nfe: int, extra: dict[str, object] | None = None,
) -> str:
    """A1111's layout: prompt (with LoRA tags) / 'Negative prompt: ...' / 'Key: value, ...'."""
    tags = " ".join(lora_tag(r, w) for r, w in sorted(mix.items()))
    fields: dict[str, object] = {
        "Steps": steps, "Sampler": SAMPLER_NAMES.get(sampler, sampler), "CFG scale": f"{cfg_scale:g}",
        "Seed": seed, "Size": f"{width}x{height}", "Model": model, "NFE": nfe, **(extra or {}),
    }
    lines = [f"{prompt} {tags}".strip()]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields.items()))
    return "\n".join(lines)


def _quote(v: object) -> str:
    s = str(v)
    return f'"{s}"' if ("," in s or ":" in s) else s


def png_bytes(image: Image.Image, parameters: str) -> bytes:
    """The image as PNG bytes with the `parameters` tEXt chunk."""
    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write through a temp file in the same folder and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_png(image: Image.Image, path: str | os.PathLike, parameters: str) -> Path:
    """Write atomically with the `parameters` tEXt chunk."""
    return write_atomic(path, png_bytes(image, parameters))


def read_parameters(path: str | os.PathLike) -> str | None:
    with Image.open(path) as im:
        return im.info.get("parameters")
