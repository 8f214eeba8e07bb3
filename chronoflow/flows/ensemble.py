"""An ensemble of flows: an equal-weight mixture density with the spread between its members.

:class:`FlowEnsemble` is a :class:`~chronoflow.flows.flow.RotationModel`, so every consumer (ages,
forward modelling, the hierarchical model, streaming, Dask) uses it unchanged:

* its density is the mixture ``p(log P | c) = (1/K) sum_k p_k(log P | c)`` of its K members
  (each a flow trained with another seed and a bootstrap resample of the training stars);
* :meth:`FlowEnsemble.member_log_prob_grid` returns every member's stars x ages grid from the
  same batched computation, so the fast cluster ages get each member's posterior (the spread
  between members is the model's epistemic term) at no extra flow cost.

:func:`train_ensemble` trains the members with :func:`chronoflow.flows.training.train` and assembles
one model with one card.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ChronoflowError
from .flow import FlowConfig, RotationModel, log_mean_exp
from .training import TrainConfig, TrainResult, train

__all__ = ["DEFAULT_MEMBERS", "FlowEnsemble", "card_members", "member_log_prob_grid", "n_members", "train_ensemble"]

#: Members of the shipped ensemble (chosen by leave-one-out, docs/validation/ensemble.md).
DEFAULT_MEMBERS = 5


class FlowEnsemble(RotationModel):
    """Equal-weight mixture of K :class:`~chronoflow.flows.flow.RotationModel` members.

    The members must share one training domain (they are trained on the same stars); each keeps
    its own standardization. The ensemble's ``config``, ``scaling`` and ``domain`` are those of
    its first member.

    Parameters
    ----------
    members
        The K >= 1 trained members.
    """

    def __init__(self, members: list[RotationModel]):
        if not members:
            raise ChronoflowError("an ensemble needs at least one member")
        first = members[0]
        super().__init__(first.config, first.scaling, first.domain)
        self.members = nn.ModuleList(members)

    @property
    def n_members(self) -> int:
        return len(self.members)

    def _shift_age(self, dex: float) -> None:
        for member in self.members:
            member._shift_age(dex)
        super()._shift_age(dex)

    def log_prob(self, log_prot, context, *, check_domain: bool = True):
        """ln of the mixture density, ``logsumexp_k ln p_k - ln K`` (see
        :meth:`RotationModel.log_prob` for shapes and units)."""
        if check_domain:
            self.warn_outside_domain(np.asarray(context.detach().cpu() if isinstance(context, torch.Tensor) else context, dtype=float))
        return log_mean_exp([m.log_prob(log_prot, context, check_domain=False) for m in self.members])

    def cdf(self, log_prot, context):
        """Mixture CDF: the mean of the members' CDFs."""
        parts = [m.cdf(log_prot, context) for m in self.members]
        return sum(parts[1:], parts[0]) / len(parts)

    def sample(self, context, n: int = 1, *, seed: int | None = None, check_domain: bool = True):
        """Draws from the mixture: each draw picks a member uniformly (seeded), then samples it."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        as_numpy, _, ctx = self._prepare(None, context, check_domain)
        # unseeded: fresh entropy from a generator of our own, not a reseed of the global one
        seed = int(seed) if seed is not None else int(torch.Generator().seed() % 2**62)
        rng = np.random.default_rng(seed)
        shape = (n, *ctx.shape[:-1])
        pick = rng.integers(len(self.members), size=shape)
        out = torch.empty(shape, dtype=self.dtype)
        flat_ctx = ctx.expand(*shape, 3).reshape(-1, 3)
        flat_pick = torch.as_tensor(pick.reshape(-1))
        flat_out = out.reshape(-1)
        for k, member in enumerate(self.members):
            rows = torch.nonzero(flat_pick == k)[:, 0]
            if len(rows):
                flat_out[rows] = member.sample(flat_ctx[rows], 1, seed=seed + 7919 * (k + 1), check_domain=False)[0].to(self.dtype)
        out = flat_out.reshape(shape)
        return out.double().numpy() if as_numpy else out

    def quantile(self, q, context, *, check_domain: bool = True):
        """Quantiles of the mixture, by bisection of its CDF between the members' quantiles
        (to 1e-7 in log10 Prot)."""
        as_numpy, _, ctx = self._prepare(None, context, check_domain)
        q = torch.as_tensor(np.asarray(q, dtype=float) if not isinstance(q, torch.Tensor) else q, dtype=torch.float64)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile probabilities must lie in (0, 1)")
        shape = torch.broadcast_shapes(q.shape, ctx.shape[:-1])
        qf = q.expand(shape).reshape(-1)
        cf = ctx.expand(*shape, 3).reshape(-1, 3).double()
        each = torch.stack([m.quantile(qf, cf, check_domain=False).double() for m in self.members])
        lo, hi = each.min(0).values - 1e-9, each.max(0).values + 1e-9
        for _ in range(60):
            if float((hi - lo).max()) < 1e-7:
                break
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid, cf).double() < qf
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        y = (0.5 * (lo + hi)).reshape(shape)
        return y.numpy() if as_numpy else y.to(self.dtype)

    def _grid_chunk(self, y, star, ages):
        return log_mean_exp([m._grid_chunk(y, star, ages) for m in self.members])

    def member_log_prob_grid(self, log_prot, bprp0, log10_e_bprp0, log10_age_myr, *, max_pairs: int | None = None,
                             device: Any = "cpu") -> np.ndarray:  # fmt: skip
        """Every member's :meth:`RotationModel.log_prob_grid`: ``array[members, stars, ages]``."""
        return np.stack([m.log_prob_grid(log_prot, bprp0, log10_e_bprp0, log10_age_myr, max_pairs=max_pairs, device=device)
                         for m in self.members])  # fmt: skip

    def n_parameters(self) -> int:
        return sum(m.n_parameters() for m in self.members)


