"""Inspection as the agent uses it: findings on the mixes before sampling and on the images after, and what a
retry changes because of them (adapters dropped or down-weighted, pairs remembered as conflicting)."""

from __future__ import annotations

from PIL import Image

from loracle.agent.image_input import edit_images
from loracle.agent.plan import ImageEdit, Pick
from loracle.agent.state import AgentContext, GeneratedImage
from loracle.db.runs import known_conflicts, record_conflict
from loracle.tools.inspection import Finding, MixAdapter, check_kept_region, check_mix, inspect_images

DOWNWEIGHT = 0.6  # weight multiplier per "downweight" finding that blames an adapter
CONFLICT_CHECKS = ("exclusive", "images", "known_conflict")  # findings that say an adapter clashes with its mix


def mix_findings(ctx: AgentContext, picks: dict[str, list[Pick]], mixes: list[dict[str, float]],
                 mix_adapters: list[list[int]]) -> list[Finding]:
    """Each distinct mix checked once (base model, exclusive groups, total weight, known conflicts)."""
    details = {p.adapter_id: p for ps in picks.values() for p in ps}
    with ctx.db.connection() as conn:
        conflicts = known_conflicts(conn, sorted({i for mix in mix_adapters for i in mix}))
    ref_to_id = {p.ref: i for i, p in details.items()}
    conflicts += [(ref_to_id[a], ref_to_id[b], reason) for a, b, reason in ctx.static_conflicts if a in ref_to_id and b in ref_to_id]
    findings: list[Finding] = []
    for mix, adapter_ids in {tuple(sorted(m.items())): a for m, a in zip(mixes, mix_adapters)}.items():
        weights = dict(mix)
        adapters = [MixAdapter(i, details[i].name, weights.get(details[i].file, 0.0), details[i].base_model,
                               tuple(details[i].tags), details[i].category) for i in adapter_ids]
        for finding in check_mix(adapters, ctx.family, conflicts=conflicts):
            if finding not in findings:
                findings.append(finding)
    return findings


def image_findings(ctx: AgentContext, images: list[GeneratedImage], edit: ImageEdit | None) -> list[Finding]:
    """The images checked (and their prompt fit, with a judge); after inpainting, that the kept region stayed."""
    pixels = []
    for record in images:
        with Image.open(ctx.images_dir / record.path) as im:
            pixels.append(im.convert("RGB"))
    findings = inspect_images(pixels, [r.adapters for r in images], [r.prompt for r in images], ctx.judge,
                              check_duplicates=edit is None)
    if edit is not None and edit.mask:
        source, mask = edit_images(edit, ctx.images_dir)
        findings += check_kept_region(pixels, source, mask, ctx.settings.inpaint_keep_error, ctx.settings.mask_feather)
    return findings


def apply_findings(findings: list[Finding], dropped: list[int], downweighted: dict[str, float]) -> tuple[list[int], dict[str, float]]:
    """The adapters to leave out and the weight multipliers (by str(adapter id)) after these findings."""
    dropped, downweighted = list(dropped), dict(downweighted)
    for finding in findings:
        for adapter_id in finding.blamed:
            if finding.action == "drop" and adapter_id not in dropped:
                dropped.append(adapter_id)
            elif finding.action == "downweight":
                downweighted[str(adapter_id)] = downweighted.get(str(adapter_id), 1.0) * DOWNWEIGHT
    return dropped, downweighted


def remember_conflicts(ctx: AgentContext, findings: list[Finding], mix_adapters: list[list[int]]) -> None:
    """Count a failure for each blamed adapter with every other adapter of its mixes (conflict memory)."""
    with ctx.db.connection() as conn:
        for finding in findings:
            if finding.check not in CONFLICT_CHECKS:
                continue
            for adapter_id in finding.blamed:
                for mix in mix_adapters:
                    if adapter_id in mix:
                        for other in mix:
                            if other != adapter_id:
                                record_conflict(conn, adapter_id, other, finding.check)
