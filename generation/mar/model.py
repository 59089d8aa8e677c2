"""The MAR transformer: a bidirectional encoder over the known tokens (plus buffer tokens holding the
condition) and a decoder over all positions (mask tokens where unknown), whose outputs condition the
diffusion head of each token. Training masks a random share of tokens (truncated normal, >= mask_ratio_min)
in a random order and learns the masked ones. Parameter names follow LTH14/mar's `models/mar.py` (with timm's
Block layout: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from loracle.generation.mar.config import MARConfig
from loracle.generation.mar.diffloss import DiffLoss


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop, self.proj_drop = attn_drop, nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, d)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1, self.act, self.fc2, self.drop = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block (timm's layout, so official weights map one to one)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MAR(nn.Module):
    def __init__(self, config: MARConfig):
        super().__init__()
        c = self.config = config
        self.seq_len, self.token_embed_dim, self.buffer_size = c.seq_len, c.token_dim, c.buffer_size
        e, d = c.encoder_embed_dim, c.decoder_embed_dim
        if c.cond == "class":
            self.class_emb = nn.Embedding(c.class_num, e)
        else:
            self.cond_proj = nn.Linear(c.text_dim, e)
        self.fake_latent = nn.Parameter(torch.zeros(1, e))  # the "no condition" embedding (CFG's other branch)
        self.z_proj = nn.Linear(self.token_embed_dim, e, bias=True)
        self.z_proj_ln = nn.LayerNorm(e, eps=1e-6)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len + self.buffer_size, e))
        self.encoder_blocks = nn.ModuleList(
            [Block(e, c.encoder_num_heads, c.mlp_ratio, c.attn_dropout, c.proj_dropout) for _ in range(c.encoder_depth)])
        self.encoder_norm = nn.LayerNorm(e, eps=1e-6)
        self.decoder_embed = nn.Linear(e, d, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len + self.buffer_size, d))
        self.decoder_blocks = nn.ModuleList(
            [Block(d, c.decoder_num_heads, c.mlp_ratio, c.attn_dropout, c.proj_dropout) for _ in range(c.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len, d))
        self._init_transformer()
        self.diffloss = DiffLoss(self.token_embed_dim, d, c.diffloss_d, c.diffloss_w, c.num_sampling_steps,
                                 c.learn_sigma)

    def _init_transformer(self) -> None:
        for p in (self.fake_latent, self.mask_token, self.encoder_pos_embed_learned, self.decoder_pos_embed_learned,
                  self.diffusion_pos_embed_learned):
            nn.init.normal_(p, std=0.02)
        if hasattr(self, "class_emb"):
            nn.init.normal_(self.class_emb.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------------ tokens

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, C*p*p), row-major patches."""
        b, ch, h, w = imgs.shape
        p = self.config.patch_size
        x = imgs.reshape(b, ch, h // p, p, w // p, p)
        x = torch.einsum("nchpwq->nhwcpq", x)
        return x.reshape(b, (h // p) * (w // p), ch * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        p, ch = self.config.patch_size, self.config.channels
        g = int(math.isqrt(self.seq_len))
        x = x.reshape(b, g, g, ch, p, p)
        x = torch.einsum("nhwcpq->nchpwq", x)
        return x.reshape(b, ch, g * p, g * p)

    # --------------------------------------------------------------------------------------- condition

    def condition(self, cond: torch.Tensor | None, bsz: int) -> torch.Tensor:
        """(B, buffer, enc_dim): class embedding in every buffer slot, or one projected text state per slot;
        None = unconditional (the learned fake latent)."""
        e = self.config.encoder_embed_dim
        if cond is None:
            return self.fake_latent.expand(bsz, self.buffer_size, e)
        if self.config.cond == "class":
            if cond.dtype != torch.long or cond.shape != (bsz,):
                raise ValueError(f"class condition must be ({bsz},) int64 labels, got {tuple(cond.shape)} {cond.dtype}")
            if int(cond.min()) < 0 or int(cond.max()) >= self.config.class_num:
                raise ValueError(f"class labels must be in [0, {self.config.class_num}), got {cond.tolist()}")
            return self.class_emb(cond)[:, None].expand(bsz, self.buffer_size, e)
        want = (bsz, self.buffer_size, self.config.text_dim)
        if tuple(cond.shape) != want:
            raise ValueError(f"text condition must be shaped {want} (batch, buffer_size, text_dim), got {tuple(cond.shape)}")
        return self.cond_proj(cond.to(self.cond_proj.weight.dtype))

    def drop_condition(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Label / caption dropout: replace the condition by the fake latent for label_drop_prob of the batch."""
        drop = (torch.rand(c.shape[0], generator=generator) < self.config.label_drop_prob).to(c)[:, None, None]
        return drop * self.fake_latent[:, None] + (1 - drop) * c

    # ----------------------------------------------------------------------------------- transformer

    def forward_mae_encoder(self, tokens: torch.Tensor, mask: torch.Tensor, cond_emb: torch.Tensor) -> torch.Tensor:
        """Encode buffer + known tokens (mask 1 = unknown, dropped). Every row must have the same count of
        known tokens (true for one batch's shared schedule)."""
        x = self.z_proj(tokens)
        bsz, _, e = x.shape
        x = torch.cat([cond_emb.to(x.dtype), x], dim=1)
        mask_with_buffer = torch.cat([torch.zeros(bsz, self.buffer_size, device=x.device), mask], dim=1)
        x = self.z_proj_ln(x + self.encoder_pos_embed_learned)
        x = x[(1 - mask_with_buffer).nonzero(as_tuple=True)].reshape(bsz, -1, e)
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def forward_mae_decoder(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decode to every position (mask tokens where unknown); returns (B, N, dec_dim) for the head."""
        x = self.decoder_embed(x)
        bsz = x.shape[0]
        mask_with_buffer = torch.cat([torch.zeros(bsz, self.buffer_size, device=x.device), mask], dim=1)
        padded = self.mask_token.to(x.dtype).repeat(bsz, mask_with_buffer.shape[1], 1)
        padded[(1 - mask_with_buffer).nonzero(as_tuple=True)] = x.reshape(-1, x.shape[2])
        x = padded + self.decoder_pos_embed_learned
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)[:, self.buffer_size:]
        return x + self.diffusion_pos_embed_learned

    # -------------------------------------------------------------------------------------- training

    def sample_orders(self, bsz: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh random generation order per image: (B, N) permutations of the token indices."""
        return torch.stack([torch.randperm(self.seq_len, generator=generator) for _ in range(bsz)])

    def random_masking(self, bsz: int, orders: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mask ratio ~ truncated normal (mean 1, sd 0.25, within [mask_ratio_min, 1]) as in the paper."""
        lo = (self.config.mask_ratio_min - 1.0) / 0.25
        # inverse-CDF sample of N(0,1) truncated to [lo, 0], mapped to 1 + 0.25 z
        u = torch.rand((), generator=generator, dtype=torch.float64)
        normal = torch.distributions.Normal(0.0, 1.0)
        a, b = normal.cdf(torch.tensor(lo, dtype=torch.float64)), torch.tensor(0.5, dtype=torch.float64)
        z = normal.icdf(a + u * (b - a))
        n_masked = int(math.ceil(self.seq_len * float(1.0 + 0.25 * z)))
        mask = torch.zeros(bsz, self.seq_len)
        mask.scatter_(1, orders[:, :n_masked], 1.0)
        return mask

    def forward(self, imgs: torch.Tensor, cond: torch.Tensor | None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss for a batch of images (B, C, H, W) in the token space and their condition."""
        tokens = self.patchify(imgs)
        bsz = tokens.shape[0]
        orders = self.sample_orders(bsz, generator)
        mask = self.random_masking(bsz, orders, generator).to(tokens.device)
        c = self.condition(cond, bsz)
        if self.training:
            c = self.drop_condition(c, generator)
        z = self.forward_mae_decoder(self.forward_mae_encoder(tokens, mask, c), mask)
        # Only the masked tokens carry loss: the head sees just those rows (the official code runs every row
        # and weights by the mask; same loss, ~1/3 less head compute at the 0.7 minimum mask ratio).
        keep = mask.reshape(-1).bool()
        m = self.config.diffusion_batch_mul
        target = tokens.reshape(bsz * self.seq_len, -1)[keep].repeat(m, 1)
        z = z.reshape(bsz * self.seq_len, -1)[keep].repeat(m, 1)
        return self.diffloss(target, z, None, generator)
