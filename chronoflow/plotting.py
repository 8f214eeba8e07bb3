"""Figures (matplotlib lives here and nowhere else in the package)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .ages import ClusterAge
from .flow import RotationModel
from .forward import density_map

__all__ = ["plot_cluster_age"]


def plot_cluster_age(result: ClusterAge, model: RotationModel, path: str | os.PathLike | None = None):
    """Age posterior beside the period-colour diagram at the inferred age.

    Left: posterior density per dex against age [Myr] with the median and the 16-84 % interval.
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
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    s = result.summary
    fig, (ax_post, ax_cmd) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 1.3]})
    age = 10**result.grid
    ax_post.plot(age, result.posterior, color="k", lw=1.5)
    inside = (result.grid >= s["p16"]) & (result.grid <= s["p84"])
    ax_post.fill_between(age[inside], result.posterior[inside], color="tab:blue", alpha=0.3, label="16-84 %")
    ax_post.axvline(10 ** s["median"], color="tab:blue", lw=1.2, label=f"median {10 ** s['median']:.0f} Myr")
    if "fiducial_age_Myr" in result.stars and result.stars["fiducial_age_Myr"].notna().any():
        ax_post.axvline(result.stars["fiducial_age_Myr"].median(), color="tab:red", ls="--", lw=1, label="fiducial age")
    mass = result.posterior > result.posterior.max() * 1e-4
    lo, hi = result.grid[mass].min() - 0.15, result.grid[mass].max() + 0.15
    ax_post.set_xscale("log")
    ax_post.set_xlim(10**lo, 10**hi)
    ax_post.set_xlabel("age [Myr]")
    ax_post.set_ylabel("posterior density [per dex]")
    ax_post.set_title(f"{result.cluster}: {10 ** s['median']:.0f} (+{10 ** s['p84'] - 10 ** s['median']:.0f} / "
                      f"-{10 ** s['median'] - 10 ** s['p16']:.0f}) Myr")
    ax_post.legend(frameon=False, fontsize=8)

    stars = result.stars
    colour = stars["BPRP_0"].to_numpy(float)
    log_prot = np.log10(stars["Prot"].to_numpy(float).clip(1e-3))
    c_lo, c_hi = model.domain.bprp0
    colour_grid = np.linspace(c_lo, c_hi, 160)
    period_grid = np.linspace(-1.5, 2.2, 200)
    err = float(np.nanmedian(stars["e_BPRP_0"])) if stars["e_BPRP_0"].notna().any() else 0.02
    dens = density_map(model, 10 ** s["median"], colour_grid, period_grid, e_bprp0=err)
    ax_cmd.pcolormesh(colour_grid, 10**period_grid, dens, cmap="Greys", shading="auto", vmax=np.quantile(dens, 0.995))
    used = stars["used"].to_numpy(bool)
    sc = ax_cmd.scatter(colour[used], 10 ** log_prot[used], c=stars["p_outlier"].to_numpy(float)[used], cmap="plasma",
                        vmin=0, vmax=1, s=10, edgecolor="none")
    ax_cmd.scatter(colour[~used], 10 ** log_prot[~used], marker="x", color="0.6", s=10, lw=0.8,
                   label=f"not used ({int((~used).sum())})")
    fig.colorbar(sc, ax=ax_cmd, label="posterior outlier probability")
    ax_cmd.set_yscale("log")
    ax_cmd.set_xlabel("(BP-RP)$_0$ [mag]")
    ax_cmd.set_ylabel("rotation period [d]")
    ax_cmd.set_title(f"model density at {10 ** s['median']:.0f} Myr, {result.n_used} stars used")
    if (~used).any():
        ax_cmd.legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=130)
    return fig
