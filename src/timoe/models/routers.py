"""Routers: every router maps tokens [B, M, T, d] (one token = one modality at one step) to expert
logits [B, M, T, E]; the shared base turns logits into probabilities and top-k choices.

Shapes used below: B batch, M modalities, T steps, d model width, E experts, k experts per token.

Initial scale matters (method.md section 5): a router whose logits start near-constant routes by
position, not content, and top-k then hides it. Every learned router here starts with a linear
token gate at the scale of a default `nn.Linear` (token-dependent logit std about 0.5 on
LayerNorm-ed tokens), and the RUS-aware router adds its interaction path to that gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timoe.models.prior import RoutingContext


@dataclass
class RouterOutput:
    """logits, probs [B, M, T, E] (probs: full softmax, feeds the auxiliary losses);
    topk_idx [B, M, T, k] (long); topk_weights [B, M, T, k] (mixing weights, sum to 1 per token)."""

    logits: Tensor
    probs: Tensor
    topk_idx: Tensor
    topk_weights: Tensor


def expert_softmax(logits: Tensor) -> Tensor:
    """softmax over the last (experts) dim of logits [..., E]; same shape, values to 1 ulp.

    Why not torch.softmax(logits, -1): ATen's CPU kernel vectorises along the reduced dim, and
    with E = 8 experts it runs at about 1/20 of exp's rate (0.9 ms forward for 6144 tokens, one
    thread). Reducing over the outer dim of the [E, N] view instead vectorises across tokens:
    0.11 ms forward, 0.28 ms forward + backward against 1.6 ms. The result keeps the experts-outer
    layout (a non-contiguous view); every consumer indexes it, none needs it contiguous.
    """
    n_experts = logits.shape[-1]
    return torch.softmax(logits.reshape(-1, n_experts).t(), dim=0).t().reshape(logits.shape)


def route_from_logits(logits: Tensor, top_k: int) -> RouterOutput:
    """Full softmax for the losses; top-k on the logits; mixing weights = softmax over the k
    selected logits (= the full probabilities renormalised over the selection).

    With k = 1 that softmax is identically 1 and the task loss would never reach the router, so
    k = 1 follows Switch instead: the weight is the chosen expert's full probability.
    """
    probs = expert_softmax(logits)
    top_logits, top_idx = logits.topk(top_k, dim=-1)
    weights = probs.gather(-1, top_idx) if top_k == 1 else expert_softmax(top_logits)
    return RouterOutput(logits, probs, top_idx, weights)


class Router(nn.Module):
    """Base: subclasses implement `compute_logits(tokens [B, M, T, d], context) -> [B, M, T, E]`."""

    def __init__(self, d_model: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must lie in 1..n_experts={n_experts}")
        self.d_model = d_model
        self.n_experts = n_experts
        self.top_k = top_k
        # Set by models.diagnostics.random_routing: route uniformly at random (test-time ablation).
        self.random_generator: torch.Generator | None = None
        # Set by models.diagnostics.synergy_experts_disabled: [E] bool, experts top-k may not pick.
        self.disabled_experts: Tensor | None = None

    def compute_logits(self, tokens: Tensor, context: RoutingContext | None) -> Tensor:
        raise NotImplementedError

    def random_route(self, tokens: Tensor, gen: torch.Generator) -> RouterOutput:
        """k distinct uniformly random experts per token, equal weights; logits/probs uniform."""
        b, m, t, _ = tokens.shape
        draw = torch.rand(b, m, t, self.n_experts, generator=gen).to(tokens.device)
        idx = draw.topk(self.top_k, dim=-1).indices
        logits = tokens.new_zeros(b, m, t, self.n_experts)
        weights = tokens.new_full((b, m, t, self.top_k), 1.0 / self.top_k)
        return RouterOutput(logits, torch.softmax(logits, dim=-1), idx, weights)

    def forward(self, tokens: Tensor, context: RoutingContext | None = None) -> RouterOutput:
        if self.random_generator is not None:
            return self.random_route(tokens, self.random_generator)
        logits = self.compute_logits(tokens, context)
        if self.disabled_experts is not None:
            logits = logits.masked_fill(self.disabled_experts.to(logits.device), _MASKED)
        return route_from_logits(logits, self.top_k)


class SoftmaxRouter(Router):
    """Switch/GShard gate: a linear map per token, softmax top-k."""

    def __init__(self, d_model: int, n_experts: int, top_k: int) -> None:
        super().__init__(d_model, n_experts, top_k)
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def compute_logits(self, tokens: Tensor, context: RoutingContext | None = None) -> Tensor:
        return self.gate(tokens)


class LaplaceRouter(Router):
    """FuseMoE's Laplace gate: logits_e = -||x - w_e||_2."""

    def __init__(self, d_model: int, n_experts: int, top_k: int) -> None:
        super().__init__(d_model, n_experts, top_k)
        # Unit-variance centres: tokens come out of LayerNorm at unit scale, so distances differ
        # by O(1) between experts and the initial routing is neither uniform nor collapsed.
        self.centres = nn.Parameter(torch.randn(n_experts, d_model))

    def compute_logits(self, tokens: Tensor, context: RoutingContext | None = None) -> Tensor:
        sq = (
            (tokens * tokens).sum(-1, keepdim=True)
            + (self.centres * self.centres).sum(-1)
            - 2.0 * tokens @ self.centres.t()
        )
        # The clamp keeps sqrt's gradient finite when a token sits on a centre.
        return -sq.clamp_min(1e-6).sqrt()


