"""Mutation testing of the core modules, run by hand (never in CI): `python -m loracle.evals.mutation`.

Each mutant changes one thing in one module (a comparison, an operator, a constant, a negated condition, a
dropped call, swapped unpacking, an f-string that loses a part) and runs that module's targeted tests; a
mutant the tests still pass "survives". mutmut and cosmic-ray both rewrite files under a source layout and
expect one package folder; loracle maps every top-level folder into `loracle.*` (pyproject), so this small
AST mutator is used instead. The mutated module never touches the disk: a forked child installs it as an
import hook and runs pytest in-process, so the parent's heavy imports (torch, diffusers, langgraph) are
paid once and no stale bytecode can hide a mutant. One embedded PostgreSQL serves every run.

Mutants listed in EQUIVALENT behave like the original (the reason is given) and are left out of the score.
Run it niced on a shared machine: `nice -n 19 python -m loracle.evals.mutation [--module generation/skipping.py]`.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import copy
import importlib.abc
import importlib.util
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module file -> (functions to mutate, or () for all; the tests that pin it, fastest first: pytest stops at the
# first failure). Fast tests only: every mutant runs them.
TARGETS: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "generation/skipping.py": ((), ["tests/unit/generation/test_generation_units.py", "-k", "skip",
                                    "tests/unit/generation/test_skip_rule.py"]),
    "generation/guidance.py": ((), ["tests/unit/generation/test_generation_units.py", "-k", "guid",
                                    "tests/unit/generation/test_guidance_math.py"]),
    "generation/output.py": ((), ["tests/unit/generation/test_png_output.py",
                                  "tests/unit/generation/test_generation_engine.py::test_png_parameters"]),
    "generation/prompt_tags.py": ((), ["tests/unit/generation/test_generation_units.py", "-k", "tags",
                                       "tests/unit/generation/test_lora_tags.py"]),
    "generation/adapters.py": (("_read_raw",), ["tests/unit/generation/test_generation_units.py",
                                                "-k", "pickle or metadata", "tests/unit/generation/test_pickle_safety.py",
                                                "tests/unit/generation/test_adapter_metadata.py"]),
    "generation/base_models.py": (("refuse_pickle", "_load_single_file"),
                                  ["tests/unit/generation/test_generation_units.py", "-k", "pickle or single_file",
                                   "tests/unit/generation/test_pickle_safety.py",
                                   "tests/unit/generation/test_single_file_config.py"]),
    "agent/threads.py": (("config", "read", "state", "delete"), ["tests/integration/test_thread_tenants.py"]),
    "api/signing.py": ((), ["tests/unit/test_signing.py"]),
    "db/keys.py": ((), ["tests/integration/test_keys_db.py"]),
    "db/tenancy.py": ((), ["tests/integration/test_tenancy_db.py"]),
    "generation/masks.py": ((), ["tests/unit/generation/test_generation_units.py", "tests/unit/generation/test_composer.py",
                                 "-k", "composer or explicit"]),
    "tools/compose.py": (("compose_mixes",), ["tests/unit/generation/test_composer.py", "tests/unit/test_repair_ladder.py"]),
    "generation/composition.py": ((), ["tests/unit/generation/test_composer.py",
                                       "tests/unit/generation/test_composition_methods.py"]),
    "agent/planner.py": ((), ["tests/unit/test_offline_selection.py", "tests/unit/test_planner.py",  # offline_ranking:
                              "tests/integration/test_learned_lists_db.py::test_training_writes_both_stages_and_cross_fits_the_first"]),
    # choose_adapters and _choose_with_llm need a database and an LLM: the agent's integration tests hold them
    "agent/picks.py": (("_choose_offline", "without_rival_candidates", "without_excluded_triggers", "with_llm_edits",
                        "apply_edits"), ["tests/unit/test_offline_selection.py", "tests/unit/test_rival_candidates.py"]),
    # load_cards reads the database (tests/integration/test_learned_rank_db.py)
    "tools/rank_features.py": (("content_words", "card_info", "build_features", "card_keys"),
                               ["tests/unit/test_rank_features_golden.py", "tests/unit/test_learned_rank.py", "-k", "features"]),
    "agent/checks.py": (("apply_findings",), ["tests/unit/test_repair_ladder.py"]),
}

# (module, mutant key) -> why it cannot change behaviour.
_TENANT_OF_RUN = ("redundant: an image row carries its run's tenant (db.runs.add_image), so the run's tenant "
                  "already selects the same rows")
EQUIVALENT: dict[tuple[str, str], str] = {
    ("db/tenancy.py", "L38:12 sql filter#0"): _TENANT_OF_RUN,
    ("db/tenancy.py", "L38:12 sql filter#1"): "the images are then matched to their runs in Python by run id",
    ("db/tenancy.py", "L49:12 sql filter#0"): _TENANT_OF_RUN,
    ("db/tenancy.py", "L49:12 sql filter#1"): _TENANT_OF_RUN,
    ("db/tenancy.py", "L53:49 sql filter#0"): "only the deleted paths are subtracted from, so extra rows change nothing",
    ("db/keys.py", "L37:44 constant"): "a 33-byte secret instead of 32: as unguessable, nothing reads its length",
    ("generation/skipping.py", "L112:72 constant"): "the count of known predictions is only compared with >= 2",
    ("generation/output.py", "L19:39 and/or"): "os.sep is '/' on the POSIX systems this runs on",
    ("generation/output.py", "L63:36 constant"): "the temp file exists whenever the handler runs (the rename failed)",
    ("generation/masks.py", "L181:4 swap targets"): "both names start as empty lists",
    ("generation/masks.py", "L149:103 constant"): "the default seed: any fixed one makes the same inputs give the same mixes",
    ("generation/masks.py", "L73:44 constant"): "rounding to 6 or 7 digits both merge the float noise of one computed weight",
    ("generation/masks.py", "L163:18 constant"): "a space of exactly 4097 masks sampled or enumerated: uniform, distinct "
                                                 "draws either way (only a batch larger than the space tells them apart; batches are at most 16)",
    ("generation/composition.py", "L60:37 compare#0"): "with one group the bound is 0 steps, and every run has at least one",
    ("tools/rank_features.py", "L214:30 constant"): "a query without content words has 0 in every numerator over n_words",
    ("tools/rank_features.py", "L223:102 constant"): "a card without trigger words has 0 in trigger_cover's numerator",
    ("tools/rank_features.py", "L208:75 constant"): "BM25 scores are 0 (ratio 0 either way) or far above 2e-6",
    ("agent/planner.py", "L19:0 negate condition"): "the Database import is for type hints only; importing it at run time changes nothing",
    ("agent/planner.py", "L164:7 compare#0"): "with exactly max_total chosen, keeping the best max_total keeps them all",
    ("agent/planner.py", "L101:53 and/or"): "a blank piece kept by `or` is cleaned to '' and never becomes a task",
}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # position of the node in ast.walk order
    kind: str
    payload: object  # which comparison, constant or part, for kinds with several
    line: int
    column: int
    before: str
    after: str

    @property
    def key(self) -> str:
        """Where and what, unique within the module (EQUIVALENT's keys)."""
        return f"L{self.line}:{self.column} {self.kind}" + (f"#{self.payload}" if isinstance(self.payload, int)
                                                            and not isinstance(self.payload, bool) and self.kind != "constant" else "")

    @property
    def description(self) -> str:
        return f"{self.key}: {self.before}  ->  {self.after}"


_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_SWAP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
             ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}

