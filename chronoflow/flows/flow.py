"""The conditional density p(log10 Prot | log10 age, (BP-RP)0, log10 e_(BP-RP)0).

Two models share one interface (:class:`RotationModel`):

* :class:`SplineFlow`, the default: a normalizing flow built with ``nflows`` from monotonic
  rational-quadratic spline transforms whose bin widths, heights and knot slopes are produced by
  an MLP on the context (the architecture of the ChronoFlow paper; Durkan et al. 2019);
* :class:`GaussianBaseline`: a Gaussian in log10 Prot whose mean and width come from an MLP on
  the context, the yardstick the flow has to beat on held-out clusters.

Inputs are standardized *inside* the model (buffers fitted on the training set and saved with
the weights), so callers always pass physical values::

    log_prot            log10 rotation period [log10 d]
    context[..., 0]     log10 age [log10 Myr]
    context[..., 1]     de-reddened colour (BP-RP)0 [mag]
    context[..., 2]     log10 colour error [log10 mag]
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from nflows.transforms.base import CompositeTransform, Transform
from nflows.transforms.splines.rational_quadratic import (
    unconstrained_rational_quadratic_spline,
)
from nflows.transforms.standard import PointwiseAffineTransform
from torch import nn

__all__ = [
    "CONTEXT_NAMES",
    "DomainWarning",
    "FlowConfig",
    "GaussianBaseline",
    "RotationModel",
    "SplineFlow",
    "Standardization",
    "TrainingDomain",
    "build_model",
    "log_mean_exp",
    "make_context",
]

#: Names of the context columns, in order.
CONTEXT_NAMES = ("log10_age_myr", "bprp0_mag", "log10_e_bprp0_mag")


class DomainWarning(UserWarning):
    """Raised (as a warning) when inputs lie outside the model's training domain."""