_MASKED = -1e4  # a logit that softmax turns into exactly 0 in float32, without inf arithmetic


def modality_expert_mask(n_modalities: int, n_experts: int, n_shared: int) -> Tensor:
    """allowed [M, E] bool: the first n_shared experts are shared by all modalities; the rest are
    split into M contiguous private blocks (any remainder joins the last block)."""
    private = n_experts - n_shared
    if private < n_modalities:
        raise ValueError(
            f"modality routing needs >= 1 private expert per modality: {n_experts} experts, "
            f"{n_shared} shared, {n_modalities} modalities"
        )
    allowed = torch.zeros(n_modalities, n_experts, dtype=torch.bool)
    allowed[:, :n_shared] = True
    block = private // n_modalities
    for m in range(n_modalities):
        stop = n_experts if m == n_modalities - 1 else n_shared + (m + 1) * block
        allowed[m, n_shared + m * block : stop] = True
    return allowed


class ModalityRouter(SoftmaxRouter):
    """MoIIE-style modality-guided routing: a learned softmax gate restricted, per token, to its own
    modality's private experts plus a shared pool of cross-modality experts (the synergy experts,
    which attend across the modalities of a sample)."""

    def __init__(self, d_model: int, n_experts: int, top_k: int, n_modalities: int, n_shared: int) -> None:
        super().__init__(d_model, n_experts, top_k)
        allowed = modality_expert_mask(n_modalities, n_experts, n_shared)
        if int(allowed.sum(-1).min()) < top_k:
            raise ValueError(f"top_k={top_k} exceeds the experts open to some modality")
        self.register_buffer("allowed", allowed, persistent=False)

    def compute_logits(self, tokens: Tensor, context: RoutingContext | None = None) -> Tensor:
        logits = self.gate(tokens)  # [B, M, T, E]
        return logits.masked_fill(~self.allowed[None, :, None, :], _MASKED)


class HashRouter(Router):
    """Fixed random routing (hash layers): token (m, t) always goes to the same k experts, drawn
    once from a fixed generator, with equal weights; nothing is learned. Any claim that routing
    helps must beat this."""

    def __init__(
        self, d_model: int, n_experts: int, top_k: int, n_modalities: int, max_steps: int, seed: int = 0
    ) -> None:
        super().__init__(d_model, n_experts, top_k)
        gen = torch.Generator().manual_seed(seed)
        table = torch.stack(
            [torch.randperm(n_experts, generator=gen)[:top_k] for _ in range(n_modalities * max_steps)]
        ).view(n_modalities, max_steps, top_k)
        self.register_buffer("table", table)

    def compute_logits(self, tokens: Tensor, context: RoutingContext | None = None) -> Tensor:
        b, m, t, _ = tokens.shape
        logits = tokens.new_full((m, t, self.n_experts), _MASKED)
        logits.scatter_(-1, self.table[:m, :t], 0.0)
        return logits.expand(b, m, t, self.n_experts)

    def forward(self, tokens: Tensor, context: RoutingContext | None = None) -> RouterOutput:
        if self.random_generator is not None:
            return self.random_route(tokens, self.random_generator)
        b, m, t, _ = tokens.shape
        logits = self.compute_logits(tokens, context)
        idx = self.table[:m, :t].expand(b, m, t, self.top_k)
        weights = tokens.new_full((b, m, t, self.top_k), 1.0 / self.top_k)
        return RouterOutput(logits, torch.softmax(logits, dim=-1), idx, weights)


