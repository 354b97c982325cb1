"""Auxiliary losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from timoe.config import LossConfig
from timoe.models import (
    RouterOutput,
    RusPrior,
    aux_losses,
    jsd,
    load_balance_loss,
    redundancy_loss,
    synergy_loss,
    uniqueness_loss,
)

LN2 = math.log(2.0)
# JSD([0.5, 0.5], [0.9, 0.1]): midpoint [0.7, 0.3];
# KL(p||m) = 0.5 ln(0.5/0.7) + 0.5 ln(0.5/0.3); KL(q||m) = 0.9 ln(0.9/0.7) + 0.1 ln(0.1/0.3)
JSD_HALF_VS_NINE = 0.5 * (
    0.5 * math.log(0.5 / 0.7)
    + 0.5 * math.log(0.5 / 0.3)
    + 0.9 * math.log(0.9 / 0.7)
    + 0.1 * math.log(0.1 / 0.3)
)


def test_jsd_known_values() -> None:
    assert pytest.approx(0.10175, abs=1e-5) == JSD_HALF_VS_NINE
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.3, 0.7]])
    q = torch.tensor([[0.0, 1.0], [0.9, 0.1], [0.3, 0.7]])
    got = jsd(p, q)
    assert got.tolist() == pytest.approx([LN2, JSD_HALF_VS_NINE, 0.0], abs=1e-6)
    # Zero probabilities keep a finite gradient.
    p = p.clone().requires_grad_(True)
    jsd(p, q).sum().backward()
    assert torch.isfinite(p.grad).all()


def probs_two_modalities() -> torch.Tensor:
    """[B=1, M=2, T=2, E=2]: t=0 modalities disagree fully, t=1 = (0.5,0.5) vs (0.9,0.1)."""
    return torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.9, 0.1]]]])


def test_redundancy_and_uniqueness_masks() -> None:
    probs = probs_two_modalities()
    R = torch.zeros(2, 2, 2)
    R[0, 1] = R[1, 0] = torch.tensor([0.5, 0.05])  # only t=0 above tau_r = 0.1
    assert redundancy_loss(probs, R, 0.1).item() == pytest.approx(LN2, abs=1e-6)
    R[0, 1] = R[1, 0] = torch.tensor([0.5, 0.5])  # both steps: mean of the two JSDs
    assert redundancy_loss(probs, R, 0.1).item() == pytest.approx((LN2 + JSD_HALF_VS_NINE) / 2, abs=1e-6)
    assert redundancy_loss(probs, R, 0.9).item() == 0.0  # nothing above threshold
    U = torch.tensor([[0.6, 0.6], [0.2, 0.7]])  # both above tau_u = 0.5 only at t=1
    assert uniqueness_loss(probs, U, 0.5).item() == pytest.approx(-JSD_HALF_VS_NINE, abs=1e-6)


def test_synergy_loss() -> None:
    # E=2, expert 0 is the synergy expert; S above 0.1 at t=0 only.
    probs = torch.tensor([[[[0.6, 0.4], [0.1, 0.9]], [[0.2, 0.8], [0.3, 0.7]]]])
    S = torch.zeros(2, 2, 2)
    S[0, 1] = S[1, 0] = torch.tensor([0.5, 0.05])
    # 1 - (0.6 + 0.2) / 2 = 0.6
    assert synergy_loss(probs, S, 0.1, n_synergy=1).item() == pytest.approx(0.6)
    S[0, 1] = S[1, 0] = 0.5
    # t=1: 1 - (0.1 + 0.3) / 2 = 0.8; mean 0.7
    assert synergy_loss(probs, S, 0.1, n_synergy=1).item() == pytest.approx(0.7)
    assert synergy_loss(probs, S, 0.1, n_synergy=0).item() == 0.0


def test_load_balance_loss() -> None:
    # Three tokens, E=2, top-1 picks experts (0, 0, 1): f = (2/3, 1/3), P = (1.7/3, 1.3/3)
    # E * sum f P = 2 * (3.4/9 + 1.3/9) = 9.4 / 9
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]).view(1, 1, 3, 2)
    idx = torch.tensor([0, 0, 1]).view(1, 1, 3, 1)
    assert load_balance_loss(probs, idx).item() == pytest.approx(9.4 / 9)
    uniform = torch.full((1, 1, 4, 4), 0.25)
    idx = torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3]]).view(1, 1, 4, 2)
    # Switch counts f over the N tokens (sum_e f_e = k), not over the N*k assignments: a perfectly
    # balanced top-2 router scores k = 2 (the N*k form would give 1 and halve the loss's pull).
    assert load_balance_loss(uniform, idx).item() == pytest.approx(2.0)


def test_aux_losses_weights_and_layer_average() -> None:
    probs = probs_two_modalities()
    idx = torch.tensor([0, 0, 1, 0]).view(1, 2, 2, 1)  # chosen experts, explicit (a tie at m0 t1)
    route = RouterOutput(probs.log(), probs, idx, torch.ones_like(idx, dtype=probs.dtype))
    R = torch.zeros(2, 2, 2)
    R[0, 1] = R[1, 0] = torch.tensor([0.5, 0.05])
    S = torch.zeros(2, 2, 2)
    U = torch.tensor([[0.6, 0.6], [0.2, 0.7]])
    rus = RusPrior(U, R, S)
    cfg = LossConfig(
        lambda_r=2.0,
        lambda_u=3.0,
        lambda_s=5.0,
        lambda_load=0.5,
        lambda_z=0.0,
        weighting="hard",
        probs="router",
        tau_r=0.1,
        tau_u=0.5,
        tau_s=0.1,
    )
    total, parts = aux_losses(
        [route, route], rus, cfg, n_synergy=1, active=["load", "redundancy", "uniqueness", "synergy"]
    )
    assert parts["redundancy"].item() == pytest.approx(LN2, abs=1e-6)
    assert parts["uniqueness"].item() == pytest.approx(-JSD_HALF_VS_NINE, abs=1e-6)
    assert parts["synergy"].item() == 0.0  # no S above threshold
    # tokens' top-1: (0, 0, 1, 0) -> f = (3/4, 1/4); P = ((1+.5+0+.9)/4, (0+.5+1+.1)/4) = (.6, .4)
    assert parts["load"].item() == pytest.approx(2 * (0.75 * 0.6 + 0.25 * 0.4))
    expected = 0.5 * parts["load"] + 2.0 * parts["redundancy"] + 3.0 * parts["uniqueness"]
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    # Diagnostic terms are reported but do not enter the total.
    total_load, parts2 = aux_losses([route], rus, cfg, 1, active=["load"], diagnostic=["redundancy"])
    assert total_load.item() == pytest.approx(0.5 * parts["load"].item())
    assert parts2["redundancy"].item() == pytest.approx(LN2, abs=1e-6)
    assert not parts2["redundancy"].requires_grad
    with pytest.raises(ValueError, match="needs a RUS prior"):
        aux_losses([route], None, cfg, 1, active=["redundancy"])
