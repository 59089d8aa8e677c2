"""All of loracle's settings in one typed object, read once from the environment (prefix LORACLE_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from loracle.db.search import DEFAULT_EF_SEARCH
from loracle.generation.composition import CompositionKind
from loracle.tools.image_store import ImageStoreKind


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "loracle"


class Settings(BaseSettings):
    """Settings shared by the CLI, the API and the agent; lower layers get plain values passed down."""

    model_config = SettingsConfigDict(env_prefix="LORACLE_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Data directory (database, adapters, images).")
    database_url: str | None = Field(
        default=None, description="An external PostgreSQL with pgvector; unset starts the embedded server."
    )
    embedding_model: str = Field(
        default="all-MiniLM-L6-v2", description="'all-MiniLM-L6-v2' (packaged, offline) or 'openai:MODEL'."
    )
    adapter_dirs: list[Path] = Field(
        default_factory=list, description="Extra folders adapter files may be read from (besides HOME/adapters)."
    )
    retrieval_top_k: int = Field(default=150, ge=1, le=1000)
    hnsw_ef_search: int = Field(default=DEFAULT_EF_SEARCH, ge=10, le=1000)
    search_connections: int = Field(
        default=2, ge=1, le=8, description="Database connections one prompt's ranked lists are spread over (in parallel)."
    )
    llm_model: str | None = Field(
        default=None, description="Chat model name for langchain-openai (OPENAI_API_KEY / OPENAI_BASE_URL); unset = offline."
    )
    llm_timeout_s: float = Field(default=60, gt=0, description="Seconds one chat-model call may take.")
    llm_concurrency: int = Field(default=4, ge=1, le=64, description="Chat-model calls in flight at once in batch jobs.")
    exclude_tags: list[str] = Field(
        default_factory=lambda: ["character", "celebrity"],
        description="Adapters with any of these tags are left out of retrieval by default (Stylus's filter).",
    )

    # Generation
    base_model: str = Field(default="world", description="'world' (the bundled digits world), 'world-mar' (its MAR), 'tiny', a diffusers folder or a .safetensors checkpoint.")
    guide_model: str | None = Field(default=None, description="A weaker model for autoguidance; 'world' brings its own.")
    checkpoint_dirs: list[Path] = Field(
        default_factory=list, description="Folders of .safetensors checkpoints that A1111 clients may switch to (/sdapi/v1/options)."
    )
    sampler_app: str | None = Field(
        default=None, description="Ray Serve application whose Sampler deployment samples (set by `loracle serve --ray`); unset = in process."
    )
    image_store: ImageStoreKind = Field(
        default="files", description="Where run images and uploads are kept: 'files' under HOME/images, or 'postgres' "
                                     "(in the database, so every API replica serves them; `loracle serve --ray` sets it).")
    n_images: int = Field(default=4, ge=1, le=16)
    steps: int = Field(default=30, ge=1, le=200)
    scheduler: str = Field(default="ddim")
    guidance: str = Field(default="cfg", description="none | cfg | auto | both")
    guidance_scale: float | None = Field(default=None, ge=0, le=30, description="Unset: the base model's own default.")
    skip_threshold: float = Field(default=0.01, ge=0, le=1, description="Adaptive step skipping; 0 turns it off.")
    max_skip: int = Field(default=4, ge=0, le=20)
    composition_method: CompositionKind = Field(
        default="merge",
        description="How the adapters of an image act together: merge (all, every step), switch (one task's "
                    "adapters per step, cycling), composite (one guided prediction per task, averaged; costs more).")
    switch_every: int = Field(default=5, ge=1, le=100, description="Steps one task's adapters stay active under switch.")
    # Image edits (image-to-image, inpainting)
    edit_strength: float = Field(default=0.6, ge=0, le=1, description="Image-to-image strength for an uploaded image or a 'make it more X' refinement of a previous result.")
    inpaint_strength: float = Field(default=1.0, ge=0, le=1, description="Strength when a mask is given (1: the masked region is drawn afresh).")
    mask_feather: int = Field(default=0, ge=0, le=64, description="Gaussian blur radius (pixels) of inpainting masks.")
    inpaint_keep_error: float = Field(default=0.05, ge=0, le=1, description="Inspection: most mean abs pixel change (0-1 units) allowed in the unmasked region.")
    # Agent
    # 3, not 2: a retry redraws only the failed images, so the third costs little (digits world, dev prompts: NFE
    # per image 56.5 -> 60.0) and brings three requested styles out in 0.92 of images, not 0.78
    max_retries: int = Field(default=3, ge=0, le=10, description="Re-compositions after a failed inspection.")
    # 0.5 and 0.95, not 0 (any read counts): the judge is trained on clean renders, and on generated images an unsure
    # read is often one a second judge reads otherwise. Digits world, dev prompts, a judge trained apart scoring the
    # delivered images, 1 / 2 / 3 styles: 0.86 / 0.76 / 0.69 -> 0.89 / 0.81 / 0.72, NFE per image 62 -> 71
    inspection_margin: float = Field(default=0.5, ge=0, le=10, description=(
        "How sure the judge must be (in logits from a style's threshold) before a requested style counts as seen "
        "and an unrequested one as absent; an unsure image is drawn again."))
    inspection_digit_confidence: float = Field(default=0.95, ge=0, lt=1, description=(
        "The probability the judge must give the digit asked for; below it the image is drawn again."))
    composer_scale: float = Field(default=0.8, gt=0, le=4)
    composer_max_active: int = Field(default=3, ge=1, le=6)
    append_trigger_words: bool = Field(default=True, description="Append picked adapters' trigger words (A1111 habit).")
    candidates_per_task: int = Field(default=8, ge=1, le=50)
    ranker: str = Field(default="learned", pattern="^(rerank|learned)$",
                        description="Offline selection's reranker: the learned one (when trained) or the hand-weighted one.")

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def pgdata_dir(self) -> Path:
        return self.home / "pgdata"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