class OracleRouter(SoftmaxRouter):
    """Routing given the true regime of each window: the token gate plus a learned bias per
    (regime, modality). Only for data sets that record the regime (synthetic-regimes); it bounds
    what a router that recovers the regime could gain."""

    def __init__(self, d_model: int, n_experts: int, top_k: int, n_modalities: int, n_regimes: int) -> None:
        super().__init__(d_model, n_experts, top_k)
        self.regime_bias = nn.Parameter(torch.randn(n_regimes, n_modalities, n_experts))

    def compute_logits(self, tokens: Tensor, context: RoutingContext | None = None) -> Tensor:
        if context is None or context.regime is None:
            raise ValueError("the oracle router needs the true regime of each window")
        return self.gate(tokens) + self.regime_bias[context.regime][:, :, None, :]


def per_window(table: Tensor, ctx: Tensor, shift: Tensor | None) -> Tensor:
    """table [K, M, T, F] per context -> [B, M, T, F]: window b's context ctx[b], rolled along
    the steps by shift[b] (None: no roll) as prior.roll_steps rolls; one index_select."""
    k, m, t, f = table.shape
    steps = torch.arange(t, device=table.device)[None, :]  # [1, T]
    if shift is not None:
        steps = (steps - shift.to(table.device)[:, None]) % t  # [B, T]
    modality = torch.arange(m, device=table.device)[None, :, None]
    rows = (ctx.to(table.device)[:, None, None] * m + modality) * t + steps[:, None, :]  # [B, M, T]
    return table.reshape(k * m * t, f).index_select(0, rows.reshape(-1)).view(*rows.shape, f)


def context_mlp(mlp: nn.Sequential, h: Tensor, table: Tensor, ctx: Tensor, shift: Tensor | None) -> Tensor:
    """mlp(cat([h, per_window(table, ctx, shift)], -1)) for mlp = (Linear, ReLU, Linear):
    h [B, M, T, H], table [K, M, T, F] -> [B, M, T, out].

    Why not the cat: the first layer's table half W_f . table + bias depends on the context and
    the step only, so it runs on the K x M x T table rows (384 here) instead of B x M x T tokens
    (6144), and only its H-wide result is gathered per window; no [B, M, T, H + F] copy.
    """
    first, act, last = mlp
    h_dim = h.shape[-1]
    table_part = F.linear(table, first.weight[:, h_dim:], first.bias)  # [K, M, T, hidden]
    hidden = F.linear(h, first.weight[:, :h_dim]) + per_window(table_part, ctx, shift)
    return last(act(hidden))


