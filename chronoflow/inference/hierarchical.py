"""Full cluster ages: a hierarchical PyMC model with membership, outliers, an intrinsic age spread
and a cluster-wide reddening offset.

Model, for stars i = 1..N with observed log10 Prot ``y_i``, colour ``c_i``, colour error ``e_i``
and membership probability ``m_i``::

    mu     ~ Uniform(window)              cluster mean log10 age [log10 Myr]
    s      ~ HalfNormal(spread_prior)     intrinsic spread of log10 age [dex]
    delta  ~ Normal(0, reddening_prior)   error of E(BP-RP) [mag]: true colour c_i - delta
    f_out  ~ Beta(1, 19)                  outlier fraction (prior mean 0.05)
    a_i    ~ Normal(mu, s)                star ages, integrated out by Gauss-Hermite quadrature
    y_i    ~ w_i p_flow(y | a_i, c_i - delta, e_i) + (1 - w_i) U(y; -1.75, 2.5),  w_i = m_i (1 - f_out)

Choices, and why (measured; see ``benchmarks/bench_hierarchical.py``):

* **Star ages are integrated out** with ``n_quad`` Gauss-Hermite nodes inside the likelihood, so
  NUTS samples four parameters whatever the number of stars and never meets the funnel of a
  centred hierarchy with a small spread. Per-star ages come out afterwards, as posterior means
  over the nodes.
* **Colours**: the flow was trained on *observed* colours and conditions on their error, so the
  colour scatter is already inside p_flow; latent true colours would count it twice. The model
  therefore evaluates the flow at the observed colour shifted by the cluster-wide offset only.
* **Flow inside PyTensor**: two implementations (``likelihood=``): ``"exact"`` calls the trained
  flow through :class:`~chronoflow.flows.flow_ops.FlowLogpOp` (torch, float64, exact gradients, checked
  with ``verify_grad``); ``"table"`` (default) reads per-star tables of the same flow on a
  0.005 dex x (reddening prior / 4) grid by bicubic B-spline interpolation (C2), tested against
  the exact flow.
  With 272 stars the table cost 0.4-0.65 ms per logp+gradient against 11-14 ms for the exact
  Op (``benchmarks/bench_hierarchical.py``), about a minute of sampling against half an hour.
* The mean age has a flat prior over a window of +-``window_dex`` around the fast posterior
  median (the likelihood outside is negligible for any real cluster: the fast posterior is far
  narrower than the window).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..data.tables import like_input, to_frame
from ..errors import DomainError
from ..flows.artifact import resolve_model
from ..flows.device import Device, resolve_device
from ..flows.flow import RotationModel
from .ages import cluster_age
from .likelihood import (
    DEFAULT_BACKGROUND,
    Background,
    StarInputs,
    background_logpdf,
    membership_probabilities,
    mixture_terms,
)

__all__ = ["TABLE_AGE_STEP_DEX", "TABLE_OFFSETS", "FullClusterAge", "build_cluster_model", "default_sampler", "full_cluster_age",
           "sample_cluster_model"]


@dataclass
class FullClusterAge:
    """Result of :func:`full_cluster_age`.

    Attributes
    ----------
    cluster
        Name.
    idata
        ArviZ InferenceData: posterior (``log10_age``, ``age_spread_dex``, ``reddening_offset``,
        ``f_out``), sample_stats, observed data, and per-star posterior quantities.
    summary
        ArviZ summary table (mean, sd, HDI, ESS, R-hat) of the cluster parameters.
    stars
        The selected rows plus ``used``, ``p_member`` (posterior probability of following the
        cluster sequence), ``p_outlier`` (= 1 - p_member for used stars) and
        ``log10_age_star`` (posterior mean star age [log10 Myr], shrunk toward the cluster), as
        the kind of table given (pandas DataFrame, or the astropy Table class with units).
    fast
        The fast (grid) result used to set the window and the start.
    """

    cluster: str
    idata: Any
    summary: pd.DataFrame
    stars: Any
    fast: Any
    model: str
    settings: dict[str, Any] = field(default_factory=dict)

    def _q(self, name: str) -> dict[str, float]:
        draws = self.idata.posterior[name].values.ravel()
        p16, p50, p84 = np.percentile(draws, [16, 50, 84])
        return {"median": float(p50), "p16": float(p16), "p84": float(p84)}

    @property
    def rhat_max(self) -> float:
        return float(self.summary["r_hat"].max())

    @property
    def n_divergent(self) -> int:
        return int(self.idata.sample_stats["diverging"].values.sum())

    def to_dict(self) -> dict[str, Any]:
        """The JSON printed by ``chronoflow age-cluster --method full --json``."""
        log_age = self._q("log10_age")
        return {
            "cluster": self.cluster,
            "n_rows": int(len(self.stars)),
            "n_used": int(self.stars["used"].sum()),
            "log10_age_myr": log_age,
            "age_myr": {k: float(10**v) for k, v in log_age.items()},
            "method": "full",
            "model": self.model,
            "age_spread_dex": self._q("age_spread_dex"),
            "reddening_offset": self._q("reddening_offset") if "reddening_offset" in self.idata.posterior else None,
            "rhat_max": self.rhat_max,
            "divergences": self.n_divergent,
            "error_dex": {k: float(v) for k, v in self.error_dex.items() if k in ("statistical", "model", "total")},
            "flag": self.fast.flag,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as one line of JSON."""
        import json

        return json.dumps(self.to_dict())

    def to_text(self) -> str:
        """The summary ``chronoflow age-cluster --method full`` prints: stars used, the ArviZ
        summary of the cluster parameters, the error parts [dex] and the flag."""
        d = self.to_dict()
        e = d["error_dex"]
        lines = [f"{self.cluster} (full model): {d['n_used']} of {d['n_rows']} stars used", self.summary.to_string(),
                 f"  error [dex]: statistical {e['statistical']:.3f}, model {e['model']:.3f}, total {e['total']:.3f}",
                 f"  divergences: {d['divergences']}, R-hat max {d['rhat_max']:.3f}"]  # fmt: skip
        return "\n".join(lines + ([f"  flag: {d['flag']}"] if d["flag"] else []))

    @property
    def error_dex(self) -> dict[str, float]:
        """Error parts [dex]: ``statistical`` = (p84 - p16) / 2 of the sampled ``log10_age``; the
        ``model`` term (ensemble spread, calibrated term, extrapolation) of the fast result, which
        shares the flow; ``total`` = sqrt(statistical^2 + model^2)."""
        q = self._q("log10_age")
        stat = 0.5 * (q["p84"] - q["p16"])
        parts = dict(self.fast.error_dex)
        parts.update(statistical=float(stat), total=float(np.hypot(stat, parts.get("model", 0.0))))
        return parts


