"""Which catalog base models an engine can use: one table, read by retrieval's filter and by inspection.

A catalog row names its base model as Civitai spells it ("SD 1.5", "SDXL 1.0", ...); an engine belongs
to a family. An empty or missing base model is "unknown", which the Stable Diffusion families accept
(many uploads leave it blank) and the digits world, whose catalog always names its own, does not.
"""

from __future__ import annotations

UNKNOWN = ""

CATALOG_BASES: dict[str, tuple[str, ...]] = {
    "sd15": ("SD 1.5", "SD 1.4", "SD 1.5 LCM", "Other", UNKNOWN),
    "sdxl": ("SDXL 1.0", "SDXL 0.9", "Pony", "Other", UNKNOWN),
    "digits": ("Digits 1.0",),
    "digits-mar": ("Digits MAR 1.0",),
}


def engine_family(base_model: str) -> str:
    """The family of the engine a `LORACLE_BASE_MODEL` value loads ('world', 'world-mar', a folder or checkpoint)."""
    if base_model == "world":
        return "digits"
    if base_model == "world-mar":
        return "digits-mar"
    return "sdxl" if "xl" in base_model.lower() else "sd15"


def catalog_bases(family: str) -> list[str] | None:
    """The catalog base models this family can use, as a retrieval filter; None (no filter) for an unknown family."""
    bases = CATALOG_BASES.get(family)
    return list(bases) if bases is not None else None


def fits(family: str, catalog_base: str | None) -> bool:
    """Whether an adapter made for `catalog_base` may run on this family's engine."""
    bases = CATALOG_BASES.get(family)
    return bases is None or (catalog_base or UNKNOWN) in bases
