"""The controls of issue 18: timoe-lag0 (the prior from lag 0 only), context-moe (the context
without interaction values) and the synergy-experts-off ablation in the routing summary."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from timoe.config import ConfigError, Params, validate
from timoe.evaluation.diagnostics import run_diagnostics
from timoe.models import build_model
from timoe.models.diagnostics import synergy_ablation_summary, synergy_experts_disabled
from timoe.models.prior import BatchPrior, ContextAssigner, RoutingContext, bank_from_table
from timoe.models.routers import ContextRouter
from timoe.training.build import RusInputs, build_provider
from timoe.training.patching import Patched

T = 8
NAMES = ["a", "b"]
META = {"modalities": {"a": [0, 1], "b": [2]}, "n_timesteps": T, "n_channels": 4}


def rus_table(scale: float = 1.0) -> pl.DataFrame:
    """Two contexts, three lags, values distinct per (context, lag); S large in context 1 only."""
    rows = []
    for k in range(2):
        for lag in (0, 2, 5):
            v = scale * (1 + 10 * k + lag)
            rows.append(
                {"context": k, "pair": "a|b", "lag": lag, "R": 0.01 * v, "U1": 0.02 * v,
                 "U2": 0.03 * v, "S": 0.9 if k == 1 else 0.01, "total": 1.0}
            )  # fmt: skip
    return pl.DataFrame(rows)


def small_params(**model: object) -> Params:
    base = dict(
        d_model=16, n_heads=2, d_ff=32, encoder_layers=1, n_layers=2, moe_layers=[0], n_experts=4,
        n_synergy_experts=1, top_k=2, patch_size=1, rus_mapping="end",
        router={"token_dim": 8, "gru_dim": 8, "kv_dim": 4},
    )  # fmt: skip
    return Params.model_validate({"model": base | model})


def assigner() -> ContextAssigner:
    """Channel 0's window mean decides the context: < 0 -> 0, > 0 -> 1."""
    return ContextAssigner([0], [0.0, 1.0], [1.0, 1.0], [[-5.0, 0.0], [5.0, 0.0]])


