"""What the agent's `Settings` mean for the composer and the sampler, and the seeds of a turn's images."""

from __future__ import annotations

from loracle.agent.options import MAX_SEED
from loracle.agent.settings import Settings
from loracle.agent.state import AgentContext, Repair
from loracle.generation.composition import CompositionMethod
from loracle.generation.engine import ImageEngine
from loracle.generation.guidance import GuidanceSettings, GuideSpec
from loracle.generation.masks import ComposerSettings
from loracle.generation.skipping import SkipSettings
from loracle.tools.sample import SampleSettings

GUIDE = "guide"  # the name engines register a base model's weaker guide under (agent/runtime.engine_for)


def composer_settings(settings: Settings) -> ComposerSettings:
    """Every image gets at least one adapter: the user asked for the tasks they serve."""
    return ComposerSettings(scale=settings.composer_scale, max_active=settings.composer_max_active,
                            allow_all_off=False, append_triggers=settings.append_trigger_words)


def sample_settings(ctx: AgentContext, engine: ImageEngine, repair: Repair | None = None) -> SampleSettings:
    """The sampler the settings ask for; guidance uses the weaker guide model when the engine has one. A
    repair may add adapter guidance (with CFG: the base without adapters as a second guide) and change the
    composition method."""
    settings = ctx.settings
    repair = repair or Repair()
    scale = settings.guidance_scale if settings.guidance_scale is not None else ctx.guidance_scale
    guide = GuideSpec(kind="model", model=GUIDE) if GUIDE in engine.guide_names else GuideSpec()
    guidance = GuidanceSettings(kind=settings.guidance, scale=scale, guide=guide)
    if repair.adapter_guidance > 1 and settings.guidance == "cfg" and scale >= 1:
        guidance = GuidanceSettings.cfg_and_guide(scale, repair.adapter_guidance, GuideSpec(kind="no_adapters"))
    return SampleSettings(
        steps=settings.steps, scheduler=settings.scheduler, guidance=guidance,
        skipping=SkipSettings(threshold=settings.skip_threshold, max_skip=settings.max_skip),
        composition_method=CompositionMethod(repair.method or settings.composition_method, settings.switch_every),
    )


def image_seeds(seed: int, n_images: int, attempt: int = 0, offset: int = 0) -> list[int]:
    """One seed per image. The first attempt's first image has the turn's seed, so a one-image turn sent back with
    the seed its PNG records makes the same image; a retry draws the images that failed with seeds of their own
    (the same seed would mostly redraw the same wrong digit), after the `offset` images it kept."""
    start = seed + attempt * 1009 + offset  # 1009: a prime, far from the next turn's own seeds
    return [(start + i) % (MAX_SEED + 1) for i in range(n_images)]