class RusAwareRouter(Router):
    """TIME-MoE router with a per-window prior. For the token of modality m at step t of window b,
    whose window belongs to context c (its prior tables U_c, R_c, S_c):

    ctx_c = attention(query q_m, over partners j != m,
                      keys/values from [R_cmj(t), S_cmj(t)])  [K, M, T, kv_dim]
    g_c = GRU over t of [U_cm(t); ctx_c]                [K, M, T, gru_dim]  (one sequence per (c, m))
    h = ReLU(W x)                                       [B, M, T, token_dim]
    logits = W_g x + MLP([h; g_c(b)])                   [B, M, T, E]

    Differences from the reference, and why: the interaction path (attention + GRU) reads the
    prior only, with a learned query per modality instead of the token's, so it runs once per
    context (K sequences, not B) and is then gathered per window and rolled with any time shift
    of the signal; the token enters through h and through W_g, the token gate that keeps the
    initial logits token-dependent at the scale of the learned gates (method.md section 5). With
    a dataset-level prior (K = 1) g is a constant per (modality, step); with contexts it differs
    between kinds of windows.
    """

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        top_k: int,
        n_modalities: int,
        token_dim: int = 64,
        gru_dim: int = 64,
        kv_dim: int = 32,
    ) -> None:
        super().__init__(d_model, n_experts, top_k)
        self.n_modalities = n_modalities
        self.register_buffer(
            "self_mask", torch.eye(n_modalities, dtype=torch.bool)[None, :, None, :], persistent=False
        )
        self.gate = nn.Linear(d_model, n_experts, bias=False)
        self.token = nn.Linear(d_model, token_dim)
        self.query = nn.Parameter(torch.randn(n_modalities, kv_dim) / math.sqrt(kv_dim))
        self.key = nn.Linear(2, kv_dim)
        self.value = nn.Linear(2, kv_dim)
        self.kv_scale = 1.0 / math.sqrt(kv_dim)
        self.gru = nn.GRU(1 + kv_dim, gru_dim, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(token_dim + gru_dim, token_dim), nn.ReLU(), nn.Linear(token_dim, n_experts)
        )

    def interaction_path(self, U: Tensor, R: Tensor, S: Tensor) -> Tensor:
        """Per-context tables U [K, M, T], R, S [K, M, M, T] -> g [K, M, T, gru_dim]."""
        k, m, t = U.shape
        pair = torch.stack([R, S], dim=-1).transpose(2, 3)  # [K, M, T, J, 2]
        values = self.value(pair)  # [K, M, T, J, kv]
        if m == 1:  # no partner: an all-masked softmax would be NaN; the context is empty
            ctx = values.new_zeros(k, m, t, values.shape[-1])
        else:
            scores = torch.einsum("mc,kmtjc->kmtj", self.query, self.key(pair)) * self.kv_scale
            attn = torch.softmax(scores.masked_fill(self.self_mask, float("-inf")), dim=-1)
            ctx = torch.einsum("kmtj,kmtjc->kmtc", attn, values)
        gru_in = torch.cat([U[..., None], ctx], dim=-1).reshape(k * m, t, -1)
        return self.gru(gru_in)[0].view(k, m, t, -1)

    def compute_logits(self, tokens: Tensor, context: RoutingContext | None) -> Tensor:
        _, m, t, _ = tokens.shape
        if context is None or context.prior is None:
            raise ValueError("the RUS-aware router needs a per-window prior (context.prior)")
        (U, R, S), ctx, shift = context.prior.per_context()
        if m != self.n_modalities or U.shape[1] != m:
            raise ValueError(
                f"router built for {self.n_modalities} modalities, got tokens of {m} and a "
                f"prior of {U.shape[1]}"
            )
        if t > U.shape[-1]:
            raise ValueError(f"RUS prior covers {U.shape[-1]} steps, input has {t}")
        g = self.interaction_path(U[..., :t], R[..., :t], S[..., :t])  # [K, M, T, G]
        return self.gate(tokens) + context_mlp(self.mlp, F.relu(self.token(tokens)), g, ctx, shift)


class ContextRouter(Router):
    """A learned gate told each window's context but no interaction values (the context-moe
    control): the RUS-aware router with its interaction path replaced by a free learned code per
    (context, modality, step). For the token of modality m at step t of window b in context c(b)
    (the label-free assignment of the window that timoe's prior uses, `BatchPrior.context`):

    e = code[c(b), m, t]              [B, M, T, code_dim]   (rolled with any time shift)
    h = ReLU(W x)                     [B, M, T, token_dim]
    logits = W_g x + MLP([h; e])      [B, M, T, E]

    timoe's g_c is a function of its context's R/U/S tables; here the code is learned from the
    task, so timoe against this model asks whether the interaction values add anything to
    knowing the context.
    """

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        top_k: int,
        n_modalities: int,
        n_contexts: int,
        max_steps: int,
        token_dim: int = 64,
        code_dim: int = 64,
    ) -> None:
        super().__init__(d_model, n_experts, top_k)
        self.n_modalities = n_modalities
        self.gate = nn.Linear(d_model, n_experts, bias=False)
        self.token = nn.Linear(d_model, token_dim)
        # std 0.3: about the spread of timoe's g at initialisation (a fresh GRU's outputs: std
        # 0.18-0.33 measured at gru_dim 64-8), so the MLP first sees both inputs at one scale.
        self.code = nn.Parameter(0.3 * torch.randn(n_contexts, n_modalities, max_steps, code_dim))
        self.mlp = nn.Sequential(
            nn.Linear(token_dim + code_dim, token_dim), nn.ReLU(), nn.Linear(token_dim, n_experts)
        )

    def compute_logits(self, tokens: Tensor, context: RoutingContext | None) -> Tensor:
        _, m, t, _ = tokens.shape
        if context is None or context.prior is None:
            raise ValueError("the context router needs each window's context (context.prior.context)")
        if m != self.n_modalities:
            raise ValueError(f"router built for {self.n_modalities} modalities, got tokens of {m}")
        if t > self.code.shape[2]:
            raise ValueError(f"context codes cover {self.code.shape[2]} steps, input has {t}")
        h = F.relu(self.token(tokens))  # [B, M, T, token_dim]
        code = self.code[:, :, :t]  # [K, M, T, code_dim]
        prior = context.prior
        return self.gate(tokens) + context_mlp(self.mlp, h, code, prior.context, prior.token_shift)
