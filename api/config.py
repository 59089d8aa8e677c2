"""The service's own limits and options (prefix LORACLE_API_), apart from the agent's Settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiConfig(BaseSettings):
    """Bounds that keep one client from starving the others, and the knobs of the run queue."""

    model_config = SettingsConfigDict(env_prefix="LORACLE_API_", extra="ignore")

    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body (admin imports included).")
    max_prompt_chars: int = Field(default=4000, ge=1)
    max_messages: int = Field(default=200, ge=1, description="Messages in one chat request.")
    max_n: int = Field(default=4, ge=1, le=16, description="Images per request.")
    max_steps: int = Field(default=50, ge=1, le=200, description="Sampling steps a request may ask for.")
    max_upload_bytes: int = Field(default=4 << 20, ge=1024,
                                  description="Largest input image or mask file (OpenAI's limit is 4 MB).")
    max_image_pixels: int = Field(default=2048 * 2048, ge=64,
                                  description="Most pixels (width x height) of an input image.")
    workers: int = Field(default=2, ge=1, le=64, description="Runs executing at once (the engine serialises sampling).")
    queue_size: int = Field(default=32, ge=0, description="Runs waiting for a worker before new ones get 429.")
    per_tenant: int = Field(default=4, ge=1, description="Runs one tenant may have queued or running at once.")
    public_url: str | None = Field(default=None, description="Base URL for image links; unset = the request's own.")
    secret: str | None = Field(default=None, description="Signs image links; unset = a random one kept in LORACLE_HOME (in the database with LORACLE_IMAGE_STORE=postgres).")
    link_ttl_s: int = Field(default=7 * 86400, ge=60, description="Seconds a signed image link stays valid.")
    db_wait_s: float = Field(default=5.0, gt=0, description="How long a request waits for a database connection before 503.")
    heartbeat_s: float = Field(default=5.0, gt=0, description="SSE keep-alive comment interval.")
