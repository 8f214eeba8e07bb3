"""Age single stars from your own CSV of observed (reddened) Gaia colours and rotation periods.

    python examples/age_single_stars.py [--catalogue PATH] [--out-dir DIR]

A newcomer's most common job: "I have a table of stars with Gaia BP-RP colours, an extinction
estimate for each, and measured rotation periods; how old are they?" This walkthrough:

1. writes a small *user CSV* (``my_stars.csv`` in ``--out-dir``) that looks like what you would
   make yourself: user-style column names, **observed** (reddened) BP-RP with its error, A0 from
   some dust map, and the period in days. To have something realistic to age, it takes 48 stars
   of three well-studied clusters from the catalogue and re-reddens their intrinsic colours with
   a known A0 using the Gaia EDR3 extinction law. It adds three deliberately bad rows;
2. reads that CSV back, as you would read yours, and de-reddens it with
   :func:`chronoflow.deredden_table` to get (BP-RP)0 and its error;
3. ages every row with :func:`chronoflow.star_ages`. No row is dropped: rows that cannot be
   aged get NaN ages and a ``flag`` that says why, and rows outside the model's training domain
   are aged but flagged;
4. prints the table and draws ``single_star_ages.png``: each star's age (median and 16-84 %)
   against its colour, beside the full posteriors of three example stars.

Single-star gyrochronology ages are broad (about 0.7 dex, a factor of five): that is the physics
of spin-down, not a bug. To age a group of coeval stars, combine them with
:func:`chronoflow.cluster_age` (see ``examples/age_a_cluster.py``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

import chronoflow as cf

#: Clusters to borrow stars from, with an A0 [mag] typical of their direction (a toy value: a
#: real table would take A0 per star from a dust map, e.g. cf.extinction_from_dustmap).
CLUSTERS = {"Pleiades": 0.12, "Praesepe": 0.08, "NGC6811": 0.22}
STARS_PER_CLUSTER = 16
SEED = 42


def write_user_csv(catalogue: pd.DataFrame, path: Path, rng: np.random.Generator) -> pd.DataFrame:
    """Write a user-style CSV with reddened colours; return the truth (intrinsic colours) too."""
    # The published training cuts (CMD, photometry, RUWE < 1.4) pick clean single main-sequence
    # stars. We also keep 0.5 < (BP-RP)0 < 2.5 mag: F, G, K and early M dwarfs, where the Gaia
    # extinction law is valid (redder stars get clamped coefficients and a warning).
    clean, _ = cf.training_sample(catalogue)
    clean = clean[clean["BPRP_0"].between(0.5, 2.5)]
    picked = []
    for name, a0 in CLUSTERS.items():
        members = clean[clean["cluster"] == name]
        rows = members.sample(STARS_PER_CLUSTER, random_state=int(rng.integers(2**31)))
        # each star gets its own A0, scattered around the cluster's value
        picked.append(rows.assign(a0=np.clip(a0 + rng.normal(0, 0.02, len(rows)), 0, None)))
    stars = pd.concat(picked, ignore_index=True)

    # Redden: E(BP-RP) = A0 (k_BP - k_RP), where the coefficients k depend on the *intrinsic*
    # colour and on A0 itself (the Gaia EDR3 law of Riello et al. 2021).
    k_bp, k_rp, _ = cf.extinction_coefficients(stars["BPRP_0"].to_numpy(), stars["a0"].to_numpy())
    excess = stars["a0"].to_numpy() * (k_bp - k_rp)

    user = pd.DataFrame({
        "source_id": stars["GaiaDR3_ID"],
        "host_cluster": stars["cluster"],                     # only so the figure can colour them
        "bp_rp": (stars["BPRP_0"] + excess).round(4),         # observed colour [mag]
        "bp_rp_error": stars["e_BPRP_0"].round(4),            # its 1-sigma error [mag]
        "a0": stars["a0"].round(4),                           # extinction at 550 nm [mag]
        "a0_error": 0.02,                                     # its 1-sigma error [mag]
        "period_days": stars["Prot"].round(4),                # rotation period [d]
    })  # fmt: skip

    # Three bad rows, as real tables have them. None of them will be dropped.
    bad = pd.DataFrame({
        "source_id": [1, 2, 3],
        "host_cluster": ["(bad row)"] * 3,
        "bp_rp": [1.10, 1.35, 1.60],
        "bp_rp_error": [0.02, 0.02, 0.60],   # row 3: a 0.6 mag colour error, outside the training domain
        "a0": [0.10, np.nan, 0.10],          # row 2: no extinction estimate
        "a0_error": [0.02, 0.02, 0.02],
        "period_days": [np.nan, 9.0, 9.0],   # row 1: no period measured
    })  # fmt: skip
    user = pd.concat([user, bad], ignore_index=True)
    user.to_csv(path, index=False)  # missing values are written as empty fields
    truth = pd.Series(stars["BPRP_0"].to_numpy(), index=stars["GaiaDR3_ID"].to_numpy(), name="true_bprp0")
    return truth


def plot(ages: pd.DataFrame, posteriors: np.ndarray, literature: dict[str, float], path: Path) -> None:
    import matplotlib.pyplot as plt

    from chronoflow.inference.posterior import age_grid

    fig, (ax, ax_post) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.3, 1]})
    palette = dict(zip(CLUSTERS, ["tab:blue", "tab:orange", "tab:green"]))
    for name, colour in palette.items():
        s = ages[(ages["host_cluster"] == name) & ages["log10_age_median"].notna()]
        ax.errorbar(s["BPRP_0"], s["age_myr_median"],
                    yerr=[s["age_myr_median"] - s["age_myr_p16"], s["age_myr_p84"] - s["age_myr_median"]],
                    fmt="o", ms=4, color=colour, ecolor=colour, elinewidth=0.8, alpha=0.8,
                    label=f"{name} stars (literature {literature[name]:.0f} Myr)")  # fmt: skip
        ax.axhline(literature[name], color=colour, ls="--", lw=1)
    flagged = ages[(ages["flag"] != "") & ages["log10_age_median"].notna()]
    ax.scatter(flagged["BPRP_0"], flagged["age_myr_median"], marker="s", s=70, facecolor="none",
               edgecolor="crimson", label="aged but flagged (outside training domain)")
    ax.set_yscale("log")
    ax.set_xlabel("de-reddened colour (BP-RP)$_0$ [mag]")
    ax.set_ylabel("age [Myr] (median, 16-84 %)")
    ax.set_title("single-star ages; dashed: literature cluster ages")
    ax.legend(frameon=False, fontsize=8, loc="lower right")

    # One example star per cluster, the K dwarf nearest (BP-RP)0 = 1.2 mag: the full posterior,
    # not just three numbers. (Young M dwarfs, like most of the Pleiades sample, have not started
    # to spin down yet, so their periods say little beyond "young": see their long error bars.)
    grid = age_grid()
    for name, colour in palette.items():
        s = ages[(ages["host_cluster"] == name) & ages["log10_age_median"].notna()]
        row = (s["BPRP_0"] - 1.2).abs().idxmin()
        ax_post.plot(10**grid, posteriors[row], color=colour,
                     label=f"{name}: P = {ages.at[row, 'Prot']:.1f} d, (BP-RP)$_0$ = {ages.at[row, 'BPRP_0']:.2f}")
        ax_post.axvline(literature[name], color=colour, ls="--", lw=1)
    ax_post.set_xscale("log")
    ax_post.set_xlim(3, 2e4)
    ax_post.set_xlabel("age [Myr]")
    ax_post.set_ylabel("posterior density [per dex of age]")
    ax_post.set_title("posteriors of three example stars")
    ax_post.legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", default=os.environ.get("CHRONOFLOW_CATALOGUE"),
                        help="rotator catalogue (default: $CHRONOFLOW_CATALOGUE, else the published one)")
    parser.add_argument("--out-dir", default=".", help="where the CSVs and the figure go")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    # --- 1. make a user CSV (skip this step with your own file) --------------------------------
    catalogue = cf.load_catalogue(args.catalogue)
    csv = out_dir / "my_stars.csv"
    truth = write_user_csv(catalogue, csv, rng)
    print(f"wrote {csv}: observed BP-RP, A0 and periods for {len(truth)} stars + 3 bad rows")

    # --- 2. read it back and de-redden ---------------------------------------------------------
    mine = pd.read_csv(csv)
    # deredden_table solves (BP-RP)0 = (BP-RP)obs - A0 [k_BP - k_RP]((BP-RP)0, A0) star by star and
    # propagates both errors. It adds BPRP_0, e_BPRP_0, E_BPRP and DERED_FLAG (a bitmask of
    # chronoflow.data.extinction.DeredFlag: 0 = fine, 1 = bad input such as a missing A0, ...).
    # Have E(B-V) instead of A0? Use ebv_col="my_ebv_column" (A0 = 3.1 E(B-V)).
    mine = cf.deredden_table(mine, bprp_col="bp_rp", a0_col="a0", e_bprp_col="bp_rp_error", e_a0_col="a0_error")
    # chronoflow wants the period in a column called Prot [d]
    mine = mine.rename(columns={"period_days": "Prot"})
    recovered = mine.set_index("source_id")["BPRP_0"].reindex(truth.index)
    print(f"de-reddening recovers the catalogue's (BP-RP)0 to {np.abs(recovered - truth).max():.1e} mag")

    # --- 3. age every row ----------------------------------------------------------------------
    # return_posteriors=True also gives each star's posterior on the age grid [rows, ages].
    ages, posteriors = cf.star_ages(mine, return_posteriors=True)

    # --- 4. read the result --------------------------------------------------------------------
    shown = ages[["source_id", "host_cluster", "bp_rp", "a0", "BPRP_0", "e_BPRP_0", "Prot", "age_myr_p16",
                  "age_myr_median", "age_myr_p84", "DERED_FLAG", "flag"]]
    with pd.option_context("display.width", 160, "display.max_rows", 100):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    n_bad = int(ages["log10_age_median"].isna().sum())
    print(f"\n{len(ages)} rows in, {len(ages)} rows out: {n_bad} could not be aged (NaN ages, see 'flag'), "
          f"{int((ages['flag'].str.contains('outside_domain')).sum())} aged outside the training domain")
    ages.to_csv(out_dir / "my_stars_ages.csv", index=False)

    # A single star is a poor clock, but its posterior is honest: how often does the 16-84 %
    # interval contain the literature age of the star's cluster? (about 68 % if calibrated)
    literature = catalogue.groupby("cluster")["fiducial_age_Myr"].median().to_dict()
    good = ages[ages["host_cluster"].isin(CLUSTERS) & ages["age_myr_median"].notna()]
    lit = good["host_cluster"].map(literature)
    inside = (good["age_myr_p16"] <= lit) & (lit <= good["age_myr_p84"])
    print(f"literature cluster age inside the star's 16-84 % interval for {inside.mean():.0%} of {len(good)} stars")

    path = out_dir / "single_star_ages.png"
    plot(ages, posteriors, literature, path)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
