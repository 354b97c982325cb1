"""RusPrior: lag-to-step mapping, U = max over pairs, orientation, averaging, shuffling."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from timoe.models import RusPrior, map_lags_to_steps


def tiny_table() -> pl.DataFrame:
    # Three modalities; pair a|b at lags 0 and 2, pair c|a written "backwards" at lag 1 only.
    return pl.DataFrame(
        {
            "pair": ["a|b", "a|b", "c|a"],
            "lag": [0, 2, 1],
            "R": [0.4, 0.2, 0.05],
            "U1": [0.1, 0.7, 0.9],  # c|a: U1 belongs to c
            "U2": [0.3, 0.0, 0.25],  # c|a: U2 belongs to a
            "S": [0.0, 0.6, 0.15],
            "total": [0.8, 1.5, 1.35],
        }
    )


def test_hold_mapping_takes_largest_lag_not_after_step() -> None:
    rus = RusPrior.from_table(tiny_table(), ["a", "b", "c"], n_timesteps=5)
    # a|b lags (0, 2): steps 0,1 -> lag 0; steps 2,3,4 -> lag 2.
    assert rus.R[0, 1].tolist() == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.2])
    assert rus.R[1, 0].tolist() == rus.R[0, 1].tolist()
    assert rus.S[0, 1].tolist() == pytest.approx([0.0, 0.0, 0.6, 0.6, 0.6])
    # a|c (stored a < c) only lag 1: every step (before it too) takes it.
    assert rus.R[0, 2].tolist() == pytest.approx([0.05] * 5)
    assert rus.S[2, 0].tolist() == pytest.approx([0.15] * 5)
    assert torch.all(rus.R[1, 2] == 0) and torch.all(torch.diagonal(rus.R) == 0)
    # U_a = max(U of a in a|b, U of a in c|a = 0.25): steps 0,1 -> max(0.1, 0.25); 2.. -> max(0.7, 0.25)
    assert rus.U[0].tolist() == pytest.approx([0.25, 0.25, 0.7, 0.7, 0.7])
    assert rus.U[1].tolist() == pytest.approx([0.3, 0.3, 0.0, 0.0, 0.0])
    assert rus.U[2].tolist() == pytest.approx([0.9] * 5)
    assert rus.modality_names == ("a", "b", "c")


def test_interp_and_segments_mappings() -> None:
    lags = torch.tensor([0, 2, 6])
    values = torch.tensor([[0.0], [1.0], [3.0]])
    interp = map_lags_to_steps(lags, values, 8, "interp")[:, 0]
    # between 2 and 6 the slope is 0.5 per step; past lag 6 it is held.
    assert interp.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0])
    # Reference behaviour: 8 steps // 3 lags = segments of 2, the last one runs to the end.
    seg = map_lags_to_steps(lags, values, 8, "segments")[:, 0]
    assert seg.tolist() == [0.0, 0.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0]
    hold = map_lags_to_steps(torch.tensor([1, 3]), values[:2], 5, "hold")[:, 0]
    assert hold.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown lag mapping"):
        map_lags_to_steps(lags, values, 8, "nearest")  # type: ignore[arg-type]


def test_duplicate_rows_are_averaged_and_orientation_is_normalised() -> None:
    df = pl.DataFrame(
        {
            "pair": ["a|b", "b|a"],
            "lag": [0, 0],
            "R": [0.2, 0.4],
            "U1": [0.1, 0.5],
            "U2": [0.3, 0.7],
            "S": [0.0, 0.2],
        }
    )
    rus = RusPrior.from_table(df, ["a", "b"], n_timesteps=2)
    assert rus.R[0, 1, 0].item() == pytest.approx(0.3)
    assert rus.S[0, 1, 0].item() == pytest.approx(0.1)
    # a's U: 0.1 from "a|b" and 0.7 from "b|a" (its U2) -> mean 0.4; b's: (0.3 + 0.5) / 2.
    assert rus.U[:, 0].tolist() == pytest.approx([0.4, 0.4])


def test_bad_tables_raise() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        RusPrior.from_table(tiny_table().drop("S"), ["a", "b", "c"], 4)
    with pytest.raises(ValueError, match="unknown modality"):
        RusPrior.from_table(tiny_table(), ["a", "b"], 4)
    bad = tiny_table().with_columns(pl.lit("a-b").alias("pair"))
    with pytest.raises(ValueError, match="m1\\|m2"):
        RusPrior.from_table(bad, ["a", "b", "c"], 4)
    with pytest.raises(ValueError, match="must be"):
        RusPrior(torch.zeros(2, 3), torch.zeros(2, 2, 4), torch.zeros(2, 2, 3))


def test_shuffled_permutes_entries_reproducibly() -> None:
    df = pl.DataFrame(
        {
            "pair": ["a|b"] * 4 + ["a|c"] * 4 + ["b|c"] * 4,
            "lag": [0, 1, 2, 3] * 3,
            "R": [0.1 * k for k in range(12)],
            "U1": [0.0] * 12,
            "U2": [0.0] * 12,
            "S": [1.0 + 0.1 * k for k in range(12)],
        }
    )
    rus = RusPrior.from_table(df, ["a", "b", "c"], n_timesteps=4)
    s1 = rus.shuffled(torch.Generator().manual_seed(0))
    s2 = rus.shuffled(torch.Generator().manual_seed(0))
    assert torch.equal(s1.R, s2.R) and torch.equal(s1.S, s2.S)
    assert not torch.equal(s1.R, rus.R)
    i, j = torch.triu_indices(3, 3, 1)
    # Same multiset of values; (R, S) tuples move together (S = R + 1 in every entry).
    assert sorted(s1.R[i, j].flatten().tolist()) == pytest.approx(sorted(rus.R[i, j].flatten().tolist()))
    assert torch.allclose(s1.S[i, j], s1.R[i, j] + 1.0)
    assert torch.equal(s1.R, s1.R.transpose(0, 1))
    # A prior built from tensors (no table) shuffles too.
    t = RusPrior(rus.U, rus.R, rus.S)
    st = t.shuffled(torch.Generator().manual_seed(1))
    assert sorted(st.R[i, j].flatten().tolist()) == pytest.approx(sorted(t.R[i, j].flatten().tolist()))
    assert torch.allclose(st.S[i, j], st.R[i, j] + 1.0)