_SQL_FILTER = re.compile(r"[\w.]+ (= %s|= ANY\(%s\)|IS NULL)")


def _skipped_nodes(tree: ast.Module, functions: tuple[str, ...]) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, imports, and code outside `functions`."""
    skip: set[int] = set()

    def drop(node: ast.AST) -> None:
        skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            drop(body[0])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            drop(node)
        for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if ann is not None:
                drop(ann)
        if isinstance(node, ast.Raise) and node.exc is not None:  # error texts: messages, not behaviour
            for n in ast.walk(node.exc):
                if isinstance(n, (ast.JoinedStr, ast.Constant)):
                    drop(n)
    if functions:
        keep = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                and f.name in functions for n in ast.walk(f)}
        skip.update(id(n) for n in ast.walk(tree) if id(n) not in keep)
    return skip


def _variants(node: ast.AST, parent: ast.AST | None) -> list[tuple[str, object]]:
    """The mutations of one node: (kind, payload)."""
    out: list[tuple[str, object]] = []
    if isinstance(node, ast.Compare):
        out += [("compare", i) for i, op in enumerate(node.ops) if type(op) in _SWAP_CMP]
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAP_BIN:
        out.append(("operator", None))
    elif isinstance(node, ast.BoolOp):
        out.append(("and/or", None))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        out.append(("drop unary", None))
    elif isinstance(node, ast.Constant) and not isinstance(parent, ast.JoinedStr) and not isinstance(node.value, str):
        if isinstance(node.value, bool):
            out.append(("constant", not node.value))
        elif isinstance(node.value, int):
            out.append(("constant", node.value + 1))
        elif isinstance(node.value, float):
            out.append(("constant", node.value * 2 if node.value else 1.0))
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "WHERE" in node.value:
        out += [("sql filter", i) for i, _ in enumerate(_SQL_FILTER.finditer(node.value))]
    elif isinstance(node, (ast.If, ast.IfExp, ast.While)):
        out.append(("negate condition", None))
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        out.append(("drop call", None))
    elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) and len(node.targets[0].elts) > 1:
        out.append(("swap targets", None))
    elif isinstance(node, ast.JoinedStr) and sum(isinstance(v, ast.FormattedValue) for v in node.values) > 1:
        out += [("f-string part", i) for i, v in enumerate(node.values) if isinstance(v, ast.FormattedValue)]
    return out


def _apply(node: ast.AST, kind: str, payload: object) -> ast.AST:
    """Mutate `node` in place (or return its replacement)."""
    if kind == "compare":
        node.ops[payload] = _SWAP_CMP[type(node.ops[payload])]()
    elif kind == "operator":
        node.op = _SWAP_BIN[type(node.op)]()
    elif kind == "and/or":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "drop unary":
        return node.operand
    elif kind == "constant":
        node.value = payload
    elif kind == "sql filter":  # the condition stays (same placeholders) but no longer filters
        match = list(_SQL_FILTER.finditer(node.value))[payload]
        node.value = node.value[:match.start()] + f"({match.group(0)} OR TRUE)" + node.value[match.end():]
    elif kind == "negate condition":
        node.test = ast.UnaryOp(ast.Not(), node.test)
    elif kind == "drop call":
        return ast.Pass()
    elif kind == "swap targets":
        elts = node.targets[0].elts
        elts[0], elts[1] = elts[1], elts[0]
    elif kind == "f-string part":
        node.values = [v for i, v in enumerate(node.values) if i != payload]
    return node


def _parents(tree: ast.AST) -> dict[int, tuple[ast.AST, str, int | None]]:
    out = {}
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for i, child in enumerate(value):
                    if isinstance(child, ast.AST):
                        out[id(child)] = (parent, field, i)
            elif isinstance(value, ast.AST):
                out[id(value)] = (parent, field, None)
    return out


def _segment(node: ast.AST) -> str:
    text = ast.unparse(node).splitlines()[0] if not isinstance(node, ast.Pass) else "pass"
    return text if len(text) <= 90 else text[:87] + "..."


def mutants(module: str, functions: tuple[str, ...]) -> list[Mutant]:
    source = (ROOT / module).read_text()
    tree = ast.parse(source)
    skip, parents = _skipped_nodes(tree, functions), _parents(tree)
    found = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        parent = parents.get(id(node), (None,))[0]
        for kind, payload in _variants(node, parent):
            after = _segment(_apply(copy.deepcopy(node), kind, payload))
            found.append(Mutant(module, index, kind, payload, getattr(node, "lineno", 0),
                                getattr(node, "col_offset", 0), _segment(node), after))
    return found


def mutated_source(m: Mutant) -> str:
    """The module's source with the mutant's one change."""
    tree = ast.parse((ROOT / m.module).read_text())
    parents = _parents(tree)
    node = list(ast.walk(tree))[m.index]
    new = _apply(node, m.kind, m.payload)
    if new is not node:
        parent, field, i = parents[id(node)]
        if i is None:
            setattr(parent, field, new)
        else:
            getattr(parent, field)[i] = new
    return ast.unparse(ast.fix_missing_locations(tree))


class _Replace(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves one module's (mutated) source instead of its file."""

    def __init__(self, name: str, path: Path, source: str) -> None:
        self.name, self.path, self.source = name, path, source

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(self.path))

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        module.__file__ = str(self.path)
        exec(compile(self.source, str(self.path), "exec"), module.__dict__)


