"""Per-lag BATCH for all lags in one pass: independent models per lag, trained together (stacked).

Multi-scale BATCH shares one model across lags and so must trade accuracy for its saving.  Here every
lag keeps its own discriminators and alignment — the same networks, losses, Sinkhorn and readout as
batch.py — but their weights are stacked along a leading lag axis: one batched matmul per layer
serves all L lags, and one Sinkhorn call couples every lag × class slice of a chunk of lags (the
alignment is elementwise-bound, so on a CPU small chunks that stay in cache are faster).  Adam is
elementwise and the summed loss has disjoint parameters per lag, so this is L independent fits, not
a shared one; the small per-lag discriminators are launch-bound on a CPU, which stacking removes (≈4× on that
phase); the alignment phase costs what it costs per lag, so the total saving is bounded by it.

Differences from L separate batch_pid calls: minibatch order is drawn per lag from one generator
(so results match per-lag BATCH in distribution, not bit for bit); an epoch is the largest lag's
number of minibatches (smaller lags cycle their own permutation); the Sinkhorn stops once every
lag × class slice of a chunk of lags is within tolerance.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from timoe.config import BatchEstimatorConfig
from timoe.interactions._torch import cpu_threads, resolve_device
from timoe.interactions.batch import _CLAMP as CLAMP
from timoe.interactions.batch import (
    LN2,
    BatchPID,
    batches,
    kl_rows,
    label_prior,
    sinkhorn_classes,
    standardise,
)

Split = tuple[torch.Tensor, ...]  # (x1 (n, D1), x2 (n, D2), y (n,), strata (n,))


class StackedMLP(nn.Module):
    """L independent 3-layer ReLU MLPs d_in → hidden → hidden → d_out; input (L, n, d_in)."""

    def __init__(self, n_lags: int, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        dims = [d_in, hidden, hidden, d_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in itertools.pairwise(dims):
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default initialisation, per lag
            self.weights.append(nn.Parameter(torch.empty(n_lags, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_lags, 1, b).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor, lag: int | None = None) -> torch.Tensor:
        """(L, n, d_in) -> (L, n, d_out); with `lag`, only that lag's network on x (1, n, d_in)."""
        sel = slice(None) if lag is None else slice(lag, lag + 1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b[sel], x, w[sel])
            if i < last:
                x = torch.relu(x)
        return x


def _onehot_ctx(x: torch.Tensor, ctx: torch.Tensor, n_ctx: int) -> torch.Tensor:
    """x (L, n, d) with the strata (L, n) appended one-hot when there are any."""
    if n_ctx == 0:
        return x
    return torch.cat([x, nn.functional.one_hot(ctx, n_ctx).to(x.dtype)], -1)


def _embed(f: StackedMLP, x: torch.Tensor, k: int, lag: int | None) -> torch.Tensor:
    """Per-class embeddings (L, n, K, d), standardised over the embedding axis as in batch.py."""
    e = f(x, lag).unflatten(-1, (k, -1))
    return (e - e.mean(-1, keepdim=True)) / torch.sqrt(e.var(-1, keepdim=True) + 1e-8)


def _kernel(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """Clamped log-kernels (L, K, n1, n2) from embeddings (L, n1, K, d), (L, n2, K, d)."""
    logits = torch.einsum("lakd,lbkd->lkab", e1, e2)
    return (logits / math.sqrt(e1.shape[-1])).clamp(-CLAMP, CLAMP)


def coupling_terms_lags(
    log_a: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    ctx: torch.Tensor | None,
    cfg: BatchEstimatorConfig,
    last_step_grad: bool = False,
) -> tuple[torch.Tensor, int]:
    """I_q(X2; Y | X1) per lag (L,), nats, and the Sinkhorn iterations of the one joint solve.

    log_a: (L, K, n, n); p1, p2: (L, n, K); ctx: strata (L, n) or None.  batch.coupling_terms with
    a leading lag axis: every lag × class slice goes through a single batched Sinkhorn.
    """
    n_lags, k, n, _ = log_a.shape
    r, c = p1.clamp_min(1e-12), p2.clamp_min(1e-12)
    if ctx is not None:
        same = ctx.unsqueeze(2) == ctx.unsqueeze(1)  # (L, n, n)
        log_a = log_a.masked_fill(~same.unsqueeze(1), -math.inf)
        onehot = nn.functional.one_hot(ctx).to(r.dtype)  # (L, n, n_ctx)
        scale = (onehot.transpose(1, 2) @ r) / (onehot.transpose(1, 2) @ c).clamp_min(1e-12)
        c = c * (onehot @ scale)
    else:
        c = c * (r.sum(1, keepdim=True) / c.sum(1, keepdim=True))
    log_r = r.log().transpose(1, 2).contiguous()  # (L, K, n)
    log_q, iters = sinkhorn_classes(
        log_a.reshape(n_lags * k, n, n),
        log_r.reshape(n_lags * k, n),
        c.log().transpose(1, 2).reshape(n_lags * k, n),
        cfg.sinkhorn_iters,
        cfg.sinkhorn_tol,
        last_step_grad,
    )
    log_q = log_q.view(n_lags, k, n, n)
    q = log_q.exp()
    if ctx is not None:  # masked pairs: see batch.coupling_terms
        log_q = torch.where(torch.isfinite(log_q), log_q, 0.0)
    log_mix = torch.logsumexp(log_q, dim=1, keepdim=True)
    terms = q * (log_q - log_r.unsqueeze(3) - log_mix)
    return terms.sum((1, 2, 3)) / n, iters


def _split(
    s: Any, holdout: float, batch_size: int, gen: torch.Generator, dev: torch.device
) -> tuple[Split, Split]:
    """One lag's standardised train and held-out tensors, split as batch_pid splits them."""
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
    return tuple(tuple(torch.from_numpy(u[idx]).to(dev) for u in (a, b, y, c)) for idx in (tr, ev))


def _epoch_batches(
    train: list[Split], size: int, gen: torch.Generator, dev: torch.device, drop_last: bool
) -> list[torch.Tensor]:
    """An epoch of stacked minibatch indices (L, size): as many steps as the largest lag needs, each
    lag cycling through fresh permutations of its own samples."""
    sizes = [len(t[2]) for t in train]
    size = min(size, *sizes)
    steps = max((n // size) if drop_last else math.ceil(n / size) for n in sizes)
    cols = []
    for n in sizes:
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(steps * size / n))])
        cols.append(order[: steps * size].view(steps, size))
    return list(torch.stack(cols, 1).to(dev))  # steps × (L, size)


