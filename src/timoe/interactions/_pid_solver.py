"""Batched primal-dual interior-point solver for min_{Q∈Δ_p} I_Q(X1,X2;Y) (see exact.py for the maths).

Dual:  max b·v  s.t.  g_k(v) = logsumexp_{y: k∈S_y} [λ(x1,y) + μ(x2,y)] ≤ 0  for every cell k = (x1,x2),
with b = (p(x1,y), p(x2,y)).  Its multipliers z_k are the primal cell masses q(x1,x2), and
q(x1,x2,y) = z_k·softmax(c_k)_y.  We follow the central path z_k·σ_k = μ (σ_k = −g_k the slack) with
Newton steps on (v, z), all problems of a batch at once; Mehrotra's rule picks μ.  Every iterate v
is strictly dual feasible, so b·v is a proven lower bound; the linearised primal (exact marginals up
to the solve) is rounded onto Δ_p and its objective is a proven upper bound.
"""

from __future__ import annotations

import math

import torch

_SLACK_FLOOR = 1e-13  # logsumexp is accurate to ~1e-16 absolute: keep slacks well above that
_BOUNDARY = 0.99  # fraction-to-boundary for z and σ
_MAX_BACKTRACK = 40
_PATIENCE = 15  # iterations without a 10% better certificate before a problem is given up


