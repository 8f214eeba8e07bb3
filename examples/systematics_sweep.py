"""Error budget of a cluster age: statistical error, each systematic, and the total.

    python examples/systematics_sweep.py [CLUSTER] [--catalogue PATH] [--out-dir DIR]

A cluster age from the fast posterior (``examples/age_a_cluster.py``) has a *statistical* error
(how well the periods pin down the age if every assumption is right) and the model's own error
(ensemble spread and the leave-one-out calibrated term). A systematics sweep
(:func:`chronoflow.analysis.systematics.systematics_sweep`) ages the cluster again under changed
assumptions and turns the shifts of the median age into a budget, component by component, each
with its own uncertainty:

* ``extinction``: a cluster-wide E(BP-RP) error of 0.03 mag, integrated by 5-node Gauss-Hermite
  quadrature; ``dust_maps``: alternative colour columns that we compute here with
  :mod:`chronoflow.data.extinction` (a 20 % larger A0, as another dust map might give, and a
  colour-independent extinction coefficient);
* ``membership``: hard cuts at membership 0.5 / 0.7 / 0.9 instead of weighting (their own
  statistical noise removed) and the HDBSCAN membership column;
* ``age_scale``: every calibration age 0.1 dex older or younger together (exact);
* ``calibration``: the first member's recipe refitted from scratch with every other training
  cluster's age perturbed by 0.05 dex, paired with the same refit on the fiducial ages;
* ``model`` and ``out_of_sample``: the ensemble spread and the leave-one-out term.

The sweep prints both tables and writes ``<cluster>_budget.png`` (the budget,
:func:`chronoflow.plotting.plot_budget`) and ``<cluster>_variants.png`` (every variant's age).
Refits are cached in ``<out-dir>/refits``, keyed by every input: a second run trains nothing.

The default cluster, NGC 6866 (735 Myr, ~1.4 kpc, 124 rotators), is small and reddened, so the
extinction component matters. The sweep trains 3 refits from scratch (the fiducial ages, a null
refit for the training-noise floor, one perturbed), about 25 s each on one core.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import chronoflow as cf
from chronoflow.data.extinction import DeredFlag, ExtinctionRangeWarning
from chronoflow.plotting import plot_budget
from chronoflow.analysis.systematics import refit_count, systematics_sweep

SEED = 0
#: A0 [mag] towards the default cluster: E(B-V) ~ 0.17 in the literature, A0 = 3.1 E(B-V). Only
#: used to build the alternative colour columns below; the catalogue's own colours were
#: de-reddened star by star with a 3-D dust map.
CLUSTER_A0 = {"NGC6866": 0.53}


def alternative_colours(stars: pd.DataFrame, a0: float) -> pd.DataFrame:
    """Two alternative (BP-RP)0 columns, as if the de-reddening had been done differently."""
    colour = stars["BPRP_0"].to_numpy(float)
    k_bp, k_rp, _ = cf.extinction_coefficients(colour, a0)
    observed = colour + a0 * (k_bp - k_rp)  # undo the de-reddening: back to the observed colour
    # (a) another dust map that gives 20 % more extinction: de-redden the observed colour again.
    # Stars redder than (BP-RP)0 = 2.5 mag lie beyond the Gaia law's calibration: deredden_bprp
    # solves them with the coefficients at the edge, flags them and warns once; we report them.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExtinctionRangeWarning)
        dered = cf.deredden_bprp(observed, a0=1.2 * a0)
    if caught:
        n_edge = int(np.count_nonzero(dered.flags & DeredFlag.COLOUR_OUT_OF_RANGE))
        print(f"note: {n_edge} star(s) redder than the extinction law's range, de-reddened with its edge coefficients")
    more_dust = dered.bprp0
    # (b) a colour-independent law: one E(BP-RP)/A0 for every star, taken at a solar colour
    k_bp_sun, k_rp_sun, _ = cf.extinction_coefficients(0.82, a0)
    constant_k = observed - a0 * (k_bp_sun - k_rp_sun)
    return stars.assign(BPRP_0_more_dust=more_dust, BPRP_0_constant_k=constant_k)


def plot_variants(result, path: Path) -> None:
    """Every variant's median age and 16-84 % interval beside the nominal one."""
    import matplotlib.pyplot as plt

    v = result.variants
    nominal = result.nominal.summary
    fig, ax = plt.subplots(figsize=(9.5, 0.32 * len(v) + 1.8))
    palette = {"extinction": "tab:red", "dust_maps": "tab:orange", "membership": "tab:green", "age_scale": "tab:blue",
               "calibration": "tab:purple"}
    y = np.arange(len(v))
    for component, colour in palette.items():
        s = v["component"] == component
        ax.errorbar(v.loc[s, "log10_age_median"], y[s],
                    xerr=[v.loc[s, "log10_age_median"] - v.loc[s, "log10_age_p16"],
                          v.loc[s, "log10_age_p84"] - v.loc[s, "log10_age_median"]],
                    fmt="o", color=colour, ms=4, label=component)  # fmt: skip
    ax.axvline(nominal["median"], color="k", lw=1, label="nominal median")
    ax.axvspan(nominal["p16"], nominal["p84"], color="0.85", zorder=0, label="nominal 16-84 %")
    ax.set_yticks(y, v["variant"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("log10 age [log10 Myr] (median, 16-84 %)")
    top = ax.secondary_xaxis("top", functions=(lambda x: 10**x, lambda a: np.log10(np.maximum(a, 1e-9))))
    top.set_xlabel("age [Myr]")
    ax.set_title(f"{result.nominal.cluster}: the age under each changed assumption")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cluster", nargs="?", default="NGC6866")
    parser.add_argument("--catalogue", default=os.environ.get("CHRONOFLOW_CATALOGUE"),
                        help="rotator catalogue (default: $CHRONOFLOW_CATALOGUE, else the published one)")
    parser.add_argument("--out-dir", default=".", help="where the figures and the refit cache go")
    parser.add_argument("--a0", type=float, default=None,
                        help="A0 [mag] towards the cluster for the alternative colour columns "
                             "(default: 0.53 for NGC6866, else 0.3)")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    catalogue = cf.load_catalogue(args.catalogue)
    model = cf.load_model()

    # Alternative colour columns for the extinction component (only for the cluster's rows; the
    # sweep reads them through colour_columns={label: column}).
    a0 = args.a0 if args.a0 is not None else CLUSTER_A0.get(args.cluster, 0.3)
    rows = catalogue["cluster"] == args.cluster
    table = catalogue.copy()
    table.loc[rows, ["BPRP_0_more_dust", "BPRP_0_constant_k"]] = alternative_colours(
        catalogue[rows], a0)[["BPRP_0_more_dust", "BPRP_0_constant_k"]]

    # The sweep. Every component is a list of variants; each variant is a fast cluster_age call.
    #  - calibration_catalogue: the table the first member's recipe is refitted on, from scratch
    #    (None skips the calibration refits: then the sweep takes seconds). The cluster itself is
    #    removed from it first, so its calibration term is not measured in-sample.
    #  - n_calibration sets their cost: 1 perturbed refit here (+ the unperturbed and the null
    #    refit); the package default is 4. More refits give a steadier rms (see the
    #    uncertainty column).
    #  - cache: where refits are stored, one file per refit named by a hash of all its inputs (the
    #    model's weights, the catalogue's checksum, the age offsets, the recipe). The default is
    #    the user cache; here it is inside --out-dir so the example is self-contained.
    start, refits_before = time.perf_counter(), refit_count()
    result = systematics_sweep(
        table, args.cluster, model=model,
        colour_columns={f"A0 x 1.2 ({1.2 * a0:.2f} mag)": "BPRP_0_more_dust",
                        "constant k_BP - k_RP": "BPRP_0_constant_k"},
        calibration_catalogue=catalogue, calibration_scale_dex=0.05, n_calibration=1,
        seed=SEED, cache=out_dir / "refits", progress=False,
    )  # fmt: skip
    print(f"sweep of {result.nominal.cluster}: {len(result.variants)} variants, "
          f"{refit_count() - refits_before} refits trained, {time.perf_counter() - start:.0f} s")

    nominal = result.nominal
    age = nominal.age_myr
    print(f"nominal age: {age['median']:.0f} Myr (16-84 %: {age['p16']:.0f} - {age['p84']:.0f}), "
          f"log10 age/Myr = {nominal.summary['median']:.3f}, {nominal.n_used} stars used\n")
    with pd.option_context("display.width", 160):
        print("every variant (shift_dex = its median minus the nominal median; calibration refits: minus the unperturbed refit):")
        print(result.variants.drop(columns="note").round(4).to_string(index=False))
    print()
    print(result.to_markdown())
    total = result.component("total")
    print(f"\n=> log10 age/Myr = {nominal.summary['median']:.3f} +- {total['systematic_dex']:.3f} (total, itself uncertain by "
          f"{total['uncertainty_dex']:.3f}), i.e. {age['median']:.0f} Myr within a factor {10 ** total['systematic_dex']:.2f}")

    # The refits are cached: sweeping again (same settings, same cache) trains nothing.
    before = refit_count()
    systematics_sweep(table, args.cluster, model=model, calibration_catalogue=catalogue, n_calibration=1, seed=SEED,
                      cache=out_dir / "refits", progress=False, reddening_sigma=0.0, membership_thresholds=(),
                      alt_membership=None, age_scale_dex=0.0)  # fmt: skip
    print(f"second sweep with the same cache: {refit_count() - before} refits trained "
          f"({len(list((out_dir / 'refits').glob('*.pt')))} cached in {out_dir / 'refits'})")

    plot_budget(result, path=out_dir / f"{nominal.cluster}_budget.png")
    plot_variants(result, out_dir / f"{nominal.cluster}_variants.png")
    print(f"figures: {out_dir / f'{nominal.cluster}_budget.png'}, {out_dir / f'{nominal.cluster}_variants.png'}")


if __name__ == "__main__":
    main()