def run_tests(module: str, source: str, tests: list[str], timeout: float) -> tuple[str, float]:
    """'killed', 'survived' or 'timeout' for the module replaced by `source`, and seconds taken."""
    start = time.monotonic()
    basetemp = tempfile.mkdtemp(prefix="loracle-mutant-")  # never shared with another pytest run
    pid = os.fork()
    if pid == 0:  # child: fresh loracle imports, the mutated module from memory, pytest in-process
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.setpgid(0, 0)
            for name in [m for m in sys.modules if m == "loracle" or m.startswith("loracle.") or m.startswith("tests")]:
                del sys.modules[name]
            name = "loracle." + module.removesuffix(".py").replace("/", ".")
            sys.meta_path.insert(0, _Replace(name, ROOT / module, source))
            import pytest

            # The targeted tests need no third-party plugin, and loading them (schemathesis, langsmith) took
            # most of each run; gc.collect after every test (unraisableexception) took the rest under torch's heap.
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception", "--no-header",
                                f"--basetemp={basetemp}", *tests])
        except BaseException:
            code = 99
        os._exit(int(code))
    try:
        return _wait(pid, start + timeout), time.monotonic() - start
    finally:
        shutil.rmtree(basetemp, ignore_errors=True)


def _wait(pid: int, deadline: float) -> str:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            # 1: a test failed; 2: collection failed (the unmutated module collects, so the mutant broke it);
            # 99 or a signal: the mutant crashed the run. Other codes are the harness's own problems.
            return "survived" if code == 0 else "killed" if code in (1, 2, 99) or code < 0 else f"error {code}"
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


