"""MAR (Li et al., 2024): masked autoregression over continuous tokens with a per-token diffusion head.

`config` (sizes, validated), `diffloss` (the MLP-AdaLN noise predictor and its cosine diffusion), `model` (the
encoder-decoder transformer with buffer tokens), `sampling` (mask and CFG schedules, the AR loop),
`checkpoint` (safetensors / weights-only loading, official key names), `lora` (peft adapters and mixing),
`vae` (the KL-16 tokenizer interface for real checkpoints).
"""

from generation.mar.config import MARConfig, SIZES
from generation.mar.model import MAR

__all__ = ["MAR", "MARConfig", "SIZES"]