def _quadrature(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes x_k and log weights for E[f(a)], a ~ N(mu, s): a_k = mu + sqrt(2) s x_k."""
    x, w = np.polynomial.hermite.hermgauss(n)
    return x, np.log(w / math.sqrt(math.pi))


def build_cluster_model(
    stars: pd.DataFrame,
    flow: RotationModel,
    *,
    center: float,
    window_dex: float = 0.3,
    membership: str | None = "mem_prob_source",
    spread_prior_dex: float = 0.1,
    reddening_prior_mag: float = 0.02,
    f_out_prior: tuple[float, float] = (1.0, 19.0),
    background: Background = DEFAULT_BACKGROUND,
    n_quad: int = 5,
    likelihood: str = "table",
    f_out_fixed: float | None = None,
    model_choice: bool = False,
    device: Device = "auto",
):
    """Build the PyMC model for the used stars of one cluster (see the module docstring).

    Parameters
    ----------
    stars
        Rows to use: ``Prot`` [d], ``BPRP_0`` [mag], ``e_BPRP_0`` [mag] and ``membership``.
    flow
        The trained flow.
    center
        Centre of the window of the mean log10 age prior [log10 Myr] (the fast median).
    window_dex
        Half-width of that window [dex].
    spread_prior_dex
        Scale of the half-normal prior on the age spread [dex]; 0 fixes the spread at 0.
    reddening_prior_mag
        Width of the normal prior on the E(BP-RP) offset [mag]; 0 fixes it at 0.
    f_out_prior
        Beta prior (a, b) of the outlier fraction.
    f_out_fixed
        Fix the outlier fraction at this value instead (membership then enters only through the
        given probabilities: what the error budget calls membership *fixed*).
    model_choice
        For an ensemble: marginalize *which member* is right, a latent index k uniform over the
        K members, ``p(data) = mean_k prod_i L_i^(k)`` (a mixture of the members' posteriors),
        instead of the product over stars of the members' mixture density (the default). Table
        likelihood only; the posterior weight of each member is recorded as ``member_weight``.
    background
        (lo, hi) of the uniform background in log10 Prot, or a callable log density.
    n_quad
        Gauss-Hermite nodes over each star's age offset (1 when the spread is fixed at 0).
    likelihood
        ``"table"`` (default) or ``"exact"``.
    device
        Where the flow evaluates the per-star tables of the ``"table"`` likelihood: ``"auto"``
        (default: a CUDA GPU when torch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"`` (:func:`~chronoflow.flows.device.resolve_device`). Sampling runs on the CPU
        either way, and so does the ``"exact"`` likelihood (one flow call per gradient).

    Returns
    -------
    pymc.Model
    """
    import pymc as pm
    import pytensor.tensor as pt

    from ..flows.flow_ops import FlowLogpOp, StarTables, tabulated_logp

    if likelihood not in ("table", "exact"):
        raise DomainError(f"unknown likelihood {likelihood!r}; allowed: 'table', 'exact'")
    if spread_prior_dex < 0 or reddening_prior_mag < 0:
        raise DomainError("spread_prior_dex and reddening_prior_mag must be >= 0")
    if f_out_fixed is not None and not 0 <= f_out_fixed < 1:
        raise DomainError(f"f_out_fixed must be in [0, 1), got {f_out_fixed}")
    device = resolve_device(device)
    inputs = StarInputs.from_frame(stars, flow)
    log_prot, colour, log_err = inputs.log_prot, inputs.colour, inputs.log_err
    # The membership rule of the fast path; a zero probability is floored at the smallest float
    # (the star's likelihood changes by < 1e-300) because log 0 has no gradient in PyTensor.
    p_mem = np.maximum(membership_probabilities(stars, membership), np.finfo(float).tiny)
    log_bg = np.maximum(background_logpdf(background, log_prot), -700.0)
    lo_mu, hi_mu = center - window_dex, center + window_dex
    if spread_prior_dex == 0:
        n_quad = 1
    x, log_wq = _quadrature(n_quad)
    coords = {"star": np.arange(len(stars)), "node": np.arange(n_quad)}
    members = list(getattr(flow, "members", None) or [flow])
    if model_choice:
        if likelihood != "table":
            raise DomainError("model_choice=True needs likelihood='table'")
        coords["member"] = np.arange(len(members))
    tables: dict[int, Any] = {}

    def star_terms(density, mu, spread, delta, f_out):
        """Per star: the flow's log density at the quadrature nodes ``[stars, nodes]`` and the
        mixture terms (log w p_flow, log L) of :func:`~chronoflow.inference.likelihood.mixture_terms`."""
        ages = mu + math.sqrt(2.0) * spread * pt.constant(x)[None, :] + pt.zeros((len(stars), 1))
        if likelihood == "table":
            if id(density) not in tables:  # one table per flow, shared by the likelihood and the per-star outputs
                reach = 4 * math.sqrt(2.0) * spread_prior_dex + 0.05
                grid = np.arange(lo_mu - reach, hi_mu + reach + 1e-9, TABLE_AGE_STEP_DEX)
                offsets = (np.linspace(-4, 4, TABLE_OFFSETS) * reddening_prior_mag) if reddening_prior_mag > 0 else (0.0,)
                tables[id(density)] = StarTables(density, log_prot, colour, log_err, grid, offsets, device=device)
            nodes = tabulated_logp(tables[id(density)], ages, delta)
        else:
            ctx = pt.stack([ages.ravel(), pt.repeat(pt.constant(colour), n_quad) - delta,
                            pt.repeat(pt.constant(log_err), n_quad)], axis=1)  # fmt: skip
            nodes = FlowLogpOp(density)(pt.repeat(pt.constant(log_prot), n_quad), ctx)[0].reshape((len(stars), n_quad))
        log_flow = pt.logsumexp(nodes + pt.constant(log_wq)[None, :], axis=1)
        return (nodes, *mixture_terms(log_flow, pt.constant(p_mem), f_out, pt.constant(log_bg), xp=pt))

    with pm.Model(coords=coords) as model:
        mu = pm.Uniform("log10_age", lower=lo_mu, upper=hi_mu)  # starts at the window's centre, the fast median
        spread = pm.HalfNormal("age_spread_dex", sigma=spread_prior_dex) if spread_prior_dex > 0 else pt.constant(0.0)
        delta = pm.Normal("reddening_offset", 0.0, reddening_prior_mag) if reddening_prior_mag > 0 else pt.constant(0.0)
        f_out = pm.Beta("f_out", *f_out_prior) if f_out_fixed is None else pt.constant(float(f_out_fixed))

        def node_age(nodes):
            return mu + math.sqrt(2.0) * spread * pt.sum(
                pt.special.softmax(nodes + pt.constant(log_wq)[None, :], axis=1) * pt.constant(x)[None, :], axis=1)

        if not model_choice:
            # The observed periods as a CustomDist: a product over stars, so the InferenceData
            # gets a pointwise log_likelihood group (az.loo / az.compare work on it). PyMC hands the
            # scalar parameters to logp with the observations' dimensions added: take the scalar.
            pm.CustomDist("log10_prot", mu, spread, delta, f_out, observed=log_prot, dims="star",
                          logp=lambda value, *params: star_terms(flow, *(q.ravel()[0] for q in params))[2])  # fmt: skip
            nodes, member, ll = star_terms(flow, mu, spread, delta, f_out)
            pm.Deterministic("p_member", pt.exp(member - ll), dims="star")
            pm.Deterministic("log10_age_star", node_age(nodes), dims="star")
        else:
            # Which member is right is marginalized over the whole cluster, so the likelihood is
            # not a product over stars: a Potential, without a pointwise log_likelihood group.
            terms = [star_terms(m, mu, spread, delta, f_out) for m in members]
            totals = pt.stack([pt.sum(ll) for _, _, ll in terms])  # [K]
            weight = pm.Deterministic("member_weight", pt.special.softmax(totals), dims="member")
            pm.Deterministic("p_member", sum(weight[k] * pt.exp(mem - ll) for k, (_, mem, ll) in enumerate(terms)), dims="star")
            pm.Deterministic("log10_age_star", sum(weight[k] * node_age(nodes) for k, (nodes, _, _) in enumerate(terms)), dims="star")
            pm.Potential("likelihood", pt.logsumexp(totals) - math.log(len(members)))
    return model


#: Spacing of the per-star tables in log10 age [dex] and their number of colour offsets (over
#: -4 to +4 prior widths of the E(BP-RP) offset). Building the tables at 0.005 dex x 33 offsets
#: took 37.6 s of Praesepe's 92.9 s (nutpie, package defaults); at 0.01 dex x 17 the whole run
#: took 47.6 s and the posterior's 16/50/84 % points moved by at most 1.7e-4 dex (1.5 % of its
#: standard deviation); the Pleiades' by at most 0.0023 dex (7 % of it, about two Monte Carlo
#: standard errors; 44.2 s against 67.1 s).
TABLE_AGE_STEP_DEX = 0.01
TABLE_OFFSETS = 17


def default_sampler() -> str:
    """``"nutpie"`` (a dependency: the fastest here) when it imports, else ``"pymc"``."""
    try:
        import nutpie  # noqa: F401
    except ImportError:  # pragma: no cover - nutpie is a dependency
        return "pymc"
    return "nutpie"


def sample_cluster_model(model, *, draws: int = 1000, tune: int = 1000, chains: int = 4, cores: int = 2,
                         seed: int = 0, sampler: str | None = None, progressbar: bool = True,
                         target_accept: float = 0.9):
    """Sample with NUTS: nutpie when installed (``sampler=None``), else PyMC's own.

    ``target_accept`` 0.9: at PyMC's default of 0.8 the 300-star benchmark needed fewer leapfrog
    steps (6.3 against 7.9 per draw), but the Pleiades (744 stars) gave tens of divergences,
    from sharp age features of the flow summed over many stars. Raise it further if a cluster
    still reports divergences. Returns ArviZ InferenceData.
    """
    import pymc as pm

    sampler = default_sampler() if sampler is None else sampler
    with model:
        return pm.sample(draws=draws, tune=tune, chains=chains, cores=min(cores, chains), random_seed=seed,
                         nuts_sampler=sampler, progressbar=progressbar, target_accept=target_accept,
                         compute_convergence_checks=False)


def full_cluster_age(
    df: pd.DataFrame,
    cluster: str | None = None,
    *,
    by: str = "cluster",
    model: RotationModel | str | None = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int = 2,
    seed: int = 0,
    sampler: str | None = None,
    progressbar: bool = True,
    spread_prior_dex: float = 0.1,
    reddening_prior_mag: float = 0.02,
    likelihood: str = "table",
    n_quad: int = 5,
    target_accept: float = 0.9,
    f_out_fixed: float | None = None,
    model_choice: bool = False,
    membership: str | None = "mem_prob_source",
    background: Background = DEFAULT_BACKGROUND,
    cuts: bool = True,
    ruwe_max: float | None = 1.4,
    include_out_of_domain: bool = False,
    log_likelihood: bool = True,
    device: Device = "auto",
) -> FullClusterAge:
    """Full hierarchical cluster age: age spread, reddening offset and outlier fraction sampled
    with NUTS (see the module docstring).

    The star selection (cuts, flags, domain) is that of the fast method
    (:func:`~chronoflow.inference.ages.cluster_age`), which also gives the window of the mean-age prior
    and the starting point. The outlier fraction is a parameter here (Beta prior
    ``f_out_prior`` of :func:`build_cluster_model`), and the prior on the mean age is flat in
    log age over the window: the fast method's ``prior``, ``grid`` and ``f_out`` have no
    counterpart.

    Parameters
    ----------
    df, cluster, by, model, membership, background, cuts, ruwe_max, include_out_of_domain
        As in :func:`~chronoflow.inference.ages.cluster_age`.
    draws, tune, chains, cores, seed, sampler, progressbar, target_accept
        NUTS settings; ``seed`` makes the run reproducible.
    spread_prior_dex, reddening_prior_mag, likelihood, n_quad, f_out_fixed, model_choice
        See :func:`build_cluster_model`.
    log_likelihood
        Add the pointwise log-likelihood of every star (group ``log_likelihood``, variable
        ``log10_prot``) to the InferenceData, for ``az.loo`` / ``az.compare`` (not with
        ``model_choice``, whose likelihood is not a product over stars).
    device
        Where the flow runs for the fast age and the per-star tables (see
        :func:`build_cluster_model`); NUTS samples on the CPU.

    Returns
    -------
    FullClusterAge
    """
    import arviz as az
    import pymc as pm

    df, origin = to_frame(df, what="df")
    flow = resolve_model(model)
    fast = cluster_age(df, cluster, by=by, model=flow, membership=membership, background=background, cuts=cuts,
                       ruwe_max=ruwe_max, include_out_of_domain=include_out_of_domain, device=device)  # fmt: skip
    used = fast.stars[fast.stars["used"]]
    pm_model = build_cluster_model(
        used, flow, center=fast.summary["median"], membership=membership, spread_prior_dex=spread_prior_dex,
        reddening_prior_mag=reddening_prior_mag, background=background,
        n_quad=n_quad, likelihood=likelihood, f_out_fixed=f_out_fixed, model_choice=model_choice, device=device,
    )  # fmt: skip
    sampler = default_sampler() if sampler is None else sampler
    idata = sample_cluster_model(pm_model, draws=draws, tune=tune, chains=chains, cores=cores, seed=seed,
                                 sampler=sampler, progressbar=progressbar, target_accept=target_accept)  # fmt: skip
    if log_likelihood and not model_choice:
        pm.compute_log_likelihood(idata, model=pm_model, progressbar=False)
    names = [v for v in ("log10_age", "age_spread_dex", "reddening_offset", "f_out") if v in idata.posterior]
    summary = az.summary(idata, var_names=names)
    stars = fast.stars.drop(columns=["p_outlier"])
    p_member = idata.posterior["p_member"].mean(("chain", "draw")).values
    star_age = idata.posterior["log10_age_star"].mean(("chain", "draw")).values
    for col, values in (("p_member", p_member), ("p_outlier", 1 - p_member), ("log10_age_star", star_age)):
        stars[col] = np.nan
        stars.loc[stars["used"], col] = values
    n_div = int(idata.sample_stats["diverging"].values.sum())
    if n_div:
        warnings.warn(f"{n_div} divergent transitions: raise tune/target_accept or inspect the posterior", stacklevel=2)
    if float(summary["r_hat"].max()) > 1.01:
        warnings.warn(f"R-hat up to {summary['r_hat'].max():.3f} (> 1.01): run more draws or chains", stacklevel=2)
    settings = {"draws": draws, "tune": tune, "chains": chains, "seed": seed, "likelihood": likelihood, "n_quad": n_quad,
                "target_accept": target_accept, "sampler": sampler,
                "spread_prior_dex": spread_prior_dex, "reddening_prior_mag": reddening_prior_mag, "f_out_fixed": f_out_fixed,
                "model_choice": model_choice, "membership": membership}  # fmt: skip
    return FullClusterAge(fast.cluster, idata, summary, like_input(stars, origin), fast, fast.model, settings)