def _gather(train: list[Split], idx: torch.Tensor) -> Split:
    """Stack lag l's rows idx[l] of every field: x1 (L, b, D1), x2 (L, b, D2), y (L, b), strata (L, b)."""
    return tuple(torch.stack([t[f][i] for t, i in zip(train, idx, strict=True)]) for f in range(4))


def stacked_pid(
    samples: Mapping[int, Any],
    cfg: BatchEstimatorConfig | None = None,
    *,
    n_classes: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    holdout: float = 0.2,
    num_threads: int | None = 1,
    last_step_grad: bool = False,
    lag_chunk: int | None = None,
) -> dict[int, BatchPID]:
    """Per-lag BATCH for every lag of `samples` ({lag: LagSamples}, equal feature widths) in one
    stacked pass; returns {lag: BatchPID} (seconds: the run's time shared per lag).

    `last_step_grad`: train the alignment through only the Sinkhorn's last step (see
    batch.sinkhorn_classes), cheaper per step; measured in benchmarks/bench_multiscale.py.
    `lag_chunk`: lags per alignment kernel + Sinkhorn call (None: all of them on CUDA, 2 on CPU,
    where small chunks stay in cache: 10–20% faster than all 8 lags at once at K = 4, n = 256).
    """
    dev = resolve_device(device)
    chunk = lag_chunk or (len(samples) if dev.type == "cuda" else 2)
    with cpu_threads(num_threads if dev.type == "cpu" else None):
        return _stacked_pid(
            samples,
            cfg or BatchEstimatorConfig(),
            n_classes,
            dev,
            seed,
            holdout,
            last_step_grad,
            max(1, chunk),
        )


def _train_discriminators(
    train: list[Split], k: int, n_ctx: int, cfg: BatchEstimatorConfig, gen: torch.Generator, dev: torch.device
) -> list[StackedMLP]:
    """p̂(y|x1), p̂(y|x2), p̂(y|x1,x2) per lag, trained with cross-entropy on stacked minibatches.

    The three networks share each minibatch and one Adam (elementwise, so still independent fits):
    one gather and one optimiser step per minibatch instead of three.
    """
    d1, d2 = train[0][0].shape[1], train[0][1].shape[1]
    nets = [StackedMLP(len(train), d + n_ctx, cfg.hidden, k).to(dev) for d in (d1, d2, d1 + d2)]
    opt = torch.optim.Adam([p for net in nets for p in net.parameters()], lr=cfg.lr)
    for _ in range(cfg.discrim_epochs):
        for idx in _epoch_batches(train, cfg.batch_size, gen, dev, drop_last=False):
            x1, x2, y, c = _gather(train, idx)
            loss = torch.zeros((), device=dev)
            for net, x in zip(nets, (x1, x2, torch.cat([x1, x2], -1)), strict=True):
                logits = net(_onehot_ctx(x, c, n_ctx))
                # each lag's mean cross-entropy, summed: disjoint parameters, so per-lag gradients
                ce = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
                loss = loss + ce.view(len(train), -1).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for net in nets:
        net.requires_grad_(False)
    return nets


