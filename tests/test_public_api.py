"""The public API and the layering: names users import, signatures they call, and a package
whose modules import only downward and never a private name of another."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import chronoflow as cf

PACKAGE = Path(cf.__file__).parent

#: The pipeline, lowest layer first, as subpackages: a module may import from its own layer or a
#: lower one. (The package's own modules and __init__ files sit at the top; the core helpers
#: ``_version``, ``errors`` and ``_cache`` at the bottom.)
LAYERS = [
    ("", {"_version", "errors", "_cache"}),
    ("data", {"catalogue", "extinction", "tables"}),
    ("flows", {"device", "flow", "card", "flow_ops", "training", "ensemble", "artifact"}),
    ("inference", {"likelihood", "posterior", "model_error", "star_error", "rotation_flags", "ages", "single_star",
                   "hierarchical"}),
    ("analysis", {"forward", "systematics", "validation", "calibration", "budgets", "star_validation", "reports"}),
    ("scale", {"streaming", "dask_backend"}),
    ("", {"plotting", "cli"}),
]
LAYER = {(f"{sub}." if sub else "") + name: i for i, (sub, names) in enumerate(LAYERS) for name in names}

#: Upward imports allowed, each only inside a function (when called, never when the module loads:
#: no import-time circle, and matplotlib stays in the top layer): a result's convenience method
#: that draws it with the plotting module.
CALL_TIME_UPWARD = {("inference.single_star", "plotting")}


def _modules() -> dict[str, Path]:
    """Dotted module names below the package (``inference.ages``), without the __init__ files."""
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))
            if p.name != "__init__.py"}  # fmt: skip


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """Per module: every relative ``from .x import a, b`` (also inside functions), resolved to
    the dotted target module, as (target, [a, b])."""
    found = {}
    for name, path in _modules().items():
        package = name.split(".")[:-1]
        rows = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module:
                base = package[: len(package) - (node.level - 1)]
                rows.append((".".join([*base, node.module]), [a.name for a in node.names]))
        found[name] = rows
    return found


def test_every_module_has_a_layer_and_sits_in_its_subpackage():
    assert set(_modules()) == set(LAYER), "a new module needs a place in LAYERS (and docs/architecture.md)"
    init = {p.parent.name for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    assert {sub for sub, _ in LAYERS if sub} <= init, "every layer's subpackage is a package"


def test_modules_import_only_downward_and_without_a_circle():
    graph = {m: {target for target, _ in rows if (m, target) not in CALL_TIME_UPWARD} for m, rows in _imports().items()}
    for m, target in CALL_TIME_UPWARD:  # never at module level
        tree = ast.parse(_modules()[m].read_text())
        top = [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.level >= 1 and n.module]
        assert not any(t.split(".")[-1] == target.split(".")[-1] for t in top), f"{m} imports {target} at module level"
    upward = [(m, t) for m, targets in graph.items() for t in targets if LAYER[t] > LAYER[m]]
    assert not upward, f"imports from a higher layer: {upward}"

    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in graph[m]:
            assert state.get(t) != 1, f"import circle: {' -> '.join([*path, m, t])}"
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_no_module_imports_a_private_name_of_another():
    private = [(m, t, n) for m, rows in _imports().items() for t, names in rows for n in names
               if n.startswith("_") and n != "__version__"]  # fmt: skip
    assert not private, f"private names imported across modules: {private}"
    for path in PACKAGE.rglob("*.py"):
        assert "._transforms" not in path.read_text(), f"{path.name} reaches into nflows' private _transforms"


def test_public_names_resolve_and_are_documented():
    for name in cf.__all__:
        obj = getattr(cf, name)
        if name != "__version__":
            assert inspect.getdoc(obj), f"chronoflow.{name} has no docstring"


def test_signatures_of_the_main_entry_points():
    def params(fn):
        return set(inspect.signature(fn).parameters)

    assert {"df", "model", "grid", "prior", "method", "include_out_of_domain", "return_posteriors"} <= params(cf.star_ages)
    assert list(inspect.signature(cf.star_age).parameters) == ["prot", "bprp0", "e_bprp0", "e_prot", "ruwe", "model", "device"]
    fast = params(cf.cluster_age)
    assert {"df", "cluster", "by", "model", "grid", "prior", "f_out", "membership", "background", "cuts", "ruwe_max",
            "include_out_of_domain", "method"} <= fast  # fmt: skip
    full = params(cf.full_cluster_age)
    assert {"df", "cluster", "by", "model", "draws", "tune", "chains", "seed", "membership", "cuts",
            "include_out_of_domain", "log_likelihood"} <= full  # fmt: skip
    # Each method takes only the arguments it uses (no catch-all **kwargs that could swallow one).
    for fn in (cf.cluster_age, cf.full_cluster_age, cf.star_ages, cf.star_age):
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, fn.__name__
    assert not {"prior", "grid", "f_out", "window_nats"} & full
    assert not {"draws", "tune", "chains", "seed"} & fast

