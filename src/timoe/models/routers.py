"""Routers: every router maps tokens [B, M, T, d] (one token = one modality at one step) to expert
logits [B, M, T, E]; the shared base turns logits into probabilities and top-k choices.

Shapes used below: B batch, M modalities, T steps, d model width, E experts, k experts per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timoe.models.rus import RusPrior


@dataclass
class RouterOutput:
    """logits, probs [B, M, T, E] (probs: full softmax, feeds the auxiliary losses);
    topk_idx [B, M, T, k] (long); topk_weights [B, M, T, k] (mixing weights, sum to 1 per token)."""

    logits: Tensor
    probs: Tensor
    topk_idx: Tensor
    topk_weights: Tensor


def route_from_logits(logits: Tensor, top_k: int) -> RouterOutput:
    """Full softmax for the losses; top-k on the logits; mixing weights = softmax over the k
    selected logits (= the full probabilities renormalised over the selection).

    With k = 1 that softmax is identically 1 and the task loss would never reach the router, so
    k = 1 follows Switch instead: the weight is the chosen expert's full probability.
    """
    probs = torch.softmax(logits, dim=-1)
    top_logits, top_idx = logits.topk(top_k, dim=-1)
    weights = probs.gather(-1, top_idx) if top_k == 1 else torch.softmax(top_logits, dim=-1)
    return RouterOutput(logits, probs, top_idx, weights)


class Router(nn.Module):
    """Base: subclasses implement `compute_logits(tokens [B, M, T, d]) -> [B, M, T, E]`."""

    def __init__(self, d_model: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must lie in 1..n_experts={n_experts}")
        self.d_model = d_model
        self.n_experts = n_experts
        self.top_k = top_k

    def compute_logits(self, tokens: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, tokens: Tensor) -> RouterOutput:
        return route_from_logits(self.compute_logits(tokens), self.top_k)


class SoftmaxRouter(Router):
    """Switch/GShard gate: a linear map per token, softmax top-k."""

    def __init__(self, d_model: int, n_experts: int, top_k: int) -> None:
        super().__init__(d_model, n_experts, top_k)
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def compute_logits(self, tokens: Tensor) -> Tensor:
        return self.gate(tokens)


class LaplaceRouter(Router):
    """FuseMoE's Laplace gate: logits_e = -||x - w_e||_2."""

    def __init__(self, d_model: int, n_experts: int, top_k: int) -> None:
        super().__init__(d_model, n_experts, top_k)
        # Unit-variance centres: tokens come out of LayerNorm at unit scale, so distances differ
        # by O(1) between experts and the initial routing is neither uniform nor collapsed.
        self.centres = nn.Parameter(torch.randn(n_experts, d_model))

    def compute_logits(self, tokens: Tensor) -> Tensor:
        sq = (tokens * tokens).sum(-1, keepdim=True) + (self.centres * self.centres).sum(-1) \
            - 2.0 * tokens @ self.centres.t()
        # The clamp keeps sqrt's gradient finite when a token sits on a centre.
        return -sq.clamp_min(1e-6).sqrt()


class RusAwareRouter(Router):
    """TIME-MoE router. For the token of modality m at step t:

    h = ReLU(W x)                                   [B, M, T, token_dim]
    ctx = attention(query W_q h, over partners j != m,
                    keys/values from [R_mj(t), S_mj(t)])  [B, M, T, kv_dim]
    g = GRU over t of [U_m(t); ctx]                 [B, M, T, gru_dim]  (one sequence per (b, m))
    logits = MLP([h; g])                            [B, M, T, E]

    The prior lives in buffers, so `.to(device)` moves it and checkpoints record the (train-split)
    RUS the model was trained with.

    With at most two modalities the partner attention has a single key (or none), so the context,
    and with it the GRU's input, does not depend on the token: the GRU then runs once per modality
    and is broadcast over the batch, the same function at 1/B of the cost (`share_gru=False`
    forces the general path; the tests check both agree).
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, rus: RusPrior, token_dim: int = 64,
                 gru_dim: int = 64, kv_dim: int = 32) -> None:
        super().__init__(d_model, n_experts, top_k)
        self.register_buffer("rus_u", rus.U.clone())  # [M, T]
        self.register_buffer("rus_pair", torch.stack([rus.R, rus.S], dim=-1).clone())  # [M, M, T, 2]
        m = rus.n_modalities
        self.register_buffer("self_mask", torch.eye(m, dtype=torch.bool)[None, :, None, :], persistent=False)
        self.token = nn.Linear(d_model, token_dim)
        self.query = nn.Linear(token_dim, kv_dim)
        self.key = nn.Linear(2, kv_dim)
        self.value = nn.Linear(2, kv_dim)
        self.kv_scale = 1.0 / math.sqrt(kv_dim)
        self.gru = nn.GRU(1 + kv_dim, gru_dim, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(token_dim + gru_dim, token_dim), nn.ReLU(),
                                 nn.Linear(token_dim, n_experts))
        self.share_gru = True

    def compute_logits(self, tokens: Tensor) -> Tensor:
        b, m, t, _ = tokens.shape
        if m != self.rus_u.shape[0]:
            raise ValueError(f"router built for {self.rus_u.shape[0]} modalities, got {m}")
        if t > self.rus_u.shape[1]:
            raise ValueError(f"RUS prior covers {self.rus_u.shape[1]} steps, input has {t}")
        h = F.relu(self.token(tokens))  # [B, M, T, H]
        u = self.rus_u[:, :t, None]  # [M, T, 1]
        pair = self.rus_pair[:, :, :t]  # [M, J, T, 2]
        values = self.value(pair).transpose(1, 2)  # [M, T, J, kv]
        if m <= 2 and self.share_gru:
            if m == 1:  # no partner: an all-masked softmax would be NaN; the context is empty
                ctx = values.new_zeros(1, t, values.shape[-1])
            else:  # the single partner gets attention weight 1
                ctx = torch.stack([values[0, :, 1], values[1, :, 0]])  # [M, T, kv]
            gru_out, _ = self.gru(torch.cat([u, ctx], dim=-1))  # [M, T, G]
            gru_out = gru_out.expand(b, m, t, -1)
        else:
            if m > 1:
                keys = self.key(pair).transpose(1, 2)  # [M, T, J, kv]
                scores = torch.einsum("bmtc,mtjc->bmtj", self.query(h), keys) * self.kv_scale
                attn = torch.softmax(scores.masked_fill(self.self_mask, float("-inf")), dim=-1)
                ctx = torch.einsum("bmtj,mtjc->bmtc", attn, values)  # [B, M, T, kv]
            else:
                ctx = h.new_zeros(b, m, t, values.shape[-1])
            gru_in = torch.cat([u.expand(b, m, t, 1), ctx], dim=-1).reshape(b * m, t, -1)
            gru_out = self.gru(gru_in)[0].view(b, m, t, -1)
        return self.mlp(torch.cat([h, gru_out], dim=-1))
