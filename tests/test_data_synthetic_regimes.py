"""The synthetic regime benchmark: ground truth recovered by the exact estimator, regimes
recoverable without labels, determinism, knob validation and the prepare round trip."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from timoe.config import DataConfig, RusConfig, SyntheticRegimesConfig
from timoe.data.io import load_prepared
from timoe.data.prepare import prepare_dataset
from timoe.data.registry import get_dataset
from timoe.data.synthetic_regimes import build
from timoe.interactions.temporal import compute_temporal_rus

TOLERANCE_BITS = 0.05  # the target: each component of every (regime, pair, lag) row
COMPONENTS = ("R", "U1", "U2", "S")


def _cfg(**kw: object) -> DataConfig:
    return DataConfig(datasets=["synthetic-regimes"], synthetic_regimes=SyntheticRegimesConfig(**kw))


@pytest.fixture(scope="module")
def ds():
    return build(_cfg())  # the defaults, as params.yaml has them


def _regime(ds) -> np.ndarray:
    return ds.x[:, 0, ds.extra["regime_channels"]].argmax(1)


def test_layout(ds) -> None:
    n_mod = sum(len(v) for v in ds.modalities.values())
    names = ds.extra["regime_names"]
    assert ds.x.dtype == np.float32 and ds.x.shape == (5000, 32, n_mod + len(names))
    assert ds.extra["regime_channels"] == list(range(n_mod, n_mod + len(names)))
    assert [ds.channels[c] for c in ds.extra["regime_channels"]] == [f"regime-{r}" for r in range(len(names))]
    in_modality = {c for v in ds.modalities.values() for c in v}
    assert in_modality.isdisjoint(ds.extra["regime_channels"])
    assert np.array_equal(ds.label, ds.step_labels[:, -1])
    assert {s: int(np.sum(ds.split == s)) for s in ("train", "val", "test")} == {
        "train": 3000,
        "val": 1000,
        "test": 1000,
    }
    for a in ("train", "val", "test"):  # subjects never span two splits
        for b in ("train", "val", "test"):
            if a < b:
                assert not set(ds.subject[ds.split == a]) & set(ds.subject[ds.split == b])
    assert len(set(ds.recording.tolist())) == len(ds.recording)
    rows = ds.extra["ground_truth"]
    assert len(rows) == len(names) * 3 * len(ds.extra["lags"])


def test_exact_estimator_recovers_each_regimes_rus(ds) -> None:
    """compute_temporal_rus (exact, PC1, quantile bins, per-step labels, lagged MI) on the training
    windows of one regime matches its ground truth within TOLERANCE_BITS on every row."""
    regime, train = _regime(ds), ds.split == "train"
    rc = RusConfig(form="lagged_mi", lags=ds.extra["lags"], device="cpu")
    for r, name in enumerate(ds.extra["regime_names"]):
        sel = train & (regime == r)
        table = compute_temporal_rus(ds.x[sel], ds.step_labels[sel], ds.modalities, rc)
        est = {(row["pair"], row["lag"]): row for row in table.iter_rows(named=True)}
        truth = [row for row in ds.extra["ground_truth"] if row["regime"] == name]
        err = max(abs(est[(t["pair"], t["lag"])][c] - t[c]) for t in truth for c in COMPONENTS)
        assert err < TOLERANCE_BITS, f"{name}: worst error {err:.3f} bits"
        assert max(t[c] for t in truth for c in COMPONENTS) > 0.9  # each regime carries ~1 bit somewhere


def test_ground_truth_closed_forms(ds) -> None:
    rows = {(r["regime"], r["pair"], r["lag"]): r for r in ds.extra["ground_truth"]}
    assert rows[("xor(m0,m1)@3", "m0|m1", 3)]["S"] == pytest.approx(1.0, abs=1e-4)
    assert rows[("redundant(m1,m2)@2", "m1|m2", 2)]["R"] == pytest.approx(1.0, abs=1e-4)
    assert rows[("unique(m0)@1", "m0|m2", 1)]["U1"] == pytest.approx(1.0, abs=1e-4)
    # hold = window: one block, so every lag τ >= k sees the bits that made Y(t)
    assert rows[("xor(m0,m1)@3", "m0|m1", 16)]["S"] == pytest.approx(1.0, abs=1e-4)
    # short holds: beyond the hold length the sources never share a block with the step that made Y(t)
    short = build(_cfg(window=64, hold=8, n_train=10, n_val=10, n_test=10)).extra["ground_truth"]
    assert all(r[c] < 1e-4 for r in short if r["lag"] == 16 for c in COMPONENTS)
    assert any(r["S"] > 0.99 for r in short if r["regime"] == "xor(m0,m1)@3" and r["lag"] == 3)
    and_rows = build(_cfg(regimes=["and(m0,m1)"], lags=[2], hold=1, n_train=10, n_val=10, n_test=10)).extra[
        "ground_truth"
    ]
    row = next(r for r in and_rows if r["pair"] == "m0|m1" and r["lag"] == 2)
    assert row["R"] == pytest.approx(0.3113, abs=1e-3) and row["S"] == pytest.approx(0.5, abs=1e-3)


def test_label_needs_the_regime(ds) -> None:
    """Routing sensitivity: the regimes' rules conflict, so the window's bits alone (the sign of
    each modality's first signal channel) leave the label ambiguous; with the regime they fix it."""
    sig0 = [ds.channels.index(f"m{m}-signal-0") for m in range(len(ds.modalities))]
    bits = (ds.x[:, :, sig0].mean(1) > 0).astype(np.int64)

    def ceiling(keys: np.ndarray) -> float:  # accuracy of the best rule on these keys (majority)
        _, group = np.unique(keys, axis=0, return_inverse=True)
        group = group.ravel()
        return sum(np.bincount(ds.label[group == g]).max() for g in np.unique(group)) / len(ds.label)

    assert ceiling(bits) < 0.7
    assert ceiling(np.c_[bits, _regime(ds)]) == 1.0


def _kmeans_labels(f: np.ndarray, k: int, seed: int = 0, n_init: int = 10, iters: int = 100) -> np.ndarray:
    """Plain Lloyd k-means with k-means++ starts; the best of n_init by within-cluster SSE."""
    rng = np.random.default_rng(seed)
    best, best_sse = None, np.inf
    for _ in range(n_init):
        c = [f[rng.integers(len(f))]]
        for _ in range(1, k):
            d2 = np.min(((f[:, None] - np.array(c)[None]) ** 2).sum(-1), 1)
            c.append(f[rng.choice(len(f), p=d2 / d2.sum())])
        c = np.array(c)
        for _ in range(iters):
            lab = ((f[:, None] - c[None]) ** 2).sum(-1).argmin(1)
            c = np.array([f[lab == j].mean(0) if np.any(lab == j) else c[j] for j in range(k)])
        sse = ((f - c[lab]) ** 2).sum()
        if sse < best_sse:
            best, best_sse = lab, sse
    return best


def test_regime_recoverable_by_kmeans_on_window_stats(ds) -> None:
    """k-means on the standardised per-channel mean and std over time of the modality channels."""
    chans = [c for v in ds.modalities.values() for c in v]
    f = np.concatenate([ds.x[:, :, chans].mean(1), ds.x[:, :, chans].std(1)], 1).astype(np.float64)
    f = (f - f.mean(0)) / f.std(0)
    regime, k = _regime(ds), len(ds.extra["regime_names"])
    lab = _kmeans_labels(f, k)
    purity = sum(np.bincount(regime[lab == j]).max() for j in range(k) if np.any(lab == j)) / len(regime)
    assert purity >= 0.9


def test_deterministic_per_seed() -> None:
    small = {"n_train": 40, "n_val": 20, "n_test": 20}
    a, b, c = build(_cfg(**small)), build(_cfg(**small)), build(_cfg(seed=1, **small))
    for key in ("x", "label", "step_labels", "subject", "split"):
        assert getattr(a, key).tobytes() == getattr(b, key).tobytes()
    assert a.extra == b.extra
    assert a.x.tobytes() != c.x.tobytes()


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"lags": [1, 2, 3, 64]}, "outside 0..window-1"),
        ({"lags": [1, 2]}, "2 lags for 4 regimes"),
        ({"regimes": ["xor(m0)"], "lags": [1]}, "xor needs 2 distinct modalities"),
        ({"regimes": ["foo(m0)"], "lags": [1]}, "is not kind"),
        ({"regimes": ["unique(m3)"], "lags": [1]}, "not among m0..m2"),
        ({"regimes": ["unique(m0)+unique(m1)+unique(m2)"], "lags": [1]}, "at most two terms"),
        ({"regimes": ["unique(m0)", "unique(m0)"], "lags": [1, 1]}, "listed twice"),
        ({"mix": [1.0, 0.0]}, "one non-negative share per regime"),
    ],
)
def test_bad_knobs_are_rejected(kw: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        SyntheticRegimesConfig(**kw)


def test_prepare_round_trip(tmp_path) -> None:
    cfg = _cfg(n_train=60, n_val=20, n_test=20, windows_per_subject=10)
    assert get_dataset("synthetic-regimes") is build
    meta = prepare_dataset("synthetic-regimes", cfg, tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    raw = build(cfg)
    assert meta["extra"]["regime_channels"] == raw.extra["regime_channels"]
    assert meta["extra"]["ground_truth"] == raw.extra["ground_truth"]
    # the regime survives normalisation as the argmax of its channels
    assert np.array_equal(data.x[:, 0, meta["extra"]["regime_channels"]].argmax(1), _regime(raw))
