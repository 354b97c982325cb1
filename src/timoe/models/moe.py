"""Mixture-of-experts layer with vectorised dispatch.

Tokens x [B, M, T, d] are flattened to N = B*M*T rows. Each (token, slot) assignment of the
router's top-k is one row of a dispatch list of length N*k; a stable sort by expert groups the
rows per expert (and keeps token order inside each group, which the synergy experts rely on).
Every expert runs once on its contiguous slice; the weighted outputs return to their tokens
with one index_add. The only Python loop is over experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from timoe.models.layers import Dropout, FeedForward, GroupedSelfAttention
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
        self.drop = Dropout(dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: Tensor, sample: Tensor) -> Tensor:
        """x [n, d] routed tokens; sample [n] their sample ids, non-decreasing. Returns [n, d].

        Only the attention itself runs on padded groups [G, L, .]: the q/k/v and output
        projections, the residual, LayerNorm and dropout run on the n routed rows. Padding is
        about half of G x L at top-2 of 8 experts, so this halves their cost; the routed rows'
        values are those of the all-padded computation (padding keys are masked either way).
        """
        n = x.shape[0]
        # Renumber samples 0..G-1 over those present, so absent samples cost nothing.
        first = torch.ones_like(sample, dtype=torch.bool)
        first[1:] = sample[1:] != sample[:-1]
        group = torch.cumsum(first, 0) - 1  # [n]
        counts = torch.bincount(group)  # [G]
        pos = torch.arange(n, device=x.device) - (torch.cumsum(counts, 0) - counts)[group]  # [n]
        y = self.attn.packed(x, group, pos, counts)
        return self.ffn(self.norm(x + self.drop(y)))


@dataclass
class MoEOutput:
    """y [B, M, T, d] (combined expert outputs, no residual); route: the router's decision."""

    y: Tensor
    route: RouterOutput


class MoELayer(nn.Module):
    """Router + experts; the first `n_synergy` experts are SynergyExperts, the rest FFNs."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        n_synergy: int,
        n_heads: int,
        dropout: float,
        router: Router,
    ) -> None:
        super().__init__()
        if n_synergy > n_experts:
            raise ValueError("n_synergy exceeds n_experts")
        if router.n_experts != n_experts:
            raise ValueError("router and layer disagree on the number of experts")
        self.router = router
        self.n_experts = n_experts
        self.n_synergy = n_synergy
        self.experts = nn.ModuleList(
            SynergyExpert(d_model, d_ff, n_heads, dropout)
            if e < n_synergy
            else FeedForward(d_model, d_ff, dropout)
            for e in range(n_experts)
        )

    def forward(self, x: Tensor, context: RoutingContext | None = None) -> MoEOutput:
        route = self.router(x, context)
        return MoEOutput(self.dispatch(x, route), route)

    def dispatch(self, x: Tensor, route: RouterOutput) -> Tensor:
        """x [B, M, T, d], route.topk_idx/topk_weights [B, M, T, k] -> [B, M, T, d]."""
        b, m, t, d = x.shape
        k = route.topk_idx.shape[-1]
        flat = x.reshape(-1, d)  # [N, d]
        expert = route.topk_idx.reshape(-1)  # [N*k], token-major: row r is token r // k
        order = torch.argsort(expert, stable=True)
        token = torch.div(order, k, rounding_mode="floor")
        weight = route.topk_weights.reshape(-1)[order]
        counts = torch.bincount(expert, minlength=self.n_experts).tolist()
        inputs = flat.index_select(0, token).split(counts)
        tokens = token.split(counts)
        outputs = []
        for e, (inp, tok) in enumerate(zip(inputs, tokens, strict=True)):
            if inp.shape[0] == 0:
                outputs.append(inp)
            elif e < self.n_synergy:
                outputs.append(self.experts[e](inp, tok // (m * t)))
            else:
                outputs.append(self.experts[e](inp))
        combined = torch.cat(outputs) * weight[:, None]
        return torch.zeros_like(flat).index_add(0, token, combined).view(b, m, t, d)
