"""Inspection as the agent uses it: findings on the mixes before sampling and on the images after, and what a
retry changes because of them.

A retry repairs before it removes, and redraws only the images that failed: a style the judge did not see gets
its adapter strengthened (a higher weight and adapter guidance); a wrong subject (the digits world's wrong or
unclear digit) is drawn again with a fresh seed, the adapters' weights kept, and an adapter weighs less only when
the subject was wrong with it again after that; an image with nothing to blame (a style nobody asked for, one
unlucky seed) is drawn again; an adapter is dropped only for a failure the user did not ask for (a broken image,
a clash with another requested style), and the answer says so. Conflict memory is scoped per tenant, base model
and composition method, records only the pair a conflict is about, decays, and never drops what the user
explicitly asked for (a pinned adapter; `<lora:...>` tags are applied by the engine as written).
"""

from __future__ import annotations

from loracle.agent.image_input import edit_images
from loracle.agent.plan import ImageEdit, Pick
from loracle.agent.state import AgentContext, GeneratedImage, Repair
from loracle.db.runs import ConflictScope, known_conflicts, record_conflict
from loracle.tools.inspection import Finding, MixAdapter, check_kept_region, check_mix, inspect_images

DOWNWEIGHT = 0.6  # weight multiplier per "downweight" finding that blames an adapter
BOOST = 1.25  # weight multiplier of a missing style's adapter on each repair
MAX_BOOST = 1.6
ADAPTER_GUIDANCE = 1.2  # the no-adapters guide's weight once a style needed a repair
CONFLICT_CHECKS = ("exclusive", "known_conflict")  # findings about a pair that clashes


def conflict_scope(ctx: AgentContext) -> ConflictScope:
    return ConflictScope(ctx.tenant, ctx.settings.base_model, ctx.settings.composition_method)


def mix_findings(ctx: AgentContext, picks: dict[str, list[Pick]], mixes: list[dict[str, float]],
                 mix_adapters: list[list[int]], pinned: list[str] = (), boosted: set[int] = frozenset()) -> list[Finding]:
    """Each distinct mix checked once (base model, exclusive groups, total weight, known conflicts); a finding
    that would drop an adapter the user pinned (`pinned`: refs) is kept as a note instead, and so is a total
    weight that is over the bound because a repair strengthens a style the judge did not see (`boosted`: adapter
    ids): weakening the whole mix undid the repair and spent the retry without sampling."""
    details = {p.adapter_id: p for ps in picks.values() for p in ps}
    explicit = {i for i, p in details.items() if p.ref in pinned}
    with ctx.db.connection() as conn:
        remembered = known_conflicts(conn, conflict_scope(ctx), sorted({i for mix in mix_adapters for i in mix}))
    ref_to_id = {p.ref: i for i, p in details.items()}
    static = [(ref_to_id[a], ref_to_id[b], reason) for a, b, reason in ctx.static_conflicts if a in ref_to_id and b in ref_to_id]
    from_memory = {tuple(sorted((a, b))) for a, b, _ in remembered} - {tuple(sorted((a, b))) for a, b, _ in static}
    conflicts = remembered + static
    findings: list[Finding] = []
    for mix, adapter_ids in {tuple(sorted(m.items())): a for m, a in zip(mixes, mix_adapters)}.items():
        weights = dict(mix)
        adapters = [MixAdapter(i, details[i].name, weights.get(details[i].file, 0.0), details[i].base_model,
                               tuple(details[i].tags), details[i].category) for i in adapter_ids if i in details]
        for finding in check_mix(adapters, ctx.family, conflicts=conflicts):
            if finding.check == "known_conflict" and tuple(finding.pair) in from_memory:
                finding = finding.model_copy(update={"check": "remembered_conflict"})  # not new evidence of itself
            if finding.action == "drop" and set(finding.blamed) & explicit:
                finding = finding.model_copy(update={"action": "none", "message": finding.message + "; kept, as you asked for it"})
            elif finding.check == "total_weight" and set(finding.blamed) & boosted:
                finding = finding.model_copy(update={"action": "none", "message": finding.message + "; kept, to bring out a missing style"})
            if finding not in findings:
                findings.append(finding)
    return findings


def image_findings(ctx: AgentContext, images: list[GeneratedImage], edit: ImageEdit | None,
                   picks: dict[str, list[Pick]]) -> list[Finding]:
    """The images checked (and their prompt fit, with a judge); after inpainting, that the kept region stayed."""
    pixels = [ctx.images.open(record.path, "generated image").convert("RGB") for record in images]
    triggers = {p.adapter_id: p.trigger_words for ps in picks.values() for p in ps}
    findings = inspect_images(pixels, [r.adapters for r in images], [r.prompt for r in images], ctx.judge,
                              check_duplicates=edit is None, triggers=triggers)
    if edit is not None and edit.mask:
        source, mask = edit_images(edit, ctx.images)
        findings += check_kept_region(pixels, source, mask, ctx.settings.inpaint_keep_error, ctx.settings.mask_feather)
    return findings


