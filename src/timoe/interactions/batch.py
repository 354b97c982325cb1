"""BATCH: neural PID estimator on continuous features, no binning (method.md §1, estimator 2).

1. Three discriminators p̂(y|x1), p̂(y|x2), p̂(y|x1,x2) trained with cross-entropy.
2. Alignment: per-class embeddings q1(x1_i, k), q2(x2_j, k) (standardised over the embedding axis),
   A[i,j,k] = exp(<q1, q2>/√d) with the exponent clamped.  Sinkhorn, batched over all classes
   (probability domain; log domain where that under/overflows) and stopped on tolerance, scales
   every class slice to row sums p̂(k|x1_i) and column sums p̂(k|x2_j) (columns rescaled per class
   to the rows' total so the slice is feasible), ending on a row step so the X1–Y marginal is exact.
   q(i,j,k) is then a joint on the minibatch support in Δ_p (up to the column tolerance); the
   embeddings minimise I_q(X2;Y|X1), so that I_q(X1,X2;Y) = I(Y;X1) + I_q(X2;Y|X1) is minimised.
3. Readout in bits: R = I(Y;X1) + I(Y;X2) − I_q, U1 = I_q − I(Y;X2), U2 = I_q − I(Y;X1),
   S = I(Y;X1,X2) − I_q, each clipped at 0; I(Y;X·) = mean KL(p̂(y|x·) ‖ p(y)).
Optional `context` (integer strata, e.g. the previous label) gives the conditional PID: every
discriminator also sees the stratum, p(y) becomes p(y|stratum), and the coupling only pairs samples
of the same stratum — which is how the directed temporal form conditions on the target's past.
Readouts use a held-out share of the samples so discriminator overfitting does not inflate them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from timoe.config import BatchEstimatorConfig
from timoe.interactions._torch import cpu_threads, resolve_device

LN2 = math.log(2.0)
_CLAMP = 30.0  # |exponent| bound for the alignment kernel


@dataclass(frozen=True)
class BatchPID:
    """Estimates in bits."""

    redundancy: float
    unique1: float
    unique2: float
    synergy: float
    total: float  # I(Y; X1, X2) from the joint discriminator
    mi1: float
    mi2: float
    mi_q: float  # min_q I_q(X1, X2; Y) on minibatch supports
    n_samples: int
    seconds: float
    sinkhorn_iters: float  # mean Sinkhorn iterations per alignment step (tolerance stop)

    @classmethod
    def from_informations(
        cls, i1: float, i2: float, i12: float, iq: float, n_samples: int, seconds: float, iters: float
    ) -> BatchPID:
        """The decomposition from I(X1;Y), I(X2;Y), I(X1,X2;Y) and min_q I_q (bits), clipped at 0."""
        return cls(
            redundancy=max(i1 + i2 - iq, 0.0),
            unique1=max(iq - i2, 0.0),
            unique2=max(iq - i1, 0.0),
            synergy=max(i12 - iq, 0.0),
            total=max(i12, 0.0),
            mi1=i1,
            mi2=i2,
            mi_q=iq,
            n_samples=n_samples,
            seconds=seconds,
            sinkhorn_iters=iters,
        )

    def row(self) -> dict[str, float]:
        return {
            "R": self.redundancy,
            "U1": self.unique1,
            "U2": self.unique2,
            "S": self.synergy,
            "total": self.total,
        }


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, d_out)
    )


_FLOOR = 1e-30  # smallest denominator the probability-domain scalings may divide by
_SAFE = 1e30  # largest scaling the probability domain keeps before the log domain takes over


def sinkhorn(
    log_a: torch.Tensor, log_r: torch.Tensor, log_c: torch.Tensor, iters: int, tol: float
) -> tuple[torch.Tensor, int]:
    """Scale exp(log_a) (n1, n2, K) per class to row sums exp(log_r) (n1, K), columns exp(log_c) (n2, K).

    Sample-major wrapper of `sinkhorn_classes` (the estimator itself works class-major, which saves
    the two transposed copies).  Returns log q (n1, n2, K) and the iterations used.
    """
    log_q, used = sinkhorn_classes(log_a.permute(2, 0, 1), log_r.T, log_c.T, iters, tol)
    return log_q.permute(1, 2, 0), used


def sinkhorn_classes(
    log_a: torch.Tensor,
    log_r: torch.Tensor,
    log_c: torch.Tensor,
    iters: int,
    tol: float,
) -> tuple[torch.Tensor, int]:
    """Scale every slice exp(log_a[b]) (B, n1, n2) to row sums exp(log_r) (B, n1), columns exp(log_c) (B, n2).

    B is any batch of independent problems (classes, or classes × lags): all slices move together
    as two batched mat-vecs per iteration in the probability domain, several times cheaper than
    logsumexp updates.  Each slice is shifted by its max first (the scalings absorb the shift).
    Stops once every column sum is within `tol` of its target; rows are exact after the last (row)
    step.  Where the probability domain under- or overflows (a denominator below 1e-30 or a scaling
    above 1e30: kernels whose exponents sit at the ±30 clamp with floored marginals), the problem
    is re-solved in the log domain.  Returns log q (B, n1, n2) and the iterations used.
    (interactions._coupling differentiates the converged solve implicitly instead of through it.)
    """
    b, n1, _ = log_a.shape
    shift = log_a.amax(dim=(1, 2), keepdim=True).clamp_min(-1e30)  # (B, 1, 1); all-masked slices
    a = (log_a - shift).exp_()
    r, c = log_r.exp().unsqueeze(1), log_c.exp().unsqueeze(1)  # (B, 1, n1), (B, 1, n2) row vectors
    u, v, used, unsafe = _scale_probability(a, r, c, iters, tol)
    if unsafe:
        return _sinkhorn_log(log_a - shift, log_r, log_c, iters, tol)
    # (B, n1, 1) as a view, not a transpose: broadcasting a transposed operand is several times slower.
    return (log_a + (u.log().view(b, n1, 1) - shift)).add_(v.log()), used


def _scale_probability(
    a: torch.Tensor, r: torch.Tensor, c: torch.Tensor, iters: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
    """Probability-domain Sinkhorn on a (B, n1, n2) with row vectors r (B, 1, n1), c (B, 1, n2).

    Returns the scalings u (B, 1, n1), v (B, 1, n2), iterations, and whether any step left the
    float range (then the caller switches to the log domain).
    """
    # Row-vector products (1×n1 @ n1×n2) read `a` in memory order; a transposed bmm would copy it.
    den = a.sum(2).unsqueeze(1)
    low = den.detach().amin()  # smallest denominator seen: detached, it only picks the domain
    u = r / den.clamp_min(_FLOOR)
    v = torch.ones_like(c)
    used = 0
    while used < iters:
        used += 1
        col = torch.bmm(u, a)  # (B, 1, n2): column sums of the current iterate, divided by v
        low = torch.minimum(low, col.detach().amin())
        # Column error of the iterate (u, v) comes free with the column step.
        with torch.no_grad():
            err = float((col * v - c).abs().max())
        if err < tol:
            break
        v = c / col.clamp_min(_FLOOR)
        row = torch.bmm(v, a.transpose(1, 2))  # (B, 1, n1)
        low = torch.minimum(low, row.detach().amin())
        u = r / row.clamp_min(_FLOOR)
    with torch.no_grad():
        unsafe = bool(low < _FLOOR) or not bool(
            torch.isfinite(u).all() and torch.isfinite(v).all() and u.amax() < _SAFE and v.amax() < _SAFE
        )
    return u, v, used, unsafe


def _sinkhorn_log(
    rel: torch.Tensor, log_r: torch.Tensor, log_c: torch.Tensor, iters: int, tol: float
) -> tuple[torch.Tensor, int]:
    """Log-domain Sinkhorn on rel (B, n1, n2) (slice max 0), log_r (B, n1), log_c (B, n2).

    Slower (a logsumexp per half-step) but free of under/overflow; same stop rule and row-last end.
    """
    f = log_r - torch.logsumexp(rel, 2)
    g = torch.zeros_like(log_c)
    used = 0
    while used < iters:
        used += 1
        log_col = torch.logsumexp(rel + f.unsqueeze(2), 1)  # (B, n2) log column sums without g
        with torch.no_grad():
            err = float((torch.exp(log_col + g) - log_c.exp()).abs().max())
        if err < tol:
            break
        g = log_c - log_col
        f = log_r - torch.logsumexp(rel + g.unsqueeze(1), 2)
    return rel + f.unsqueeze(2) + g.unsqueeze(1), used


class _Alignment(nn.Module):
    def __init__(self, d1: int, d2: int, cfg: BatchEstimatorConfig, n_classes: int) -> None:
        super().__init__()
        self.k, self.d = n_classes, cfg.embed_dim
        self.f1 = mlp(d1, cfg.hidden, n_classes * cfg.embed_dim)
        self.f2 = mlp(d2, cfg.hidden, n_classes * cfg.embed_dim)

    def embed(self, f: nn.Module, x: torch.Tensor) -> torch.Tensor:
        e = f(x).unflatten(1, (self.k, self.d))
        return (e - e.mean(-1, keepdim=True)) / torch.sqrt(e.var(-1, keepdim=True) + 1e-8)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Log kernel (K, n1, n2), class-major so the Sinkhorn reads each class slice contiguously."""
        return class_kernel(self.embed(self.f1, x1), self.embed(self.f2, x2))


