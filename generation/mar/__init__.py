"""MAR (Li et al., 2024): masked autoregression over continuous tokens with a per-token diffusion head.

`config` (sizes, validated), `diffloss` (the MLP-AdaLN noise predictor and its cosine diffusion), `model` (the
encoder-decoder transformer with buffer tokens), `sampling` (mask and CFG schedules, the AR loop). Not yet here:
a trained digits-world MAR, peft adapters on it, the KL-16 tokenizer and official checkpoint loading (issue 9).
"""

from generation.mar.config import MARConfig, SIZES
from generation.mar.model import MAR

__all__ = ["MAR", "MARConfig", "SIZES"]