def _preload() -> None:
    """Import the heavy third-party libraries once, before forking (never loracle itself): the pytest plugins
    (langsmith's, hypothesis's) alone take seconds to import."""
    import importlib

    for name in ("diffusers", "transformers", "peft", "langgraph.graph", "langgraph.checkpoint.postgres",
                 "langchain_core.messages", "psycopg", "psycopg_pool", "numpy", "PIL.Image", "safetensors.torch",
                 "pytest", "langsmith.testing._internal", "hypothesis"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _database() -> None:
    """One embedded PostgreSQL for every mutant's tests (their fixtures honour LORACLE_TEST_DATABASE_URL)."""
    if os.environ.get("LORACLE_TEST_DATABASE_URL"):
        return
    from loracle.db.server import start_embedded

    folder = Path(tempfile.mkdtemp(prefix="loracle-mutation-pg-"))
    folder.chmod(0o755)
    atexit.register(shutil.rmtree, folder, True)  # registered first, so it runs after the server's own cleanup
    os.environ["LORACLE_TEST_DATABASE_URL"] = start_embedded(folder / "pgdata", cleanup_mode="delete")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="only these (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--json", type=Path, help="also write every result here")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the embedded server's exit hook still runs
    modules = args.module or list(TARGETS)
    if args.list:
        for module in modules:
            for m in mutants(module, TARGETS[module][0]):
                print(module, m.description)
        return 0
    _preload()
    if any(t.startswith("tests/integration") for m in modules for t in TARGETS[m][1]):
        _database()
    results, summary = [], {}
    for module in modules:
        functions, tests = TARGETS[module]
        tests = [t for t in tests if not t.startswith("tests/") or (ROOT / t.split("::")[0]).exists()]
        if not any(t.startswith("tests/") for t in tests):
            print(f"{module}: none of its tests exist yet; skipped", flush=True)
            continue
        base, seconds = run_tests(module, (ROOT / module).read_text(), tests, timeout=900)
        if base != "survived":
            print(f"{module}: its tests fail on the unmutated module ({base}); skipped", flush=True)
            continue
        timeout = 3 * seconds + 20
        counts = {"killed": 0, "survived": 0, "timeout": 0, "equivalent": 0, "error": 0}
        survivors = []
        found = mutants(module, functions)
        print(f"{module}: {len(found)} mutants, tests take {seconds:.1f} s", flush=True)
        for done, m in enumerate(found):
            if done and done % 10 == 0:
                print(f"  {done}/{len(found)} run, {counts['survived']} survived", flush=True)
            outcome, _ = run_tests(module, mutated_source(m), tests, timeout)
            if outcome == "survived":  # a second run rules out a pass by chance on a busy machine
                outcome, _ = run_tests(module, mutated_source(m), tests, timeout)
            if outcome == "survived" and (module, m.key) in EQUIVALENT:
                outcome = "equivalent"
                print(f"  equivalent  {m.description}  ({EQUIVALENT[module, m.key]})", flush=True)
            counts[outcome if outcome in counts else "error"] += 1
            if outcome == "survived":
                survivors.append(m.description)
                print(f"  survived  {m.description}", flush=True)
            results.append({"module": module, "mutant": m.description, "outcome": outcome})
        scored = counts["killed"] + counts["timeout"] + counts["survived"]
        summary[module] = {**counts, "score": round(100 * (scored - counts["survived"]) / scored, 1) if scored else None}
        print(f"{module}: score {summary[module]['score']}% ({counts})", flush=True)
    print("\nmodule                         mutants  killed  survived  equivalent  score")
    for module, s in summary.items():
        total = s["killed"] + s["timeout"] + s["survived"] + s["equivalent"] + s["error"]
        print(f"{module:30} {total:7} {s['killed'] + s['timeout']:7} {s['survived']:9} {s['equivalent']:11}  "
              f"{s['score']}%")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
