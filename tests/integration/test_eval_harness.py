"""CI smoke test of the eval harness: a tiny `eval all` into a folder, a failing suite reported while the
others run, the run recorded in the database, and `eval compare` catching an injected regression."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from loracle.cli.main import app
from loracle.db.evals import get_eval_run
from loracle.evals.harness.registry import SUITES
from loracle.evals.harness.run import run_harness


# ~20 s (loads the digits world, samples 40 images): kept in the default suite as the CI smoke run of `eval all`
def test_eval_all_smoke_and_compare(db, tmp_path: Path) -> None:
    def boom(ctx):
        raise RuntimeError("injected failure")

    SUITES["boom"] = boom
    try:
        results, folder = run_harness(db, tmp_path / "runs", suites=["boom", "sampling"], quick=True,
                                      options={"samples": 10})
    finally:
        del SUITES["boom"]
    written = json.loads((folder / "results.json").read_text())
    assert {"run_id", "git_commit", "quick", "seeds", "settings", "suites", "plots"} <= set(written)
    assert written["suites"]["boom"]["status"] == "failed" and "injected failure" in written["suites"]["boom"]["error"]
    sampling = written["suites"]["sampling"]
    assert sampling["status"] == "ok"
    assert sampling["metrics"]["ddim 20 steps"]["nfe"] == 20
    assert sampling["metrics"]["ddim 50 steps skip 0.05"]["nfe"] < 50
    assert {r["scheduler"] for r in sampling["rows"]} == {"ddim", "dpmpp_2m", "euler"}
    assert sampling["metrics"]["dpmpp_2m 50 steps"]["psnr_vs_full"] == 60.0  # its own full run is its reference
    assert sampling["metrics"]["euler 20 steps"]["nfe"] == 20
    assert "nfe_vs_psnr.png" in written["plots"] and (folder / "nfe_vs_psnr.png").stat().st_size > 1000
    assert "injected failure" in (folder / "report.md").read_text()
    with db.connection() as conn:
        assert get_eval_run(conn, results["run_id"])["suites"]["sampling"]["status"] == "ok"

    worse = json.loads(json.dumps(written))
    worse["suites"]["sampling"]["metrics"]["ddim 20 steps"]["adherence"] -= 0.2
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    runner = CliRunner()
    same = runner.invoke(app, ["eval", "compare", str(folder), str(folder)])
    assert same.exit_code == 0, same.output
    gated = ["--metric", "sampling", "--tolerance", "0.05"]
    bad = runner.invoke(app, ["eval", "compare", str(folder), str(tmp_path / "worse.json"), *gated])
    assert bad.exit_code == 1 and "sampling.ddim 20 steps.adherence" in bad.output
    lenient = runner.invoke(app, ["eval", "compare", str(folder), str(tmp_path / "worse.json"), "--metric", "sampling",
                                  "--tolerance", "0.5"])
    assert lenient.exit_code == 0, lenient.output


def test_service_suite_drives_a_live_server_with_the_openai_client(db, tmp_path: Path) -> None:
    """A real `loracle serve` subprocess answers every chat turn with no 5xx (~16 s)."""
    results, _ = run_harness(db, tmp_path / "runs", suites=["service"], quick=True, options={"prompts": 2})
    service = results["suites"]["service"]
    assert service["status"] == "ok", service.get("error")
    assert service["metrics"]["chat turn"]["answered_rate"] == 1.0
    assert service["metrics"]["chat turn"]["http_5xx"] == 0
