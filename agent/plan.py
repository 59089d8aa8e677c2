"""The plan the agent works from: tasks (parts of the prompt), user edits, and the adapters found and picked per task.

Plain pydantic models so they serialise into the LangGraph checkpoint, the database and API responses,
and so the LLM's structured output is validated against exactly these fields.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PlanTask(BaseModel):
    """One fine-grained part of the prompt that an adapter could serve (a subject, a style, a setting)."""

    phrase: str = Field(min_length=1, max_length=200, description="Short phrase in the prompt's own words.")
    kind: str = Field(default="concept", description="style | subject | setting | clothing | pose | lighting | concept")


class Edits(BaseModel):
    """What the user asked to keep or change across turns; applied on top of every new selection."""

    pinned: list[str] = Field(default_factory=list, description="Adapter refs that must be used.")
    excluded: list[str] = Field(default_factory=list, description="Adapter refs that must not be used.")
    excluded_terms: list[str] = Field(default_factory=list, description="Words; adapters whose name/tags match are dropped.")
    weight_scale: dict[str, float] = Field(default_factory=dict, description="Adapter ref -> multiplier of its weight.")
    keep_seed: bool = False


class ImageEdit(BaseModel):
    """The image a turn starts from: an upload (image-to-image, or inpainting with a mask) or a previous
    result being refined. Recorded in the plan so later turns, the run record and the API can see it."""

    image: str = Field(description="Path of the input image (relative: in the images folder).")
    mask: str | None = Field(default=None, description="Path of the mask (white = repaint); None: the whole image.")
    strength: float = Field(ge=0, le=1, description="0 = the input unchanged, 1 = drawn afresh.")
    source: str = Field(default="upload", description="'upload' or 'previous' (a refinement of an earlier result).")
    image_id: str | None = Field(default=None, description="The earlier result's image id, for source 'previous'.")

    @property
    def mode(self) -> str:
        return "inpaint" if self.mask else "img2img"


class Plan(BaseModel):
    prompt: str
    subject: str = ""
    tasks: list[PlanTask] = Field(default_factory=list)
    negative: str = ""
    base_model: str | None = None
    edits: Edits = Field(default_factory=Edits)
    edit: ImageEdit | None = None  # this turn's input image, if any (not carried to the next turn)
    notes: list[str] = Field(default_factory=list)  # what this turn could not honour as asked, in plain words


class Candidate(BaseModel):
    """A catalog adapter retrieved for a task, with what selection, composing and the reply need of it."""

    adapter_id: int
    ref: str  # catalog reference shown to users: source:external_id
    name: str
    tags: list[str] = Field(default_factory=list)
    trigger_words: list[str] = Field(default_factory=list)
    base_model: str | None = None
    weight: float | None = None  # the card's recommended weight; None: the composer's default
    score: float = 0.0
    category: str | None = None
    description: str = ""
    file: str | None = None  # the adapter's file in an adapter folder, when it is available locally

    def card_text(self) -> str:
        """Name, tags, trigger words and description: the words the card says it serves."""
        return " ".join([self.name, *self.tags, *self.trigger_words, self.description])

    def matches_any(self, terms: list[str]) -> bool:
        """Whether a (lower-case) term occurs in the name, a tag or a trigger word: how users exclude adapters."""
        text = " ".join([self.name, *self.tags, *self.trigger_words]).lower()
        return any(term in text for term in terms)


class Pick(Candidate):
    """A candidate chosen for a task, with the reason (the LLM's, the offline score, or the user's pin)."""

    reason: str = ""
