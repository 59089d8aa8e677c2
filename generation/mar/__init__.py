"""MAR (Li et al., 2024): masked autoregression over continuous tokens with a per-token diffusion head.

`config` (sizes, validated), `diffloss` (the MLP-AdaLN noise predictor and its cosine diffusion), `model` (the
encoder-decoder transformer with buffer tokens), `sampling` (mask and CFG schedules, the AR loop), `io` (a MAR
folder: safetensors + JSON), `adapters` (peft LoRAs, weighted mixes), `engine` (MAREngine: the Engine's
generate contract), `official` (LTH14/mar checkpoints and the KL-16 VAE read safely), `tokenizer` (a KL-VAE as
the token grid of a latent MAR).
"""

from loracle.generation.mar.config import SIZES, MARConfig
from loracle.generation.mar.model import MAR

__all__ = ["MAR", "MARConfig", "SIZES"]
