"""Mixture-of-experts layer with vectorised dispatch.

Tokens x [B, M, T, d] are flattened to N = B*M*T rows. Each (token, slot) assignment of the
router's top-k is one row of a dispatch list of length N*k; a stable sort by expert groups the
rows per expert (and keeps token order inside each group, which the synergy experts rely on).
The FFN experts run together: their groups are padded to the largest group and go through one
batched matmul per layer of the FFN (`StackedFeedForward`), since on a CPU the cost of E small
matmuls is mostly per-call overhead; the synergy experts (attention within each sample) run once
each on their slice. The weighted outputs return to their tokens with one index_add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timoe.models.layers import FeedForward, GroupedSelfAttention
from timoe.models.prior import RoutingContext
from timoe.models.routers import Router, RouterOutput


class SynergyExpert(nn.Module):
    """Attention among the tokens routed to this expert, then an FFN.

    Attention is restricted to tokens of the same sample (any modality, any step): a synergy
    expert sees the cross-modal, cross-time context that the routing grouped together.
    """

    def __init__(self, d_model: int, d_ff: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = GroupedSelfAttention(d_model, n_heads)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: Tensor, sample: Tensor) -> Tensor:
        """x [n, d] routed tokens; sample [n] their sample ids, non-decreasing. Returns [n, d]."""
        n, d = x.shape
        # Renumber samples 0..G-1 over those present, so absent samples cost nothing.
        first = torch.ones_like(sample, dtype=torch.bool)
        first[1:] = sample[1:] != sample[:-1]
        group = torch.cumsum(first.long(), 0) - 1  # [n]
        n_groups = int(group[-1]) + 1
        counts = torch.bincount(group, minlength=n_groups)  # [G]
        pos = torch.arange(n, device=x.device) - (torch.cumsum(counts, 0) - counts)[group]  # [n]
        length = int(counts.max())
        padded = x.new_zeros(n_groups, length, d).index_put((group, pos), x)  # [G, L, d]
        slots = torch.arange(length, device=x.device)
        valid = slots[None, :] < counts[:, None]  # [G, L]
        # Padding rows may see themselves so no row is fully masked (see GroupedSelfAttention).
        allowed = valid[:, None, :] | torch.eye(length, dtype=torch.bool, device=x.device)[None]
        z = self.norm(padded + self.drop(self.attn(padded, allowed)))
        return self.ffn(z[group, pos])


class StackedFeedForward(nn.Module):
    """n independent FFNs d -> d_ff -> d (GELU, dropout as in layers.FeedForward), applied to n
    groups of tokens at once: x [n, C, d] -> [n, C, d]. Initialised as n nn.Linear pairs."""

    def __init__(self, n: int, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n, d_model, d_ff))
        self.b1 = nn.Parameter(torch.empty(n, 1, d_ff))
        self.w2 = nn.Parameter(torch.empty(n, d_ff, d_model))
        self.b2 = nn.Parameter(torch.empty(n, 1, d_model))
        self.drop = nn.Dropout(dropout)
        for w, b, fan_in in ((self.w1, self.b1, d_model), (self.w2, self.b2, d_ff)):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.b2, self.drop(F.gelu(torch.baddbmm(self.b1, x, self.w1))), self.w2)

    def one(self, i: int, x: Tensor) -> Tensor:
        """FFN i alone on x [c, d] (the reference path for tests)."""
        return self(x[None].expand(self.w1.shape[0], -1, -1))[i]


@dataclass
class MoEOutput:
    """y [B, M, T, d] (combined expert outputs, no residual); route: the router's decision."""

    y: Tensor
    route: RouterOutput


class MoELayer(nn.Module):
    """Router + experts; the first `n_synergy` experts are SynergyExperts, the rest FFNs."""

    def __init__(self, d_model: int, d_ff: int, n_experts: int, n_synergy: int, n_heads: int,
                 dropout: float, router: Router) -> None:
        super().__init__()
        if n_synergy > n_experts:
            raise ValueError("n_synergy exceeds n_experts")
        if router.n_experts != n_experts:
            raise ValueError("router and layer disagree on the number of experts")
        self.router = router
        self.n_experts = n_experts
        self.n_synergy = n_synergy
        self.synergy = nn.ModuleList(SynergyExpert(d_model, d_ff, n_heads, dropout) for _ in range(n_synergy))
        self.ffn = StackedFeedForward(n_experts - n_synergy, d_model, d_ff, dropout) \
            if n_experts > n_synergy else None

    def expert_fn(self, e: int):
        """Expert e as a function of its tokens (synergy experts also take their sample ids)."""
        if e < self.n_synergy:
            return self.synergy[e]
        assert self.ffn is not None
        return lambda x: self.ffn.one(e - self.n_synergy, x)

    def forward(self, x: Tensor, context: RoutingContext | None = None) -> MoEOutput:
        route = self.router(x, context)
        return MoEOutput(self.dispatch(x, route), route)

    def dispatch(self, x: Tensor, route: RouterOutput) -> Tensor:
        """x [B, M, T, d], route.topk_idx/topk_weights [B, M, T, k] -> [B, M, T, d]."""
        b, m, t, d = x.shape
        k = route.topk_idx.shape[-1]
        flat = x.reshape(-1, d)  # [N, d]
        expert = route.topk_idx.reshape(-1)  # [N*k]
        token = torch.arange(flat.shape[0], device=x.device).repeat_interleave(k)  # [N*k]
        order = torch.argsort(expert, stable=True)
        token = token[order]
        weight = route.topk_weights.reshape(-1)[order]
        expert = expert[order]
        counts_t = torch.bincount(expert, minlength=self.n_experts)
        counts = counts_t.tolist()
        rows = flat.index_select(0, token)  # [N*k, d] grouped by expert
        out = torch.empty_like(rows)
        start = 0
        for e in range(self.n_synergy):  # attention within each sample's tokens on this expert
            stop = start + counts[e]
            if stop > start:
                out[start:stop] = self.synergy[e](rows[start:stop], token[start:stop] // (m * t))
            start = stop
        if self.ffn is not None and start < rows.shape[0]:
            # Pad every FFN expert's group to the largest one: [E_ffn, C, d], one batched FFN.
            ffn_rows, ffn_expert = rows[start:], expert[start:] - self.n_synergy
            ffn_counts = counts_t[self.n_synergy:]
            offsets = torch.cumsum(ffn_counts, 0) - ffn_counts
            pos = torch.arange(ffn_rows.shape[0], device=x.device) - offsets[ffn_expert]
            padded = ffn_rows.new_zeros(ffn_counts.numel(), int(ffn_counts.max()), d)
            padded[ffn_expert, pos] = ffn_rows
            out[start:] = self.ffn(padded)[ffn_expert, pos]
        combined = out * weight[:, None]
        return torch.zeros_like(flat).index_add(0, token, combined).view(b, m, t, d)
