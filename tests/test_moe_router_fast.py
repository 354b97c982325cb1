"""The context routers' split first MLP layer (issue 19) against the plain form it replaced,
mlp(cat([h, table[ctx] rolled by shift])): logits and gradients (tokens, every parameter) to
float32 rounding, with and without time shifts, with and without per-context tables; and CPU
determinism at a fixed seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from timoe.models.prior import BatchPrior, RoutingContext, roll_steps
from timoe.models.routers import ContextRouter, RusAwareRouter, per_window


def plain_rus_logits(router: RusAwareRouter, tokens: Tensor, context: RoutingContext) -> Tensor:
    """RusAwareRouter.compute_logits before the rewrite."""
    t = tokens.shape[2]
    (U, R, S), ctx, shift = context.prior.per_context()
    g = router.interaction_path(U[..., :t], R[..., :t], S[..., :t])[ctx]
    if shift is not None:
        g = roll_steps(g, shift)
    h = F.relu(router.token(tokens))
    return router.gate(tokens) + router.mlp(torch.cat([h, g], dim=-1))


def plain_context_logits(router: ContextRouter, tokens: Tensor, context: RoutingContext) -> Tensor:
    """ContextRouter.compute_logits before the rewrite."""
    t = tokens.shape[2]
    e = router.code[:, :, :t][context.prior.context]
    if context.prior.token_shift is not None:
        e = roll_steps(e, context.prior.token_shift)
    h = F.relu(router.token(tokens))
    return router.gate(tokens) + router.mlp(torch.cat([h, e], dim=-1))


def _prior(seed: int, b: int, m: int, t: int, k: int, tables: bool, shifted: bool) -> BatchPrior:
    g = torch.Generator().manual_seed(seed)
    U = torch.rand(k, m, t, generator=g)
    R, S = torch.rand(k, m, m, t, generator=g), torch.rand(k, m, m, t, generator=g)
    ctx = torch.randint(0, k, (b,), generator=g)
    shift = torch.randint(0, t, (b,), generator=g) if shifted else None
    u, r, s = U[ctx], R[ctx], S[ctx]
    if shift is not None:
        u = roll_steps(u[..., None], shift)[..., 0]
        r = roll_steps(r[..., None], shift)[..., 0]
        s = roll_steps(s[..., None], shift)[..., 0]
    if not tables:  # every window its own context
        return BatchPrior(u, r, s, ctx)
    return BatchPrior(u, r, s, ctx, (U, R, S), shift)


def _check(got: Tensor, want: Tensor, wrt: list[Tensor], seed: int) -> None:
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    probe = torch.randn(got.shape, generator=torch.Generator().manual_seed(seed))
    g1 = torch.autograd.grad((got * probe).sum(), wrt, retain_graph=True)
    g2 = torch.autograd.grad((want * probe).sum(), wrt, retain_graph=True)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("tables", "shifted"), [(True, True), (True, False), (False, False)])
def test_rus_router_matches_plain(tables: bool, shifted: bool) -> None:
    torch.manual_seed(0)
    b, m, t, d = 5, 3, 6, 16
    router = RusAwareRouter(d, 8, 2, m, token_dim=12, gru_dim=10, kv_dim=8)
    tokens = torch.randn(b, m, t, d, requires_grad=True)
    # Unshifted priors longer than the tokens exercise the router's [..., :t] cut; a shifted one
    # must be exactly t long (the roll is over the tokens' steps).
    context = RoutingContext(_prior(1, b, m, t if shifted else t + 2, 4, tables, shifted))
    got, want = router.compute_logits(tokens, context), plain_rus_logits(router, tokens, context)
    _check(got, want, [tokens, *router.parameters()], 0)


@pytest.mark.parametrize("shifted", [True, False])
def test_context_router_matches_plain(shifted: bool) -> None:
    torch.manual_seed(1)
    b, m, t, d = 6, 2, 5, 16
    router = ContextRouter(d, 6, 2, m, n_contexts=3, max_steps=7, token_dim=12, code_dim=9)
    tokens = torch.randn(b, m, t, d, requires_grad=True)
    context = RoutingContext(_prior(2, b, m, t, 3, True, shifted))
    got, want = router.compute_logits(tokens, context), plain_context_logits(router, tokens, context)
    _check(got, want, [tokens, *router.parameters()], 1)


def test_per_window_is_gather_then_roll() -> None:
    g = torch.Generator().manual_seed(3)
    table = torch.randn(4, 3, 7, 5, generator=g)
    ctx, shift = torch.tensor([3, 0, 0, 2, 1]), torch.tensor([0, 1, 6, 13, 3])
    assert torch.equal(per_window(table, ctx, shift), roll_steps(table[ctx], shift))
    assert torch.equal(per_window(table, ctx, None), table[ctx])


def test_rus_router_deterministic() -> None:
    def run() -> tuple[Tensor, Tensor]:
        torch.manual_seed(5)
        router = RusAwareRouter(16, 8, 2, 3, token_dim=12, gru_dim=10, kv_dim=8)
        tokens = torch.randn(4, 3, 6, 16, requires_grad=True)
        out = router(tokens, RoutingContext(_prior(5, 4, 3, 6, 2, True, True)))
        (grad,) = torch.autograd.grad(out.topk_weights.square().sum() + out.logits.sum(), tokens)
        return out.logits.detach(), grad

    (a1, g1), (a2, g2) = run(), run()
    assert torch.equal(a1, a2)
    assert torch.equal(g1, g2)
