"""Leave-one-out of the two multi-age associations, aged subgroup by subgroup.

    python docs/validation/subgroups.py [--catalogue PATH] [--clusters ScoCen Taurus] [--jobs 2]

Sco-Cen and Taurus are one "cluster" each in the leave-one-out (all their subgroups are left out
together, as for any other cluster), but their subgroups have their own calibration ages (Sco-Cen:
3.7 - 18.75 Myr, Taurus: 1.57 - 17.66 Myr). ``chronoflow validate loo`` ages each association
as one coeval group and compares the result with the median subgroup age. This script retrains
the same folds (the shipped recipe: every member, its early-stopped epochs, seeds 0-4) and
ages each association both ways, as a whole and subgroup by subgroup, against each subgroup's
own age. It writes ``subgroups.csv`` beside itself.
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
    import torch

    from chronoflow.flows.ensemble import FlowEnsemble, train_ensemble
    from chronoflow.flows.flow import FlowConfig
    from chronoflow.inference.ages import cluster_age

    catalogue, name, card, config, epochs, bootstrap = args
    torch.set_num_threads(1)
    rest = catalogue[catalogue["cluster"] != name]
    model = train_ensemble(rest, len(epochs), FlowConfig(**card["architecture"]), config, bootstrap=bootstrap, progress=False,
                           baseline=False, member_epochs=epochs).model  # fmt: skip
    model = FlowEnsemble(list(model.members))
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
        except Exception as exc:  # a subgroup with too few usable stars: say so in the table
            rows.append({"cluster": name, "group": group, "n_used": 0, "note": str(exc).splitlines()[0]})
            continue
        rows.append({"cluster": name, "group": group, "n_used": res.n_used,
                     "fiducial_age_myr": float(part["fiducial_age_Myr"].median()), **res.summary,
                     "statistical_dex": res.error_dex["statistical"], "total_dex": res.error_dex["total"]})  # fmt: skip
    return rows


def main() -> None:
    import chronoflow as cf
    from chronoflow.flows.artifact import load_model
    from chronoflow.flows.ensemble import card_members
    from chronoflow.flows.training import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=HERE.parents[2].parent / "shared" / "catalogs" / "prot_catalogue.csv")
    parser.add_argument("--clusters", nargs="+", default=["ScoCen", "Taurus"])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    card = load_model().card
    _, bootstrap, epochs = card_members(card)
    config = replace(TrainConfig.from_dict(card["training"]), val_clusters=(), refit_all=False, threads=1)
    catalogue = cf.load_catalogue(args.catalogue)
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