def xlogx_sum(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return torch.special.xlogy(x, x).sum(dim=dims)


def objective(q: torch.Tensor) -> torch.Tensor:
    """Σ q log(q / q(x1,x2)) in nats, per problem: I_Q(X1,X2;Y) − H(Y)."""
    return xlogx_sum(q, (1, 2, 3)) - xlogx_sum(q.sum(-1), (1, 2))


def round_to_marginals(q: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Project q (B,n1,n2,ny) exactly onto per-class row sums r (B,n1,ny) and column sums c (B,n2,ny).

    Scale rows down, then columns down, then add the rank-one remainder (Altschuler et al. 2017).  The
    remainder only touches rows/columns with positive target mass, so the support is preserved.
    """
    rows = q.sum(2)
    q = q * torch.where(rows > 0, (r / rows.clamp_min(1e-300)).clamp(max=1.0), 0.0).unsqueeze(2)
    cols = q.sum(1)
    q = q * torch.where(cols > 0, (c / cols.clamp_min(1e-300)).clamp(max=1.0), 0.0).unsqueeze(1)
    er = (r - q.sum(2)).clamp_min(0.0)
    ec = (c - q.sum(1)).clamp_min(0.0)
    tot = ec.sum(1, keepdim=True)
    return q + er.unsqueeze(2) * (ec / tot.clamp_min(1e-300)).unsqueeze(1) * (tot > 0).unsqueeze(1)


class _Batch:
    """Static data of a batch of normalised problems, in the dual's flat variable layout."""

    def __init__(self, p: torch.Tensor) -> None:
        _, self.n1, self.n2, self.ny = p.shape
        self.p1y, self.p2y = p.sum(2), p.sum(1)
        a1, a2 = self.p1y > 0, self.p2y > 0
        self.support = a1.unsqueeze(2) & a2.unsqueeze(1)  # S_y as (B,n1,n2,ny)
        self.has = self.support.any(-1)  # cells carrying a constraint
        # The dual is invariant under λ(·,y)+a, μ(·,y)−a; pin μ at the heaviest x2 of each class so
        # the Newton system is non-singular.  Variables of absent (x,y) enter nothing: pin them too.
        free2 = a2.clone()
        free2.scatter_(1, self.p2y.argmax(1, keepdim=True), False)
        self.free = torch.cat([a1.flatten(1), free2.flatten(1)], 1)
        self.b = torch.cat([self.p1y.flatten(1), self.p2y.flatten(1)], 1)
        self.n_cells = self.has.sum((1, 2)).to(p.dtype).clamp_min(1.0)

    def initial_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        # λ = −log(ny) − 1 makes every logsumexp ≤ −1 (strictly feasible); z = uniform cell mass.
        lam = torch.where(self.p1y > 0, -math.log(self.ny) - 1.0, 0.0)
        v = torch.cat([lam.flatten(1), torch.zeros_like(self.p2y).flatten(1)], 1)
        z = self.has.to(v.dtype) / self.n_cells.view(-1, 1, 1)
        return v, z

    def cells(self, v: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell exponents c (k,n1,n2,ny; −inf off-support) and slacks σ = −g (k,n1,n2; 1 if no constraint)."""
        n1, n2, ny = self.n1, self.n2, self.ny
        lam = v[:, : n1 * ny].reshape(-1, n1, 1, ny)
        mu = v[:, n1 * ny :].reshape(-1, 1, n2, ny)
        c = (lam + mu).masked_fill(~self.support[idx], -math.inf)
        return c, torch.where(self.has[idx], -torch.logsumexp(c, dim=-1), 1.0)

    def marginals(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class marginals of a (k,n1,n2,ny) array in the flat (λ, μ) layout."""
        return torch.cat([x.sum(2).flatten(1), x.sum(1).flatten(1)], 1)

    def cell_delta(self, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        n1, n2, ny = self.n1, self.n2, self.ny
        dc = d[:, : n1 * ny].reshape(-1, n1, 1, ny) + d[:, n1 * ny :].reshape(-1, 1, n2, ny)
        return torch.where(s > 0, dc, 0.0)


def _block_diag_into(out: torch.Tensor, blocks: torch.Tensor) -> None:
    """Write blocks (k, n, ny, ny) on the diagonal of the square out (k, n·ny, n·ny)."""
    k, n, ny, _ = blocks.shape
    st = out.stride()
    view = out.as_strided(
        (k, n, ny, ny), (st[0], (out.shape[1] + 1) * ny, st[1], st[2]), out.storage_offset()
    )
    view.copy_(blocks)


def _masked_blocks(blocks: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Zero rows/columns of pinned variables and put 1 on their diagonal (their step is 0)."""
    f = free.to(blocks.dtype)
    return blocks * f.unsqueeze(-1) * f.unsqueeze(-2) + torch.diag_embed(1.0 - f)


def _cholesky_with_ridge(h: torch.Tensor) -> torch.Tensor:
    """Batched Cholesky; matrices that fail get a growing ridge (only those, only when needed)."""
    factor, info = torch.linalg.cholesky_ex(h)
    ridge = 1e-13
    while bool((info != 0).any()) and ridge < 1.0:
        bad = info != 0
        size = h[bad].diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(1e-300)
        eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
        f2, info2 = torch.linalg.cholesky_ex(h[bad] + ridge * size[..., None, None] * eye)
        factor[bad], info[bad] = f2, info2
        ridge *= 100.0
    return factor


def _chol_inverse_factor(h: torch.Tensor) -> torch.Tensor:
    """L⁻¹ for a batch of small SPD matrices h = LLᵀ (Jacobi-scaled internally)."""
    scale = h.diagonal(dim1=-2, dim2=-1).clamp_min(1e-300).rsqrt()
    hs = h * scale.unsqueeze(-1) * scale.unsqueeze(-2)
    eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device).expand_as(h)
    linv = torch.linalg.solve_triangular(_cholesky_with_ridge(hs), eye, upper=False)
    return linv * scale.unsqueeze(-2)  # h = D·Ls·Lsᵀ·D with D = diag(1/scale), so L⁻¹ = Ls⁻¹·D⁻¹


class _NewtonSystem:
    """Factorised reduced Hessian H = Σ_k A_kᵀ M_k A_k in (λ, μ), M_k = diag(ws_k) + cs_k s_kᵀ.

    A_k maps (λ(x1,·), μ(x2,·)) to the cell's c_k, so the λλ part is block-diagonal (one ny×ny block
    per x1).  We factorise those small blocks, eliminate λ and factorise only the (n2·ny)² Schur
    complement: batched matmuls instead of a dense Cholesky of size (n1+n2)·ny.
    """

    def __init__(self, ws: torch.Tensor, cs: torch.Tensor, s: torch.Tensor, free: torch.Tensor) -> None:
        k, n1, n2, ny = ws.shape
        f1 = free[:, : n1 * ny].reshape(k, n1, ny)
        f2 = free[:, n1 * ny :].reshape(k, n2, ny)
        a = torch.diag_embed(ws.sum(2)) + torch.einsum("kabi,kabj->kaij", cs, s)
        c = torch.diag_embed(ws.sum(1)) + torch.einsum("kabi,kabj->kbij", cs, s)
        # Cross block B in (x1,y)×(x2,y') layout, built in place: rank-one part, then the diagonal ws.
        # Rows of absent (x1,y) are already zero (s vanishes there); gauge columns are zeroed.
        bm = cs.permute(0, 1, 3, 2).unsqueeze(-1) * s.unsqueeze(2)
        st = bm.stride()
        bm.as_strided((k, n1, ny, n2), (st[0], st[1], st[2] + 1, st[3])).add_(ws.permute(0, 1, 3, 2))
        bm.mul_(f2.to(ws.dtype).view(k, 1, 1, n2, ny))
        # Stable elimination: A = LLᵀ blockwise, W = L⁻¹B, Schur = C − WᵀW (never C − BᵀA⁻¹B with an
        # explicit A⁻¹, which cancels catastrophically once the weights span ~1e8).
        self.linv = _chol_inverse_factor(_masked_blocks(a, f1))
        self.wmat = (self.linv @ bm.reshape(k, n1, ny, n2 * ny)).reshape(k, n1 * ny, n2 * ny)
        schur = torch.zeros(k, n2 * ny, n2 * ny, dtype=ws.dtype, device=ws.device)
        _block_diag_into(schur, _masked_blocks(c, f2))
        schur -= self.wmat.transpose(1, 2) @ self.wmat
        # Jacobi scaling: the weights make the diagonal span many orders of magnitude.
        self.scale = schur.diagonal(dim1=1, dim2=2).clamp_min(1e-300).rsqrt()
        schur *= self.scale.unsqueeze(2) * self.scale.unsqueeze(1)
        self.ls = _cholesky_with_ridge(schur)
        self.shape = (k, n1, n2, ny)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """H⁻¹·rhs (pinned variables must have zero rhs; they get a zero step)."""
        k, n1, _, ny = self.shape
        z1 = (self.linv @ rhs[:, : n1 * ny].reshape(k, n1, ny, 1)).reshape(k, n1 * ny)  # L⁻¹r1
        r2 = rhs[:, n1 * ny :] - (self.wmat.transpose(1, 2) @ z1.unsqueeze(-1)).squeeze(-1)
        d2 = self.scale * torch.cholesky_solve((self.scale * r2).unsqueeze(-1), self.ls).squeeze(-1)
        # λ part: A⁻¹(r1 − B d2) = L⁻ᵀ(L⁻¹r1 − W d2)
        u = (z1 - (self.wmat @ d2.unsqueeze(-1)).squeeze(-1)).reshape(k, n1, ny, 1)
        d1 = (self.linv.transpose(-1, -2) @ u).reshape(k, n1 * ny)
        return torch.cat([d1, d2], 1)


class _Step:
    """One Newton direction (dv, dz) at the current point for a given centring target μ."""

    def __init__(
        self,
        bt: _Batch,
        system: _NewtonSystem,
        s: torch.Tensor,
        sig: torch.Tensor,
        z: torch.Tensor,
        has: torch.Tensor,
        free: torch.Tensor,
        b: torch.Tensor,
        mu: torch.Tensor,
    ) -> None:
        target = torch.where(has, mu.view(-1, 1, 1) / sig, 0.0)
        # Eliminating dz from the linearised KKT system leaves H dv = b − Σ_k (μ/σ_k) ∇g_k.
        self.dv = system.solve((b - bt.marginals(target.unsqueeze(-1) * s)) * free)
        self.dc = bt.cell_delta(self.dv, s)
        self.sdc = (s * self.dc).sum(-1)  # = −Δσ to first order
        # Linearised complementarity (z+dz)(σ+Δσ) = μ.
        self.dz = torch.where(has, target - z + z * self.sdc / sig, 0.0)

    def max_z_step(self, z: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(self.dz < 0, -z / self.dz.clamp(max=-1e-300), math.inf)
        return (_BOUNDARY * ratio.amin(dim=(1, 2))).clamp(max=1.0)


def _feasible_step(
    bt: _Batch, idx: torch.Tensor, v: torch.Tensor, dv: torch.Tensor, sig: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest α ≤ alpha (halving) keeping every slack positive, resolvable and ≥ 1% of its value."""
    has = bt.has[idx]
    new_sig = sig.clone()
    done = torch.zeros_like(alpha, dtype=torch.bool)
    for _ in range(_MAX_BACKTRACK):
        pend = (~done).nonzero().squeeze(1)
        if pend.numel() == 0:
            break
        _, sn = bt.cells(v[pend] + alpha[pend].unsqueeze(1) * dv[pend], idx[pend])
        ok = ((sn > _SLACK_FLOOR) & (sn >= (1.0 - _BOUNDARY) * sig[pend]) | ~has[pend]).all(dim=(1, 2))
        done[pend[ok]] = True
        new_sig[pend[ok]] = sn[ok]
        alpha[pend[~ok]] *= 0.5
    return torch.where(done, alpha, 0.0), new_sig


def solve_min_mi(p: torch.Tensor, tol_nats: float, max_iter: int) -> dict[str, torch.Tensor]:
    """Minimise Σ q log(q/q(x1,x2)) over Δ_p for a batch of normalised joints p (B,n1,n2,ny).

    Returns per problem the best certified primal q, its value and the dual bound (nats), the
    iteration count and whether the certificate reached tol_nats.
    """
    bt = _Batch(p)
    nb = p.shape[0]
    v, z = bt.initial_point()
    best_primal = torch.full((nb,), math.inf, dtype=p.dtype, device=p.device)
    best_q = torch.zeros_like(p)
    best_dual = (bt.b * v).sum(1)
    best_gap = torch.full_like(best_primal, math.inf)
    iters = torch.zeros(nb, dtype=torch.long, device=p.device)
    stalls = torch.zeros_like(iters)
    active = torch.ones(nb, dtype=torch.bool, device=p.device)
    for _ in range(max_iter):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        iters[idx] += 1
        vi, zi, bi, free, has, m = v[idx], z[idx], bt.b[idx], bt.free[idx], bt.has[idx], bt.n_cells[idx]
        c, sig = bt.cells(vi, idx)
        s = torch.exp(c + sig.unsqueeze(-1))  # softmax over the cell's classes (σ = −logsumexp)
        system = _NewtonSystem(zi.unsqueeze(-1) * s, (zi / sig - zi).unsqueeze(-1) * s, s, free)
        eta = (zi * sig).sum((1, 2)) / m  # mean complementarity
        # Mehrotra: predict with μ = 0, then centre with μ = (η_affine / η)³ · η.
        aff = _Step(bt, system, s, sig, zi, has, free, bi, torch.zeros_like(eta))
        a_aff, sig_aff = _feasible_step(bt, idx, vi, aff.dv, sig, aff.max_z_step(zi))
        z_aff = zi + a_aff.view(-1, 1, 1) * aff.dz
        eta_aff = (z_aff * sig_aff).sum((1, 2)) / m
        mu = eta * torch.where(eta > 0, eta_aff / eta.clamp_min(1e-300), 0.0).clamp(1e-4, 1.0).pow(3)
        step = _Step(bt, system, s, sig, zi, has, free, bi, mu)
        # Certificate (upper bound): the linearised primal z s + d(z s) has exact marginals; round it.
        q_lin = s * (zi.unsqueeze(-1) * (1.0 + step.dc - step.sdc.unsqueeze(-1)) + step.dz.unsqueeze(-1))
        q = round_to_marginals(q_lin.clamp_min(0.0), bt.p1y[idx], bt.p2y[idx])
        primal = objective(q)
        better = primal < best_primal[idx]
        best_primal[idx[better]], best_q[idx[better]] = primal[better], q[better]
        alpha, _ = _feasible_step(bt, idx, vi, step.dv, sig, step.max_z_step(zi))
        broken = ~torch.isfinite(step.dv).all(1) | (alpha <= 0)  # no usable step: numerical limit
        alpha = torch.where(broken, 0.0, alpha)
        v[idx] = torch.where(broken.unsqueeze(1), vi, vi + alpha.unsqueeze(1) * step.dv)
        z[idx] = torch.where(has, (zi + alpha.view(-1, 1, 1) * step.dz).clamp_min(1e-300), 0.0)
        # Certificate (lower bound): b·v at the new, strictly feasible dual point.
        best_dual[idx] = torch.maximum(best_dual[idx], (bi * v[idx]).sum(1))
        gap = best_primal[idx] - best_dual[idx]
        improved = gap < 0.9 * best_gap[idx]
        best_gap[idx] = torch.minimum(best_gap[idx], gap)
        stalls[idx] = torch.where(improved, 0, stalls[idx] + 1) + _PATIENCE * broken.long()
        active[idx[(gap <= tol_nats) | (stalls[idx] >= _PATIENCE)]] = False
    gap = (best_primal - best_dual).clamp_min(0.0)
    return {
        "gap": gap,
        "q": best_q,
        "primal": best_primal,
        "dual": best_dual,
        "iters": iters,
        "converged": gap <= tol_nats,
    }