def class_kernel(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """Clamped alignment log-kernel (K, n1, n2) from embeddings e1 (n1, K, d), e2 (n2, K, d)."""
    logits = torch.einsum("akd,bkd->kab", e1, e2)
    return (logits / math.sqrt(e1.shape[-1])).clamp(-_CLAMP, _CLAMP)


def kl_rows(p: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    return (torch.special.xlogy(p, p) - p * torch.log(prior.clamp_min(1e-12))).sum(-1)


def coupling_terms(
    log_a: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    ctx: torch.Tensor | None,
    cfg: BatchEstimatorConfig,
) -> tuple[torch.Tensor, int]:
    """I_q(X2; Y | X1) (nats, mean over anchors i) on one minibatch, and Sinkhorn iterations.

    log_a: alignment log-kernel (K, n, n), class-major; p1, p2: p̂(y|x1_i), p̂(y|x2_j) (n, K);
    ctx: strata (n,) or None.
    """
    r = p1.clamp_min(1e-12)
    c = p2.clamp_min(1e-12)
    if ctx is not None:
        same = ctx.unsqueeze(1) == ctx.unsqueeze(0)
        log_a = log_a.masked_fill(~same.unsqueeze(0), -math.inf)  # couple only within a stratum
        onehot = torch.nn.functional.one_hot(ctx).to(r.dtype)  # (n, n_ctx)
        scale = (onehot.T @ r) / (onehot.T @ c).clamp_min(1e-12)  # per (stratum, class)
        c = c * (onehot @ scale)
    else:
        c = c * (r.sum(0) / c.sum(0))
    log_r = r.log().T.contiguous()  # (K, n)
    log_q, iters = sinkhorn_classes(
        log_a, log_r, c.log().T.contiguous(), cfg.sinkhorn_iters, cfg.sinkhorn_tol
    )
    q = log_q.exp()
    if ctx is not None:
        # Masked pairs have log q = −inf and q = 0 in every class: give them a finite log first, since
        # a logsumexp over all −inf (or 0·(−inf) under where()) sends NaN back through autograd.  (No
        # strata, no mask: the clamped kernel keeps log q finite, and the check would cost 4 passes.)
        log_q = torch.where(torch.isfinite(log_q), log_q, 0.0)
    log_mix = torch.logsumexp(log_q, dim=0, keepdim=True)  # log Σ_k p(k|x1_i) Q(j|i,k), (1, n, n)
    terms = q * (log_q - log_r.unsqueeze(2) - log_mix)
    return terms.sum() / len(p1), iters


def standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    x = x.reshape(len(x), -1)
    std = x.std(0)
    return (x - x.mean(0)) / np.where(std > 0, std, 1.0)


def batch_pid(
    x1: Any,
    x2: Any,
    y: Any,
    cfg: BatchEstimatorConfig | None = None,
    *,
    context: Any = None,
    n_classes: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    holdout: float = 0.2,
    num_threads: int | None = 1,
) -> BatchPID:
    """BATCH PID of continuous X1 (N, D1), X2 (N, D2) about integer labels y (N,).

    `context`: optional integer strata (N,) for the conditional PID.  Deterministic for a seed
    on CPU.  The last `holdout` share of a seeded permutation is used for the readout.
    `num_threads`: torch CPU threads while fitting (restored afterwards; None leaves them).
    """
    dev = resolve_device(device)
    with cpu_threads(num_threads if dev.type == "cpu" else None):
        return _batch_pid(x1, x2, y, cfg, context, n_classes, dev, seed, holdout)


Tensors = tuple[torch.Tensor, ...]  # (x1 (n, D1), x2 (n, D2), y (n,), strata (n,)) on the device


def _batch_pid(
    x1: Any,
    x2: Any,
    y: Any,
    cfg: BatchEstimatorConfig | None,
    context: Any,
    n_classes: int | None,
    dev: torch.device,
    seed: int,
    holdout: float,
) -> BatchPID:
    t0 = time.perf_counter()
    cfg = cfg or BatchEstimatorConfig()
    a, b = standardise(x1), standardise(x2)
    yy = np.asarray(y, dtype=np.int64).ravel()
    n = len(yy)
    if not (len(a) == len(b) == n) or n < 16:
        raise ValueError("x1, x2, y need the same number (≥ 16) of samples")
    k = int(n_classes or yy.max() + 1)
    ctx = None if context is None else np.asarray(context, dtype=np.int64).ravel()
    n_ctx = 0 if ctx is None else int(ctx.max()) + 1
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        tr, ev = _split_tensors(a, b, yy, ctx, holdout, cfg.batch_size, gen, dev)
        prior = label_prior(tr[2], tr[3], k, max(n_ctx, 1))
        d1 = _train_discriminator(tr[0], tr, k, n_ctx, cfg, gen, dev)
        d2 = _train_discriminator(tr[1], tr, k, n_ctx, cfg, gen, dev)
        d12 = _train_discriminator(torch.cat([tr[0], tr[1]], 1), tr, k, n_ctx, cfg, gen, dev)
        align, iters_used = _train_alignment(tr, d1, d2, k, n_ctx, ctx is not None, cfg, gen, dev)
        i1, i2, i12, iq = _readout(ev, prior, d1, d2, d12, align, n_ctx, ctx is not None, cfg, dev)
    iters = float(np.mean(iters_used)) if iters_used else 0.0
    return BatchPID.from_informations(i1, i2, i12, iq, n, time.perf_counter() - t0, iters)


def _split_tensors(
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    ctx: np.ndarray | None,
    holdout: float,
    batch_size: int,
    gen: torch.Generator,
    dev: torch.device,
) -> tuple[Tensors, Tensors]:
    """Train and held-out tensors: the last `holdout` share of a seeded permutation is held out
    (at least one minibatch, at most half); with holdout 0 both are all the samples."""
    n = len(y)
    perm = torch.randperm(n, generator=gen).numpy()
    n_eval = max(round(holdout * n), min(n // 2, batch_size)) if holdout > 0 else 0
    train, evals = (perm[: n - n_eval], perm[n - n_eval :]) if n_eval else (perm, perm)
    strata = np.zeros(n, dtype=np.int64) if ctx is None else ctx
    return tuple(tuple(torch.from_numpy(u[idx]).to(dev) for u in (a, b, y, strata)) for idx in (train, evals))


def _train_alignment(
    tr: Tensors,
    d1: _Discriminator,
    d2: _Discriminator,
    k: int,
    n_ctx: int,
    use_ctx: bool,
    cfg: BatchEstimatorConfig,
    gen: torch.Generator,
    dev: torch.device,
) -> tuple[_Alignment, list[int]]:
    """Alignment embeddings minimising I_q(X2; Y | X1) on minibatches, frozen discriminators;
    returns them and the Sinkhorn iterations of every step."""
    align = _Alignment(tr[0].shape[1], tr[1].shape[1], cfg, k).to(dev)
    opt = torch.optim.Adam(align.parameters(), lr=cfg.lr)
    iters_used = []
    for _ in range(cfg.align_epochs):
        for idx in batches(len(tr[2]), cfg.batch_size, gen, dev, drop_last=True):
            x1b, x2b, _, cb = (t[idx] for t in tr)
            with torch.no_grad():
                p1, p2 = d1(with_ctx(x1b, cb, n_ctx)), d2(with_ctx(x2b, cb, n_ctx))
            loss, it = coupling_terms(align(x1b, x2b), p1, p2, cb if use_ctx else None, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            iters_used.append(it)
    return align, iters_used


@torch.no_grad()
def _readout(
    ev: Tensors,
    prior: torch.Tensor,
    d1: _Discriminator,
    d2: _Discriminator,
    d12: _Discriminator,
    align: _Alignment,
    n_ctx: int,
    use_ctx: bool,
    cfg: BatchEstimatorConfig,
    dev: torch.device,
) -> tuple[float, float, float, float]:
    """I(Y;X1), I(Y;X2), I(Y;X1,X2) and min I_q (bits) on the held-out samples; prior (n_ctx, K)."""
    sums = torch.zeros(4, dtype=torch.float64)
    for idx in batches(len(ev[2]), cfg.batch_size, None, dev, drop_last=False):
        x1b, x2b, _, cb = (t[idx] for t in ev)
        pr = prior[cb]
        p1, p2 = d1(with_ctx(x1b, cb, n_ctx)), d2(with_ctx(x2b, cb, n_ctx))
        p12 = d12(with_ctx(torch.cat([x1b, x2b], 1), cb, n_ctx))
        cond, _ = coupling_terms(align(x1b, x2b), p1, p2, cb if use_ctx else None, cfg)
        m1 = kl_rows(p1, pr).mean()
        vals = torch.stack([m1, kl_rows(p2, pr).mean(), kl_rows(p12, pr).mean(), m1 + cond])
        sums += vals.double().cpu() * len(idx)
    i1, i2, i12, iq = (sums / len(ev[2]) / LN2).tolist()
    return i1, i2, i12, iq


def with_ctx(x: torch.Tensor, ctx: torch.Tensor, n_ctx: int) -> torch.Tensor:
    if n_ctx == 0:
        return x
    return torch.cat([x, torch.nn.functional.one_hot(ctx, n_ctx).to(x.dtype)], 1)


def label_prior(y: torch.Tensor, ctx: torch.Tensor, k: int, n_ctx: int) -> torch.Tensor:
    """p(y | stratum) from the training labels, (n_ctx, K), with a tiny floor for unseen classes."""
    counts = torch.zeros(n_ctx, k, dtype=torch.float32, device=y.device)
    counts.index_put_((ctx, y), torch.ones_like(y, dtype=torch.float32), accumulate=True)
    counts += 1e-6
    return counts / counts.sum(1, keepdim=True)


def batches(
    n: int, size: int, gen: torch.Generator | None, dev: torch.device, drop_last: bool
) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    size = min(size, n)
    stop = n - n % size if drop_last else n
    return [order[i : i + size].to(dev) for i in range(0, stop, size)]


class _Discriminator(nn.Module):
    def __init__(self, d_in: int, hidden: int, k: int, n_ctx: int) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.net = mlp(d_in + n_ctx, hidden, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def _train_discriminator(
    x: torch.Tensor,
    tr: tuple[torch.Tensor, ...],
    k: int,
    n_ctx: int,
    cfg: BatchEstimatorConfig,
    gen: torch.Generator,
    dev: torch.device,
) -> _Discriminator:
    model = _Discriminator(x.shape[1], cfg.hidden, k, n_ctx).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    y, ctx = tr[2], tr[3]
    for _ in range(cfg.discrim_epochs):
        for idx in batches(len(y), cfg.batch_size, gen, dev, drop_last=False):
            logits = model.net(with_ctx(x[idx], ctx[idx], n_ctx))
            loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