def n_members(model: RotationModel) -> int:
    """Number of members of ``model`` (1 for a single flow)."""
    return model.n_members if isinstance(model, FlowEnsemble) else 1


def card_members(card: dict[str, Any]) -> tuple[int, str, list[int]]:
    """How a model card says its members were trained: ``(n_members, bootstrap, epochs)``, with
    each member's final (early-stopped) epoch count; a single flow's card is one member."""
    training = card.get("training") or {}
    ens = card.get("ensemble") or {"n_members": 1, "bootstrap": training.get("bootstrap", "none"),
                                   "members": [{"epochs": card.get("epochs") or {}}]}  # fmt: skip
    epochs = [int((m.get("epochs") or {}).get("final") or training.get("max_epochs")) for m in ens["members"]]
    return int(ens.get("n_members", len(epochs))), ens["bootstrap"], epochs


def member_log_prob_grid(model: RotationModel, log_prot, bprp0, log10_e_bprp0, log10_age_myr, *, device: Any = "cpu") -> np.ndarray:
    """``array[members, stars, ages]`` of ln p for an ensemble, ``[1, stars, ages]`` for a single
    flow, computed on ``device`` (see :func:`chronoflow.flows.device.resolve_device`)."""
    if isinstance(model, FlowEnsemble):
        return model.member_log_prob_grid(log_prot, bprp0, log10_e_bprp0, log10_age_myr, device=device)
    return model.log_prob_grid(log_prot, bprp0, log10_e_bprp0, log10_age_myr, device=device)[None]


def train_ensemble(
    catalogue: pd.DataFrame,
    n: int = DEFAULT_MEMBERS,
    flow_config: FlowConfig | None = None,
    config: TrainConfig | None = None,
    *,
    bootstrap: str = "stars",
    progress: bool = True,
    apply_cuts: bool = True,
    baseline: bool = True,
    member_epochs: list[int] | None = None,
) -> TrainResult:
    """Train ``n`` members (seeds ``config.seed + k``, bootstrap resamples) and assemble them.

    Parameters
    ----------
    catalogue
        The training catalogue (see :func:`chronoflow.flows.training.train`).
    n
        Number of members K >= 1.
    flow_config, config
        Architecture and training settings of every member (the members differ only by seed and
        bootstrap resample). Member ``k`` gets seed ``config.seed + k``.
    bootstrap
        Resampling of each member (:attr:`chronoflow.flows.training.TrainConfig.bootstrap`); member 0
        of a ``"none"`` ensemble equals a single :func:`~chronoflow.flows.training.train` run.
    progress
        Show progress bars.
    apply_cuts
        Apply the published cuts (see :func:`~chronoflow.flows.training.train`).
    baseline
        Also fit the Gaussian baseline (with member 0's settings).
    member_epochs
        Epoch budget of each member (``config.max_epochs`` for all when ``None``); with no
        validation split (``config.val_clusters=()``) every member trains exactly that long.

    Returns
    -------
    TrainResult
        ``model`` a :class:`FlowEnsemble`; ``card`` the ensemble's card: member 0's card (the
        shared training data, split, domain, package versions, member 0's held-out metrics and
        those of the Gaussian baseline) plus ``ensemble`` (K, bootstrap, seeds and every member's
        epochs, held-out NLL and final training NLL); ``baseline`` the Gaussian baseline.
    """
    if n < 1:
        raise ChronoflowError(f"an ensemble needs n >= 1 members, got {n}")
    config = replace(config or TrainConfig(), bootstrap=bootstrap)
    if member_epochs is not None and len(member_epochs) != n:
        raise ChronoflowError(f"member_epochs needs one value per member ({n}), got {len(member_epochs)}")
    budgets = list(member_epochs) if member_epochs is not None else [config.max_epochs] * n
    t0 = time.perf_counter()
    # Member 0 chooses the validation split (by its seed) and also fits the Gaussian baseline;
    # the others early-stop on the same held-out clusters, so the card has one split.
    first = train(catalogue, flow_config, replace(config, max_epochs=budgets[0]), progress=progress, apply_cuts=apply_cuts, train_baseline=baseline)
    val = config.val_clusters if config.val_clusters is not None else tuple(first.card["split"]["val_clusters"])
    results = [first] + [
        train(catalogue, flow_config, replace(config, seed=config.seed + k, val_clusters=val, max_epochs=budgets[k]), progress=progress,
              apply_cuts=apply_cuts, train_baseline=False)
        for k in range(1, n)
    ]  # fmt: skip
    model = FlowEnsemble([r.model for r in results])
    card: dict[str, Any] = dict(results[0].card)
    card["n_parameters"] = model.n_parameters()
    card["ensemble"] = {
        "n_members": n,
        "bootstrap": bootstrap,
        "seeds": [config.seed + k for k in range(n)],
        "members": [
            {"seed": r.card["training"]["seed"], "epochs": r.card["epochs"],
             "validation_nll": r.card["validation"].get("flow", {}).get("nll"), "train_nll_final": r.card["train_nll_final"]}
            for r in results
        ],
    }  # fmt: skip
    card["wall_time_s"] = round(time.perf_counter() - t0, 2)
    model.card = card
    return TrainResult(model=model, baseline=first.baseline, card=card)