def windows(n: int = 6, seed: int = 3) -> torch.Tensor:
    x = torch.randn(n, T, 4, generator=torch.Generator().manual_seed(seed))
    x[:, :, 0] = torch.tensor([-5.0, 5.0] * (n // 2))[:, None]  # contexts 0, 1, 0, 1, ...
    return x


def build(name: str, table: pl.DataFrame, params: Params | None = None) -> torch.nn.Module:
    params = params or small_params()
    c = assigner()
    contexts = {
        "channels": c.channels.tolist(), "mean": c.mean.tolist(), "std": c.std.tolist(),
        "centroids": c.centroids.tolist(),
    }  # fmt: skip
    provider = build_provider(params, name, META, RusInputs(table, contexts))
    torch.manual_seed(0)
    inner = build_model(
        name,
        params.model,
        n_channels=4,
        n_timesteps=T,
        n_classes=3,
        modalities=META["modalities"],
        rus=provider,
    )
    return Patched(inner, 1)


# ---------------------------------------------------------------- timoe-lag0
def test_lag0_prior_is_the_lag0_table_mapped_over_every_step() -> None:
    table = rus_table()
    lag0 = build("timoe-lag0", table).inner.provider
    full = build("timoe", table).inner.provider
    U, R, S = bank_from_table(table.filter(pl.col("lag") == 0), NAMES, T, "end")
    assert torch.equal(lag0.bank_R, R) and torch.equal(lag0.bank_U, U) and torch.equal(lag0.bank_S, S)
    # one value per context at every step: lag 0's, which the full prior has only at the last step
    for k in range(2):
        assert torch.all(lag0.bank_R[k, 0, 1] == full.bank_R[k, 0, 1, -1])
    assert not torch.equal(full.bank_R, lag0.bank_R)


def test_lag0_needs_lag0_estimated() -> None:
    with pytest.raises(ValueError, match="lag 0"):
        build("timoe-lag0", rus_table().filter(pl.col("lag") > 0))
    with pytest.raises(ConfigError, match="timoe-lag0"):
        validate({"model": {"names": ["timoe-lag0"]}, "rus": {"lags": [1, 2]}})


# ---------------------------------------------------------------- context-moe
def test_context_moe_routes_by_context_and_ignores_the_rus_values() -> None:
    x = windows()
    base = build("context-moe", rus_table()).eval()
    scaled = build("context-moe", rus_table(scale=7.0)).eval()  # other R/U values, same contexts
    with torch.no_grad():
        out, out_scaled = base(x), scaled(x)
        assert out.context.prior.context.tolist() == [0, 1, 0, 1, 0, 1]
        assert not torch.equal(out.context.prior.R, out_scaled.context.prior.R)
        for r1, r2 in zip(out.routes, out_scaled.routes, strict=True):
            assert torch.equal(r1.logits, r2.logits)
        assert torch.equal(out.logits, out_scaled.logits)
        # the same windows told the other context route otherwise
        router = base.inner.layers[0].mixer.router
        tokens = torch.randn(6, 2, T, 16, generator=torch.Generator().manual_seed(1))
        prior = out.context.prior
        flipped = BatchPrior(prior.U, prior.R, prior.S, 1 - prior.context)
        a = router.compute_logits(tokens, RoutingContext(prior))
        b = router.compute_logits(tokens, RoutingContext(flipped))
    assert not torch.allclose(a, b)
    assert "synergy" not in base.inner.spec.losses  # trained on the gate terms only


def test_context_router_follows_a_time_shift_and_needs_a_context() -> None:
    torch.manual_seed(0)
    router = ContextRouter(16, 4, 2, n_modalities=2, n_contexts=2, max_steps=T, token_dim=8, code_dim=8)
    tokens = torch.randn(1, 2, T, 16).expand(2, -1, -1, -1).clone()
    z = torch.zeros(2, 2, T)
    zz = torch.zeros(2, 2, 2, T)
    plain = router.compute_logits(tokens, RoutingContext(BatchPrior(z, zz, zz, torch.tensor([1, 1]))))
    assert torch.allclose(plain[0], plain[1])
    shifted = BatchPrior(z, zz, zz, torch.tensor([1, 1]), token_shift=torch.tensor([0, 3]))
    rolled = router.compute_logits(tokens, RoutingContext(shifted))
    # window 1's codes move 3 steps later with its signal; window 0's stay
    assert torch.allclose(rolled[0], plain[0]) and not torch.allclose(rolled[1], plain[1])
    same_tokens = tokens[:, :, :1].expand(-1, -1, T, -1)  # equal tokens at every step
    a = router.compute_logits(same_tokens, RoutingContext(BatchPrior(z, zz, zz, torch.tensor([1, 1]))))
    b = router.compute_logits(same_tokens, RoutingContext(shifted))
    assert torch.allclose(b[1], torch.roll(a[1], 3, dims=1))
    with pytest.raises(ValueError, match="context"):
        router.compute_logits(tokens, None)


# ---------------------------------------------------------------- synergy experts off
def test_disabling_the_synergy_experts_keeps_k_other_experts_and_restores() -> None:
    model = build("timoe", rus_table()).eval()
    x = windows()
    with torch.no_grad():
        before = model(x).routes[0]
        with synergy_experts_disabled(model, 1):
            off = model(x).routes[0]
        after = model(x).routes[0]
    assert bool((before.topk_idx == 0).any())  # the synergy expert is used normally
    assert not bool((off.topk_idx == 0).any())  # never picked when disabled
    assert torch.allclose(off.topk_weights.sum(-1), torch.ones(()))  # weights renormalised
    assert torch.equal(after.topk_idx, before.topk_idx)
    with pytest.raises(ValueError, match="too few remain"), synergy_experts_disabled(model, 3):
        pass


def test_synergy_ablation_summary_by_hand() -> None:
    correct = torch.tensor([True, True, True, False, True, True])
    off = torch.tensor([False, True, True, False, True, False])
    syn = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.1])
    ctx = torch.tensor([1, 1, 0, 0, 1, 0])
    s = synergy_ablation_summary(correct, off, syn, 0.2, context=ctx, regime=ctx, regime_names=["x", "y"])
    assert s["synergy"] == {"n": 3, "accuracy": 1.0, "accuracy_syn_off": pytest.approx(2 / 3),
                            "drop": pytest.approx(1 / 3)}  # fmt: skip
    assert s["other"]["n"] == 3 and s["other"]["drop"] == pytest.approx(1 / 3)
    assert s["all"]["drop"] == pytest.approx(2 / 6)
    assert [r["id"] for r in s["per_context"]] == [0, 1] and s["per_regime"][1]["name"] == "y"
    assert s["n_above_tau_s"] == 3 and s["threshold_s"] == pytest.approx(0.5)
    empty = synergy_ablation_summary(correct, off, torch.full((6,), 0.3), 0.2)  # one prior for all
    assert empty["synergy"]["n"] == 0 and empty["synergy"]["drop"] is None


def test_routing_summary_writes_the_ablation_and_runs_csv_reads_it() -> None:
    from timoe.stages.train import routing_summary

    params = small_params()
    model = build("timoe", rus_table(), params)
    x = windows(8).numpy()
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    meta = META | {"extra": {}}
    s = routing_summary(model, x, labels, 3, torch.device("cpu"), params, meta)
    assert s is not None
    abl = s["synergy_ablation"]
    # contexts 0 (S 0.01) and 1 (S 0.9) against tau_s = 0.2: four windows each
    assert abl["synergy"]["n"] == 4 and abl["other"]["n"] == 4
    assert abl["all"]["accuracy"] == pytest.approx(s["diagnostics"]["accuracy"])
    row = run_diagnostics(s)
    assert row["syn_off_n_synergy"] == 4 and row["syn_off_n_other"] == 4
    assert row["syn_off_drop_synergy"] == pytest.approx(abl["synergy"]["drop"])
    assert row["syn_off_drop_other"] == pytest.approx(abl["other"]["drop"])
    # a model without experts to spare writes none, and runs.csv gets nulls
    dense = routing_summary(build("transformer", rus_table(), params), x, labels, 3, torch.device("cpu"),
                            params, meta)  # fmt: skip
    assert dense is None and run_diagnostics(dense)["syn_off_drop_synergy"] is None
