"""Routing diagnostics against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from timoe.models.diagnostics import (
    RoutingDiagnostics,
    effective_experts,
    mutual_information_bits,
    topk_overlap,
)
from timoe.models.prior import BatchPrior
from timoe.models.routers import RouterOutput


def route(idx: torch.Tensor, n_experts: int) -> RouterOutput:
    b, m, t, k = idx.shape
    logits = torch.zeros(b, m, t, n_experts)
    return RouterOutput(logits, torch.softmax(logits, -1), idx, torch.full(idx.shape, 1.0 / k))


def test_mutual_information_and_effective_experts() -> None:
    assert mutual_information_bits(torch.tensor([[5.0, 0.0], [0.0, 5.0]])) == pytest.approx(1.0)
    assert mutual_information_bits(torch.tensor([[2.0, 2.0], [3.0, 3.0]])) == pytest.approx(0.0, abs=1e-12)
    assert effective_experts(torch.tensor([1.0, 1.0, 1.0, 1.0])) == pytest.approx(4.0)
    assert effective_experts(torch.tensor([7.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_experts(torch.tensor([1.0, 1.0, 2.0])) == pytest.approx(
        math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    )


def test_topk_overlap() -> None:
    # B=1, M=2, T=2, k=2: t0 shares {0,1} fully, t1 shares one of two
    idx = torch.tensor([[[[0, 1], [0, 2]], [[1, 0], [2, 3]]]])
    total, cells = topk_overlap(idx, 4)
    assert cells == 2 and total / cells == pytest.approx(0.75)


def test_routing_diagnostics_expert_follows_class() -> None:
    # top-1 expert = class label: MI(expert; class) = H(class) = 1 bit; regime independent of it
    labels = torch.tensor([0, 1, 0, 1])
    idx = torch.stack([labels, (labels + 2) % 4], dim=-1)[:, None, None, :].expand(4, 2, 3, 2).contiguous()
    regime = torch.tensor([0, 0, 1, 1])
    S = torch.zeros(4, 2, 2, 3)
    S[:2, 0, 1] = S[:2, 1, 0] = 1.0  # windows 0, 1 are synergistic
    prior = BatchPrior(torch.zeros(4, 2, 3), torch.zeros(4, 2, 2, 3), S, torch.zeros(4, dtype=torch.long))
    diag = RoutingDiagnostics([0], n_experts=4, n_synergy=1, n_classes=2, n_regimes=2)
    diag.update([route(idx, 4)], labels, regime, prior, synergy_tau=0.5)
    row = diag.summary()[0]
    assert row["mi_expert_class"] == pytest.approx(1.0)
    assert row["mi_expert_regime"] == pytest.approx(0.0, abs=1e-12)
    assert row["n_eff"] == pytest.approx(4.0)
    assert row["topk_overlap"] == pytest.approx(1.0)  # both modalities always pick the same pair
    assert row["synergy_share"] == pytest.approx(0.25)  # expert 0 gets 1 of 4 assignment slots
    # synergistic windows 0 (class 0 -> experts {0, 2}) and 1 (class 1 -> {1, 3}): 1 of 4 slots
    assert row["synergy_share_on_synergy_cells"] == pytest.approx(0.25)
    assert "train_mi_expert_class_l0" in diag.flat_metrics("train_")
