"""Per-lag BATCH for all lags in one pass: independent models per lag, trained together (stacked).

Multi-scale BATCH shares one model across lags and so must trade accuracy for its saving.  Here every
lag keeps its own discriminators and alignment — the same networks, losses, Sinkhorn and readout as
batch.py — but their weights are stacked along a leading network axis: one batched matmul per layer
serves the 3·L discriminators (or the L alignment embeddings), and one Sinkhorn call couples every
lag × class slice of a chunk of lags.  Each network has its own minibatches, Adam state and step
count (_NetAdam), so this is L independent fits, not a shared one.

Every lag replays batch_pid's random streams for the same seed: its split, its initial weights and
its discriminators' minibatch orders, so the discriminators are per-lag BATCH's up to float rounding
(batched vs single matmuls) — the stacked estimate differs from per-lag BATCH only where the
alignment does, not by a fresh draw of seed noise.  The alignment differs on purpose:
- its gradient is the implicit one of _coupling.py (the exact projection's, no unrolled Sinkhorn);
- the stacked route's default trains it for `align_share` of the configured epochs at a learning
  rate raised by `align_lr_factor` (see ALIGN_SHARE).
The readout is batch.py's, per lag on its held-out samples.  One class count K and one strata
count serve all lags (n_classes, or the largest over lags; batch_pid per lag takes its own), so
the replay is exact where every lag has every class, as in the benchmarks.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from timoe.config import BatchEstimatorConfig
from timoe.interactions._coupling import alignment_terms
from timoe.interactions._torch import cpu_threads, resolve_device
from timoe.interactions.batch import _CLAMP as CLAMP
from timoe.interactions.batch import (
    LN2,
    BatchPID,
    _Alignment,
    _Discriminator,
    _split_tensors,
    batches,
    kl_rows,
    label_prior,
    sinkhorn_classes,
    standardise,
)

Split = tuple[torch.Tensor, ...]  # (x1 (n, D1), x2 (n, D2), y (n,), strata (n,))

# The stacked route's alignment schedule (stacked_pid): 30% of the epochs at 8× the learning rate
# reach batch_pid's 5-epoch I_q within 0.007 bits on the ground-truth processes (bench_multiscale.py;
# 40% at 5×: 0.003, 20% at 10×: 0.016 — fewer steps leave I_q slightly above its minimum).
ALIGN_SHARE = 0.3
ALIGN_LR_FACTOR = 8.0


class StackedMLP(nn.Module):
    """N independent 3-layer ReLU MLPs d_in → hidden → hidden → d_out; input (N, n, d_in).

    `inputs` (N, d_in) bool: the input columns each network reads (default all).  The caller zeroes
    the others; their first-layer rows start at 0 and stay there (a zero input has a zero gradient).
    """

    def __init__(
        self, n_nets: int, d_in: int, hidden: int, d_out: int, inputs: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.register_buffer(
            "reads", torch.ones(n_nets, d_in, dtype=torch.bool) if inputs is None else inputs
        )
        dims = [d_in, hidden, hidden, d_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in itertools.pairwise(dims):
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default; load() replaces it per network
            self.weights.append(nn.Parameter(torch.empty(n_nets, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_nets, 1, b).uniform_(-bound, bound)))
        with torch.no_grad():
            self.weights[0].mul_(self.reads.unsqueeze(2))

    @torch.no_grad()
    def load(self, net: int, mlp: nn.Sequential) -> None:
        """Copy batch.mlp's weights into network `net`: its input columns are those it reads."""
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            w = lin.weight.T
            if i == 0:
                self.weights[0][net].zero_()[self.reads[net]] = w
            else:
                self.weights[i][net] = w
            self.biases[i][net, 0] = lin.bias

    def forward(
        self, x: torch.Tensor, nets: int | slice | torch.Tensor | None = None, classes_first: bool = False
    ) -> torch.Tensor:
        """(N', n, d_in) -> (N', n, d_out) for networks `nets` (all; an int: that one, x (1, n, d_in));
        `classes_first`: (N', d_out, n) instead (a copy of the small output: computing the last layer
        transposed would hand the ReLU backward a transposed gradient, 4× slower)."""
        sel = slice(None) if nets is None else slice(nets, nets + 1) if isinstance(nets, int) else nets
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b[sel], x, w[sel])
            if i < last:
                x = torch.relu_(x)  # in place: baddbmm's backward does not need its output
        return x.transpose(1, 2).contiguous() if classes_first else x


