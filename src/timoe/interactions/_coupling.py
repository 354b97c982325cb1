"""BATCH's alignment loss Σ_lags I_q(X2; Y | X1) with an implicit (fixed-point) Sinkhorn gradient.

batch.coupling_terms differentiates through the unrolled Sinkhorn iterations, so autograd stores
and replays ~15 elementwise passes over every (K, n, n) slice.  Here the kernel, the Sinkhorn and
the loss run without autograd, and the backward uses the derivative of the Sinkhorn projection at
its fixed point: q = a·u_i·v_j with fixed row and column sums moves as dq = q ⊙ P(d log a), where P
removes the q-weighted least-squares fit by a row term plus a column term (the directions the
scalings absorb).  P is self-adjoint under the q-weighted inner product, so for G = ∂L/∂q

    ∂L/∂log a = q ⊙ (G − α_i − β_j),   Σ_j q_ij (G − α − β)_ij = 0 = Σ_i q_ij (G − α − β)_ij,

with α, β found by alternating row/column updates (two batched mat-vecs each, like a Sinkhorn
step).  That is the gradient of the loss under the exact projection, which the unrolled gradient
only approaches as its iterations converge.  For L = (1/n) Σ q (log q − log r_i − log m_ij) with
the class mixture m_ij = Σ_k q_kij, G = (log q − log r − log m)/n (the entropies' +1s cancel), and
P annihilates its row and column parts (log q − log a is one), so P(G) = P(log a − log m)/n.
The forward values (kernel, coupling, loss) are batch.coupling_terms' up to float rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from timoe.interactions.batch import _CLAMP, _FLOOR, _scale_probability, _sinkhorn_log

# Alternating updates of the backward's row/column fit; its error shrinks geometrically.  At 3 the
# gradient is about as close to the converged one as batch.py's unrolled one at the same Sinkhorn
# tolerance (tests/test_interactions_coupling.py), and 2 or 4 moved the bench_multiscale.py
# estimates by ≤ 0.001 bits.
PROJECTION_STEPS = 3


def _dots(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ over all but the first axis of x·y, (B,).  (A (1, N) @ (N, 1) bmm is 4× slower on a CPU.)"""
    return torch.linalg.vecdot(x.reshape(len(x), -1), y.reshape(len(y), -1))


