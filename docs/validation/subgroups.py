"""Leave-one-out of the two multi-age associations, aged subgroup by subgroup.

    python docs/validation/subgroups.py [--catalogue PATH] [--clusters ScoCen Taurus] [--jobs 2]

Sco-Cen and Taurus are one "cluster" each in the leave-one-out (all their subgroups are left out
together, as for any other cluster), but their subgroups have their own calibration ages (Sco-Cen:
3.7 - 18.75 Myr, Taurus: 1.57 - 17.66 Myr). ``chronoflow validate loo`` ages each association
as one coeval group and compares the result with the median subgroup age. This script retrains
the same folds (the shipped recipe: every member, its early-stopped epochs, seeds 0-4) and
ages each association both ways, as a whole and subgroup by subgroup, against each subgroup's
own age. It writes ``subgroups.csv`` beside itself, and first a model-free check,
``young_interpolation.csv``: where a straight line in log age through the median periods of the
neighbouring calibration clusters would put Sco-Cen and h Per, colour bin by colour bin.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def _fold(args):
    from chronoflow.analysis.validation import fold_model
    from chronoflow.errors import ChronoflowError
    from chronoflow.flows.flow import FlowConfig
    from chronoflow.inference.ages import cluster_age

    catalogue, name, card, config, epochs, bootstrap = args
    model = fold_model(catalogue, name, FlowConfig(**card["architecture"]), config, epochs, bootstrap)
    held = catalogue[catalogue["cluster"] == name]
    rows = []
    whole = cluster_age(held, name, model=model)
    rows.append({"cluster": name, "group": "(whole association)", "n_used": whole.n_used,
                 "fiducial_age_myr": float(whole.stars["fiducial_age_Myr"].median()), **whole.summary,
                 "statistical_dex": whole.error_dex["statistical"], "total_dex": whole.error_dex["total"]})  # fmt: skip
    for group in sorted(held["subgroup"].unique()):
        part = held[held["subgroup"] == group]
        try:
            res = cluster_age(part, group, by="subgroup", model=model)
        except ChronoflowError as exc:  # a subgroup with too few usable stars: say so in the table
            rows.append({"cluster": name, "group": group, "n_used": 0, "note": str(exc).splitlines()[0]})
            continue
        rows.append({"cluster": name, "group": group, "n_used": res.n_used,
                     "fiducial_age_myr": float(part["fiducial_age_Myr"].median()), **res.summary,
                     "statistical_dex": res.error_dex["statistical"], "total_dex": res.error_dex["total"]})  # fmt: skip
    return rows


def interpolated_ages(catalogue: pd.DataFrame, targets, bins=(0.0, 0.8, 1.2, 1.6, 2.0, 2.6, 4.3), min_stars: int = 10) -> pd.DataFrame:
    """Model-free check: per colour bin, the age at which a straight line in log age through the
    median log10 Prot of the nearest younger and older calibration clusters (other than the
    target, at least ``min_stars`` stars in the bin, ages not revised by the paper) reaches the
    target's median log10 Prot."""
    from chronoflow.data.catalogue import REVISED_CLUSTERS, training_sample

    rows = training_sample(catalogue)[0]
    rows = rows[rows["BPRP_0"].notna() & ~rows["cluster"].isin(REVISED_CLUSTERS)]
    rows = rows.assign(log_p=np.log10(rows["Prot"]), log_age=np.log10(rows["fiducial_age_Myr"]),
                       colour_bin=pd.cut(rows["BPRP_0"], list(bins)))  # fmt: skip
    med = (rows.groupby(["cluster", "colour_bin"], observed=True)
           .agg(n=("log_p", "size"), log_p=("log_p", "median"), log_age=("log_age", "median")).reset_index())  # fmt: skip
    out = []
    for target in targets:
        for interval, sub in med.groupby("colour_bin", observed=True):
            here = sub[sub["cluster"] == target]
            if here.empty or here["n"].iloc[0] < min_stars:
                continue
            t = here.iloc[0]
            others = sub[(sub["cluster"] != target) & (sub["n"] >= min_stars)]
            young = others[others["log_age"] < t["log_age"]].sort_values("log_age").tail(1)
            old = others[others["log_age"] > t["log_age"]].sort_values("log_age").head(1)
            row = {"cluster": target, "colour_lo": interval.left, "colour_hi": interval.right, "n": int(t["n"]),
                   "log10_prot_median": t["log_p"], "fiducial_age_myr": 10 ** t["log_age"]}  # fmt: skip
            if young.empty or old.empty:
                out.append({**row, "note": "no calibration cluster on one side"})
                continue
            (y0, a0, c0), (y1, a1, c1) = [(f["log_p"].iloc[0], f["log_age"].iloc[0], f["cluster"].iloc[0]) for f in (young, old)]
            implied = a0 + (t["log_p"] - y0) * (a1 - a0) / (y1 - y0)
            out.append({**row, "younger": c0, "younger_age_myr": 10**a0, "younger_log10_prot": y0, "older": c1,
                        "older_age_myr": 10**a1, "older_log10_prot": y1, "implied_age_myr": 10**implied,
                        "residual_dex": implied - t["log_age"]})  # fmt: skip
    return pd.DataFrame(out)


def main() -> None:
    import chronoflow as cf
    from chronoflow.flows.artifact import load_model
    from chronoflow.flows.ensemble import card_members
    from chronoflow.flows.training import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=HERE.parents[1].parent / "shared" / "catalogs" / "prot_catalogue.csv")
    parser.add_argument("--clusters", nargs="+", default=["ScoCen", "Taurus"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-folds", action="store_true", help="only the model-free interpolation (no training)")
    args = parser.parse_args()
    card = load_model().card
    _, bootstrap, epochs = card_members(card)
    config = replace(TrainConfig.from_dict(card["training"]), val_clusters=(), refit_all=False, threads=1)
    catalogue = cf.load_catalogue(args.catalogue)
    interp = interpolated_ages(catalogue, ["ScoCen", "HPer"])
    interp.to_csv(HERE / "young_interpolation.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(interp.round(3).to_string(index=False))
    if args.no_folds:
        return
    tasks = [(catalogue, name, card, config, epochs, bootstrap) for name in args.clusters]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = [row for part in pool.map(_fold, tasks) for row in part]
    table = pd.DataFrame(rows)
    table["residual_dex"] = table["median"] - np.log10(table["fiducial_age_myr"])
    table.to_csv(HERE / "subgroups.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[["cluster", "group", "n_used", "fiducial_age_myr", "median", "p16", "p84", "residual_dex",
                     "statistical_dex", "total_dex"]].round(3).to_string(index=False))  # fmt: skip


if __name__ == "__main__":
    main()
