"""Validation figures: every cluster drawn, files written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from chronoflow.plotting import plot_budgets, plot_loo

VALIDATION = Path(__file__).resolve().parents[1] / "docs" / "validation"


def test_loo_figure_draws_every_cluster(tmp_path):
    table = pd.read_csv(VALIDATION / "loo.csv")
    fig = plot_loo(table, path=tmp_path / "loo.png")
    top, bottom = fig.axes
    drawn = sum(len(line.get_xdata()) for line in top.lines if line.get_marker() == "o")
    assert drawn == len(table)  # one marker per cluster, split between catalogue and revised ages
    assert (tmp_path / "loo.png").stat().st_size > 10_000


def test_budget_figure_has_a_bar_per_cluster_and_component(tmp_path):
    table = pd.read_csv(VALIDATION / "budgets.csv")
    fig = plot_budgets(table, path=tmp_path / "budgets.png")
    # statistical, every component and the total; their uncertainties are not bars
    n_columns = sum(c.endswith("_dex") and not c.endswith("_unc_dex") and c != "systematic_dex" for c in table.columns)
    assert len(fig.axes[0].patches) == len(table) * n_columns
    assert [t.get_text().split(" (")[0] for t in fig.axes[0].get_yticklabels()] == table.sort_values("age_myr")["cluster"].tolist()
