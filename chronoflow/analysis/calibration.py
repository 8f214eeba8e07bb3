"""Model checks: posterior predictive checks on the training clusters, and coverage of the age
intervals on synthetic clusters and stars.

* :func:`predictive_check`: for each cluster and colour bin, the probability integral transform
  ``PIT_i = F(log P_i | fiducial age, colour_i, error_i)`` of the observed periods under the flow.
  If the flow describes the cluster, the PIT values are uniform; their KS distance from uniform
  measures the mismatch between the observed and model log Prot distributions in that bin.
* :func:`age_coverage`: synthetic clusters (and single stars) at random ages, drawn from the flow
  with optional field contamination, aged with the fast method: the fraction of true ages inside
  the 68 % and 95 % intervals. Nominal coverage means the fast posteriors are calibrated for data
  the model describes; contamination and outliers test the mixture likelihood.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.catalogue import training_sample
from ..flows.flow import RotationModel, make_context
from ..inference.ages import cluster_age, star_ages
from ..inference.posterior import age_grid, quantiles
from .forward import synthetic_cluster

__all__ = ["COLOUR_BINS", "age_coverage", "predictive_check"]

#: Default colour bins [mag]: F/G, K, early M, M dwarfs.
COLOUR_BINS = (0.0, 0.8, 1.2, 1.8, 2.6, 4.3)


def predictive_check(catalogue: pd.DataFrame, model: RotationModel, colour_bins=COLOUR_BINS, min_stars: int = 10) -> pd.DataFrame:
    """KS distance between observed and model log Prot distributions per cluster and colour bin.

    Parameters
    ----------
    catalogue
        The catalogue (the published cuts are applied).
    model
        The model to check.
    colour_bins
        Bin edges in (BP-RP)0 [mag].
    min_stars
        Bins with fewer stars are skipped.

    Returns
    -------
    pandas.DataFrame
        ``cluster``, ``fiducial_age_myr``, ``colour_lo``, ``colour_hi``, ``n``, ``ks`` (KS
        distance of the PIT values from uniform) and ``p_value``.
    """
    from scipy import stats

    kept, _ = training_sample(catalogue)
    ctx = make_context(kept["fiducial_age_Myr"].to_numpy(float), kept["BPRP_0"].to_numpy(float), kept["e_BPRP_0"].to_numpy(float))
    pit = model.cdf(np.log10(kept["Prot"].to_numpy(float)), ctx)
    # Each star's PIT uses its own (subgroup) age; rows are labelled by the cluster's median age.
    cluster_age_myr = kept.groupby("cluster")["fiducial_age_Myr"].median()
    kept = kept.assign(pit=pit, colour_bin=pd.cut(kept["BPRP_0"], list(colour_bins)))
    rows = []
    for (name, interval), group in kept.groupby(["cluster", "colour_bin"], observed=True):
        if len(group) < min_stars:
            continue
        ks = stats.kstest(group["pit"], "uniform")
        rows.append({"cluster": name, "fiducial_age_myr": float(cluster_age_myr[name]),
                     "colour_lo": interval.left, "colour_hi": interval.right, "n": len(group),
                     "ks": float(ks.statistic), "p_value": float(ks.pvalue)})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["fiducial_age_myr", "colour_lo"]).reset_index(drop=True)


def age_coverage(
    model: RotationModel,
    *,
    n_clusters: int = 100,
    n_stars: int = 100,
    f_field: float = 0.1,
    f_outlier: float = 0.05,
    n_single: int = 2000,
    colours=None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Coverage of the fast age intervals on synthetic data drawn from ``model``.

    Parameters
    ----------
    model
        The model that generates and ages the data.
    n_clusters, n_stars
        Synthetic clusters and rows per cluster (ages log-uniform over the calibrated range).
    f_field, f_outlier
        Field contamination and outlier fraction of each cluster (see
        :func:`~chronoflow.analysis.forward.synthetic_cluster`).
    n_single
        Synthetic single stars (uncontaminated) for the single-star coverage. They are aged
        twice: with a prior that matches how their true ages were drawn (log-flat on the truth
        range, where the intervals must cover at the nominal rate) and with the default prior
        (log-flat on the whole 1 Myr - 13.8 Gyr grid, as a user gets them).
    colours
        Colour pool [mag] to draw from; default uniform on [0.5, 3.0] mag.
    seed
        Seed of everything.

    Returns
    -------
    dict
        ``{"clusters": {...}, "single_stars": {...}, "single_stars_default_prior": {...}}``, each
        with ``n``, ``coverage_68``, ``coverage_95`` and ``median_abs_error_dex``; clusters also
        ``median_width_68_dex``. ``single_stars`` uses the prior that matches the truths.
    """
    rng = np.random.default_rng(seed)
    lo, hi = model.domain.log10_age_myr
    truth = rng.uniform(lo + 0.05, hi - 0.05, n_clusters)
    inside68, inside95, errors, widths = [], [], [], []
    for i, log_age in enumerate(truth):  # each cluster is one batched grid computation
        df = synthetic_cluster(10**log_age, n_stars, colours=colours, f_field=f_field, f_outlier=f_outlier,
                               seed=int(rng.integers(2**31)), model=model)  # fmt: skip
        res = cluster_age(df, model=model, f_out=max(f_outlier, 0.05))
        q = quantiles(res.posterior, res.grid, (0.025, 0.16, 0.5, 0.84, 0.975))
        inside68.append(q[1] <= log_age <= q[3])
        inside95.append(q[0] <= log_age <= q[4])
        errors.append(abs(q[2] - log_age))
        widths.append(q[3] - q[1])
    out = {
        "clusters": {"n": n_clusters, "coverage_68": float(np.mean(inside68)), "coverage_95": float(np.mean(inside95)),
                     "median_abs_error_dex": float(np.median(errors)), "median_width_68_dex": float(np.median(widths))},
    }  # fmt: skip
    star_truth = rng.uniform(lo + 0.05, hi - 0.05, n_single)
    colour = rng.choice(np.asarray(colours, dtype=float), n_single) if colours is not None else rng.uniform(0.5, 3.0, n_single)
    err = rng.uniform(0.01, 0.05, n_single)
    log_p = model.sample(make_context(10**star_truth, colour, err), 1, seed=int(rng.integers(2**31)), check_domain=False)[0]
    stars = pd.DataFrame({"Prot": 10**log_p, "BPRP_0": colour, "e_BPRP_0": err})
    # Two priors: one that matches how the truths were drawn (log-flat on the truth range: the
    # posterior is then exact and its intervals must cover at the nominal rate), and the default
    # one (log-flat on the whole grid), which is wider than the truths and so over-covers them.
    for key, grid in (("single_stars", age_grid(lo + 0.05, hi - 0.05)), ("single_stars_default_prior", age_grid())):
        # The flow's own posterior (model_error=False): the truths were drawn from this very model,
        # so the single-star model-error term (what the flow gets wrong about real stars) does not apply.
        _, post = star_ages(stars, model=model, grid=grid, include_out_of_domain=True, return_posteriors=True, model_error=False)
        q = quantiles(post, grid, (0.025, 0.16, 0.5, 0.84, 0.975))
        out[key] = {
            "n": n_single,
            "coverage_68": float(np.mean((q[:, 1] <= star_truth) & (star_truth <= q[:, 3]))),
            "coverage_95": float(np.mean((q[:, 0] <= star_truth) & (star_truth <= q[:, 4]))),
            "median_abs_error_dex": float(np.median(np.abs(q[:, 2] - star_truth))),
        }
    return out
