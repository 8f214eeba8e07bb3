"""Error budgets of many clusters (``chronoflow validate budgets``): one sweep per cluster, a
table, and a report that compares every total with the cluster's leave-one-out residual.

Each cluster is swept by :func:`chronoflow.analysis.systematics.systematics_sweep` with the catalogue as
the calibration set *minus that cluster* (the sweep removes it before its calibration refits), so
no cluster's calibration component is measured in-sample.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.catalogue import REVISED_CLUSTERS

__all__ = ["COMPONENTS", "budget_table", "budgets_report", "describe_sweep", "with_total_relative"]

#: Components in the order the table shows them.
COMPONENTS = ("extinction", "membership", "age_scale", "calibration", "model", "out_of_sample")


def _one(args: tuple[pd.DataFrame, str, str | None, dict[str, Any]]) -> dict[str, Any]:
    import torch

    from ..flows.artifact import resolve_model
    from .systematics import systematics_sweep

    catalogue, name, model, kwargs = args
    torch.set_num_threads(1)
    res = systematics_sweep(catalogue, name, model=resolve_model(model), calibration_catalogue=catalogue, progress=False, **kwargs)
    b = res.budget.set_index("component")
    row: dict[str, Any] = {"cluster": name, "n_used": res.nominal.n_used, "log10_age_median": res.nominal.summary["median"],
                           "age_myr": 10 ** res.nominal.summary["median"], "statistical_dex": b.loc["statistical", "systematic_dex"]}  # fmt: skip
    for comp in COMPONENTS:
        if comp in b.index:
            row[f"{comp}_dex"] = b.loc[comp, "systematic_dex"]
            row[f"{comp}_unc_dex"] = b.loc[comp, "uncertainty_dex"]
            row[f"{comp}_in_total"] = bool(b.loc[comp, "in_total"])
    row["total_dex"] = b.loc["total", "systematic_dex"]
    row["total_relative_dex"] = b.loc["total_relative", "systematic_dex"]
    row["total_unc_dex"] = b.loc["total", "uncertainty_dex"]
    row["total_note"] = b.loc["total", "note"]
    row["calibration_set"] = res.settings.get("target_in_calibration_set", "")
    return row


def budget_table(
    catalogue: pd.DataFrame,
    clusters: list[str] | None = None,
    *,
    model: str | Path | None = None,
    jobs: int = 2,
    progress: bool = True,
    **sweep_kwargs,
) -> pd.DataFrame:
    """Sweep every cluster of ``catalogue`` and tabulate its budget.

    Parameters
    ----------
    catalogue
        The catalogue: the clusters to sweep and the calibration set of their refits.
    clusters
        Clusters to sweep (default: all, youngest first).
    model
        Model file, or ``None`` for the shipped model.
    jobs
        Clusters swept in parallel processes (each single-threaded).
    progress
        Show a progress bar.
    **sweep_kwargs
        Passed to :func:`~chronoflow.analysis.systematics.systematics_sweep` (``n_calibration``, ...).

    Returns
    -------
    pandas.DataFrame
        One row per cluster: ``cluster``, ``n_used``, ``log10_age_median`` [log10 Myr], ``age_myr``
        [Myr], ``statistical_dex``, for each component ``<name>_dex``, ``<name>_unc_dex`` and
        ``<name>_in_total``, ``total_dex``, ``total_relative_dex`` (without the age scale),
        ``total_unc_dex``, ``total_note`` and
        ``calibration_set`` (what happened to the cluster in its own calibration refits).
    """
    from rich.progress import track

    ages = catalogue.groupby("cluster")["fiducial_age_Myr"].median()
    names = clusters if clusters is not None else sorted(ages.index, key=lambda c: ages[c])
    tasks = [(catalogue, name, None if model is None else str(model), sweep_kwargs) for name in names]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            rows = list(track(pool.map(_one, tasks), total=len(tasks), description="budgets", disable=not progress))
    else:
        rows = [_one(t) for t in track(tasks, description="budgets", disable=not progress)]
    return pd.DataFrame(rows)


def with_total_relative(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``total_relative_dex`` (the total without the age-scale term [dex]) derived
    from ``total_dex`` and ``age_scale_dex`` when a table written before that column lacks it."""
    if "total_relative_dex" in table.columns:
        return table
    table = table.copy()
    scale = table["age_scale_dex"].where(table["age_scale_in_total"], 0.0) if "age_scale_dex" in table.columns else 0.0
    table["total_relative_dex"] = np.sqrt(np.clip(table["total_dex"] ** 2 - scale**2, 0.0, None))
    return table


