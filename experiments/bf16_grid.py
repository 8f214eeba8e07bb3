"""Would bfloat16 matrix products make single-star ages fast enough? Measured side by side in
one run: the shipped ensemble's single-star ages of the whole catalogue with the networks'
hidden-layer products in float32 (the package) and in bfloat16 (an experiment), their speed and
how far each falls from the dense float32 ages.

    python experiments/bf16_grid.py [--catalogue PATH] [--threads 2] [--repeat 3]

Only the hidden x hidden and hidden x output products of each context network run in bfloat16
(inputs and weights rounded to bfloat16, accumulated by the CPU's bfloat16 kernels, results back
in float32); the first layer, the splines and everything after stay float32. On a CPU without
bfloat16 instructions torch emulates them, and the experiment says nothing about speed.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

import chronoflow as cf
from chronoflow.flows.artifact import load_model
from chronoflow.flows.flow import SplineFlow

ROOT = Path(__file__).resolve().parents[1]
COLS = ["log10_age_p16", "log10_age_median", "log10_age_p84"]


def _grid_chunk_bf16(self, y, star, ages):
    """SplineFlow._grid_chunk with the hidden-layer products in bfloat16."""
    dt = self.dtype
    mean, std = self._ctx_mean.to(dt), self._ctx_std.to(dt)
    age_std = (ages.to(dt) - mean[0]) / std[0]
    star_std = (star.to(dt) - mean[1:]) / std[1:]
    n_stars, n_ages = len(y), ages.shape[-1]
    value, _ = self._target(y.to(dt)[:, None])
    value = value.expand(-1, n_ages).reshape(-1)
    cache = self.__dict__.setdefault("_bf16_weights", {})

    def params():
        for i, spline in enumerate(self.splines):
            first = spline.net[0]
            star_part = first.weight[:, 1:] @ star_std.T + first.bias[:, None]
            hidden = (first.weight[:, :1, None] * age_std[None] + star_part[:, :, None]).reshape(first.out_features, -1)
            hidden = hidden.relu_()
            for j, layer in enumerate(spline.net[2:]):
                if isinstance(layer, nn.ReLU):
                    hidden = hidden.relu_()
                    continue
                if (i, j) not in cache:  # the weights are rounded to bfloat16 once, not per chunk
                    cache[(i, j)] = layer.weight.to(torch.bfloat16)
                w = cache[(i, j)]
                hidden = torch.mm(w, hidden.to(torch.bfloat16)).to(dt).add_(layer.bias[:, None])
            yield hidden

    return self._spline_chain(value, params()).reshape(n_stars, n_ages)


@contextmanager
def bf16_products():
    original = SplineFlow._grid_chunk
    SplineFlow._grid_chunk = _grid_chunk_bf16
    try:
        yield
    finally:
        SplineFlow._grid_chunk = original


def best_of(fn, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=ROOT.parent / "shared" / "catalogs" / "prot_catalogue.csv")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    print(f"CPU bfloat16 instructions: avx512_bf16 {'yes' if 'avx512_bf16' in flags else 'no'}, "
          f"amx_bf16 {'yes' if 'amx_bf16' in flags else 'no'}; {args.threads} threads, best of {args.repeat}")
    model = load_model()
    cat = cf.load_catalogue(args.catalogue)
    n = len(cat)
    exact = cf.star_ages(cat, model=model, method="dense", device="cpu")
    f32, t32 = best_of(lambda: cf.star_ages(cat, model=model, device="cpu"), args.repeat)
    with bf16_products():
        b16, t16 = best_of(lambda: cf.star_ages(cat, model=model, device="cpu"), args.repeat)
    ok = exact["log10_age_median"].notna().to_numpy()
    print(f"single-star ages of the whole catalogue ({n} rows): float32 {n / t32:.0f} stars/s, "
          f"bfloat16 products {n / t16:.0f} stars/s ({t32 / t16:.2f}x)")
    for name, table in (("float32", f32), ("bfloat16 products", b16)):
        d = np.abs(table.loc[ok, COLS].to_numpy() - exact.loc[ok, COLS].to_numpy()).max(axis=1)
        print(f"  {name:>17} vs dense float32, |difference| of p16/50/84 [dex]: max {d.max():.4f}, "
              f"99th pct {np.percentile(d, 99):.4f}, median {np.median(d):.5f}, within 0.005 dex {np.mean(d <= 0.005):.4f}")


if __name__ == "__main__":
    main()