def kept_slots(images: list[GeneratedImage], findings: list[Finding]) -> list[GeneratedImage | None]:
    """The batch's slots for the retry: an image no finding asks to change stays in its place, None marks one to
    draw again (so "image 2" means the same slot in every attempt and in the answer); no slots when a finding is
    about the whole batch (it names no image)."""
    acting = [f for f in findings if f.action != "none"]
    if any(not f.images for f in acting):
        return []
    failed = {i for f in acting for i in f.images}
    return [None if i in failed else image for i, image in enumerate(images)]


def kept_count(slots: list[GeneratedImage | None]) -> int:
    return sum(slot is not None for slot in slots)


def fill_slots(slots: list[GeneratedImage | None], drawn: list[GeneratedImage]) -> list[GeneratedImage]:
    """The kept images in their places, the newly drawn ones in the empty slots (all of them when no slot)."""
    fresh = iter(drawn)
    return [slot if slot is not None else next(fresh) for slot in slots] + list(fresh)


def apply_findings(findings: list[Finding], dropped: list[int], downweighted: dict[str, float],
                   repair: Repair, names: dict[int, str] | None = None) -> tuple[list[int], dict[str, float], Repair]:
    """The adapters to leave out, the weight multipliers (by str(adapter id)) and the repair after these
    findings; `names` (adapter id -> catalog name) words the repair as the answer shows it."""
    dropped, downweighted = list(dropped), dict(downweighted)
    repair = repair.model_copy(deep=True)
    # a style the judge did not see yet is not too strong: its adapter is strengthened, never also weakened
    strengthen = sorted({a for f in findings if f.action == "strengthen" for a in f.blamed})
    for finding in findings:
        for adapter_id in finding.blamed:
            if finding.action == "drop" and adapter_id not in dropped:
                dropped.append(adapter_id)
            elif finding.action == "downweight" and adapter_id not in strengthen:
                _weaken(downweighted, adapter_id)
    if strengthen:
        for adapter_id in strengthen:
            key = str(adapter_id)
            repair.boost[key] = min(repair.boost.get(key, 1.0) * BOOST, MAX_BOOST)
        # adapter guidance from the first repair on, at 1.2: with the jointly trained world LoRAs, 1.5 misdrew
        # the digit (dev prompts, images right after retries for 1/2/3 styles: .78/.58/.11 at 1.5, .92/.61/.14 at
        # 1.2, .94/.61/.06 without); no switch to composite: averaging one prediction per task halves each
        # style's push (both styles in 2% of images against merge's 31%)
        repair.adapter_guidance = ADAPTER_GUIDANCE
        who = " and ".join((names or {}).get(i, f"adapter {i}") for i in strengthen)
        repair.steps.append(f"strengthened {who}, which the judge did not see in every image: "
                            f"weight x{BOOST:g} and adapter guidance {ADAPTER_GUIDANCE:g}")
    suspected = [f for f in findings if f.action == "suspect"]
    if suspected:
        downweighted = repair_subject(suspected, strengthen, downweighted, repair, names or {})
    return dropped, downweighted, repair


def repair_subject(findings: list[Finding], strengthened: list[int], downweighted: dict[str, float], repair: Repair,
                   names: dict[int, str]) -> dict[str, float]:
    """A wrong subject: the images are drawn again with a fresh seed, the adapters' weights kept (a user's style
    is not the price of the digit); an adapter weighs less only when the subject was wrong with it again after
    that (evidence that the adapter itself breaks the subject), never while its own style is being strengthened.
    Changes `repair` in place."""
    suspects = sorted({a for f in findings for a in f.blamed})
    again = [a for a in suspects if a in repair.subject_suspects and a not in strengthened]
    for adapter_id in again:
        _weaken(downweighted, adapter_id)
    if again:
        who = " and ".join(names.get(i, f"adapter {i}") for i in again)
        repair.steps.append(f"weakened {who} (weight x{DOWNWEIGHT:g}): the digit was wrong or unclear with it again on a fresh seed")
    else:
        repair.steps.append("drew the images with a wrong or unclear digit again with a fresh seed, the adapters' weights kept")
    repair.subject_suspects = sorted({*repair.subject_suspects, *suspects})
    return downweighted


def _weaken(downweighted: dict[str, float], adapter_id: int) -> None:
    downweighted[str(adapter_id)] = downweighted.get(str(adapter_id), 1.0) * DOWNWEIGHT


def remember_conflicts(ctx: AgentContext, findings: list[Finding]) -> None:
    """Count one failure for the pair a conflict finding is about, in this tenant's, base model's and
    method's memory; nothing for adapters that merely shared a mix with it."""
    with ctx.db.connection() as conn:
        for finding in findings:
            if finding.check in CONFLICT_CHECKS and len(finding.pair) == 2 and finding.action == "drop":
                record_conflict(conn, conflict_scope(ctx), finding.pair[0], finding.pair[1], finding.check)
