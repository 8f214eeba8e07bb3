"""Forward-model rotation periods: what does a population of a given age look like?

    python examples/forward_model_population.py [--age 650] [--catalogue PATH] [--out-dir DIR]

The flow is a *generative* model of p(log10 Prot | age, (BP-RP)0, colour error), so besides ageing
stars it can draw them. This walkthrough uses :mod:`chronoflow.analysis.forward` to

1. draw periods for one colour at several ages (:func:`~chronoflow.analysis.forward.sample_periods`) and
   print how a K dwarf spins down;
2. build a synthetic cluster in the catalogue schema, with field contamination and outliers and
   truth columns (:func:`~chronoflow.analysis.forward.synthetic_cluster`), draw it over the model density
   (:func:`~chronoflow.analysis.forward.density_map`) beside a real cluster of similar age, and age it
   back with :func:`chronoflow.cluster_age` to close the loop;
3. compute spin-down tracks: exact period quantiles against age at fixed colours
   (:func:`~chronoflow.analysis.forward.spin_down_tracks`, drawn by :func:`chronoflow.plotting.plot_tracks`);
4. draw the model density at several ages with the nearest-age catalogue cluster on top
   (:func:`chronoflow.plotting.plot_density_panels`).

Figures written to ``--out-dir``: ``synthetic_population.png``, ``spin_down_tracks.png`` and
``density_panels.png``; the synthetic cluster is also saved as ``synthetic_cluster.csv``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

import chronoflow as cf
from chronoflow.analysis.forward import (
    density_map,
    sample_periods,
    spin_down_tracks,
    synthetic_cluster,
)
from chronoflow.plotting import plot_density_panels, plot_tracks

SEED = 1


def nearest_cluster(catalogue: pd.DataFrame, age_myr: float) -> str:
    """The catalogue cluster whose fiducial age is nearest to ``age_myr`` in log age."""
    fiducial = catalogue.groupby("cluster")["fiducial_age_Myr"].median()
    return str((np.log10(fiducial) - np.log10(age_myr)).abs().idxmin())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", default=os.environ.get("CHRONOFLOW_CATALOGUE"),
                        help="rotator catalogue (default: $CHRONOFLOW_CATALOGUE, else the published one)")
    parser.add_argument("--out-dir", default=".", help="where the figures and the CSV go")
    parser.add_argument("--age", type=float, default=650.0, help="age of the synthetic cluster [Myr]")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    model = cf.load_model()  # the shipped model; load it once and pass it to every call
    catalogue = cf.load_catalogue(args.catalogue)
    lo, hi = (10**v for v in model.domain.log10_age_myr)
    print(f"the model is calibrated for ages {lo:.1f} - {hi:.0f} Myr and (BP-RP)0 "
          f"{model.domain.bprp0[0]:.3f} - {model.domain.bprp0[1]:.2f} mag")

    # --- 1. periods at one colour, several ages --------------------------------------------------
    # sample_periods broadcasts ages against colours; n draws per (age, colour) pair. Ages are in
    # Myr (an astropy Quantity such as 650 * u.Myr works too), colours in mag.
    k_dwarf = 1.2  # (BP-RP)0 [mag], about a K3 dwarf
    ages = np.array([50.0, 150.0, 650.0, 2500.0])
    draws = sample_periods(ages, k_dwarf, colour_err=0.02, n=2000, seed=SEED, model=model)
    table = draws.groupby("age_myr")["prot_d"].quantile([0.16, 0.5, 0.84]).unstack()
    table.columns = ["P16 [d]", "median P [d]", "P84 [d]"]
    print(f"\nperiods of a (BP-RP)0 = {k_dwarf} mag star, 2000 draws per age:")
    print(table.round(2).to_string())

    # --- 2. a synthetic cluster -------------------------------------------------------------------
    # Take the colours of the real cluster nearest in age, so the colour distribution is realistic;
    # 10 % of rows are field stars (random ages, low membership) and 5 % of members are outliers
    # (binaries / fast rotators with periods unrelated to age).
    real_name = nearest_cluster(catalogue, args.age)
    real = catalogue[catalogue["cluster"] == real_name]
    synth = synthetic_cluster(args.age, 300, colours=real["BPRP_0"], f_field=0.10, f_outlier=0.05,
                              name=f"synthetic {args.age:g} Myr", seed=SEED, model=model)
    synth.to_csv(out_dir / "synthetic_cluster.csv", index=False)
    print(f"\nsynthetic cluster: {len(synth)} rows, {int(synth['is_member'].sum())} members "
          f"({int(synth['is_outlier'].sum())} outliers), {int((~synth['is_member']).sum())} field stars")

    # Age it back with the same machinery as real data: the answer should bracket the truth.
    back = cf.cluster_age(synth, model=model)
    a = back.age_myr
    print(f"aged back: {a['median']:.0f} Myr (16-84 %: {a['p16']:.0f} - {a['p84']:.0f}); truth {args.age:g} Myr")
    real_age = float(real["fiducial_age_Myr"].median())

    # Figure: synthetic cluster and real cluster, each over the model density at its age, and the
    # period distributions from step 1.
    import matplotlib.pyplot as plt

    colour_grid = np.linspace(0.0, 4.0, 160)       # (BP-RP)0 [mag]
    log_prot_grid = np.linspace(-1.5, 2.2, 200)    # log10 Prot [log10 d]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    panels = [(axes[0], args.age, synth, f"synthetic cluster at {args.age:g} Myr"),
              (axes[1], real_age, real, f"real cluster {real_name} ({real_age:g} Myr)")]
    for ax, age, stars, title in panels:
        # density_map gives p(log10 Prot | age, colour) on [periods, colours]; each column integrates to 1
        dens = density_map(model, age, colour_grid, log_prot_grid, e_bprp0=0.02)
        ax.pcolormesh(colour_grid, 10**log_prot_grid, dens, cmap="Greys", shading="auto",
                      vmax=np.quantile(dens, 0.995))
        if "is_member" in stars:
            member, outlier = stars["is_member"] & ~stars["is_outlier"], stars["is_outlier"]
            ax.scatter(stars.loc[member, "BPRP_0"], stars.loc[member, "Prot"], s=8, color="tab:blue", label="members")
            ax.scatter(stars.loc[outlier, "BPRP_0"], stars.loc[outlier, "Prot"], s=14, marker="^",
                       color="tab:red", label="outliers")
            ax.scatter(stars.loc[~stars["is_member"], "BPRP_0"], stars.loc[~stars["is_member"], "Prot"], s=14,
                       marker="x", color="tab:orange", label="field stars")
        else:
            ax.scatter(stars["BPRP_0"], stars["Prot"], s=8, color="tab:blue", label="catalogue stars")
        ax.set_yscale("log")
        ax.set_ylim(10**log_prot_grid[0], 10**log_prot_grid[-1])
        ax.set_xlabel("(BP-RP)$_0$ [mag]")
        ax.set_ylabel("rotation period [d]")
        ax.set_title(title + "\n(grey: model density of log10 Prot)", fontsize=10)
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax = axes[2]
    bins = np.linspace(-1.0, 1.8, 50)
    for age, colour in zip(ages, plt.get_cmap("viridis")(np.linspace(0, 0.85, len(ages)))):
        ax.hist(draws.loc[draws["age_myr"] == age, "log10_prot"], bins=bins, histtype="step", lw=1.6,
                color=colour, density=True, label=f"{age:g} Myr")
    ax.set_xlabel("log10 rotation period [log10 d]")
    ax.set_ylabel("density [per dex]")
    ax.set_title(f"sampled periods at (BP-RP)$_0$ = {k_dwarf} mag", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = out_dir / "synthetic_population.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    print(f"\nfigure: {path}")

    # --- 3. spin-down tracks --------------------------------------------------------------------
    # Exact quantiles of the period at each age (the flow is monotone, so no sampling noise):
    # the median and the 68 % / 95 % bands, by default over 100 ages spanning the calibrated range.
    colours = [0.8, 1.2, 1.8]  # (BP-RP)0 [mag]: a G, a K and an early-M dwarf
    tracks = spin_down_tracks(colours, model=model)
    # the same function at one age, for a table
    now = spin_down_tracks(colours, ages=[args.age], model=model)
    print(f"\nperiod quantiles at {args.age:g} Myr [d]:")
    print(now.drop(columns="age_myr").round(2).to_string(index=False))
    fig = plot_tracks(tracks)
    fig.axes[0].set_title("spin-down tracks: median period with its 68 % and 95 % bands")
    fig.tight_layout()
    path = out_dir / "spin_down_tracks.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    print(f"figure: {path}")

    # --- 4. density at several ages, with real clusters ------------------------------------------
    fig = plot_density_panels(model, [15, 45, 120, args.age, 1000, 2500], catalogue)
    for ax in fig.axes:  # a few catalogue stars have odd colours; keep to the model's colour range
        ax.set_xlim(-0.1, 4.3)
    fig.suptitle("model density p(log10 Prot | age, colour) in grey; catalogue stars of the nearest-age cluster in orange")
    fig.tight_layout()
    fig.savefig(out_dir / "density_panels.png", dpi=130)
    plt.close(fig)
    print(f"figure: {out_dir / 'density_panels.png'}")


if __name__ == "__main__":
    main()
