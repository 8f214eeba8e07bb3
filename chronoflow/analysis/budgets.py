"""Error budgets of many clusters (``chronoflow validate budgets``): one sweep per cluster and a
table (the report that compares every total with the cluster's leave-one-out residual is
:func:`chronoflow.analysis.reports.budgets_report`).

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

__all__ = ["COMPONENTS", "budget_table", "with_total_relative"]

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
