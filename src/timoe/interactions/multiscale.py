"""Multi-scale BATCH: one estimator for every lag instead of one per lag (method.md §2).

Shared encoders for X1 and X2 plus a learned lag embedding e(τ) fed to every discriminator head and
to the alignment embeddings.  Three phases:
1. train the discriminators (encoders + heads) with τ drawn per step;
2. freeze them and train the alignment, again with τ drawn per step;
3. read out R, U1, U2, S for every τ on its held-out samples (as in batch.py).
A "epoch" is as many steps as one epoch over a single lag's data, so the whole run costs about one
per-lag BATCH fit: the τ-fold saving the paper claims.  Whether the estimates stay close to the
per-lag ones is measured (benchmarks/bench_multiscale.py), not assumed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from timoe.config import BatchEstimatorConfig
from timoe.interactions._torch import cpu_threads, resolve_device
from timoe.interactions.batch import (
    LN2,
    BatchPID,
    batches,
    class_kernel,
    coupling_terms,
    kl_rows,
    label_prior,
    mlp,
    standardise,
    with_ctx,
)

_LAG_DIM = 8


@dataclass(frozen=True)
class LagSamples:
    """Samples of one lag: X1 (N, D1), X2 (N, D2), labels (N,), optional strata (N,)."""

    x1: Any
    x2: Any
    y: Any
    context: Any = None


class _Discriminators(nn.Module):
    def __init__(self, d1: int, d2: int, k: int, n_lags: int, n_ctx: int, hidden: int) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.lag = nn.Embedding(n_lags, _LAG_DIM)
        self.enc1, self.enc2 = mlp(d1, hidden, hidden), mlp(d2, hidden, hidden)
        extra = _LAG_DIM + n_ctx
        self.h1, self.h2 = mlp(hidden + extra, hidden, k), mlp(hidden + extra, hidden, k)
        self.h12 = mlp(2 * hidden + extra, hidden, k)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, lag: torch.Tensor, ctx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of p̂(y|x1), p̂(y|x2), p̂(y|x1,x2) at lag index `lag` (scalar tensor)."""
        e = self.lag(lag).expand(len(x1), -1)
        z1, z2 = self.enc1(x1), self.enc2(x2)
        return (
            self.h1(with_ctx(torch.cat([z1, e], 1), ctx, self.n_ctx)),
            self.h2(with_ctx(torch.cat([z2, e], 1), ctx, self.n_ctx)),
            self.h12(with_ctx(torch.cat([z1, z2, e], 1), ctx, self.n_ctx)),
        )


class _Alignment(nn.Module):
    def __init__(self, d1: int, d2: int, k: int, n_lags: int, cfg: BatchEstimatorConfig) -> None:
        super().__init__()
        self.k, self.d = k, cfg.embed_dim
        self.lag = nn.Embedding(n_lags, _LAG_DIM)
        self.f1 = mlp(d1 + _LAG_DIM, cfg.hidden, k * cfg.embed_dim)
        self.f2 = mlp(d2 + _LAG_DIM, cfg.hidden, k * cfg.embed_dim)

    def embed(self, f: nn.Module, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        out = f(torch.cat([x, e.expand(len(x), -1)], 1)).unflatten(1, (self.k, self.d))
        return (out - out.mean(-1, keepdim=True)) / torch.sqrt(out.var(-1, keepdim=True) + 1e-8)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, lag: torch.Tensor) -> torch.Tensor:
        """Log kernel (K, n1, n2) at lag index `lag`."""
        e = self.lag(lag)
        return class_kernel(self.embed(self.f1, x1, e), self.embed(self.f2, x2, e))