def _scaled_coupling(
    log_a: torch.Tensor,
    log_r: torch.Tensor,
    log_c: torch.Tensor,
    keep: torch.Tensor | None,
    iters: int,
    tol: float,
    factors: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sinkhorn coupling q (B, n1, n2) and Σ q log q per slice (B,), and the iterations used.

    log_a (B, n1, n2) finite; keep (B, n1, n2) bool or None: pairs outside it get q = 0 (the −inf
    of batch.coupling_terms' mask, applied after the exp so log a stays finite for the dots).
    factors: (E1 (B, n1, d), E2 (B, n2, d)) with log a = E1 E2ᵀ, when that holds (no clamp):
    Σ q log a = Σ (q E2) ⊙ E1 is then one (n1 × n2) @ (n2 × d) product instead of a dot over q.
    Same iterations, stop rule and log-domain fallback as batch.sinkhorn_classes, but q is the
    probability-domain kernel times its scalings (no second exp, no log q array):
    Σ q log q = Σ q (log a − shift) + Σ_i r_i log u_i + Σ_j colsum_j log v_j.
    """
    b, n1, _ = log_a.shape
    shift = log_a.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1); any shift works: |log a| ≤ √d
    a = (log_a - shift).exp_()
    if keep is not None:
        a.mul_(keep)
    r, c = log_r.exp().unsqueeze(1), log_c.exp().unsqueeze(1)
    u, v, used, unsafe = _scale_probability(a, r, c, iters, tol)
    if unsafe:
        rel = log_a - shift if keep is None else (log_a - shift).masked_fill_(~keep, -math.inf)
        log_q, used = _sinkhorn_log(rel, log_r, log_c, iters, tol)
        q = log_q.exp()
        return q, torch.special.xlogy(q, q).sum((1, 2)), used
    q = a.mul_(u.view(b, n1, 1)).mul_(v)
    cols = q.sum(1)  # (B, n2): the column sums actually reached (rows are exact: r)
    q_log_a = _dots(q, log_a) if factors is None else _dots(torch.bmm(q, factors[1]), factors[0])
    plogp = q_log_a - shift.view(b) * r.sum((1, 2))
    plogp += (r.view(b, n1) * u.view(b, n1).log()).sum(1) + (cols * v.view(b, -1).log()).sum(1)
    return q, plogp, used


class _AlignmentLoss(torch.autograd.Function):
    """Per-lag I_q(X2; Y | X1) (L,) in nats from per-class embeddings; see the module docstring."""

    @staticmethod
    def forward(  # type: ignore[override]
        fn: Any,
        e1: torch.Tensor,
        e2: torch.Tensor,
        log_r: torch.Tensor,
        log_c: torch.Tensor,
        pair_mask: torch.Tensor | None,
        iters: int,
        tol: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """e1, e2 (L, K, n, d) embeddings already divided by √d; log_r, log_c (L, K, n) marginals;
        pair_mask (L, n, n): True where two samples may pair (same stratum), or None.
        Returns the losses (L,) and the Sinkhorn iterations (0-d)."""
        n_lags, k, n, d = e1.shape
        b = n_lags * k
        log_a = torch.bmm(e1.reshape(b, n, d), e2.reshape(b, n, d).transpose(1, 2))  # (B, n, n)
        # Standardised embeddings have norm² ≤ d, so |log a| ≤ √d (after the 1/√d): the batch.py
        # clamp only binds for d > 900, and only then is its mask needed.
        inside, factors = None, (e1.view(b, n, d), e2.view(b, n, d))
        if d > _CLAMP**2:
            inside, factors = log_a.abs() < _CLAMP, None
            log_a.clamp_(-_CLAMP, _CLAMP)
        keep = None  # couple only within a stratum
        if pair_mask is not None:
            keep = pair_mask.unsqueeze(1).expand(n_lags, k, n, n).reshape(b, n, n)
        q, plogp, used = _scaled_coupling(
            log_a, log_r.flatten(0, 1), log_c.flatten(0, 1), keep, iters, tol, factors
        )
        q = q.view(n_lags, k, n, n)
        m = q.sum(1)  # (L, n, n): the class mixture Σ_k q(i, j, k)
        log_m = m.clamp_min(_FLOOR).log_()
        log_r_mass = (log_r.exp() * log_r).sum((1, 2))  # Σ q log r = Σ r log r: rows are exact
        terms = (plogp.view(n_lags, k).sum(1) - log_r_mass - _dots(m, log_m)) / n
        # log a − log m, P's input (see the module docstring), overwriting log a (no longer needed)
        g = log_a.view(n_lags, k, n, n).sub_(log_m.unsqueeze(1))
        fn.save_for_backward(q, g, log_r, e1, e2, inside)
        return terms, torch.tensor(used)

    @staticmethod
    def backward(fn: Any, grad: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, g, log_r, e1, e2, inside = fn.saved_tensors
        k, n, d = e1.shape[1:]
        qs, gs = q.view(-1, n, n), g.view(-1, n, n)
        w = qs * gs
        rows, cols = w.sum(2), w.sum(1)  # (B, n): q-weighted sums of g per row and per column
        del w
        r = log_r.exp().view(-1, 1, n)
        c = qs.sum(1, keepdim=True).clamp_min_(_FLOOR)  # (B, 1, n)
        rows, cols = rows.unsqueeze(1), cols.unsqueeze(1)
        alpha = rows / r
        qt = qs.transpose(1, 2)  # row-vector products on both sides: q @ β as βᵀ qᵀ reads q in order
        for _ in range(PROJECTION_STEPS):
            beta = (cols - torch.bmm(alpha, qs)) / c
            alpha = (rows - torch.bmm(beta, qt)) / r
        # q ⊙ P(g), in place on g: the graph is used once (no retain_graph through this loss)
        ga = gs.sub_(alpha.view(-1, n, 1)).sub_(beta).mul_(qs)
        if inside is not None:
            ga.mul_(inside)
        scale = (grad / n).repeat_interleave(k).view(-1, 1, 1)  # (B, 1, 1): ∂/∂terms per lag
        g1 = torch.bmm(ga, e2.view(-1, n, d)).mul_(scale)
        g2 = torch.bmm(ga.transpose(1, 2), e1.view(-1, n, d)).mul_(scale)
        return g1.view_as(e1), g2.view_as(e2), None, None, None, None, None


def alignment_terms(
    e1: torch.Tensor,
    e2: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    ctx: torch.Tensor | None,
    iters: int,
    tol: float,
) -> tuple[torch.Tensor, int]:
    """I_q(X2; Y | X1) per lag (L,), nats, and the Sinkhorn iterations, with the implicit gradient.

    e1, e2: standardised per-class embeddings (L, n, K, d); p1, p2: p̂(y|x1), p̂(y|x2) (L, n, K),
    constants; ctx: strata (L, n) or None.  Kernel log a = <e1, e2>/√d and marginals as in
    batch.coupling_terms (columns rescaled per class, and stratum, to the rows' total).
    """
    d = e1.shape[-1]
    r, c = p1.clamp_min(1e-12), p2.clamp_min(1e-12)
    mask = None
    if ctx is not None:
        mask = ctx.unsqueeze(2) == ctx.unsqueeze(1)  # (L, n, n)
        onehot = torch.nn.functional.one_hot(ctx).to(r.dtype)  # (L, n, n_ctx)
        scale = (onehot.transpose(1, 2) @ r) / (onehot.transpose(1, 2) @ c).clamp_min(1e-12)
        c = c * (onehot @ scale)
    else:
        c = c * (r.sum(1, keepdim=True) / c.sum(1, keepdim=True))
    log_r = r.log().transpose(1, 2).contiguous()  # (L, K, n)
    log_c = c.log().transpose(1, 2).contiguous()
    k1 = (e1 / math.sqrt(d)).transpose(1, 2).contiguous()  # (L, K, n, d): class-major slices
    k2 = e2.transpose(1, 2).contiguous()
    terms, used = _AlignmentLoss.apply(k1, k2, log_r, log_c, mask, iters, tol)
    return terms, int(used)
