"""Single-star intervals out of sample: leave-one-cluster-out coverage of ``star_ages``.

    python docs/validation/star_loo.py [--catalogue PATH] [--jobs 2] [--clusters NAME ...]

For each cluster, the shipped recipe (every member, its early-stopped epochs, seeds 0-4, as
``chronoflow validate loo``) is retrained without it, and every star of the cluster that passes
the training cuts is aged on its own with :func:`chronoflow.star_ages` (defaults: adaptive grid,
log-flat prior). A star is *covered* when its own calibration age (its subgroup's, for Sco-Cen
and Taurus) lies inside the 16-84 % interval the function returns (open-ended where the row is
flagged beyond the calibration ages), or inside the central 95 % of its posterior. The same
stars aged by the shipped model, which saw them, give the in-sample coverage. Writes
``star_loo.csv`` (one row per cluster) beside itself and prints the summary.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def _coverage(stars: pd.DataFrame, model) -> dict:
    from chronoflow.inference.ages import star_ages
    from chronoflow.inference.posterior import age_grid, quantiles

    table, post = star_ages(stars, model=model, return_posteriors=True)
    truth = np.log10(stars["fiducial_age_Myr"].to_numpy(float))
    aged = table["log10_age_median"].notna().to_numpy()
    q = quantiles(post[aged], age_grid(), (0.025, 0.975))
    t = truth[aged]
    inside68 = (table["log10_age_p16"].to_numpy()[aged] <= t) & (t <= table["log10_age_p84"].to_numpy()[aged])
    inside95 = (q[:, 0] <= t) & (t <= q[:, 1])
    half = 0.5 * (table["log10_age_p84"] - table["log10_age_p16"]).to_numpy()[aged]
    return {"n_aged": int(aged.sum()), "coverage_68": float(inside68.mean()), "coverage_95": float(inside95.mean()),
            "median_half_width_dex": float(np.median(half)),
            "median_abs_error_dex": float(np.median(np.abs(table["log10_age_median"].to_numpy()[aged] - t)))}  # fmt: skip


def _fold(args):
    from chronoflow.analysis.validation import fold_model
    from chronoflow.data.catalogue import REVISED_CLUSTERS, training_sample
    from chronoflow.flows.flow import FlowConfig

    catalogue, name, card, config, epochs, bootstrap, shipped = args
    model = fold_model(catalogue, name, FlowConfig(**card["architecture"]), config, epochs, bootstrap)
    stars = training_sample(catalogue[catalogue["cluster"] == name])[0]
    out = {"cluster": name, "fiducial_age_myr": float(stars["fiducial_age_Myr"].median()), "n_stars": len(stars),
           "revised_in_paper": name in REVISED_CLUSTERS}  # fmt: skip
    out.update({f"loo_{k}": v for k, v in _coverage(stars, model).items()})
    out.update({f"shipped_{k}": v for k, v in _coverage(stars, shipped).items()})
    return out


def main() -> None:
    import chronoflow as cf
    from chronoflow.flows.artifact import load_model
    from chronoflow.flows.ensemble import card_members
    from chronoflow.flows.training import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=HERE.parents[2].parent / "shared" / "catalogs" / "prot_catalogue.csv")
    parser.add_argument("--clusters", nargs="+", default=None)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    shipped = load_model()
    card = shipped.card
    _, bootstrap, epochs = card_members(card)
    config = replace(TrainConfig.from_dict(card["training"]), val_clusters=(), refit_all=False, threads=1)
    catalogue = cf.load_catalogue(args.catalogue)
    names = args.clusters or sorted(catalogue["cluster"].unique())
    tasks = [(catalogue, name, card, config, epochs, bootstrap, shipped) for name in names]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = []
        for row in pool.map(_fold, tasks):
            rows.append(row)
            print(f"{row['cluster']}: {row['loo_n_aged']} stars, out of sample 68 % {row['loo_coverage_68']:.3f}, "
                  f"in sample {row['shipped_coverage_68']:.3f}", flush=True)
    table = pd.DataFrame(rows).sort_values("fiducial_age_myr").reset_index(drop=True)
    table.to_csv(HERE / "star_loo.csv", index=False)
    kept = table[~table["revised_in_paper"]]
    for prefix, label in (("loo", "out of sample (leave-one-out)"), ("shipped", "in sample (shipped model)")):
        n = kept[f"{prefix}_n_aged"]
        print(f"{label}: {int(n.sum())} stars of {len(kept)} clusters; star-weighted coverage "
              f"68 % {np.average(kept[f'{prefix}_coverage_68'], weights=n):.3f}, "
              f"95 % {np.average(kept[f'{prefix}_coverage_95'], weights=n):.3f}; "
              f"median over clusters of the 68 % coverage {kept[f'{prefix}_coverage_68'].median():.3f}")


if __name__ == "__main__":
    main()