def _prepare(
    samples: Mapping[int, LagSamples],
    holdout: float,
    batch_size: int,
    gen: torch.Generator,
    dev: torch.device,
) -> tuple[list[tuple[torch.Tensor, ...]], list[tuple[torch.Tensor, ...]]]:
    train, evals = [], []
    for s in samples.values():
        a, b = standardise(s.x1), standardise(s.x2)
        y = np.asarray(s.y, dtype=np.int64).ravel()
        c = (
            np.zeros(len(y), dtype=np.int64)
            if s.context is None
            else np.asarray(s.context, dtype=np.int64).ravel()
        )
        n = len(y)
        if not (len(a) == len(b) == n) or n < 16:
            raise ValueError("every lag needs x1, x2, y with the same number (≥ 16) of samples")
        perm = torch.randperm(n, generator=gen).numpy()
        n_eval = max(round(holdout * n), min(n // 2, batch_size)) if holdout > 0 else 0
        tr, ev = (perm[: n - n_eval], perm[n - n_eval :]) if n_eval else (perm, perm)
        for idx, out in ((tr, train), (ev, evals)):
            out.append(tuple(torch.from_numpy(u[idx]).to(dev) for u in (a, b, y, c)))
    return train, evals


def multiscale_pid(
    samples: Mapping[int, LagSamples],
    cfg: BatchEstimatorConfig | None = None,
    *,
    n_classes: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    holdout: float = 0.2,
    steps_factor: float = 1.0,
    num_threads: int | None = 1,
) -> dict[int, BatchPID]:
    """One BATCH model for all lags; returns {lag: BatchPID} (seconds: the run's time shared per lag).

    steps_factor scales the training steps relative to one per-lag BATCH fit (1.0: the paper's
    τ-fold saving; len(samples): the same compute as fitting every lag separately).
    """
    dev = resolve_device(device)
    with cpu_threads(num_threads if dev.type == "cpu" else None):
        return _multiscale_pid(samples, cfg, n_classes, dev, seed, holdout, steps_factor)


def _multiscale_pid(
    samples: Mapping[int, LagSamples],
    cfg: BatchEstimatorConfig | None,
    n_classes: int | None,
    dev: torch.device,
    seed: int,
    holdout: float,
    steps_factor: float,
) -> dict[int, BatchPID]:
    t0 = time.perf_counter()
    cfg = cfg or BatchEstimatorConfig()
    lags = list(samples)
    if not lags:
        raise ValueError("no lags given")
    use_ctx = any(s.context is not None for s in samples.values())
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        train, evals = _prepare(samples, holdout, cfg.batch_size, gen, dev)
        k = int(n_classes or max(int(t[2].max()) for t in train) + 1)
        n_ctx = max(int(t[3].max()) for t in train + evals) + 1 if use_ctx else 0
        steps = max(1, round(steps_factor * math.ceil(np.mean([len(t[2]) for t in train]) / cfg.batch_size)))
        disc = _train_discriminators(train, k, n_ctx, cfg, cfg.discrim_epochs * steps, gen, dev)
        align, iters = _train_alignment(train, disc, k, use_ctx, cfg, cfg.align_epochs * steps, gen, dev)
        out = {
            lag: _readout(li, train[li], evals[li], disc, align, k, n_ctx, use_ctx, cfg, dev)
            for li, lag in enumerate(lags)
        }
    seconds = (time.perf_counter() - t0) / len(lags)
    mean_iters = float(np.mean(iters)) if iters else 0.0
    return {
        lag: BatchPID.from_informations(i1, i2, i12, iq, n, seconds, mean_iters)
        for lag, (i1, i2, i12, iq, n) in out.items()
    }


Split = tuple[torch.Tensor, ...]  # (x1 (n, D1), x2 (n, D2), y (n,), strata (n,)) of one lag


def _train_discriminators(
    train: list[Split],
    k: int,
    n_ctx: int,
    cfg: BatchEstimatorConfig,
    steps: int,
    gen: torch.Generator,
    dev: torch.device,
) -> _Discriminators:
    """Phase 1: the shared discriminators, a lag drawn per step; returned frozen."""
    d1, d2 = train[0][0].shape[1], train[0][1].shape[1]
    disc = _Discriminators(d1, d2, k, len(train), n_ctx, cfg.hidden).to(dev)
    opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
    for _ in range(steps):
        li, idx = _draw(train, cfg.batch_size, gen, dev)
        x1, x2, y, c = (u[idx] for u in train[li])
        loss = sum(nn.functional.cross_entropy(lg, y) for lg in disc(x1, x2, _lag(li, dev), c))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return disc.eval().requires_grad_(False)


def _train_alignment(
    train: list[Split],
    disc: _Discriminators,
    k: int,
    use_ctx: bool,
    cfg: BatchEstimatorConfig,
    steps: int,
    gen: torch.Generator,
    dev: torch.device,
) -> tuple[_Alignment, list[int]]:
    """Phase 2: the shared alignment, frozen discriminators, a lag drawn per step; returns it and
    the Sinkhorn iterations of every step."""
    align = _Alignment(train[0][0].shape[1], train[0][1].shape[1], k, len(train), cfg).to(dev)
    opt = torch.optim.Adam(align.parameters(), lr=cfg.lr)
    iters: list[int] = []
    for _ in range(steps):
        li, idx = _draw(train, cfg.batch_size, gen, dev)
        x1, x2, _, c = (u[idx] for u in train[li])
        lag = _lag(li, dev)
        with torch.no_grad():
            l1, l2, _ = disc(x1, x2, lag, c)
        loss, it = coupling_terms(
            align(x1, x2, lag), l1.softmax(-1), l2.softmax(-1), c if use_ctx else None, cfg
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        iters.append(it)
    return align, iters


@torch.no_grad()
def _readout(
    li: int,
    tr: Split,
    ev: Split,
    disc: _Discriminators,
    align: _Alignment,
    k: int,
    n_ctx: int,
    use_ctx: bool,
    cfg: BatchEstimatorConfig,
    dev: torch.device,
) -> tuple[float, float, float, float, int]:
    """Phase 3: I(Y;X1), I(Y;X2), I(Y;X1,X2), min I_q (bits) of lag index li on its held-out samples."""
    prior = label_prior(tr[2], tr[3], k, max(n_ctx, 1))
    sums = torch.zeros(4, dtype=torch.float64)
    lag = _lag(li, dev)
    for idx in batches(len(ev[2]), cfg.batch_size, None, dev, drop_last=False):
        x1, x2, _, c = (u[idx] for u in ev)
        p1, p2, p12 = (lg.softmax(-1) for lg in disc(x1, x2, lag, c))
        cond, _ = coupling_terms(align(x1, x2, lag), p1, p2, c if use_ctx else None, cfg)
        pr = prior[c]
        m1 = kl_rows(p1, pr).mean()
        vals = torch.stack([m1, kl_rows(p2, pr).mean(), kl_rows(p12, pr).mean(), m1 + cond])
        sums += vals.double().cpu() * len(idx)
    i1, i2, i12, iq = (sums / len(ev[2]) / LN2).tolist()
    return i1, i2, i12, iq, len(tr[2]) + len(ev[2])


def _lag(index: int, dev: torch.device) -> torch.Tensor:
    return torch.tensor([index], device=dev)


def _draw(
    train: list[tuple[torch.Tensor, ...]], size: int, gen: torch.Generator, dev: torch.device
) -> tuple[int, torch.Tensor]:
    """A lag index uniformly at random, then a minibatch without replacement from that lag."""
    li = int(torch.randint(len(train), (1,), generator=gen))
    n = len(train[li][2])
    return li, torch.randperm(n, generator=gen)[: min(size, n)].to(dev)