def _stacked_pid(
    samples: Mapping[int, Any],
    cfg: BatchEstimatorConfig,
    n_classes: int | None,
    dev: torch.device,
    seed: int,
    holdout: float,
    last_step_grad: bool,
    lag_chunk: int,
) -> dict[int, BatchPID]:
    t0 = time.perf_counter()
    lags = list(samples)
    if not lags:
        raise ValueError("no lags given")
    use_ctx = any(s.context is not None for s in samples.values())
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        splits = [_split(samples[lag], holdout, cfg.batch_size, gen, dev) for lag in lags]
        train, evals = [s[0] for s in splits], [s[1] for s in splits]
        if len({(t[0].shape[1], t[1].shape[1]) for t in train}) != 1:
            raise ValueError("stacked_pid needs the same x1, x2 widths at every lag")
        k = int(n_classes or max(int(t[2].max()) for t in train) + 1)
        n_ctx = max(int(t[3].max()) for t in train + evals) + 1 if use_ctx else 0
        d1 = _train_discriminators(train, k, n_ctx, cfg, gen, dev)
        f1, f2, iters = _train_alignment(
            train, d1, k, n_ctx, use_ctx, cfg, gen, dev, last_step_grad, lag_chunk
        )
        out = {
            lag: _readout(li, train[li], evals[li], d1, f1, f2, k, n_ctx, use_ctx, cfg, dev)
            for li, lag in enumerate(lags)
        }
    seconds = (time.perf_counter() - t0) / len(lags)
    mean_iters = float(np.mean(iters)) if iters else 0.0
    return {
        lag: BatchPID.from_informations(i1, i2, i12, iq, n, seconds, mean_iters)
        for lag, (i1, i2, i12, iq, n) in out.items()
    }


def _train_alignment(
    train: list[Split],
    disc: list[StackedMLP],
    k: int,
    n_ctx: int,
    use_ctx: bool,
    cfg: BatchEstimatorConfig,
    gen: torch.Generator,
    dev: torch.device,
    last_step_grad: bool,
    lag_chunk: int,
) -> tuple[StackedMLP, StackedMLP, list[int]]:
    """Per-lag alignment embeddings minimising Σ_lags I_q(X2; Y | X1), frozen discriminators."""
    d1, d2 = train[0][0].shape[1], train[0][1].shape[1]
    f1 = StackedMLP(len(train), d1, cfg.hidden, k * cfg.embed_dim).to(dev)
    f2 = StackedMLP(len(train), d2, cfg.hidden, k * cfg.embed_dim).to(dev)
    opt = torch.optim.Adam([*f1.parameters(), *f2.parameters()], lr=cfg.lr)
    iters = []
    for _ in range(cfg.align_epochs):
        for idx in _epoch_batches(train, cfg.batch_size, gen, dev, drop_last=True):
            x1, x2, _, c = _gather(train, idx)
            with torch.no_grad():
                p1 = disc[0](_onehot_ctx(x1, c, n_ctx)).softmax(-1)
                p2 = disc[1](_onehot_ctx(x2, c, n_ctx)).softmax(-1)
            e1, e2 = _embed(f1, x1, k, None), _embed(f2, x2, k, None)
            loss, most = torch.zeros((), device=dev), 0
            # The kernels and the Sinkhorn go `lag_chunk` lags at a time: they are elementwise-bound on
            # (lags, K, n, n), and on a CPU chunks small enough to stay in cache beat one big sweep.
            for lo in range(0, len(train), lag_chunk):
                sl = slice(lo, lo + lag_chunk)
                terms, it = coupling_terms_lags(
                    _kernel(e1[sl], e2[sl]), p1[sl], p2[sl], c[sl] if use_ctx else None, cfg, last_step_grad
                )
                loss, most = loss + terms.sum(), max(most, it)
            opt.zero_grad()
            loss.backward()
            opt.step()
            iters.append(most)
    return f1, f2, iters


@torch.no_grad()
def _readout(
    li: int,
    tr: Split,
    ev: Split,
    disc: list[StackedMLP],
    f1: StackedMLP,
    f2: StackedMLP,
    k: int,
    n_ctx: int,
    use_ctx: bool,
    cfg: BatchEstimatorConfig,
    dev: torch.device,
) -> tuple[float, float, float, float, int]:
    """I(Y;X1), I(Y;X2), I(Y;X1,X2), min I_q (bits) of lag index li on its held-out samples."""
    prior = label_prior(tr[2], tr[3], k, max(n_ctx, 1))
    sums = torch.zeros(4, dtype=torch.float64)
    for idx in batches(len(ev[2]), cfg.batch_size, None, dev, drop_last=False):
        x1, x2, _, c = (t[idx].unsqueeze(0) for t in ev)
        p1, p2, p12 = (
            net(_onehot_ctx(x, c, n_ctx), li).softmax(-1)[0]
            for net, x in zip(disc, (x1, x2, torch.cat([x1, x2], -1)), strict=True)
        )
        log_a = _kernel(_embed(f1, x1, k, li), _embed(f2, x2, k, li))
        cond, _ = coupling_terms_lags(log_a, p1[None], p2[None], c if use_ctx else None, cfg)
        pr = prior[c[0]]
        m1 = kl_rows(p1, pr).mean()
        vals = torch.stack([m1, kl_rows(p2, pr).mean(), kl_rows(p12, pr).mean(), m1 + cond[0]])
        sums += vals.double().cpu() * len(idx)
    i1, i2, i12, iq = (sums / len(ev[2]) / LN2).tolist()
    return i1, i2, i12, iq, len(tr[2]) + len(ev[2])
