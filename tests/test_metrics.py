from __future__ import annotations

import numpy as np
import pytest

from timoe.evaluation.metrics import accuracy, confusion, macro_f1, per_class_recall


def test_hand_computed_values():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    assert accuracy(y, p) == pytest.approx(4 / 6)
    # class 0: tp1 fp1 fn1 -> f1 .5 ; class 1: tp2 fp1 fn0 -> 0.8 ; class 2: tp1 fp0 fn1 -> 2/3
    assert macro_f1(y, p, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert per_class_recall(y, p, 3) == pytest.approx([0.5, 1.0, 0.5])
    assert confusion(y, p, 3).sum() == 6


def test_absent_classes_are_not_averaged():
    y = np.array([0, 0])
    assert macro_f1(y, y, 5) == 1.0


def test_sweep_history_skips_studies_without_trials(tmp_path):
    from timoe.evaluation.figures import sweep_history_figure

    empty = tmp_path / "empty.csv"
    empty.write_text("\n")  # what a study without trials leaves
    assert sweep_history_figure({"moe": empty}, "t", tmp_path / "h.png") is None
    full = tmp_path / "full.csv"
    full.write_text("number,value,state\n0,0.5,COMPLETE\n1,0.7,COMPLETE\n")
    assert sweep_history_figure({"moe": empty, "transformer": full}, "t", tmp_path / "h.png") is not None
