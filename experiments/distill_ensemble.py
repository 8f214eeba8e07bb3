"""Can one flow stand in for the ensemble? Distil the shipped ensemble into a single flow and
measure, side by side in one run, its single-star speed and how far its ages fall from the
ensemble's dense (exact) ages over the whole catalogue.

    python experiments/distill_ensemble.py [--catalogue PATH] [--rounds 4] [--epochs 25] [--seed 0]

The student has the members' architecture and starts from the first member's weights. It never
sees a catalogue star: it is trained on synthetic stars, whose colour and colour error are those
of random catalogue rows, whose true age is drawn uniformly over the age grid and whose period is
drawn from the ensemble there. For each synthetic star the ensemble's log density is computed at
``--ages`` random ages over the grid, and the loss is the KL divergence between the ensemble's
and the student's age posteriors of that star (flat prior in log age) plus a small squared error
on the log densities themselves. Every round draws fresh synthetic stars.

This is an experiment (it trains for minutes), not a benchmark of a shipped path: the package
ships the ensemble. The figures printed are the evidence for docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

import chronoflow as cf
from chronoflow.data.catalogue import training_sample
from chronoflow.flows.artifact import load_model
from chronoflow.flows.flow import make_context
from chronoflow.inference.posterior import age_grid

ROOT = Path(__file__).resolve().parents[1]
COLS = ["log10_age_p16", "log10_age_median", "log10_age_p84"]


def synthetic_points(ensemble, rows, n_stars: int, n_ages: int, rng: np.random.Generator):
    """Synthetic stars and the ensemble's log density at random ages: (log_prot [S], ctx [S, G, 3], target [S, G])."""
    grid = age_grid()
    lo, hi = grid[0], grid[-1]
    pick = rng.integers(len(rows), size=n_stars)
    colour, err = rows["BPRP_0"].to_numpy(float)[pick], rows["e_BPRP_0"].to_numpy(float)[pick]
    true_age = rng.uniform(lo, hi, n_stars)
    log_p = ensemble.sample(make_context(10**true_age, colour, err), 1, seed=int(rng.integers(2**31)), check_domain=False)[0]
    ages = rng.uniform(lo, hi, (n_stars, n_ages))
    ctx = np.stack([ages, np.broadcast_to(colour[:, None], ages.shape), np.broadcast_to(np.log10(err)[:, None], ages.shape)], axis=-1)
    with torch.no_grad():
        target = ensemble.log_prob(np.broadcast_to(log_p[:, None], ages.shape), ctx, check_domain=False)
    return log_p, ctx, target


def distil(ensemble, rows, *, rounds: int, epochs: int, n_stars: int, n_ages: int, batch: int, lr: float, seed: int):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    student = copy.deepcopy(ensemble.members[0])
    for p in student.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    steps = rounds * epochs * (n_stars // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for r in range(rounds):
        t0 = time.perf_counter()
        log_p, ctx, target = synthetic_points(ensemble, rows, n_stars, n_ages, rng)
        y = torch.as_tensor(np.broadcast_to(log_p[:, None], target.shape).copy())
        c, t = torch.as_tensor(ctx), torch.as_tensor(target)
        post_t = torch.softmax(t, dim=1)
        t_data = time.perf_counter() - t0
        for epoch in range(epochs):
            order = torch.randperm(n_stars)
            total = 0.0
            for start in range(0, n_stars - batch + 1, batch):
                idx = order[start : start + batch]
                s = student.log_prob(y[idx], c[idx], check_domain=False)
                kl = (post_t[idx] * (torch.log_softmax(t[idx], 1) - torch.log_softmax(s, 1))).sum(1).mean()
                mse = (post_t[idx] * n_ages * (s - t[idx]) ** 2).mean()
                loss = kl + 0.01 * mse
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += kl.item() * len(idx)
            print(f"round {r + 1} epoch {epoch + 1}: mean KL {total / n_stars:.5f} nats (data {t_data:.1f} s)", flush=True)
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=ROOT.parent / "shared" / "catalogs" / "prot_catalogue.csv")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--stars", type=int, default=8192, help="synthetic stars per round")
    parser.add_argument("--ages", type=int, default=48, help="random ages per synthetic star")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="threads of the timed ageing runs")
    args = parser.parse_args()

    ensemble = load_model()
    cat = cf.load_catalogue(args.catalogue)
    rows = training_sample(cat)[0]
    rows = rows[rows["BPRP_0"].notna() & rows["e_BPRP_0"].notna()]
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # the small networks train fastest on one thread (as the package trains)
    student = distil(ensemble, rows, rounds=args.rounds, epochs=args.epochs, n_stars=args.stars, n_ages=args.ages,
                     batch=args.batch, lr=args.lr, seed=args.seed)  # fmt: skip
    print(f"distilled in {time.perf_counter() - t0:.0f} s (1 thread)")
    torch.set_num_threads(args.threads)

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t

    exact, t_exact = timed(lambda: cf.star_ages(cat, model=ensemble, method="dense", device="cpu"))
    ens, t_ens = timed(lambda: cf.star_ages(cat, model=ensemble, device="cpu"))
    stu, t_stu = timed(lambda: cf.star_ages(cat, model=student, device="cpu"))
    first, t_first = timed(lambda: cf.star_ages(cat, model=ensemble.members[0], device="cpu"))
    n = len(cat)
    ok = exact["log10_age_median"].notna().to_numpy()
    print(f"\nsingle-star ages of the whole catalogue ({n} rows, {ok.sum()} aged), {args.threads} threads:")
    print(f"  ensemble adaptive {n / t_ens:.0f} stars/s; distilled flow adaptive {n / t_stu:.0f} stars/s "
          f"({t_ens / t_stu:.2f}x); first member alone {n / t_first:.0f} stars/s; ensemble dense {n / t_exact:.0f} stars/s")
    for name, table in (("ensemble adaptive", ens), ("distilled flow", stu), ("first member alone", first)):
        d = np.abs(table.loc[ok, COLS].to_numpy() - exact.loc[ok, COLS].to_numpy())
        worst = d.max(axis=1)
        print(f"  {name:>18} vs ensemble dense, |difference| of p16/50/84 [dex]: max {d.max():.4f}, "
              f"99th pct {np.percentile(worst, 99):.4f}, median {np.median(worst):.4f}, "
              f"stars within 0.005 dex {np.mean(worst <= 0.005):.3f}")


if __name__ == "__main__":
    main()
