"""PNG output with A1111-style `parameters` text chunks, so other tools (A1111, Civitai, ComfyUI readers)
show the prompt, sampler, seed and `<lora:name:w>` weights of an image."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

SAMPLER_NAMES = {"ddim": "DDIM", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras",
                 "euler": "Euler", "euler_a": "Euler a"}


ADAPTER_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")  # the adapter files a folder may hold


def lora_tag(ref: str, weight: float) -> str:
    return f"<lora:{lora_name(ref)}:{weight:g}>"


def lora_name(ref: str) -> str:
    """The name a `<lora:name:w>` tag and the `Lora hashes` field use for an adapter ref: the file stem (a mix
    names files by their path in an adapter folder)."""
    return Path(ref).stem if ("/" in ref or os.sep in ref or ref.lower().endswith(ADAPTER_SUFFIXES)) else ref


def format_parameters(
    *, prompt: str, negative_prompt: str, steps: int, sampler: str, cfg_scale: float, seed: int,
    width: int, height: int, model: str, mix: dict[str, float], nfe: int, extra: dict[str, object] | None = None,
    model_hash: str | None = None, lora_hashes: dict[str, str] | None = None,
) -> str:
    """A1111's layout: prompt (with LoRA tags) / 'Negative prompt: ...' / 'Key: value, ...'. `model_hash` and
    `lora_hashes` ({tag name: short hash}) are what Civitai reads to link the image to its files."""
    tags = " ".join(lora_tag(r, w) for r, w in sorted(mix.items()))
    fields: dict[str, object] = {
        "Steps": steps, "Sampler": SAMPLER_NAMES.get(sampler, sampler), "CFG scale": f"{cfg_scale:g}",
        "Seed": seed, "Size": f"{width}x{height}", **({"Model hash": model_hash} if model_hash else {}),
        "Model": model, "NFE": nfe, **(extra or {}),
    }
    used = {lora_name(r) for r in mix}
    hashes = {name.replace(":", "").replace(",", ""): h for name, h in sorted((lora_hashes or {}).items()) if name in used}
    if hashes:
        fields["Lora hashes"] = ", ".join(f"{name}: {h}" for name, h in hashes.items())
    lines = [f"{prompt} {tags}".strip()]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields.items()))
    return "\n".join(lines)


def _quote(v: object) -> str:
    s = str(v)
    return json.dumps(s, ensure_ascii=False) if ("," in s or ":" in s or '"' in s) else s


_FIELD = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse_parameters(text: str) -> dict[str, str]:
    """The `parameters` text back as fields, the way A1111's PNG Info reads it: "Prompt", "Negative prompt",
    each "Key: value" of the last line (quoted values unquoted), and "Size-1"/"Size-2" from "Size"."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    last = lines[-1] if lines else ""
    pairs = _FIELD.findall(last)
    if len(pairs) >= 3:
        lines = lines[:-1]
        for key, value in pairs:
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    value = value[1:-1]
            fields[key.strip()] = value.strip() if isinstance(value, str) else str(value)
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    result = {"Prompt": "\n".join(prompt).strip(), "Negative prompt": "\n".join(negative).strip(), **fields}
    if re.fullmatch(r"\d+x\d+", fields.get("Size", "")):
        result["Size-1"], result["Size-2"] = fields["Size"].split("x")
    return result


def set_fields(text: str, fields: dict[str, object]) -> str:
    """The `parameters` text with these fields of its last line replaced (or added at the end)."""
    lines = text.split("\n")
    pairs = {k.strip(): v for k, v in _FIELD.findall(lines[-1])}
    pairs.update({k: _quote(v) for k, v in fields.items()})
    lines[-1] = ", ".join(f"{k}: {v}" for k, v in pairs.items())
    return "\n".join(lines)


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
