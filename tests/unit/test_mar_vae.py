"""The KL-16 tokenizer for official MAR checkpoints: an LDM-layout KL-VAE (module names and forward pass of
LDM's / LTH14/mar's models/vae.py, written out independently below) converts into diffusers' AutoencoderKL,
strictly and with the same outputs; pickles are refused; a latent MAR samples through the VAE end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from loracle.generation.base_models import PickleRefusedError
from loracle.generation.engine import GenerationRequest
from loracle.generation.guidance import GuidanceSettings
from loracle.generation.mar import MAR, MARConfig
from loracle.generation.mar.engine import MAREngine
from loracle.generation.mar.io import load_mar, save_mar
from loracle.generation.mar.official import KL16_CONFIG, kl16_vae, load_kl16, load_ldm_vae, save_official
from loracle.generation.mar.sampling import MARSampleSettings, sample

# ------------------------------------------------------------------ LDM KL-VAE reference (LDM module names)

def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, c, eps=1e-6)


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, g: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, g), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, g), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _Attn(nn.Module):
    """Single-head self-attention over pixels with 1x1 convs (q, k, v, proj_out), scale c^-1/2."""

    def __init__(self, c: int, g: int):
        super().__init__()
        self.norm = _norm(c, g)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2) for m in (self.q, self.k, self.v))  # (b, c, n)
        w = torch.softmax(q.transpose(1, 2) @ k * c ** -0.5, dim=-1)  # (b, n query, n key)
        return x + self.proj_out((v @ w.transpose(1, 2)).reshape(b, c, hh, ww))


def _level(cin: int, cout: int, n: int, attn: bool, g: int) -> nn.Module:
    m = nn.Module()
    m.block = nn.ModuleList(_Res(cin if i == 0 else cout, cout, g) for i in range(n))
    m.attn = nn.ModuleList(_Attn(cout, g) for _ in range(n if attn else 0))
    return m


def _mid(c: int, g: int) -> nn.Module:
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = _Res(c, c, g), _Attn(c, g), _Res(c, c, g)
    return m


def _run_level(level: nn.Module, h):
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


class LDMEncoder(nn.Module):
    def __init__(self, chans: list[int], n: int, z: int, attn: set[int], g: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        for i, c in enumerate(chans):
            lvl = _level(chans[max(i - 1, 0)], c, n, i in attn, g)
            if i < len(chans) - 1:
                lvl.downsample = nn.Module()
                lvl.downsample.conv = nn.Conv2d(c, c, 3, stride=2)  # padded (0, 1, 0, 1) in forward
            self.down.append(lvl)
        self.mid, self.norm_out = _mid(chans[-1], g), _norm(chans[-1], g)
        self.conv_out = nn.Conv2d(chans[-1], 2 * z, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in self.down:
            h = _run_level(lvl, h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample.conv(F.pad(h, (0, 1, 0, 1)))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class LDMDecoder(nn.Module):
    """up[i] is the level at resolution index i (0 = highest); it runs from the last level to up[0]."""

    def __init__(self, chans: list[int], n: int, z: int, attn: set[int], g: int):
        super().__init__()
        self.conv_in = nn.Conv2d(z, chans[-1], 3, padding=1)
        self.mid = _mid(chans[-1], g)
        self.up = nn.ModuleList()
        for i, c in enumerate(chans):
            lvl = _level(chans[min(i + 1, len(chans) - 1)], c, n + 1, i in attn, g)
            if i > 0:
                lvl.upsample = nn.Module()
                lvl.upsample.conv = nn.Conv2d(c, c, 3, padding=1)
            self.up.append(lvl)
        self.norm_out, self.conv_out = _norm(chans[0], g), nn.Conv2d(chans[0], 3, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for lvl in reversed(self.up):
            h = _run_level(lvl, h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class LDMKL(nn.Module):
    def __init__(self, chans, n=2, z=16, enc_attn=frozenset(), dec_attn=frozenset(), g=32):
        super().__init__()
        self.encoder, self.decoder = LDMEncoder(chans, n, z, set(enc_attn), g), LDMDecoder(chans, n, z, set(dec_attn), g)
        self.quant_conv, self.post_quant_conv = nn.Conv2d(2 * z, 2 * z, 1), nn.Conv2d(z, z, 1)

    def encode_mean(self, x):
        return self.quant_conv(self.encoder(x)).chunk(2, dim=1)[0]

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ----------------------------------------------------------------------------------------------- tests

# Attention in the encoder's last level (as KL-16) and, to check the up-level index flip, in decoder level 0
# (LDM's up.0, the highest resolution, is diffusers' up_blocks[2]).
TINY_LDM = dict(chans=[32, 32, 64], n=2, z=4, enc_attn={2}, dec_attn={0}, g=8)
TINY_CONFIG = {**KL16_CONFIG, "latent_channels": 4, "norm_num_groups": 8, "block_out_channels": [32, 32, 64],
               "down_block_types": ["DownEncoderBlock2D"] * 2 + ["AttnDownEncoderBlock2D"],
               "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "AttnUpDecoderBlock2D"], "sample_size": 16}


def _tiny_ldm() -> LDMKL:
    torch.manual_seed(0)
    ref = LDMKL(**TINY_LDM).eval()
    with torch.no_grad():  # off the default init, so swapped norms / biases show
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return ref


def test_ldm_layout_converts_strictly_and_reproduces_the_source():
    ref = _tiny_ldm()
    sd = {**ref.state_dict(), "loss.logvar": torch.zeros(())}  # LDM training leftovers are skipped
    vae = load_ldm_vae(kl16_vae(TINY_CONFIG), sd)
    assert "decoder.up_blocks.2.attentions.2.to_q.weight" in vae.state_dict(), "level attention was mapped"
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(vae.decode(z).sample, ref.decode(z), atol=1e-5)
        assert torch.allclose(vae.encode(x).latent_dist.mean, ref.encode_mean(x), atol=1e-5)


def test_official_kl16_layout_fits_kl16_config():
    # MAR's models/vae.py: ch 128, ch_mult (1, 1, 2, 2, 4), 2 res blocks, z 16; attn_resolutions (16,) in the
    # encoder (its last level, 256 / 2^4 = 16), none in the decoder. Names and shapes only (meta tensors).
    with torch.device("meta"):
        ref = LDMKL([128, 128, 256, 256, 512], n=2, z=16, enc_attn={4})
        vae = kl16_vae()
    load_ldm_vae(vae, ref.state_dict(), "kl16 layout")
    with torch.device("meta"):  # decoder attention the config lacks: named, not dropped
        bad = LDMKL([128, 128, 256, 256, 512], n=2, z=16, enc_attn={4}, dec_attn={0})
    with pytest.raises(ValueError, match=r"unexpected .*decoder\.up_blocks\.4\.attentions\.0"):
        load_ldm_vae(vae, bad.state_dict(), "kl16 layout")


def test_refusals_name_the_file_and_the_keys(tmp_path):
    sd = _tiny_ldm().state_dict()
    ckpt = tmp_path / "kl16.ckpt"
    torch.save({"model": sd}, ckpt)
    with pytest.raises(PickleRefusedError, match=r"kl16\.ckpt.*allow_pickle=True"):
        load_kl16(ckpt, TINY_CONFIG)
    vae = load_kl16(ckpt, TINY_CONFIG, allow_pickle=True)
    assert torch.equal(vae.decoder.conv_in.weight, sd["decoder.conv_in.weight"])
    partial = {k: v for k, v in sd.items() if not k.startswith("decoder.mid.attn_1.")}
    partial["decoder.extra.weight"] = torch.zeros(1)
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"partial\.safetensors.*10 missing.*mid_block\.attentions\.0\.to_k.*"
                                         r"1 unexpected \['decoder\.extra\.weight'\]"):
        load_kl16(tmp_path / "partial.safetensors", TINY_CONFIG)
    wide = {**sd, "post_quant_conv.weight": torch.zeros(8, 8, 1, 1)}
    save_file(wide, str(tmp_path / "wide.safetensors"))
    with pytest.raises(ValueError, match=r"wide\.safetensors.*post_quant_conv\.weight"):
        load_kl16(tmp_path / "wide.safetensors", TINY_CONFIG)


# A class-conditional latent MAR on the tiny VAE's grid: 16x16 images, stride 4, 4 channels -> 16 tokens.
LATENT_MAR = MARConfig(img_size=16, vae_stride=4, channels=4, patch_size=1, encoder_embed_dim=32, decoder_embed_dim=32,
                       diffloss_w=32, diffloss_d=1, num_sampling_steps=4, learn_sigma=True)


def test_official_checkpoints_become_a_folder_that_generates(tmp_path):
    torch.manual_seed(3)
    mar = MAR(LATENT_MAR)
    torch.save({"model": mar.state_dict(), "model_ema": mar.state_dict()}, tmp_path / "checkpoint-last.pth")
    save_file(_tiny_ldm().state_dict(), str(tmp_path / "kl.safetensors"))
    vae = load_kl16(tmp_path / "kl.safetensors", TINY_CONFIG)
    with pytest.raises(ValueError, match="vae_stride 4 needs"):
        save_mar(tmp_path / "novae", mar, "no vae")
    folder = save_mar(tmp_path / "mar", mar, "Tiny latent MAR", vae=vae, sampling={"temperature": 1.0})
    bundle = load_mar(folder)
    assert bundle.vae.stride == 4 and bundle.vae.scale == pytest.approx(0.2325)
    out = sample(bundle.model, torch.tensor([3, 7]), [0, 1], MARSampleSettings(num_iter=4, cfg=2.0))
    assert out.images.shape == (2, 4, 4, 4), "tokens on the latent grid"
    imgs = bundle.to_images(out.images)
    assert imgs.shape == (2, 3, 16, 16) and torch.allclose(imgs, vae.decode(out.images / 0.2325).sample)
    engine = MAREngine(bundle)
    res = engine.generate(GenerationRequest(prompt="7", n_images=2, seeds=[0, 1], steps=4,
                                            guidance=GuidanceSettings(kind="cfg", scale=2.0)))
    assert [im.size for im in res.images] == [(16, 16)] * 2 and res.images[0].mode == "RGB"
    assert len({im.tobytes() for im in res.images}) == 2, "two seeds, two images"
    with pytest.raises(ValueError, match="class index"):
        engine.generate(GenerationRequest(prompt="a fox", steps=4))
    tokens = bundle.vae.encode(imgs.clamp(-1, 1))
    assert tokens.shape == (2, 4, 4, 4) and torch.isfinite(tokens).all()


def test_save_official_reads_both_pickles_only_when_allowed(tmp_path):
    torch.manual_seed(4)
    mar = MAR(LATENT_MAR)
    torch.save({"model": mar.state_dict(), "model_ema": mar.state_dict()}, tmp_path / "checkpoint-last.pth")
    torch.save({"model": _tiny_ldm().state_dict()}, tmp_path / "kl16.ckpt")
    paths = (tmp_path / "checkpoint-last.pth", tmp_path / "kl16.ckpt", tmp_path / "out")
    with pytest.raises(PickleRefusedError, match="checkpoint-last.pth"):
        save_official(*paths, config=LATENT_MAR, vae_config=TINY_CONFIG)
    folder = save_official(*paths, allow_pickle=True, config=LATENT_MAR, vae_config=TINY_CONFIG)
    assert sorted(p.name for p in folder.iterdir()) == ["loracle_model.json", "transformer", "vae"]
    assert not [p for p in folder.rglob("*") if p.suffix in (".bin", ".pth", ".ckpt")], "safetensors + JSON only"
    assert load_mar(folder).model.config == LATENT_MAR
