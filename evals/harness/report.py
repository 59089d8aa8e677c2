"""The run folder: results.json (git commit, settings, seeds, every suite), report.md and PNG plots."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def plot_all(results: dict[str, Any], out: Path, cache: dict[str, Any]) -> list[str]:
    """The figures the suites that ran can give; returns the PNG names written."""
    written = []
    suites = results["suites"]
    r = suites.get("retrieval", {})
    if r.get("status") == "ok":
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, m in r["metrics"].items():
            ks = sorted(int(k[2:]) for k in m if k.startswith("R@"))
            ax.plot(ks, [m[f"R@{k}"] for k in ks], marker="o", label=name)
        ax.set(xlabel="K", ylabel="Recall@K", title="retrieval: recall vs K")
        ax.legend(fontsize=6)
        written.append(_save(fig, out / "recall_vs_k.png"))
    s = suites.get("sampling", {})
    if s.get("status") == "ok":
        fig, ax = plt.subplots(figsize=(6, 4))
        for scheduler in dict.fromkeys(row["scheduler"] for row in s["rows"]):
            pts = [row for row in s["rows"] if row["scheduler"] == scheduler]
            ax.scatter([r["nfe"] for r in pts], [r["psnr_vs_full"] for r in pts], label=scheduler)
            for r in pts:
                ax.annotate(r["setting"].removeprefix(scheduler + " "), (r["nfe"], r["psnr_vs_full"]), fontsize=6)
        ax.legend(fontsize=7)
        ax.set(xlabel="model evaluations per image (NFE)", ylabel="PSNR vs full run (dB)", title="sampling: NFE vs PSNR")
        written.append(_save(fig, out / "nfe_vs_psnr.png"))
        for name, images in cache.get("sampling_grids", {}).items():
            written.append(_grid(images, out / f"grid_{_slug(name)}.png", name))
    g = suites.get("guidance", {})
    if g.get("status") == "ok":
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
        rows = list(g["metrics"].values())
        for kind in dict.fromkeys(r["kind"] for r in rows):
            pts = [r for r in rows if r["kind"] == kind]
            ax1.plot([r["w"] for r in pts], [r["fd"] for r in pts], marker="o", label=kind)
            ax2.plot([r["w"] for r in pts], [r["adherence"] for r in pts], marker="o", label=kind)
        ax1.set(xlabel="guidance weight w", ylabel="FD (lower is better)", title="guidance: FD vs weight")
        ax2.set(xlabel="guidance weight w", ylabel="adherence", title="guidance: adherence vs weight")
        ax1.legend()
        written.append(_save(fig, out / "fd_vs_weight.png"))
    lat_suite = suites.get("latency", {})
    if lat_suite.get("status") == "ok":
        lat = lat_suite["metrics"]
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = range(len(lat))
        ax.bar([x - 0.2 for x in xs], [v["p50_s"] for v in lat.values()], width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [v["p95_s"] for v in lat.values()], width=0.4, label="p95")
        ax.axhline(lat_suite["stylus_overhead_s"], color="red", linestyle="--", label="Stylus overhead 12.1 s")
        ax.set_xticks(list(xs), list(lat), rotation=30, fontsize=7)
        ax.set(ylabel="seconds", title="latency: time per graph node (whole graph)")
        ax.set_yscale("log")
        ax.legend()
        written.append(_save(fig, out / "latency_nodes.png"))
    sel = suites.get("selection", {})
    if sel.get("status") == "ok":
        lat = {k: v for k, v in sel["metrics"]["latency_ms"].items() if k != "total"}
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = range(len(lat))
        ax.bar([x - 0.2 for x in xs], [v["p50"] for v in lat.values()], width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [v["p95"] for v in lat.values()], width=0.4, label="p95")
        ax.set_xticks(list(xs), list(lat))
        ax.set(ylabel="ms", title="time per graph node (selection suite)")
        ax.legend()
        written.append(_save(fig, out / "latency_bars.png"))
    for arm, images in cache.get("real_grids", {}).items():
        written.append(_image_grid(images, out / f"grid_real_{arm}.png", f"real-model: {arm}"))
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _grid(images, path: Path, title: str) -> str:
    """A 4 x 5 grid of (N, 1, H, W) images in [-1, 1]."""
    fig, axes = plt.subplots(4, 5, figsize=(5, 4))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def _image_grid(images, path: Path, title: str) -> str:
    """Up to 4 x 5 RGB PIL images."""
    fig, axes = plt.subplots(4, 5, figsize=(8, 6.5))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    lines = [f"# Eval run {results['run_id']}", "", f"commit `{results['git_commit']}`, quick={results['quick']}, "
             f"seeds {results['seeds']}", ""]
    for name, s in results["suites"].items():
        lines.append(f"## {name} ({s['status']}, {s['seconds']} s)")
        if s["status"] != "ok":
            lines += ["", f"**failed:** `{s['error']}`", ""]
            continue
        if "catalog" in s:
            lines.append(f"{s['catalog']}; {s.get('queries')} queries")
        lines += ["", "| setting | " + " | ".join(_columns(s["metrics"])) + " |",
                  "|---" * (1 + len(_columns(s["metrics"]))) + "|"]
        for key, row in _rows(s["metrics"]):
            lines.append(f"| {key} | " + " | ".join(_fmt(row.get(c)) for c in _columns(s["metrics"])) + " |")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _rows(metrics: dict) -> list[tuple[str, dict]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            rows += [(f"{key} / {k}", v) for k, v in value.items()]
        elif isinstance(value, dict):
            rows.append((key, value))
    return rows


def _columns(metrics: dict) -> list[str]:
    cols: list[str] = []
    for _, row in _rows(metrics):
        cols += [c for c in row if c not in cols]
    return cols


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def write_run(results: dict[str, Any], out: Path, cache: dict[str, Any]) -> None:
    plots = plot_all(results, out, cache)
    results["plots"] = plots
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(results, plots))
