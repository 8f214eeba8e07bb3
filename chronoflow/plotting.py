"""Figures (matplotlib lives here and nowhere else in the package)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .analysis.forward import density_map
from .data.tables import to_frame
from .errors import ChronoflowError
from .flows.artifact import resolve_model
from .flows.flow import RotationModel
from .inference.ages import ClusterAge
from .inference.single_star import StarAge

__all__ = ["plot_budget", "plot_cluster_age", "plot_density_panels", "plot_ppc", "plot_star_age", "plot_tracks"]


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=130)
    return fig


def _pyplot(path):
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _draw_model_density(ax, model: RotationModel, age_myr: float, e_bprp0: float, *, n_colour: int = 160,
                        n_period: int = 200, check_domain: bool = True) -> None:
    """Draw the model's density p(log10 Prot | age, colour) at ``age_myr`` [Myr] on the period-colour
    plane of ``ax`` (grey scale over the model's colour domain, periods 0.03-160 d on a log axis)."""
    c_lo, c_hi = model.domain.bprp0
    colour_grid = np.linspace(c_lo, c_hi, n_colour)
    period_grid = np.linspace(-1.5, 2.2, n_period)
    dens = density_map(model, age_myr, colour_grid, period_grid, e_bprp0=e_bprp0, check_domain=check_domain)
    ax.pcolormesh(colour_grid, 10**period_grid, dens, cmap="Greys", shading="auto", vmax=np.quantile(dens, 0.995))
    ax.set_yscale("log")


def plot_cluster_age(result: ClusterAge, model: RotationModel, path: str | os.PathLike | None = None):
    """Age posterior beside the period-colour diagram at the inferred age.

    Left: posterior density per dex against age [Myr] with the median, the 16-84 % interval
    (statistical) and, shaded beside it, median -/+ the total error (statistical and model).
    Right: the model's density p(log10 Prot | age, colour) at the median age, with the cluster's
    stars coloured by their posterior outlier probability (unused stars as grey crosses).

    Parameters
    ----------
    result
        From :func:`chronoflow.cluster_age`.
    model
        The model that produced it.
    path
        Save the figure there (PNG, PDF, ... by suffix) when given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot(path)
    s = result.summary
    fig, (ax_post, ax_cmd) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 1.3]})
    age = 10**result.grid
    ax_post.plot(age, result.posterior, color="k", lw=1.5)
    inside = (result.grid >= s["p16"]) & (result.grid <= s["p84"])
    ax_post.fill_between(age[inside], result.posterior[inside], color="tab:blue", alpha=0.3, label="16-84 % (statistical)")
    if result.error_dex:
        t_lo, t_hi = result.total_interval
        ax_post.axvspan(10**t_lo, 10**t_hi, color="tab:orange", alpha=0.15,
                        label=f"median -/+ total error ({result.error_dex['total']:.3f} dex)")
    ax_post.axvline(10 ** s["median"], color="tab:blue", lw=1.2, label=f"median {10 ** s['median']:.0f} Myr")
    stars = to_frame(result.stars)[0]  # a DataFrame, whichever kind of table the result holds
    if "fiducial_age_Myr" in stars and stars["fiducial_age_Myr"].notna().any():
        ax_post.axvline(stars["fiducial_age_Myr"].median(), color="tab:red", ls="--", lw=1, label="fiducial age")
    mass = result.posterior > result.posterior.max() * 1e-4
    lo, hi = result.grid[mass].min() - 0.15, result.grid[mass].max() + 0.15
    if result.error_dex:
        lo, hi = min(lo, result.total_interval[0] - 0.1), max(hi, result.total_interval[1] + 0.1)
    ax_post.set_xscale("log")
    ax_post.set_xlim(10**lo, 10**hi)
    ax_post.set_xlabel("age [Myr]")
    ax_post.set_ylabel("posterior density [per dex]")
    title = (f"{result.cluster}: {10 ** s['median']:.0f} (+{10 ** s['p84'] - 10 ** s['median']:.0f} / "
             f"-{10 ** s['median'] - 10 ** s['p16']:.0f}) Myr")
    if result.error_dex:
        title += f", total +-{result.error_dex['total']:.3f} dex"
    if result.flag:
        title += f"\n[{result.flag}]"
    ax_post.set_title(title, fontsize=10)
    ax_post.legend(frameon=False, fontsize=8)

    colour = stars["BPRP_0"].to_numpy(float)
    log_prot = np.log10(stars["Prot"].to_numpy(float).clip(1e-3))
    err = float(np.nanmedian(stars["e_BPRP_0"])) if stars["e_BPRP_0"].notna().any() else 0.02
    _draw_model_density(ax_cmd, model, 10 ** s["median"], err)
    used = stars["used"].to_numpy(bool)
    sc = ax_cmd.scatter(colour[used], 10 ** log_prot[used], c=stars["p_outlier"].to_numpy(float)[used], cmap="plasma",
                        vmin=0, vmax=1, s=10, edgecolor="none")
    ax_cmd.scatter(colour[~used], 10 ** log_prot[~used], marker="x", color="0.6", s=10, lw=0.8,
                   label=f"not used ({int((~used).sum())})")
    fig.colorbar(sc, ax=ax_cmd, label="posterior outlier probability")
    ax_cmd.set_xlabel("(BP-RP)$_0$ [mag]")
    ax_cmd.set_ylabel("rotation period [d]")
    ax_cmd.set_title(f"model density at {10 ** s['median']:.0f} Myr, {result.n_used} stars used")
    if (~used).any():
        ax_cmd.legend(frameon=False, fontsize=8, loc="upper left")
    return _finish(fig, path)


def _myr(age: float) -> str:
    """An age in Myr for a label: three significant figures, no exponent."""
    return f"{age:.3g}" if age < 100 else f"{age:.0f}"


def plot_star_age(result: StarAge, path: str | os.PathLike | None = None, *, model: RotationModel | str | None = None):
    """One star's age posterior beside the period-colour diagram at its median age.

    Left: the honest posterior density per dex (with the single-star model-error term) against
    age [Myr], its 95 % and 68 % intervals shaded, the median, and the flow's posterior alone
    (dashed) with its 68 % interval hatched. Right: the model's density p(log10 Prot | age,
    colour) at the median age and the star's colour error, with the star marked (error bars: its
    colour error and period error).

    Parameters
    ----------
    result
        From :func:`chronoflow.star_age`.
    path
        Save the figure there (PNG, PDF, ... by suffix) when given.
    model
        The model to draw (default: the one that aged the star, ``result.flow``, else the
        shipped model).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ChronoflowError
        The star has no age (its flag says why): there is no posterior to draw.
    """
    if not result.has_age:
        raise ChronoflowError(f"no figure: the star has no age (flag {result.flag or 'none'})")
    flow = resolve_model(model if model is not None else result.flow)
    plt = _pyplot(path)
    s, grid = result.summary, result.grid
    fig, (ax_post, ax_cmd) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 1.3]})
    age = 10**grid
    ax_post.plot(age, result.posterior, color="k", lw=1.5, label="posterior (with the model error)")
    for lo, hi, alpha, label in ((s["p2.5"], s["p97.5"], 0.15, "95 %"), (s["p16"], s["p84"], 0.35, "68 %")):
        inside = (grid >= lo) & (grid <= hi)
        ax_post.fill_between(age[inside], result.posterior[inside], color="tab:blue", alpha=alpha, lw=0,
                             label=f"{label}: {_myr(10**lo)} - {_myr(10**hi)} Myr")
    ax_post.plot(age, result.stat_posterior, color="tab:orange", lw=1.2, ls="--", label="flow posterior alone")
    inside = (grid >= s["stat_p16"]) & (grid <= s["stat_p84"])
    ax_post.fill_between(age[inside], result.stat_posterior[inside], facecolor="none", edgecolor="tab:orange", hatch="///",
                         lw=0, label=f"68 %, flow alone: {_myr(10 ** s['stat_p16'])} - {_myr(10 ** s['stat_p84'])} Myr")
    ax_post.axvline(10 ** s["median"], color="tab:blue", lw=1.2, label=f"median {_myr(10 ** s['median'])} Myr")
    peak = max(np.nanmax(result.posterior), np.nanmax(result.stat_posterior))
    mass = np.fmax(result.posterior, result.stat_posterior) > peak * 1e-4
    lo, hi = grid[mass].min() - 0.15, grid[mass].max() + 0.15
    ax_post.set_xscale("log")
    ax_post.set_xlim(10 ** max(lo, grid[0]), 10 ** min(hi, grid[-1]))
    ax_post.set_ylim(bottom=0)
    ax_post.set_xlabel("age [Myr]")
    ax_post.set_ylabel("posterior density [per dex]")
    title = f"Prot = {result.prot_d:g} d, (BP-RP)$_0$ = {result.bprp0:.3f} mag: {_myr(10 ** s['median'])} Myr"
    if result.flag:
        title += f"\n[{result.flag}]"
    ax_post.set_title(title, fontsize=10)
    ax_post.legend(frameon=False, fontsize=7)

    err = max(result.e_bprp0, 10 ** flow.domain.log10_e_bprp0[0])  # the error the star was aged with
    _draw_model_density(ax_cmd, flow, 10 ** s["median"], err, check_domain=False)  # an age beyond: flagged above
    ax_cmd.errorbar([result.bprp0], [result.prot_d], xerr=[result.e_bprp0], yerr=[result.e_prot_d or 0.0], fmt="*",
                    ms=16, color="tab:red", mec="k", mew=0.6, ecolor="tab:red", capsize=2, label="the star")
    ax_cmd.set_xlim(*flow.domain.bprp0)
    ax_cmd.set_xlabel("(BP-RP)$_0$ [mag]")
    ax_cmd.set_ylabel("rotation period [d]")
    ax_cmd.set_title(f"model density at {_myr(10 ** s['median'])} Myr", fontsize=10)
    ax_cmd.legend(frameon=False, fontsize=8, loc="upper left")
    return _finish(fig, path)


def plot_density_panels(
    model: RotationModel,
    ages_myr,
    catalogue=None,
    *,
    e_bprp0: float = 0.02,
    path: str | os.PathLike | None = None,
):
    """Period-colour diagrams of the model density at several ages, one panel per age.

    Parameters
    ----------
    model
        A trained model.
    ages_myr
        Ages [Myr], one panel each.
    catalogue
        Optional catalogue: the stars of the cluster whose fiducial age is nearest (in log age)
        to each panel's age are drawn over the density.
    e_bprp0
        Colour uncertainty [mag] of the density.
    path
        Save the figure there when given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot(path)
    ages = np.atleast_1d(np.asarray(ages_myr, dtype=float))
    ncol = min(len(ages), 3)
    nrow = int(np.ceil(len(ages) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False, sharex=True, sharey=True)
    c_lo, c_hi = model.domain.bprp0
    for ax, age in zip(axes.ravel(), ages):
        _draw_model_density(ax, model, age, e_bprp0, n_colour=150, n_period=180, check_domain=False)
        title = f"{age:.0f} Myr"
        if catalogue is not None:
            fid = catalogue.groupby("cluster")["fiducial_age_Myr"].median()
            name = (np.log10(fid) - np.log10(age)).abs().idxmin()
            stars = catalogue[catalogue["cluster"] == name]
            ax.scatter(stars["BPRP_0"], stars["Prot"], s=4, color="tab:orange", alpha=0.7, edgecolor="none")
            title += f"  (stars: {name}, {fid[name]:g} Myr)"
        ax.set_title(title, fontsize=9)
        ax.set_xlim(c_lo, c_hi)  # the model's colour domain; a stray star outside it stays off the axes
    for ax in axes.ravel()[len(ages):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("(BP-RP)$_0$ [mag]")
    for ax in axes[:, 0]:
        ax.set_ylabel("rotation period [d]")
    return _finish(fig, path)


def plot_tracks(tracks, *, path: str | os.PathLike | None = None):
    """Spin-down tracks: median period against age per colour, with the 68 % and 95 % bands.

    Parameters
    ----------
    tracks
        Output of :func:`chronoflow.analysis.forward.spin_down_tracks` (default percentiles).
    path
        Save the figure there when given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot(path)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("viridis")
    colours = sorted(tracks["bprp0"].unique())
    for i, colour in enumerate(colours):
        t = tracks[tracks["bprp0"] == colour].sort_values("age_myr")
        c = cmap(0.85 * i / max(len(colours) - 1, 1))
        ax.fill_between(t["age_myr"], t["prot_p2.5"], t["prot_p97.5"], color=c, alpha=0.12, lw=0)
        ax.fill_between(t["age_myr"], t["prot_p16"], t["prot_p84"], color=c, alpha=0.25, lw=0)
        ax.plot(t["age_myr"], t["prot_p50"], color=c, lw=1.8, label=f"(BP-RP)$_0$ = {colour:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("age [Myr]")
    ax.set_ylabel("rotation period [d]")
    ax.legend(frameon=False, fontsize=8)
    return _finish(fig, path)


def plot_ppc(table, *, path: str | os.PathLike | None = None):
    """Heat map of the predictive-check KS distances: clusters (by age) x colour bins.

    Parameters
    ----------
    table
        Output of :func:`chronoflow.analysis.calibration.predictive_check`.
    path
        Save the figure there when given.
    """
    plt = _pyplot(path)
    pivot = table.pivot_table(index=["fiducial_age_myr", "cluster"], columns="colour_lo", values="ks")
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(pivot) + 1.5))
    im = ax.imshow(pivot.to_numpy(), aspect="auto", cmap="magma_r", vmin=0, vmax=0.5)
    ax.set_yticks(range(len(pivot)), [f"{name} ({age:g} Myr)" for age, name in pivot.index], fontsize=7)
    edges = sorted(set(table["colour_lo"]) | set(table["colour_hi"]))
    ax.set_xticks(range(pivot.shape[1]), [f"{lo:g}-{edges[edges.index(lo) + 1]:g}" for lo in pivot.columns], fontsize=8)
    ax.set_xlabel("(BP-RP)$_0$ bin [mag]")
    fig.colorbar(im, ax=ax, label="KS distance of PIT from uniform")
    return _finish(fig, path)


def plot_budget(result, *, path: str | os.PathLike | None = None):
    """Bar chart of an error budget: each systematic component, the statistical width, the total.

    Parameters
    ----------
    result
        A :class:`chronoflow.analysis.systematics.SweepResult`.
    path
        Save the figure there when given.
    """
    plt = _pyplot(path)
    budget = result.budget[np.isfinite(result.budget["systematic_dex"].to_numpy(float))]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(budget) + 1.4))
    colours = [{"statistical": "tab:gray", "total": "k", "total_relative": "0.45"}.get(c, "tab:blue") for c in budget["component"]]
    err = np.nan_to_num(budget["uncertainty_dex"].to_numpy(float))
    bars = ax.barh(budget["component"], budget["systematic_dex"], xerr=err, color=colours, capsize=3,
                   error_kw={"elinewidth": 1, "ecolor": "0.3"})  # fmt: skip
    for bar, used in zip(bars, budget["in_total"], strict=True):
        if not used:
            bar.set_alpha(0.35)
            bar.set_hatch("//")
    for y, (v, e) in enumerate(zip(budget["systematic_dex"], err, strict=True)):
        ax.text(v + e, y, f" {v:.3f}" + (f" ± {e:.3f}" if e > 0 else ""), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("uncertainty of log10 age [dex] (hatched: not in the total)")
    ax.set_title(f"{result.nominal.cluster}: error budget (median {10 ** result.nominal.summary['median']:.0f} Myr)")
    ax.set_xlim(0, float((budget["systematic_dex"] + err).max()) * 1.35)
    return _finish(fig, path)


def plot_loo(table, *, path: str | os.PathLike | None = None):
    """Leave-one-cluster-out ages against the literature (fiducial) ages.

    Parameters
    ----------
    table
        The table of :func:`chronoflow.analysis.validation.leave_one_out` (``cluster``,
        ``fiducial_age_myr`` [Myr], ``log10_age_median``/``p16``/``p84`` [log10 Myr],
        ``residual_dex``, ``revised_in_paper``; ``total_dex`` from
        :func:`chronoflow.analysis.validation.calibrate_loo` is drawn as wide pale bars when present).
    path
        Save the figure there when given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot(path)
    fid = np.log10(table["fiducial_age_myr"].to_numpy(float))
    med = table["log10_age_median"].to_numpy(float)
    err = np.vstack([med - table["log10_age_p16"].to_numpy(float), table["log10_age_p84"].to_numpy(float) - med])
    revised = table["revised_in_paper"].to_numpy(bool)
    fig, (ax, axr) = plt.subplots(2, 1, figsize=(6.2, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    lo, hi = min(fid.min(), med.min()) - 0.2, max(fid.max(), med.max()) + 0.2
    for a in (ax, axr):
        a.grid(alpha=0.3)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    total = table["total_dex"].to_numpy(float) if "total_dex" in table else None
    for mask, label, colour in ((~revised, "catalogue age", "tab:blue"), (revised, "age revised in the paper", "tab:red")):
        if total is not None:  # the total error (statistical and model) behind the statistical bars
            for a, y in ((ax, med), (axr, med - fid)):
                a.errorbar(fid[mask], y[mask], yerr=total[mask], fmt="none", color=colour, alpha=0.3, lw=4,
                           label="total error" if a is ax and colour == "tab:blue" else None)
        ax.errorbar(fid[mask], med[mask], yerr=err[:, mask], fmt="o", ms=4, color=colour, label=label, capsize=2)
        axr.errorbar(fid[mask], med[mask] - fid[mask], yerr=err[:, mask], fmt="o", ms=4, color=colour, capsize=2)
    for x, y, name, show in zip(fid, med, table["cluster"], revised | (np.abs(med - fid) > 0.1), strict=True):
        if show:  # name the clusters off the line; the crowd on it would overlap
            ax.annotate(name, (x, y), fontsize=7, xytext=(4, -8), textcoords="offset points")
    axr.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("leave-one-out age [log10 Myr]")
    axr.set_ylabel("residual [dex]")
    axr.set_xlabel("fiducial age [log10 Myr]")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Clusters aged by flows trained without them")
    return _finish(fig, path)


def plot_budgets(table, *, path: str | os.PathLike | None = None):
    """Error budgets of many clusters: statistical, each systematic component and the total.

    Parameters
    ----------
    table
        The table of :func:`chronoflow.analysis.budgets.budget_table` (``cluster``, ``age_myr`` [Myr] and
        ``*_dex`` columns for ``statistical``, the components and ``total``; ``*_unc_dex``
        columns are not drawn).
    path
        Save the figure there when given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot(path)
    skip = {"statistical_dex", "systematic_dex", "total_dex"}
    parts = [c for c in table.columns if c.endswith("_dex") and not c.endswith("_unc_dex") and c not in skip]
    order = table.sort_values("age_myr")
    y = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(order) + 1.6))
    height = 0.8 / (len(parts) + 2)
    columns = ["statistical_dex", *parts, "total_dex"]
    for i, col in enumerate(columns):
        colour = {"statistical_dex": "tab:gray", "total_dex": "k"}.get(col)
        ax.barh(y + (i - len(columns) / 2 + 0.5) * height, order[col], height=height, color=colour,
                label=col.removesuffix("_dex"))  # fmt: skip
    ax.set_yticks(y, [f"{c} ({a:.0f} Myr)" for c, a in zip(order["cluster"], order["age_myr"], strict=True)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("uncertainty of log10 age [dex]")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.set_title("Error budget of every catalogue cluster")
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)