class StackedDiscriminators(nn.Module):
    """p̂(y|x1), p̂(y|x2), p̂(y|x1,x2) for every lag as one StackedMLP of 3·L networks.

    Network j·L + l is discriminator j ∈ {0: x1, 1: x2, 2: (x1, x2)} of lag l; each reads its
    columns of z = [x1, x2, one-hot stratum], the others zeroed, so one batched matmul per layer
    serves all three.
    """

    def __init__(self, n_lags: int, d1: int, d2: int, n_ctx: int, hidden: int, k: int) -> None:
        super().__init__()
        self.n_lags, self.n_ctx = n_lags, n_ctx
        cols = torch.arange(d1 + d2 + n_ctx)
        of_x1, strata = cols < d1, cols >= d1 + d2
        reads = [of_x1 | strata, ~of_x1, torch.ones_like(of_x1)]  # the columns discriminator j sees
        self.net = StackedMLP(
            3 * n_lags,
            d1 + d2 + n_ctx,
            hidden,
            k,
            torch.stack([reads[j // n_lags] for j in range(3 * n_lags)]),
        )

    def joint(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """z (L', n, D1 + D2 + n_ctx) from x = [x1, x2] (L', n, D1 + D2), strata (L', n)."""
        return _onehot_ctx(x, ctx, self.n_ctx)

    def forward(self, z: torch.Tensor, nets: slice | torch.Tensor) -> torch.Tensor:
        """Logits (N', K, n) of networks `nets` on their inputs z (N', n, D): classes first, since
        a softmax or cross-entropy over K ≈ 2–8 classes is ~6× faster on a CPU across the middle
        axis than across the last one."""
        return self.net(z * self.net.reads[nets].unsqueeze(1), nets, classes_first=True)

    def probs(self, z: torch.Tensor, parts: int, lag: int | None = None) -> torch.Tensor:
        """p̂ (parts, L', n, K) of discriminators 0 … parts−1 of every lag (z (L, n, D)) or of `lag`
        (z (1, n, D)); a transposed view of classes-first probabilities."""
        nets = slice(0, parts * self.n_lags) if lag is None else torch.arange(parts) * self.n_lags + lag
        p = self(z.repeat(parts, 1, 1), nets).softmax(1).transpose(1, 2)
        return p.unflatten(0, (parts, -1))


class _NetAdam:
    """torch.optim.Adam's update (defaults: betas 0.9, 0.999, eps 1e-8) on stacked parameters
    (N, …) where only the networks in `active` (N,) step, each with its own step count — so each
    network follows the trajectory a separate Adam over its own minibatches would."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float) -> None:
        self.params, self.lr = list(params), lr
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(len(self.params[0]), dtype=torch.float64)

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        self.steps += active.double().cpu()
        if bool(active.all()):  # every network at the same step count: torch's own update
            t = float(self.steps[0])
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                m.lerp_(p.grad, 0.1)
                v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                denom = (v.sqrt() / math.sqrt(1 - 0.999**t)).add_(1e-8)
                p.addcdiv_(m, denom, value=-self.lr / (1 - 0.9**t))
            return
        done = self.steps.clamp_min(1.0)
        step_size = (self.lr / (1 - 0.9**done)).float()
        bc2_sqrt = (1 - 0.999**done).sqrt().float()
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            shape = (-1,) + (1,) * (p.ndim - 1)
            g, keep = p.grad, active.to(p.device, p.dtype).view(shape)
            # inactive networks keep their moments: interpolate by `keep` (0 or 1 per network)
            m.lerp_(m.lerp(g, 0.1), keep)
            v.lerp_(v * 0.999 + 0.001 * g * g, keep)
            denom = (v.sqrt() / bc2_sqrt.to(p.device).view(shape)).add_(1e-8)
            p.sub_(m / denom * (step_size.to(p.device).view(shape) * keep))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


@dataclass(frozen=True)
class _Schedule:
    """Minibatches of N networks over T steps: rows idx (T, N, b) into each network's lag, weight
    (T, N, b) 1/|minibatch| per real row (0 pads a short last batch), active (T, N)."""

    idx: torch.Tensor
    weight: torch.Tensor
    active: torch.Tensor

    @classmethod
    def of(cls, orders: list[list[torch.Tensor]], size: int) -> _Schedule:
        """From each network's minibatch list (index tensors of ≤ size rows)."""
        steps = max(len(o) for o in orders)
        idx = torch.zeros(steps, len(orders), size, dtype=torch.long)
        weight = torch.zeros(steps, len(orders), size)
        for j, order in enumerate(orders):
            rows = nn.utils.rnn.pad_sequence([r.cpu() for r in order], batch_first=True)  # (T_j, ≤ size)
            idx[: len(order), j, : rows.shape[1]] = rows
            counts = torch.tensor([len(r) for r in order], dtype=torch.float32).unsqueeze(1)
            weight[: len(order), j] = (torch.arange(size) < counts) / counts
        return cls(idx, weight, weight.sum(2) > 0)


def _onehot_ctx(x: torch.Tensor, ctx: torch.Tensor, n_ctx: int) -> torch.Tensor:
    """x (L, n, d) with the strata (L, n) appended one-hot when there are any."""
    if n_ctx == 0:
        return x
    return torch.cat([x, nn.functional.one_hot(ctx, n_ctx).to(x.dtype)], -1)


def _embed(f: StackedMLP, x: torch.Tensor, k: int, lag: int | None) -> torch.Tensor:
    """Per-class embeddings (L, n, K, d), standardised over the embedding axis as in batch.py."""
    e = f(x, lag).unflatten(-1, (k, -1))
    centred = e - e.mean(-1, keepdim=True)
    # torch.var over a short last axis is ~10× slower on a CPU than this (same unbiased variance)
    var = centred.square().sum(-1, keepdim=True) / (e.shape[-1] - 1)
    return centred / torch.sqrt(var + 1e-8)


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
) -> tuple[torch.Tensor, int]:
    """I_q(X2; Y | X1) per lag (L,), nats, and the Sinkhorn iterations of the one joint solve.

    log_a: (L, K, n, n); p1, p2: (L, n, K); ctx: strata (L, n) or None.  batch.coupling_terms with
    a leading lag axis (every lag × class slice in one batched Sinkhorn), differentiable through
    the unrolled iterations; the readout's form.
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
    )
    log_q = log_q.view(n_lags, k, n, n)
    q = log_q.exp()
    if ctx is not None:  # masked pairs: see batch.coupling_terms
        log_q = torch.where(torch.isfinite(log_q), log_q, 0.0)
    log_mix = torch.logsumexp(log_q, dim=1, keepdim=True)
    terms = q * (log_q - log_r.unsqueeze(3) - log_mix)
    return terms.sum((1, 2, 3)) / n, iters


@dataclass
class _LagStream:
    """One lag's share of batch_pid's random streams for a seed (see the module docstring)."""

    train: Split
    evals: Split
    inits: list[nn.Sequential]  # batch.mlp weights: discriminators x1, x2, (x1, x2); embeddings f1, f2
    disc_orders: list[list[torch.Tensor]]  # minibatch rows of each discriminator, all its epochs
    align_orders: list[torch.Tensor]  # alignment minibatch rows, all epochs


def _lag_stream(
    s: Any,
    k: int,
    n_ctx: int,
    cfg: BatchEstimatorConfig,
    align_epochs: float,
    seed: int,
    holdout: float,
    dev: torch.device,
) -> _LagStream:
    """Split, initial weights and minibatch orders of one lag, drawn in batch_pid's order."""
    a, b = standardise(s.x1), standardise(s.x2)
    y = np.asarray(s.y, dtype=np.int64).ravel()
    ctx = None if s.context is None else np.asarray(s.context, dtype=np.int64).ravel()
    if not (len(a) == len(b) == len(y)) or len(y) < 16:
        raise ValueError("every lag needs x1, x2, y with the same number (≥ 16) of samples")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train, evals = _split_tensors(a, b, y, ctx, holdout, cfg.batch_size, gen, dev)
    n = len(train[2])
    inits, disc_orders = [], []
    for width in (a.shape[1], b.shape[1], a.shape[1] + b.shape[1]):
        inits.append(_Discriminator(width, cfg.hidden, k, n_ctx).net)
        epochs = [batches(n, cfg.batch_size, gen, dev, drop_last=False) for _ in range(cfg.discrim_epochs)]
        disc_orders.append(list(itertools.chain(*epochs)))
    align = _Alignment(a.shape[1], b.shape[1], cfg, k)
    inits += [align.f1, align.f2]
    # a fractional number of epochs: the first minibatches of the last one (at least one step)
    epochs = [batches(n, cfg.batch_size, gen, dev, drop_last=True) for _ in range(math.ceil(align_epochs))]
    steps = max(1, round(align_epochs * len(epochs[0])))
    return _LagStream(train, evals, inits, disc_orders, list(itertools.chain(*epochs))[:steps])


def _padded(train: list[Split]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The lags' training rows stacked, zero-padded to the longest lag: x = [x1, x2] (L, n_max,
    D1 + D2) (one gather per step instead of two), labels and strata (L, n_max)."""
    n_max = max(len(t[2]) for t in train)

    def pad(rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([torch.cat([r, r.new_zeros((n_max - len(r), *r.shape[1:]))]) for r in rows])

    return (
        pad([torch.cat([t[0], t[1]], 1) for t in train]),
        pad([t[2] for t in train]),
        pad([t[3] for t in train]),
    )


def _rows(
    padded: tuple[torch.Tensor, ...], idx: torch.Tensor, lag_of: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Rows idx (N, b) of each of _padded's tensors, network j reading lag lag_of[j] (N,)."""
    return tuple(t[lag_of.unsqueeze(1), idx] for t in padded)


def stacked_pid(
    samples: Mapping[int, Any],
    cfg: BatchEstimatorConfig | None = None,
    *,
    n_classes: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    holdout: float = 0.2,
    num_threads: int | None = 1,
    align_share: float = ALIGN_SHARE,
    align_lr_factor: float = ALIGN_LR_FACTOR,
    lag_chunk: int | None = None,
) -> dict[int, BatchPID]:
    """Per-lag BATCH for every lag of `samples` ({lag: LagSamples}, equal feature widths) in one
    stacked pass; returns {lag: BatchPID} (seconds: the run's time shared per lag).

    `align_share`, `align_lr_factor`: the alignment trains for share × align_epochs epochs (at least
    one step) at lr × factor (1.0, 1.0: batch_pid's schedule).  `lag_chunk`: lags per kernel + Sinkhorn
    call (None: all on CUDA, 2 on a CPU, where chunks that stay in cache are faster).
    """
    dev = resolve_device(device)
    cfg = cfg or BatchEstimatorConfig()
    schedule = (align_share * cfg.align_epochs, cfg.lr * align_lr_factor)
    chunk = max(1, lag_chunk or (len(samples) if dev.type == "cuda" else 2))
    with cpu_threads(num_threads if dev.type == "cpu" else None):
        return _stacked_pid(samples, cfg, n_classes, dev, seed, holdout, schedule, chunk)


def _stacked_pid(
    samples: Mapping[int, Any],
    cfg: BatchEstimatorConfig,
    n_classes: int | None,
    dev: torch.device,
    seed: int,
    holdout: float,
    align_schedule: tuple[float, float],
    lag_chunk: int,
) -> dict[int, BatchPID]:
    t0 = time.perf_counter()
    lags = list(samples)
    if not lags:
        raise ValueError("no lags given")
    if len({(np.shape(s.x1)[1:], np.shape(s.x2)[1:]) for s in samples.values()}) != 1:
        raise ValueError("stacked_pid needs the same x1, x2 widths at every lag")
    k = int(n_classes or max(int(np.max(s.y)) for s in samples.values()) + 1)
    strata = [s.context for s in samples.values() if s.context is not None]
    use_ctx = bool(strata)
    n_ctx = max(int(np.max(c)) for c in strata) + 1 if use_ctx else 0
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        streams = [
            _lag_stream(samples[lag], k, n_ctx, cfg, align_schedule[0], seed, holdout, dev) for lag in lags
        ]
        disc = _train_discriminators(streams, k, n_ctx, cfg, dev)
        f1, f2, iters = _train_alignment(streams, disc, k, use_ctx, cfg, align_schedule[1], dev, lag_chunk)
        out = {
            lag: _readout(li, streams[li], disc, f1, f2, k, n_ctx, use_ctx, cfg, dev)
            for li, lag in enumerate(lags)
        }
    seconds = (time.perf_counter() - t0) / len(lags)
    mean_iters = float(np.mean(iters)) if iters else 0.0
    return {
        lag: BatchPID.from_informations(i1, i2, i12, iq, n, seconds, mean_iters)
        for lag, (i1, i2, i12, iq, n) in out.items()
    }


def _train_discriminators(
    streams: list[_LagStream], k: int, n_ctx: int, cfg: BatchEstimatorConfig, dev: torch.device
) -> StackedDiscriminators:
    """p̂(y|x1), p̂(y|x2), p̂(y|x1,x2) per lag: each network from batch_pid's initial weights over
    batch_pid's minibatches (mean cross-entropy, its own Adam steps), all networks per step at once."""
    n_lags = len(streams)
    train = [s.train for s in streams]
    disc = StackedDiscriminators(n_lags, train[0][0].shape[1], train[0][1].shape[1], n_ctx, cfg.hidden, k)
    for j in range(3 * n_lags):
        disc.net.load(j, streams[j % n_lags].inits[j // n_lags])
    disc = disc.to(dev)
    plan = _Schedule.of(
        [streams[j % n_lags].disc_orders[j // n_lags] for j in range(3 * n_lags)], cfg.batch_size
    )
    lag_of = torch.arange(3 * n_lags, device=dev) % n_lags
    padded = _padded(train)
    opt = _NetAdam(list(disc.parameters()), cfg.lr)
    for idx, weight, active in zip(plan.idx.to(dev), plan.weight.to(dev), plan.active, strict=True):
        x, y, c = _rows(padded, idx, lag_of)
        logits = disc(disc.joint(x, c), slice(None))  # (3L, K, b)
        ce = nn.functional.cross_entropy(logits, y, reduction="none")  # (3L, b)
        # each network's mean cross-entropy over its minibatch, summed: disjoint parameters
        loss = (ce * weight).sum()
        opt.zero_grad()
        loss.backward()
        opt.step(active)
    return disc.requires_grad_(False)


def _train_alignment(
    streams: list[_LagStream],
    disc: StackedDiscriminators,
    k: int,
    use_ctx: bool,
    cfg: BatchEstimatorConfig,
    lr: float,
    dev: torch.device,
    lag_chunk: int,
) -> tuple[StackedMLP, StackedMLP, list[int]]:
    """Per-lag alignment embeddings minimising Σ_lags I_q(X2; Y | X1), frozen discriminators."""
    n_lags = len(streams)
    train = [s.train for s in streams]
    d1 = train[0][0].shape[1]
    nets = []
    for f, width in ((3, d1), (4, train[0][1].shape[1])):
        net = StackedMLP(n_lags, width, cfg.hidden, k * cfg.embed_dim)
        for li, s in enumerate(streams):
            net.load(li, s.inits[f])
        nets.append(net.to(dev))
    f1, f2 = nets
    # one minibatch size for the joint Sinkhorn: lags smaller than batch_size (batch_pid then takes
    # all their rows) are cut to the smallest, the first rows of each of their shuffled minibatches
    size = min(len(rows) for s in streams for rows in s.align_orders)
    plan = _Schedule.of([[rows[:size] for rows in s.align_orders] for s in streams], size)
    padded, lag_of = _padded(train), torch.arange(n_lags, device=dev)
    opt = _NetAdam([*f1.parameters(), *f2.parameters()], lr)
    iters = []
    for idx, active in zip(plan.idx.to(dev), plan.active, strict=True):
        x, _, c = _rows(padded, idx, lag_of)
        x1, x2 = x[..., :d1], x[..., d1:]
        with torch.no_grad():
            p1, p2 = disc.probs(disc.joint(x, c), 2)
        e1, e2 = _embed(f1, x1, k, None), _embed(f2, x2, k, None)
        loss, most = torch.zeros((), device=dev), 0
        # `lag_chunk` lags per kernel + Sinkhorn: elementwise-bound on (lags, K, n, n), and on a CPU
        # chunks small enough to stay in cache beat one big sweep
        for lo in range(0, n_lags, lag_chunk):
            sl = slice(lo, lo + lag_chunk)
            terms, it = alignment_terms(
                e1[sl],
                e2[sl],
                p1[sl],
                p2[sl],
                c[sl] if use_ctx else None,
                cfg.sinkhorn_iters,
                cfg.sinkhorn_tol,
            )
            # a lag past its last minibatch still computes (one batched call) but takes no step
            loss, most = loss + (terms * active[sl].to(terms.dtype).to(dev)).sum(), max(most, it)
        opt.zero_grad()
        loss.backward()
        opt.step(active)
        iters.append(most)
    return f1, f2, iters


@torch.no_grad()
def _readout(
    li: int,
    stream: _LagStream,
    disc: StackedDiscriminators,
    f1: StackedMLP,
    f2: StackedMLP,
    k: int,
    n_ctx: int,
    use_ctx: bool,
    cfg: BatchEstimatorConfig,
    dev: torch.device,
) -> tuple[float, float, float, float, int]:
    """I(Y;X1), I(Y;X2), I(Y;X1,X2), min I_q (bits) of lag index li on its held-out samples."""
    tr, ev = stream.train, stream.evals
    prior = label_prior(tr[2], tr[3], k, max(n_ctx, 1))
    sums = torch.zeros(4, dtype=torch.float64)
    for idx in batches(len(ev[2]), cfg.batch_size, None, dev, drop_last=False):
        x1, x2, _, c = (t[idx].unsqueeze(0) for t in ev)
        p1, p2, p12 = disc.probs(disc.joint(torch.cat([x1, x2], -1), c), 3, li)[:, 0]
        log_a = _kernel(_embed(f1, x1, k, li), _embed(f2, x2, k, li))
        cond, _ = coupling_terms_lags(log_a, p1[None], p2[None], c if use_ctx else None, cfg)
        pr = prior[c[0]]
        m1 = kl_rows(p1, pr).mean()
        vals = torch.stack([m1, kl_rows(p2, pr).mean(), kl_rows(p12, pr).mean(), m1 + cond[0]])
        sums += vals.double().cpu() * len(idx)
    i1, i2, i12, iq = (sums / len(ev[2]) / LN2).tolist()
    return i1, i2, i12, iq, len(tr[2]) + len(ev[2])