def make_context(age_myr: Any, bprp0: Any, e_bprp0: Any) -> np.ndarray:
    """Stack physical inputs into a context array ``array[..., 3]``.

    Parameters
    ----------
    age_myr
        Age [Myr], broadcastable against the colours.
    bprp0
        De-reddened Gaia colour (BP-RP)0 [mag].
    e_bprp0
        Uncertainty of (BP-RP)0 [mag], > 0.

    Returns
    -------
    numpy.ndarray
        ``[log10 age/Myr, (BP-RP)0, log10 e_(BP-RP)0]`` along the last axis, float64.
    """
    age, colour, err = np.broadcast_arrays(
        np.asarray(age_myr, dtype=float), np.asarray(bprp0, dtype=float), np.asarray(e_bprp0, dtype=float)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([np.log10(age), colour, np.log10(err)], axis=-1)


def log_mean_exp(values: Any, axis: int = 0) -> Any:
    """ln of the mean of ``exp(values)`` along ``axis``: ``logsumexp(values) - ln K``, with K the
    length of that axis.

    The log density of an equal-weight mixture (an ensemble) from its K members' log densities:
    the one implementation of it, for numpy arrays (scipy's ``logsumexp``), torch tensors
    (differentiable) and PyTensor variables (whose length along ``axis`` must be known when the
    graph is built, as it is for ``pt.stack`` of K terms).

    Parameters
    ----------
    values
        The members' log densities, stacked along ``axis``; or a list or tuple of the K members'
        arrays (stacked along ``axis`` here).
    axis
        The members' axis.

    Returns
    -------
    numpy.ndarray, torch.Tensor or PyTensor variable
        The same kind as ``values``, without ``axis``.
    """
    if isinstance(values, (list, tuple)):
        first = values[0]
        if isinstance(first, torch.Tensor):
            values = torch.stack(list(values), dim=axis)
        elif _is_pytensor(first):
            import pytensor.tensor as pt

            values = pt.stack(list(values), axis=axis)
        else:
            values = np.stack(values, axis=axis)
    if isinstance(values, torch.Tensor):
        return torch.logsumexp(values, dim=axis) - math.log(values.shape[axis])
    if _is_pytensor(values):
        import pytensor.tensor as pt

        k = values.type.shape[axis]
        if k is None:
            raise ValueError("log_mean_exp needs the number of members (the length along axis) to be known in the graph")
        return pt.logsumexp(values, axis=axis) - math.log(k)
    from scipy.special import logsumexp

    values = np.asarray(values)
    return logsumexp(values, axis=axis) - math.log(values.shape[axis])


def _is_pytensor(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "pytensor"


@dataclass(frozen=True)
class FlowConfig:
    """Architecture of a :class:`RotationModel`.

    Attributes
    ----------
    kind
        ``"spline_flow"`` or ``"gaussian"``.
    n_transforms
        Number of spline transforms (flow only).
    n_bins
        Spline bins per transform.
    hidden
        Width of each hidden layer of the context MLPs.
    n_hidden_layers
        Hidden layers per MLP.
    tail_bound
        Splines act on [-tail_bound, tail_bound] of the standardized variable; identity outside.
    """

    kind: str = "spline_flow"
    n_transforms: int = 3
    n_bins: int = 8
    hidden: int = 64
    n_hidden_layers: int = 2
    tail_bound: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Standardization:
    """Affine scaling of target and context, fitted on the training set."""

    log_prot_mean: float = 0.0
    log_prot_std: float = 1.0
    context_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    context_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def fit(cls, log_prot: np.ndarray, context: np.ndarray) -> Standardization:
        return cls(
            float(np.mean(log_prot)),
            float(np.std(log_prot)),
            tuple(float(v) for v in context.mean(axis=0)),
            tuple(float(v) for v in context.std(axis=0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingDomain:
    """Ranges of the training data; evaluation outside them is flagged.

    Attributes are (low, high) pairs: ``log10_age_myr`` [log10 Myr], ``bprp0`` [mag],
    ``log10_e_bprp0`` [log10 mag] and ``log10_prot`` [log10 d] (unbounded in models saved
    before it was recorded).
    """

    log10_age_myr: tuple[float, float] = (-math.inf, math.inf)
    bprp0: tuple[float, float] = (-math.inf, math.inf)
    log10_e_bprp0: tuple[float, float] = (-math.inf, math.inf)
    log10_prot: tuple[float, float] = (-math.inf, math.inf)

    @classmethod
    def fit(cls, context: np.ndarray, log_prot: np.ndarray | None = None, tail: float = 0.005) -> TrainingDomain:
        """Ranges from training contexts and periods: the full age range (cluster ages are
        discrete) and period range, and the central ``1 - 2 tail`` of colours and colour errors
        (a handful of extreme stars should not stretch the domain where the model has learned
        nothing)."""
        ages = (float(context[:, 0].min()), float(context[:, 0].max()))
        lo, hi = np.quantile(context[:, 1:], [tail, 1 - tail], axis=0)
        prot = (-math.inf, math.inf) if log_prot is None else (float(np.min(log_prot)), float(np.max(log_prot)))
        return cls(ages, (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])), prot)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    def contains(self, context: np.ndarray, age: bool = True) -> np.ndarray:
        """Boolean mask ``array[...]``: True where every context value lies inside the domain.

        ``age=False`` checks colour and colour error only (posterior grids scan ages beyond the
        calibrators on purpose).
        """
        context = np.asarray(context, dtype=float)
        ok = np.ones(context.shape[:-1], dtype=bool)
        for i, (lo, hi) in enumerate((self.log10_age_myr, self.bprp0, self.log10_e_bprp0)):
            if i == 0 and not age:
                continue
            ok &= (context[..., i] >= lo) & (context[..., i] <= hi)
        return ok


def _mlp(n_in: int, n_out: int, hidden: int, n_hidden_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class _ContextSpline(Transform):
    """Elementwise rational-quadratic spline on a 1-D variable, parameters from an MLP(context).

    With a single feature there is nothing to couple or mask: every spline parameter is a
    function of the context alone, which is what an autoregressive transform reduces to in 1-D.
    """

    def __init__(self, n_context: int, n_bins: int, hidden: int, n_hidden_layers: int, tail_bound: float):
        super().__init__()
        self.n_bins = n_bins
        self.tail_bound = tail_bound
        # widths (K), heights (K), interior knot slopes (K - 1); linear tails fix the outer two.
        self.net = _mlp(n_context, 3 * n_bins - 1, hidden, n_hidden_layers)

    def _spline(self, inputs: torch.Tensor, context: torch.Tensor, inverse: bool):
        params = self.net(context).unsqueeze(1)  # (batch, 1 feature, 3K - 1)
        k = self.n_bins
        # Scaling by sqrt(hidden) as in nflows' coupling splines keeps the initial spline close to
        # the identity, which stabilises the first epochs.
        scale = math.sqrt(self.net[-1].in_features)
        widths, heights, slopes = params[..., :k] / scale, params[..., k : 2 * k] / scale, params[..., 2 * k :]
        out, logdet = unconstrained_rational_quadratic_spline(
            inputs, widths, heights, slopes, inverse=inverse, tails="linear", tail_bound=self.tail_bound
        )
        return out, logdet.sum(dim=1)

    def forward(self, inputs, context=None):
        return self._spline(inputs, context, inverse=False)

    def inverse(self, inputs, context=None):
        return self._spline(inputs, context, inverse=True)


def rq_spline_forward(x: torch.Tensor, params: torch.Tensor, n_bins: int, bound: float, scale: float):
    """Forward rational-quadratic spline with linear tails, as nflows computes it, for 1-D ``x``.

    ``x`` is ``[N]`` and ``params`` is ``[3K - 1, N]``: unnormalized widths, heights and interior
    slopes *along the first axis*, so every operation runs over N contiguous values (on the
    bins-last layout, softmax over 8 bins dominated the grid's cost). Inputs outside
    [-bound, bound] pass through with zero log-derivative. Mirrors
    ``nflows.transforms.splines.rational_quadratic`` (min bin width/height/derivative 1e-3).
    Differentiable (the hierarchical model's exact Op uses it under autograd).

    Returns
    -------
    (y [N], log dy/dx [N])
    """
    from nflows.transforms.splines.rational_quadratic import (
        DEFAULT_MIN_BIN_HEIGHT as min_h,
    )
    from nflows.transforms.splines.rational_quadratic import (
        DEFAULT_MIN_BIN_WIDTH as min_w,
    )
    from nflows.transforms.splines.rational_quadratic import (
        DEFAULT_MIN_DERIVATIVE as min_d,
    )

    k = n_bins
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)

    def knots(unnorm, min_size):  # [k, N] -> knot positions [k + 1, N], ends pinned at -+bound
        u = unnorm / scale
        u = torch.exp(u - u.amax(0, keepdim=True))
        size = min_size + (1 - min_size * k) * u / u.sum(0, keepdim=True)
        cum = 2 * bound * torch.cumsum(size, 0) - bound
        return torch.cat([torch.full_like(cum[:1], -bound), cum[:-1], torch.full_like(cum[:1], bound)], 0)

    cumw = knots(params[:k], min_w)
    cumh = knots(params[k : 2 * k], min_h)
    # Unit slope at both ends (identity tails): min_d + softplus(softplus^-1(1 - min_d)) = 1.
    ends = torch.ones_like(cumw[:1])
    slopes = torch.cat([ends, min_d + torch.nn.functional.softplus(params[2 * k :]), ends], 0)  # [k + 1, N]
    idx = (xc[None, :] >= cumw[1:-1]).sum(0, keepdim=True)  # bin of each x, 0 .. k - 1
    x0, x1 = cumw.gather(0, idx)[0], cumw.gather(0, idx + 1)[0]
    y0, y1 = cumh.gather(0, idx)[0], cumh.gather(0, idx + 1)[0]
    d0, d1 = slopes.gather(0, idx)[0], slopes.gather(0, idx + 1)[0]
    w, h = x1 - x0, y1 - y0
    delta = h / w
    theta = (xc - x0) / w
    t1t = theta * (1 - theta)
    denom = delta + (d0 + d1 - 2 * delta) * t1t
    out = y0 + h * (delta * theta**2 + d0 * t1t) / denom
    logdet = torch.log(delta**2 * (d1 * theta**2 + 2 * delta * t1t + d0 * (1 - theta) ** 2)) - 2 * torch.log(denom)
    return torch.where(inside, out, x), torch.where(inside, logdet, torch.zeros_like(logdet))


class RotationModel(nn.Module):
    """Base class: a conditional density of log10 Prot given the context.

    Subclasses implement :meth:`_log_prob_std`, :meth:`_cdf_std` and :meth:`_inverse_std` (the
    map from a standard-normal quantile to the target) on standardized values;
    this class handles standardization, broadcasting, dtype, domain checks and numpy I/O.
    """

    def __init__(self, config: FlowConfig, scaling: Standardization, domain: TrainingDomain):
        super().__init__()
        self.config = config
        self.scaling = scaling
        self.domain = domain
        self.register_buffer("_ctx_mean", torch.tensor(scaling.context_mean, dtype=torch.float64))
        self.register_buffer("_ctx_std", torch.tensor(scaling.context_std, dtype=torch.float64))
        self._target = PointwiseAffineTransform(
            shift=-scaling.log_prot_mean / scaling.log_prot_std, scale=1.0 / scaling.log_prot_std
        )

    # -- to implement ---------------------------------------------------------------------------
    def _log_prob_std(self, y: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _inverse_std(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _cdf_std(self, y: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _context(self, context: torch.Tensor) -> torch.Tensor:
        return ((context - self._ctx_mean.to(context.dtype)) / self._ctx_std.to(context.dtype)).to(self.dtype)

    def _prepare(self, log_prot, context, check_domain: bool):
        as_numpy = not isinstance(context, torch.Tensor)
        ctx = torch.as_tensor(np.asarray(context, dtype=float) if as_numpy else context)
        y = torch.as_tensor(log_prot, dtype=ctx.dtype) if log_prot is not None else None
        if ctx.shape[-1] != 3:
            raise ValueError(f"context must have 3 values on its last axis ({', '.join(CONTEXT_NAMES)}), got shape {tuple(ctx.shape)}")
        if check_domain:
            self.warn_outside_domain(ctx.detach().cpu().numpy())
        return as_numpy, y, ctx

    def warn_outside_domain(self, context: np.ndarray, age: bool = True) -> np.ndarray:
        """Return the in-domain mask of ``context`` and warn (:class:`DomainWarning`) if any is out."""
        inside = self.domain.contains(context, age=age)
        n_out = int((~inside).sum())
        if n_out:
            warnings.warn(
                f"{n_out} of {inside.size} inputs lie outside the training domain "
                "(log10 age/Myr {:.2f} - {:.2f}, (BP-RP)0 {:.2f} - {:.2f} mag, log10 e_(BP-RP)0 {:.2f} - {:.2f}); "
                "the model extrapolates there".format(*self.domain.log10_age_myr, *self.domain.bprp0, *self.domain.log10_e_bprp0),
                DomainWarning,
                stacklevel=3,
            )
        return inside

    # -- public API -----------------------------------------------------------------------------
    def log_prob(self, log_prot, context, *, check_domain: bool = True):
        """Log density of log10 Prot given the context, broadcast over any batch shape.

        Parameters
        ----------
        log_prot : array_like or torch.Tensor, shape ``[...]``
            log10 rotation period [log10 d].
        context : array_like or torch.Tensor, shape ``[..., 3]``
            ``[log10 age/Myr, (BP-RP)0 / mag, log10 e_(BP-RP)0 / mag]`` (see :func:`make_context`).
        check_domain
            Warn (:class:`DomainWarning`) when any context lies outside the training domain
            (on by default; internal batched callers that flag rows themselves switch it off).

        Returns
        -------
        numpy.ndarray or torch.Tensor, shape ``broadcast(log_prot.shape, context.shape[:-1])``
            ln p(log10 Prot | context), per unit log10 Prot. A tensor when ``context`` is a
            tensor (differentiable), else a numpy array (float64).
        """
        as_numpy, y, ctx = self._prepare(log_prot, context, check_domain)
        shape = torch.broadcast_shapes(y.shape, ctx.shape[:-1])
        y = y.expand(shape).reshape(-1, 1)
        ctx = ctx.expand(*shape, 3).reshape(-1, 3)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not as_numpy):
            y_std, logdet = self._target(y.to(self.dtype))
            lp = (self._log_prob_std(y_std, self._context(ctx)) + logdet).reshape(shape)
        return lp.detach().double().numpy() if as_numpy else lp

    def cdf(self, log_prot, context):
        """Cumulative distribution P(log10 P' <= log_prot | context) (same broadcasting as
        :meth:`log_prob`); used for PIT calibration."""
        as_numpy, y, ctx = self._prepare(log_prot, context, False)
        shape = torch.broadcast_shapes(y.shape, ctx.shape[:-1])
        y = y.expand(shape).reshape(-1, 1)
        ctx = ctx.expand(*shape, 3).reshape(-1, 3)
        with torch.no_grad():
            y_std, _ = self._target(y.to(self.dtype))
            c = self._cdf_std(y_std, self._context(ctx)).reshape(shape)
        return c.double().numpy() if as_numpy else c

    def sample(self, context, n: int = 1, *, seed: int | None = None, check_domain: bool = True):
        """Draw log10 Prot for each context.

        Parameters
        ----------
        context : array_like, shape ``[..., 3]``
            As in :meth:`log_prob`.
        n
            Draws per context.
        seed
            Seed of the torch generator; ``None`` seeds a fresh one from system entropy (the
            global torch generator is neither used nor reseeded).

        Returns
        -------
        numpy.ndarray or torch.Tensor, shape ``[n, ...]``
            log10 Prot [log10 d].
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        as_numpy, _, ctx = self._prepare(None, context, check_domain)
        # A generator of our own: an unseeded call seeds it from fresh entropy and leaves the
        # global torch generator (the user's) untouched.
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(int(seed))
        else:
            generator.seed()
        # Noise in the model's dtype from our own generator (nflows' Flow.sample uses the global
        # default dtype and RNG).
        z = torch.randn((n, *ctx.shape[:-1]), generator=generator, dtype=self.dtype)
        y = self._push(z, ctx)
        return y.double().numpy() if as_numpy else y

    def quantile(self, q, context, *, check_domain: bool = True):
        """Quantiles of log10 Prot given the context (exact: the flow is monotone in log Prot).

        Parameters
        ----------
        q : array_like, shape ``[...]``
            Probabilities in (0, 1), broadcast against ``context.shape[:-1]``.
        context : array_like, shape ``[..., 3]``
            As in :meth:`log_prob`.

        Returns
        -------
        numpy.ndarray or torch.Tensor
            log10 Prot [log10 d] below which a fraction ``q`` of the stars lie.
        """
        as_numpy, _, ctx = self._prepare(None, context, check_domain)
        q = torch.as_tensor(np.asarray(q, dtype=float) if not isinstance(q, torch.Tensor) else q, dtype=torch.float64)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile probabilities must lie in (0, 1)")
        shape = torch.broadcast_shapes(q.shape, ctx.shape[:-1])
        y = self._push(torch.special.ndtri(q).to(self.dtype).expand(shape), ctx.expand(*shape, 3))
        return y.double().numpy() if as_numpy else y

    def _push(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """Map base-space values ``z[...]`` to log10 Prot at contexts broadcast to ``[..., 3]``."""
        shape = torch.broadcast_shapes(z.shape, ctx.shape[:-1])
        flat_ctx = ctx.expand(*shape, 3).reshape(-1, 3)
        with torch.no_grad():
            y_std = self._inverse_std(z.expand(shape).reshape(-1, 1), self._context(flat_ctx))
            y, _ = self._target.inverse(y_std)
        return y.reshape(shape)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def shifted_in_age(self, dex: float) -> RotationModel:
        """A copy of this model trained as if every calibration age were ``dex`` [dex] older.

        Training sees log10 age only through its standardization (mean and std over the
        training stars), so retraining on ages all multiplied by ``10**dex`` gives the same
        weights with the age mean and the age domain moved by ``dex``: this copy is that refit,
        computed exactly instead of trained (the test retrains to check it). The copy's ages of
        a cluster are then ``dex`` older wherever the age grid and prior do not cut the
        posterior. Used for the correlated age-scale systematic.
        """
        import copy

        out = copy.deepcopy(self)
        out._shift_age(float(dex))
        return out

    def on_device(self, device: Any = "auto") -> RotationModel:
        """This model on ``device`` (see :func:`chronoflow.flows.device.resolve_device`): itself
        when it is already there, else a copy made at the first call and kept for later ones
        (the copy does not follow later in-place changes of this model's weights)."""
        from .device import resolve_device

        dev = resolve_device(device)
        here = next(self.parameters()).device
        if here == dev or (dev.type == "cuda" and here.type == "cuda" and dev.index is None):
            return self
        cache = self.__dict__.setdefault("_device_copies", {})
        if str(dev) not in cache:
            import copy

            clone = copy.deepcopy(self)
            clone.__dict__["_device_copies"] = {}
            cache[str(dev)] = clone.to(dev)
        return cache[str(dev)]

    def _shift_age(self, dex: float) -> None:
        self.__dict__["_device_copies"] = {}  # copies on other devices keep the old ages
        mean = list(self.scaling.context_mean)
        mean[0] += dex
        self.scaling = replace(self.scaling, context_mean=tuple(mean))
        with torch.no_grad():
            self._ctx_mean[0] += dex
        lo, hi = self.domain.log10_age_myr
        self.domain = replace(self.domain, log10_age_myr=(lo + dex, hi + dex))

    def log_prob_grid(self, log_prot, bprp0, log10_e_bprp0, log10_age_myr, *, max_pairs: int | None = None,
                      device: Any = "cpu") -> np.ndarray:  # fmt: skip
        """ln p(log10 Prot | age, colour, error) for every star at every age: ``array[stars, ages]``.

        The workhorse of age posteriors: one batched evaluation over stars x ages, chunked over
        stars so that at most ``max_pairs`` star-age pairs are in memory at once (default
        :func:`~chronoflow.flows.device.default_max_pairs`), on ``device`` (``"cpu"``, ``"cuda"``,
        ``"auto"``: see :func:`~chronoflow.flows.device.resolve_device`); the result is a numpy
        array either way.

        Parameters
        ----------
        log_prot, bprp0, log10_e_bprp0 : array_like, shape ``[stars]``
            log10 Prot [log10 d], (BP-RP)0 [mag], log10 e_(BP-RP)0 [log10 mag].
        log10_age_myr : array_like, shape ``[ages]`` or ``[stars, ages]``
            Ages [log10 Myr]: one grid shared by all stars, or one row of ages per star.

        Returns
        -------
        numpy.ndarray, shape ``[stars, ages]``, float64
        """
        from .device import default_max_pairs, resolve_device

        dev = resolve_device(device)
        model = self.on_device(dev)
        max_pairs = default_max_pairs(dev) if max_pairs is None else int(max_pairs)
        y, star, ages = (t.to(dev) for t in self._grid_inputs(log_prot, bprp0, log10_e_bprp0, log10_age_myr))
        per_star = ages.ndim == 2
        if per_star and ages.shape[0] != len(y):
            raise ValueError(f"per-star ages need one row per star: {ages.shape[0]} rows for {len(y)} stars")
        n_ages = ages.shape[-1]
        out = np.empty((len(y), n_ages))
        step = max(1, max_pairs // max(n_ages, 1))
        with torch.no_grad():
            for i in range(0, len(y), step):
                rows = slice(i, i + step)
                chunk_ages = ages[rows] if per_star else ages[None, :]
                out[rows] = model._grid_chunk(y[rows], star[rows], chunk_ages).double().cpu().numpy()
        return out

    def _grid_inputs(self, log_prot, bprp0, log10_e_bprp0, log10_age_myr):
        y = torch.as_tensor(np.asarray(log_prot, dtype=float).reshape(-1))
        star = torch.as_tensor(np.stack([np.asarray(bprp0, dtype=float).reshape(-1),
                                         np.asarray(log10_e_bprp0, dtype=float).reshape(-1)], axis=-1))
        ages = np.asarray(log10_age_myr, dtype=float)
        ages = torch.as_tensor(ages if ages.ndim == 2 else ages.reshape(-1))
        return y, star, ages

    def _grid_chunk(self, y: torch.Tensor, star: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """``ages`` is ``[1 or stars, ages]``; returns ``[stars, ages]``."""
        n_ages = ages.shape[-1]
        ctx = torch.cat([ages[..., None].expand(len(y), -1, 1), star[:, None, :].expand(-1, n_ages, 2)], -1)
        return self.log_prob(y[:, None], ctx, check_domain=False)


class SplineFlow(RotationModel):
    """Normalizing flow: standard-normal base, ``n_transforms`` context-conditioned RQ splines."""

    def __init__(self, config: FlowConfig, scaling: Standardization, domain: TrainingDomain):
        super().__init__(config, scaling, domain)
        self.transform = CompositeTransform(
            [
                _ContextSpline(3, config.n_bins, config.hidden, config.n_hidden_layers, config.tail_bound)
                for _ in range(config.n_transforms)
            ]
        )

    def _log_prob_std(self, y, ctx):
        z, logdet = self.transform(y, context=ctx)
        return -0.5 * z[:, 0] ** 2 - 0.5 * math.log(2 * math.pi) + logdet

    def _cdf_std(self, y, ctx):
        z, _ = self.transform(y, context=ctx)
        return torch.special.ndtr(z[:, 0])

    @property
    def splines(self) -> list[_ContextSpline]:
        """The context-conditioned splines, in order from log10 Prot to the base variable."""
        return [m for m in self.transform.modules() if isinstance(m, _ContextSpline)]

    def _spline_chain(self, value: torch.Tensor, params) -> torch.Tensor:
        """ln p from standardized log10 Prot ``value [N]`` and, per spline in order, its raw MLP
        outputs ``[3K - 1, N]`` (an iterable): the one density formula of the fast paths
        (:meth:`log_prob_pairs`, the stars x ages grid), equal to nflows' to rounding (tested)."""
        logdet = torch.zeros_like(value)
        for spline, p in zip(self.splines, params):
            value, ld = rq_spline_forward(value, p, spline.n_bins, spline.tail_bound, math.sqrt(spline.net[-1].in_features))
            logdet = logdet + ld
        return -0.5 * value**2 - 0.5 * math.log(2 * math.pi) + logdet - math.log(self.scaling.log_prot_std)

    def log_prob_pairs(self, log_prot: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """ln p(log10 Prot | context) for rows ``log_prot [N]``, ``context [N, 3]`` (raw units) by the
        fast spline: differentiable under autograd, in the tensors' dtype (the hierarchical
        model's exact Op runs it in float64). No domain checks."""
        c = self._context(context)
        value, _ = self._target(log_prot.to(c.dtype)[:, None])  # the standardization log_prob uses
        return self._spline_chain(value[:, 0], (spline.net(c).T for spline in self.splines))

    def _grid_chunk(self, y, star, ages):
        # The density of log_prob_pairs, organised for a stars x ages grid: the first layer of each
        # context MLP is linear, so its age and star parts are computed once and added by
        # broadcasting; the MLPs run transposed ([features, pairs], one GEMM per layer) so the
        # spline sees its parameters bins-first (see rq_spline_forward).
        dt = self.dtype
        mean, std = self._ctx_mean.to(dt), self._ctx_std.to(dt)
        age_std = (ages.to(dt) - mean[0]) / std[0]  # [1 or S, A]
        star_std = (star.to(dt) - mean[1:]) / std[1:]  # [S, 2]
        n_stars, n_ages = len(y), ages.shape[-1]
        value, _ = self._target(y.to(dt)[:, None])
        value = value.expand(-1, n_ages).reshape(-1)  # [S * A], star-major

        def params():
            for spline in self.splines:
                first = spline.net[0]
                star_part = first.weight[:, 1:] @ star_std.T + first.bias[:, None]  # [H, S]
                hidden = (first.weight[:, :1, None] * age_std[None] + star_part[:, :, None]).reshape(first.out_features, -1)
                hidden = hidden.relu_()
                for layer in spline.net[2:]:  # in-place ReLU and bias: the grid is memory-bound
                    hidden = hidden.relu_() if isinstance(layer, nn.ReLU) else torch.mm(layer.weight, hidden).add_(layer.bias[:, None])
                yield hidden

        return self._spline_chain(value, params()).reshape(n_stars, n_ages)

    def _inverse_std(self, z, ctx):
        y, _ = self.transform.inverse(z, context=ctx)
        return y


class GaussianBaseline(RotationModel):
    """Gaussian in log10 Prot with mean and log-width from an MLP on the context."""

    def __init__(self, config: FlowConfig, scaling: Standardization, domain: TrainingDomain):
        super().__init__(config, scaling, domain)
        self.net = _mlp(3, 2, config.hidden, config.n_hidden_layers)

    def _moments(self, ctx):
        mean, log_sd = self.net(ctx).unbind(-1)
        return mean, log_sd.clamp(-7.0, 3.0)

    def _log_prob_std(self, y, ctx):
        mean, log_sd = self._moments(ctx)
        return -0.5 * ((y[:, 0] - mean) / log_sd.exp()) ** 2 - log_sd - 0.5 * math.log(2 * math.pi)

    def _cdf_std(self, y, ctx):
        mean, log_sd = self._moments(ctx)
        return torch.special.ndtr((y[:, 0] - mean) / log_sd.exp())

    def _inverse_std(self, z, ctx):
        mean, log_sd = self._moments(ctx)
        return (mean + z[:, 0] * log_sd.exp()).unsqueeze(1)


_KINDS: dict[str, type[RotationModel]] = {"spline_flow": SplineFlow, "gaussian": GaussianBaseline}


def build_model(
    config: FlowConfig,
    scaling: Standardization | None = None,
    domain: TrainingDomain | None = None,
    *,
    seed: int = 0,
) -> RotationModel:
    """Create an untrained model of ``config.kind`` with weights initialised from ``seed``."""
    if config.kind not in _KINDS:
        raise ValueError(f"unknown model kind {config.kind!r}; allowed: {', '.join(_KINDS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _KINDS[config.kind](config, scaling or Standardization(), domain or TrainingDomain())
