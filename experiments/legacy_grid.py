"""The grid path as it was before the bins-first spline (chronoflow 6d1ab54), against the
package's, side by side in one run on the shipped ensemble:

    python experiments/legacy_grid.py [--catalogue PATH] [--threads 2] [--repeat 3]

prints the fast cluster age of Praesepe and the single-star ages of the whole catalogue, each
with the current grid path and with the previous one (bins last, addmm, chunks of 262,144
star-age pairs, patched into ``SplineFlow`` within :func:`legacy_grid`), and the ratios. The
figures are recorded in docs/performance.md. Not used by the package.
"""

from __future__ import annotations

import argparse
import math
import os
import timeit
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torch import nn

import chronoflow as cf
from chronoflow.flows.artifact import load_model
from chronoflow.flows.flow import RotationModel, SplineFlow
from chronoflow.inference import ages as _ages

ROOT = Path(__file__).resolve().parents[1]


def _rq_spline_forward(x: torch.Tensor, params: torch.Tensor, n_bins: int, bound: float, scale: float):
    """Forward rational-quadratic spline with linear tails, as nflows computes it, for 1-D ``x``.

    ``params`` is ``[N, 3K - 1]`` (unnormalized widths, heights, interior slopes). Inputs outside
    [-bound, bound] pass through with zero log-derivative. Mirrors
    ``nflows.transforms.splines.rational_quadratic`` (min bin width/height/derivative 1e-3).
    """
    from nflows.transforms.splines.rational_quadratic import (
        DEFAULT_MIN_BIN_HEIGHT as min_h,
        DEFAULT_MIN_BIN_WIDTH as min_w,
        DEFAULT_MIN_DERIVATIVE as min_d,
    )

    k = n_bins
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    edge = math.log(math.exp(1 - min_d) - 1)  # softplus^-1(1 - min_d): unit slope at both ends

    def knots(unnorm, min_size):
        size = min_size + (1 - min_size * k) * torch.softmax(unnorm / scale, dim=-1)
        cum = torch.nn.functional.pad(torch.cumsum(size, dim=-1), (1, 0))
        cum = 2 * bound * cum - bound
        cum[..., 0], cum[..., -1] = -bound, bound
        return cum, cum[..., 1:] - cum[..., :-1]

    cumw, widths = knots(params[:, :k], min_w)
    cumh, heights = knots(params[:, k : 2 * k], min_h)
    slopes = torch.nn.functional.pad(params[:, 2 * k :], (1, 1), value=edge)
    slopes = min_d + torch.nn.functional.softplus(slopes)
    locations = cumw.clone()
    locations[:, -1] += 1e-6
    idx = ((xc[:, None] >= locations).sum(-1) - 1).clamp(0, k - 1)[:, None]
    x0, w = cumw.gather(-1, idx)[:, 0], widths.gather(-1, idx)[:, 0]
    y0, h = cumh.gather(-1, idx)[:, 0], heights.gather(-1, idx)[:, 0]
    d0, d1 = slopes.gather(-1, idx)[:, 0], slopes[:, 1:].gather(-1, idx)[:, 0]
    delta = h / w
    theta = (xc - x0) / w
    t1t = theta * (1 - theta)
    denom = delta + (d0 + d1 - 2 * delta) * t1t
    out = y0 + h * (delta * theta**2 + d0 * t1t) / denom
    logdet = torch.log(delta**2 * (d1 * theta**2 + 2 * delta * t1t + d0 * (1 - theta) ** 2)) - 2 * torch.log(denom)
    return torch.where(inside, out, x), torch.where(inside, logdet, torch.zeros_like(logdet))


def _legacy_grid_chunk(self, y, star, ages):
    # Same density as log_prob, organised for a stars x ages grid: the first layer of each
    # context MLP is linear, so its age and star parts are computed once and added by
    # broadcasting; the spline is evaluated without nflows' boolean-mask scatter.
    dt = self.dtype
    mean, std = self._ctx_mean.to(dt), self._ctx_std.to(dt)
    age_std = ((ages.to(dt) - mean[0]) / std[0])[..., None]  # [1 or S, A, 1]
    star_std = (star.to(dt) - mean[1:]) / std[1:]  # [S, 2]
    value, _ = self._target(y.to(dt)[:, None])
    value = value.expand(-1, ages.shape[-1]).contiguous()  # [S, A]
    logdet = torch.zeros_like(value)
    for spline in self.transform._transforms:
        first, rest = spline.net[0], spline.net[1:]
        hidden = age_std * first.weight[:, 0] + (star_std @ first.weight[:, 1:].T + first.bias)[:, None, :]
        params = hidden.reshape(-1, hidden.shape[-1])
        for layer in rest:  # in-place ReLU and fused bias: the grid is memory-bound
            params = params.relu_() if isinstance(layer, nn.ReLU) else torch.addmm(layer.bias, params, layer.weight.T)
        value, ld = _rq_spline_forward(value.reshape(-1), params, spline.n_bins, spline.tail_bound,
                                       math.sqrt(spline.net[-1].in_features))
        value, logdet = value.reshape(logdet.shape), logdet + ld.reshape(logdet.shape)
    return -0.5 * value**2 - 0.5 * math.log(2 * math.pi) + logdet - math.log(self.scaling.log_prot_std)


@contextmanager
def legacy_grid():
    """Within the block, every SplineFlow evaluates grids the old way (bins last, addmm, chunks of
    262,144 star-age pairs)."""
    new_chunk, new_grid = SplineFlow._grid_chunk, RotationModel.log_prob_grid

    def old_grid(self, *args, max_pairs: int = 262_144, **kwargs):
        return new_grid(self, *args, max_pairs=max_pairs, **kwargs)

    SplineFlow._grid_chunk, RotationModel.log_prob_grid = _legacy_grid_chunk, old_grid
    try:
        yield
    finally:
        SplineFlow._grid_chunk, RotationModel.log_prob_grid = new_chunk, new_grid


def best_of(fn, repeat: int) -> float:
    """Best wall-clock time [s] of ``repeat`` calls (garbage collection on, as in the package)."""
    return min(timeit.repeat(fn, setup="import gc; gc.enable()", number=1, repeat=repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalogue", default=os.environ.get("CHRONOFLOW_CATALOGUE", ROOT.parent / "shared/catalogs/prot_catalogue.csv"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cluster_age = partial(_ages.cluster_age, device="cpu")
    star_ages = partial(_ages.star_ages, device="cpu")
    df = cf.load_catalogue(args.catalogue)
    model = load_model()
    n = len(df)
    cluster_age(df, "Praesepe", model=model)  # warm up
    t_cluster = best_of(lambda: cluster_age(df, "Praesepe", model=model), args.repeat)
    t_stars = best_of(lambda: star_ages(df, model=model), args.repeat)
    with legacy_grid():
        t_c_old = best_of(lambda: cluster_age(df, "Praesepe", model=model), args.repeat)
        t_s_old = best_of(lambda: star_ages(df, model=model), 1)
    print(f"chronoflow {cf.__version__}, torch {torch.__version__}, {args.threads} thread{'s' * (args.threads > 1)}; "
          f"model {model.n_parameters()} parameters")
    print(f"current grid path: Praesepe {t_cluster:.3f} s, single stars {n / t_stars:.0f} stars/s")
    print(f"previous grid path on the same ensemble: Praesepe {t_c_old:.3f} s, single stars {n / t_s_old:.0f} "
          f"stars/s -> the bins-first path is {t_c_old / t_cluster:.2f}x (cluster) and {t_s_old / t_stars:.2f}x "
          f"(stars) faster")


if __name__ == "__main__":
    main()