def describe_sweep(*, n_calibration: int, seed: int, jobs: int, run_time_s: float | None = None,
                   rewritten_from: str | None = None) -> str:
    """The settings paragraph of ``budgets.md``: what each systematic varied, the seed, and how the
    table was made (a sweep of ``run_time_s`` seconds on ``jobs`` processes, or rewritten from the
    earlier CSV ``rewritten_from``)."""
    from .systematics import DEFAULT_AGE_SCALE_DEX, DEFAULT_CALIBRATION_SCALE_DEX, DEFAULT_REDDENING_SIGMA

    how = (f"Report rewritten from `{rewritten_from}` (`--table`)." if rewritten_from is not None
           else f"Run time {run_time_s:.0f} s with {jobs} processes.")  # fmt: skip
    return (f"Sweep of every cluster with the shipped model: E(BP-RP) error {DEFAULT_REDDENING_SIGMA:g} mag "
            f"(5-node Gauss-Hermite); membership cuts at 0.5, 0.7, 0.9 and the HDBSCAN column; age scale "
            f"+-{DEFAULT_AGE_SCALE_DEX:g} dex; {n_calibration} refits from scratch with per-cluster ages perturbed "
            f"by {DEFAULT_CALIBRATION_SCALE_DEX:g} dex, each cluster removed from its own calibration set; seed "
            f"{seed}. {how} See `chronoflow.analysis.systematics` for how each component and the total are formed.")


def _f(v: Any) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.3f}"


def budgets_report(table: pd.DataFrame, *, loo: pd.DataFrame | None = None, settings: str = "", figure: str | None = None) -> str:
    """Markdown: every cluster's budget, and (with ``loo``, the table of
    :func:`chronoflow.analysis.validation.calibrate_loo`) the total against its leave-one-out residual.

    Each component is shown as ``sigma ± its uncertainty``; one in brackets is not in the total.
    """
    comps = [c for c in COMPONENTS if f"{c}_dex" in table.columns]
    lines = ["# Error budgets of the catalogue clusters", "",
             "Written by `chronoflow validate budgets`. " + settings, ""]  # fmt: skip
    if figure:
        lines += [f"![Error budget of every cluster]({figure})", ""]
    lines += ["| cluster | N used | age [Myr] | statistical | " + " | ".join(comps) + " | total |",
              "|---|---:|---:|---:|" + "---:|" * len(comps) + "---:|"]  # fmt: skip
    for r in table.itertuples(index=False):
        d = r._asdict()
        cells = []
        for c in comps:
            v, u, used = d.get(f"{c}_dex"), d.get(f"{c}_unc_dex"), d.get(f"{c}_in_total", True)
            text = _f(v) + (f" ± {_f(u)}" if u is not None and np.isfinite(u) and u > 0 else "")
            cells.append(text if used or not text else f"({text})")
        lines.append(f"| {r.cluster} | {r.n_used} | {r.age_myr:.0f} | {_f(r.statistical_dex)} | " + " | ".join(cells)
                     + f" | {_f(r.total_dex)} ± {_f(r.total_unc_dex)} |")  # fmt: skip
    med = table[["statistical_dex", *(f"{c}_dex" for c in comps), "total_dex"]].median()
    lines.append("| **median** | | | " + " | ".join(f"**{_f(v)}**" for v in med) + " |")
    lines += ["", "All in dex. The ChronoFlow paper quotes, for cluster ages, 0.06 dex statistical, 0.06 dex systematic "
              "(extinction, membership, calibration ages) and 0.08 dex total."]  # fmt: skip
    if loo is not None:
        table = with_total_relative(table)
        merged = table.merge(loo[["cluster", "residual_dex", "total_dex"]].rename(columns={"total_dex": "loo_total_dex"}), on="cluster")
        merged["revised"] = merged["cluster"].isin(REVISED_CLUSTERS)
        merged["inside"] = merged["residual_dex"].abs() <= merged["total_dex"]
        merged["inside_relative"] = merged["residual_dex"].abs() <= merged["total_relative_dex"]
        clean = merged[~merged["revised"]]
        lines += ["", "## The total budget against the leave-one-out residual", "",
                  "Residual: the age of the cluster by the recipe retrained without it, minus its fiducial age "
                  "([the leave-one-out page](loo.md)). Inside: |residual| <= total budget. The clusters whose ages the "
                  "paper revised are shown but not counted.", "",
                  "The leave-one-out residual is measured on the calibration clusters' own age scale, so it cannot test the "
                  "age-scale term: the fair comparison is with the total *without* it (`total_relative`). The total budget "
                  "is that of the shipped model, which saw the cluster; the last column is the total its leave-one-out fold "
                  "quoted, without the cluster.", "",
                  "| cluster | age [Myr] | LOO residual | total budget | inside | total without age scale | inside | total quoted by the LOO fold |",
                  "|---|---:|---:|---:|:---:|---:|:---:|---:|"]  # fmt: skip
        for r in merged.itertuples(index=False):
            lines.append(f"| {r.cluster}{' (revised)' if r.revised else ''} | {r.age_myr:.0f} | {r.residual_dex:+.3f} | "
                         f"{_f(r.total_dex)} | {'yes' if r.inside else 'no'} | {_f(r.total_relative_dex)} | "
                         f"{'yes' if r.inside_relative else 'no'} | {_f(r.loo_total_dex)} |")  # fmt: skip
        lines += ["", f"Share of the {len(clean)} clusters whose age the paper did not revise with |residual| inside: the total "
                  f"budget **{clean['inside'].mean():.2f}**, the total without the age scale **{clean['inside_relative'].mean():.2f}**, "
                  f"the total quoted by the leave-one-out fold {(clean['residual_dex'].abs() <= clean['loo_total_dex']).mean():.2f}."]  # fmt: skip
    return "\n".join(lines) + "\n"
