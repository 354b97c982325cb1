"""Per-window priors: lag -> step -> token mapping, shift alignment, context assignment, the new
routers (modality, hash, oracle), router calibration and random-routing ablation."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from timoe.config import ModelConfig
from timoe.models import build_model
from timoe.models.diagnostics import random_routing
from timoe.models.prior import (
    ContextAssigner,
    PriorProvider,
    RegimeReader,
    bank_from_table,
    normalise_table,
    shuffle_table,
)
from timoe.models.routers import (
    HashRouter,
    LaplaceRouter,
    ModalityRouter,
    OracleRouter,
    RusAwareRouter,
    SoftmaxRouter,
    modality_expert_mask,
)
from timoe.models.rus import map_lags_to_steps, pool_steps
from timoe.training.patching import Patched, patched_modalities

LAGS = [0, 1, 2, 4, 8]


def table(contexts: int = 1) -> pl.DataFrame:
    """Distinct values per (context, lag) so every mapping is visible."""
    rows = []
    for k in range(contexts):
        for lag in LAGS:
            v = 10 * k + lag
            rows.append(
                {
                    "context": k,
                    "pair": "a|b",
                    "lag": lag,
                    "R": float(v),
                    "U1": 0.5 * v,
                    "U2": 0.25 * v,
                    "S": float(100 + v),
                    "total": 2.0 * v + 1,
                }
            )
    return pl.DataFrame(rows)


def test_patching_no_longer_averages_lags_before_mapping() -> None:
    """Before: lags were divided by p and averaged (lags 0, 1, 2 -> one 'token lag 0' value of 1.0).
    Now the mapping is made per raw step, then each token is the mean of its p steps."""
    _U, R, _S = bank_from_table(table(), ["a", "b"], 16, "hold")
    per_step = R[0, 0, 1]  # [16] hold: step t -> largest lag <= t
    assert per_step.tolist() == [0, 1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8]
    assert pool_steps(per_step, 4).tolist() == pytest.approx([1.25, 4.0, 8.0, 8.0])
    old = table().with_columns(pl.col("lag") // 4).group_by("lag").agg(pl.col("R").mean()).sort("lag")
    assert old["R"].to_list()[0] == pytest.approx(1.0)  # the averaged value the old code produced


def test_rus_mapping_is_honoured() -> None:
    hold = bank_from_table(table(), ["a", "b"], 16, "hold")[1][0, 0, 1]
    seg = bank_from_table(table(), ["a", "b"], 16, "segments")[1][0, 0, 1]
    end = bank_from_table(table(), ["a", "b"], 16, "end")[1][0, 0, 1]
    assert not torch.equal(hold, seg)
    # end-of-window labels: the last step is lag 0, the step 4 before the end lag 4
    assert end[-1] == 0 and end[-5] == 4 and end[0] == 8
    lag_values = torch.tensor(LAGS, dtype=torch.float)[:, None]
    assert torch.equal(end, map_lags_to_steps(torch.tensor(LAGS), lag_values, 16, "end")[:, 0])


def test_shift_keeps_prior_aligned_with_signal() -> None:
    U, R, S = bank_from_table(table(), ["a", "b"], 16, "hold")
    provider = PriorProvider(U, R, S, patch=1)
    shift = torch.tensor([0, 3, -2])
    shifted = provider(None, 3, shift).R[:, 0, 1]  # [B, 16]
    for b, s in enumerate(shift.tolist()):
        # the augmentation does out[t] = x[t - s], i.e. torch.roll(x, s): the prior must follow
        assert torch.equal(shifted[b], torch.roll(R[0, 0, 1], s))


def test_contexts_select_their_own_tables() -> None:
    U, R, S = bank_from_table(table(2), ["a", "b"], 8, "hold")
    assert U.shape == (2, 2, 8) and R.shape == (2, 2, 2, 8)
    # features: channel 0's mean and std; centroids far apart in the mean
    assigner = ContextAssigner([0], [0.0, 1.0], [1.0, 1.0], [[-5.0, 0.0], [5.0, 0.0]])
    provider = PriorProvider(U, R, S, patch=2, assigner=assigner)
    x = torch.zeros(2, 8, 3)
    x[0, :, 0] = -5.0
    x[1, :, 0] = 5.0
    prior = provider(x, 2)
    assert prior.context.tolist() == [0, 1]
    assert prior.R.shape == (2, 2, 2, 4)
    assert prior.R[1, 0, 1].min() >= 10 and prior.R[0, 0, 1].max() < 10
    with pytest.raises(ValueError, match="context assigner"):
        PriorProvider(U, R, S, patch=1)


def test_normalise_and_shuffle_tables() -> None:
    rel = normalise_table(table())
    assert rel.filter(pl.col("lag") == 4)["R"].item() == pytest.approx(4 / 9)
    with pytest.raises(ValueError, match="total"):
        normalise_table(table().drop("total"))
    sh = shuffle_table(table(2), seed=0)
    assert sorted(sh["R"].to_list()) == sorted(table(2)["R"].to_list())
    assert sh["R"].to_list() != table(2)["R"].to_list()
    # tuples move together
    assert (sh["S"] - sh["R"]).to_list() == [100.0] * sh.height
    assert shuffle_table(table(2), seed=0).equals(sh)


def test_modality_router_keeps_tokens_on_own_and_shared_experts() -> None:
    assert modality_expert_mask(3, 9, 2).sum(-1).tolist() == [4, 4, 5]  # the remainder joins the last
    mask = modality_expert_mask(3, 8, 2)
    assert mask.sum(-1).tolist() == [4, 4, 4]  # 2 shared + 2 private each
    assert not (mask[0] & mask[1])[2:].any()  # private blocks are disjoint
    router = ModalityRouter(16, 8, 2, n_modalities=3, n_shared=2)
    out = router(torch.randn(4, 3, 5, 16))
    for m in range(3):
        assert mask[m][out.topk_idx[:, m]].all()
    with pytest.raises(ValueError, match="private expert"):
        modality_expert_mask(3, 4, 2)


def test_hash_router_is_fixed_and_learns_nothing() -> None:
    router = HashRouter(16, 8, 2, n_modalities=2, max_steps=6, seed=0)
    a = router(torch.randn(3, 2, 6, 16))
    b = router(torch.randn(3, 2, 6, 16) * 10)
    assert torch.equal(a.topk_idx, b.topk_idx)  # content-independent
    assert torch.allclose(a.topk_weights, torch.full_like(a.topk_weights, 0.5))
    assert list(router.parameters()) == []
    assert len(set(a.topk_idx[0].reshape(-1).tolist())) > 2  # spread over experts


def test_oracle_router_uses_the_true_regime() -> None:
    from timoe.models.prior import RoutingContext

    torch.manual_seed(0)
    router = OracleRouter(16, 8, 2, n_modalities=2, n_regimes=3)
    x = torch.zeros(2, 2, 4, 16)
    l0 = router.compute_logits(x, RoutingContext(regime=torch.tensor([0, 0])))
    l1 = router.compute_logits(x, RoutingContext(regime=torch.tensor([0, 2])))
    assert torch.equal(l0[0], l1[0]) and not torch.equal(l0[1], l1[1])
    with pytest.raises(ValueError, match="regime"):
        router.compute_logits(x, None)
    reader = RegimeReader([3, 4, 5])
    xr = torch.zeros(2, 7, 6)
    xr[0, :, 4] = 1.0
    xr[1, :, 5] = 1.0
    assert reader(xr).tolist() == [1, 2]


def test_rus_router_starts_with_token_dependent_logits_like_the_gates() -> None:
    """method.md section 5: the old router started at a token-dependent logit std of 0.035."""
    torch.manual_seed(0)
    d, e, b, m, t = 64, 8, 32, 3, 16
    tokens = torch.nn.functional.layer_norm(torch.randn(b, m, t, d), (d,))
    from timoe.models.prior import BatchPrior, RoutingContext

    ctx_prior = BatchPrior(
        torch.rand(b, m, t), torch.rand(b, m, m, t), torch.rand(b, m, m, t), torch.zeros(b, dtype=torch.long)
    )

    def token_std(logits: torch.Tensor) -> float:  # spread across tokens at a fixed (m, t)
        return float(logits.std(dim=0).mean())

    rus = token_std(RusAwareRouter(d, e, 2, m).compute_logits(tokens, RoutingContext(ctx_prior)))
    gate = token_std(SoftmaxRouter(d, e, 2).compute_logits(tokens))
    laplace = token_std(LaplaceRouter(d, e, 2).compute_logits(tokens))
    assert rus > 0.5 * min(gate, laplace), (rus, gate, laplace)


def test_random_routing_changes_choices_and_restores() -> None:
    cfg = ModelConfig(
        d_model=16, n_heads=2, d_ff=32, n_layers=2, moe_layers=[0], n_experts=4, n_synergy_experts=1, top_k=2
    )
    torch.manual_seed(0)
    inner = build_model(
        "moe",
        cfg,
        n_channels=8,
        n_timesteps=4,
        n_classes=3,
        modalities=patched_modalities({"a": [0, 1], "b": [2, 3]}, 4, 2),
    )
    model = Patched(inner, 2).eval()
    x = torch.randn(5, 8, 4)
    with torch.no_grad():
        learned = model(x).routes[0].topk_idx
        with random_routing(model, seed=0):
            rand = model(x).routes[0].topk_idx
        again = model(x).routes[0].topk_idx
    assert not torch.equal(learned, rand)
    assert torch.equal(learned, again)
