"""The Markdown pages of the validation commands, built from the tables the computing modules return.

* :func:`budgets_report` and :func:`describe_sweep`: ``budgets.md`` of ``chronoflow validate
  budgets`` (the table of :func:`chronoflow.analysis.budgets.budget_table`);
* :func:`loo_report`: ``loo.md`` of ``chronoflow validate loo`` (the tables of
  :func:`chronoflow.analysis.validation.leave_one_out` and
  :func:`~chronoflow.analysis.validation.calibrate_loo`);
* :func:`ppc_report` and :func:`coverage_report`: ``ppc.md`` and ``coverage.md`` of ``chronoflow
  validate ppc`` and ``coverage`` (:func:`chronoflow.analysis.calibration.predictive_check`,
  :func:`~chronoflow.analysis.calibration.age_coverage`).

Nothing here computes a result: each function formats what it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.catalogue import REVISED_CLUSTERS
from .budgets import COMPONENTS, with_total_relative
from .validation import calibrate_loo, loo_metrics

__all__ = ["budgets_report", "coverage_report", "describe_sweep", "loo_report", "ppc_report"]


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


_METRIC_ROWS = (
    ("rms residual, 23 clusters [dex]", "rms_all_dex", ".3f"),
    ("rms residual, 21 interior [dex]", "rms_interior_dex", ".3f"),
    ("median abs residual, 23 clusters [dex]", "median_abs_all_dex", ".3f"),
    ("median abs residual, 21 interior [dex]", "median_abs_interior_dex", ".3f"),
    ("coverage of the statistical error, 23 clusters", "coverage_statistical_all", ".2f"),
    ("coverage of the total error, 23 clusters", "coverage_total_all", ".2f"),
    ("coverage of the total error, 21 interior", "coverage_total_interior", ".2f"),
    ("median total error, 23 clusters [dex]", "median_total_all_dex", ".3f"),
)


def loo_report(table: pd.DataFrame, metrics: dict[str, float], *, recipe: str, figure: str | None = None,
               before: pd.DataFrame | None = None, by_members: dict[int, dict[str, float]] | None = None) -> str:
    """The markdown page ``chronoflow validate loo`` writes: per-cluster table and summary figures.

    ``before`` (an earlier leave-one-out table) adds a column of its figures beside the new ones;
    a table without ``total_dex`` is calibrated here the same way, so the coverages compare.
    ``by_members`` (member count -> :func:`~chronoflow.analysis.validation.loo_metrics`) adds a
    table of the figures against K.
    """
    lines = [
        "# Leave-one-cluster-out cluster ages",
        "",
        "Written by `chronoflow validate loo`: for each cluster the whole recipe (every ensemble member) is retrained "
        "without it (published cuts, no inner validation split, each member's early-stopped epoch count) and the "
        "cluster is aged with the fast method. Residual = log10(median model age / fiducial age). The total error is "
        "the one the package would have quoted: statistical ((p84 - p16)/2) and model (ensemble spread, the "
        "model-error term calibrated on the *other* clusters' residuals, extrapolation beyond the calibration ages) "
        "in quadrature. '(revised)': the ChronoFlow paper revised the fiducial age of this cluster; such clusters "
        "enter no calibration and no summary figure.",
        "",
    ]
    if figure:
        lines += [f"![Leave-one-out ages against fiducial ages]({figure})", ""]
    rows_before = None
    if before is not None:
        prev = before[before["n_members"] == before["n_members"].max()] if "n_members" in before else before
        rows_before = loo_metrics(prev if "total_dex" in prev else calibrate_loo(prev)[0])
    if rows_before:
        lines += ["'before': the earlier table given with `--before`, calibrated here the same way (its error bars were "
                  "the statistical ones alone, whose coverage is the 'statistical' row). 'now': this run.", ""]
    head = "| figure | before | now |" if rows_before else "| figure | value |"
    lines += [head, "|---|---:|---:|" if rows_before else "|---|---:|"]
    for label, key, fmt in _METRIC_ROWS:
        now = format(metrics[key], fmt)
        lines.append(f"| {label} | {format(rows_before[key], fmt)} | {now} |" if rows_before else f"| {label} | {now} |")
    if by_members:
        ks = sorted(by_members)
        lines += ["", "The same folds aged by the first k members of each fold's ensemble:", "",
                  "| figure | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
        for label, key, fmt in _METRIC_ROWS:
            lines.append(f"| {label} | " + " | ".join(format(by_members[k][key], fmt) for k in ks) + " |")
    lines += [
        "",
        "| cluster | N used | fiducial [Myr] | median [Myr] | residual [dex] | statistical [dex] | ensemble [dex] | "
        "calibrated [dex] | total [dex] | inside total | flag |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---|",
    ]
    for r in table.itertuples():
        mark = " (revised)" if r.revised_in_paper else ""
        lines.append(
            f"| {r.cluster}{mark} | {r.n_used} | {r.fiducial_age_myr:g} | {10 ** r.log10_age_median:.1f} | "
            f"{r.residual_dex:+.3f} | {r.statistical_dex:.3f} | {getattr(r, 'ensemble_dex', 0.0):.3f} | "
            f"{r.calibrated_dex:.3f} | {r.total_dex:.3f} | {'yes' if r.inside_total else 'no'} | "
            f"{r.flag if isinstance(r.flag, str) else ''} |"
        )
    lines += ["", f"Recipe: {recipe}.", ""]
    return "\n".join(lines)


def ppc_report(table: pd.DataFrame) -> str:
    """The markdown table of :func:`~chronoflow.analysis.calibration.predictive_check` (``chronoflow validate ppc``), ending with a
    one-line summary: bins, median KS distance, bins with p < 0.01."""
    lines = ["| cluster | fiducial [Myr] | (BP-RP)0 bin [mag] | N | KS distance | p-value |", "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r.cluster} | {r.fiducial_age_myr:g} | {r.colour_lo:g} - {r.colour_hi:g} | {r.n} | {r.ks:.3f} | {r.p_value:.3g} |"
              for r in table.itertuples()]  # fmt: skip
    lines += ["", f"{len(table)} cluster-colour bins; median KS distance {table['ks'].median():.3f}; "
              f"bins with p < 0.01: {int((table['p_value'] < 0.01).sum())}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def coverage_report(coverage: dict, *, sample: str, note: str = "") -> str:
    """The markdown table of :func:`~chronoflow.analysis.calibration.age_coverage` (``chronoflow validate coverage``).

    Parameters
    ----------
    coverage
        The result of :func:`~chronoflow.analysis.calibration.age_coverage`.
    sample
        How the synthetic clusters were made (the first column of their row).
    note
        Appended to the closing line (seed, run time).
    """
    c, st = coverage["clusters"], coverage["single_stars"]
    wide = coverage.get("single_stars_default_prior")
    lines = [
        "| sample | N | in 68 % interval | in 95 % interval | median abs error [dex] |",
        "|---|---:|---:|---:|---:|",
        f"| clusters ({sample}) | {c['n']} | {c['coverage_68']:.3f} | {c['coverage_95']:.3f} | {c['median_abs_error_dex']:.3f} |",
        f"| single stars, prior log-flat on the truth range | {st['n']} | {st['coverage_68']:.3f} | {st['coverage_95']:.3f} | {st['median_abs_error_dex']:.3f} |",
        *([f"| single stars, default prior (log-flat on the whole grid) | {wide['n']} | {wide['coverage_68']:.3f} | {wide['coverage_95']:.3f} | {wide['median_abs_error_dex']:.3f} |"]
          if wide else []),
        "", f"Median 68 % width of the cluster intervals: {c['median_width_68_dex']:.3f} dex.{' ' + note if note else ''}",
    ]
    return "\n".join(lines) + "\n"
