"""Ground-truth temporal test bed: processes whose RUS per lag is known by construction.

Each process emits two modalities, "a" (X1) and "b" (X2), and a per-step label Y:
- unique_lag2:     X1, X2 i.i.d. uniform on 4 symbols; Y_t = X1_{t−2}.  U1 = 2 bits at lag 2 only.
- synergy_lag1:    X1, X2 i.i.d. fair bits; Y_t = X1_{t−1} XOR X2_{t−1}.  S = 1 bit at lag 1 only.
- redundancy_lag3: a source Z i.i.d. uniform on 4 symbols; X1, X2 independent noisy copies of Z
                   (each replaced by a uniform symbol w.p. `flip`); Y_t = Z_{t−3}.  R dominates at lag 3.
- independent:     X1, X2, Y i.i.d.; every component ≈ 0 at every lag.
- persistent_lead1: Y a sticky Markov chain (stays w.p. 0.9) on 3 labels, X1_t = Y_{t+1}, X2 noise.
                   The directed form finds U1 at lag 1 and ≈ 0 from lag 2 on; lagged MI smears U1
                   over many lags because Y is persistent — the case that motivates conditioning.
Windows are cut after a burn-in, so every lagged value exists.  `continuous=True` turns each symbol
into `n_channels` noisy channels (±symbol·scale + Gaussian noise), to be recovered by binning.
`population_joint` gives the exact joint of (X1_{t−τ}, X2_{t−τ}, Y_t) for the first four processes,
so `true_rus` is the RUS of the process itself, not of a sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROCESSES = ("unique_lag2", "synergy_lag1", "redundancy_lag3", "independent", "persistent_lead1")
_DOMINANT: dict[str, dict[int, str]] = {
    "unique_lag2": {2: "U1"},
    "synergy_lag1": {1: "S"},
    "redundancy_lag3": {3: "R"},
    "independent": {},
    "persistent_lead1": {1: "U1"},
}
_SYMBOLS = {
    "unique_lag2": 4,
    "synergy_lag1": 2,
    "redundancy_lag3": 4,
    "independent": 4,
    "persistent_lead1": 3,
}
_BURN = 32


@dataclass(frozen=True)
class SyntheticTask:
    """Arrays in compute_temporal_rus's format plus the ground truth."""

    name: str
    x: np.ndarray  # (N, T, C) float32
    step_labels: np.ndarray  # (N, T) int64, no ignored steps
    modalities: dict[str, list[int]]
    dominant: dict[int, str] = field(default_factory=dict)  # lag → "R" | "U1" | "U2" | "S"

    def expected(self, lag: int) -> str | None:
        """The dominant component at `lag`, or None where every component should be ≈ 0."""
        return self.dominant.get(lag)


def _symbols(
    name: str, n: int, steps: int, rng: np.random.Generator, flip: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = _SYMBOLS[name]
    x1 = rng.integers(0, k, (n, steps))
    x2 = rng.integers(0, k, (n, steps))
    y = rng.integers(0, k, (n, steps))
    if name == "unique_lag2":
        y[:, 2:] = x1[:, :-2]
    elif name == "synergy_lag1":
        y[:, 1:] = x1[:, :-1] ^ x2[:, :-1]
    elif name == "redundancy_lag3":
        z = rng.integers(0, k, (n, steps))
        x1 = np.where(rng.random((n, steps)) < flip, rng.integers(0, k, (n, steps)), z)
        x2 = np.where(rng.random((n, steps)) < flip, rng.integers(0, k, (n, steps)), z)
        y[:, 3:] = z[:, :-3]
    elif name == "persistent_lead1":
        y = np.empty((n, steps + 1), dtype=np.int64)
        y[:, 0] = rng.integers(0, k, n)
        for t in range(1, steps + 1):
            move = rng.random(n) >= 0.9
            y[:, t] = np.where(move, (y[:, t - 1] + rng.integers(1, k, n)) % k, y[:, t - 1])
        x1 = y[:, 1:].copy()  # X1_t = Y_{t+1}: X1 leads the label by one step
        y = y[:, :-1]
    return x1, x2, y


def make_process(
    name: str,
    *,
    n_windows: int = 200,
    window: int = 64,
    continuous: bool = False,
    noise: float = 0.25,
    n_channels: int = 2,
    flip: float = 0.1,
    seed: int = 0,
) -> SyntheticTask:
    """Simulate `n_windows` windows of `window` steps of process `name` (see module docstring)."""
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; known: {PROCESSES}")
    rng = np.random.default_rng(seed)
    x1, x2, y = (a[:, _BURN:] for a in _symbols(name, n_windows, window + _BURN, rng, flip))
    if continuous:
        # Alternate signs and shrink scales across channels so PC1 has a real direction to find.
        scales = np.array([(-1.0) ** c * (1.0 - 0.3 * c / max(n_channels, 1)) for c in range(n_channels)])
        chans = [
            s[..., None] * scales + noise * rng.standard_normal((*s.shape, n_channels)) for s in (x1, x2)
        ]
        x = np.concatenate(chans, axis=2)
        mods = {"a": list(range(n_channels)), "b": list(range(n_channels, 2 * n_channels))}
    else:
        x = np.stack([x1, x2], axis=2).astype(np.float64)
        mods = {"a": [0], "b": [1]}
    return SyntheticTask(
        name=name,
        x=x.astype(np.float32),
        step_labels=y.astype(np.int64),
        modalities=mods,
        dominant=dict(_DOMINANT[name]),
    )


def population_joint(name: str, lag: int, *, flip: float = 0.1) -> np.ndarray:
    """Exact P(X1_{t−τ}, X2_{t−τ}, Y_t) of the symbol-level process (not for persistent_lead1)."""
    if name not in PROCESSES or name == "persistent_lead1":
        raise ValueError(f"no closed-form joint for {name!r}")
    k = _SYMBOLS[name]
    eye = np.eye(k)
    if name == "redundancy_lag3":
        noisy = (1.0 - flip) * eye + flip / k  # P(x | z), rows z
        pxx_z = np.einsum("za,zb->zab", noisy, noisy) / k  # P(z, x1, x2)
        if lag == 3:
            return np.einsum("zab,zy->aby", pxx_z, eye)
        return np.einsum("ab,y->aby", pxx_z.sum(0), np.full(k, 1.0 / k))
    if name == "unique_lag2" and lag == 2:
        return np.einsum("ay,b->aby", eye, np.full(k, 1.0 / k)) / k
    if name == "synergy_lag1" and lag == 1:
        p = np.zeros((k, k, k))
        for a in range(k):
            for b in range(k):
                p[a, b, a ^ b] = 1.0 / (k * k)
        return p
    return np.full((k, k, k), 1.0 / k**3)


def true_rus(name: str, lags: list[int], *, flip: float = 0.1) -> dict[int, dict[str, float]]:
    """Ground-truth R, U1, U2, S, total (bits) per lag from the exact population joint."""
    from timoe.interactions.exact import exact_pid

    res = exact_pid(np.stack([population_joint(name, lag, flip=flip) for lag in lags]))
    return {lag: res.row(i) for i, lag in enumerate(lags)}


def finds_ground_truth(
    rows: dict[int, dict[str, float]],
    dominant: dict[int, str],
    *,
    min_bits: float = 0.5,
    max_other: float = 0.1,
) -> bool:
    """The stated tolerance for "the right component at the right lag": at each lag that carries
    the process's interaction, its component is the largest of R, U1, U2, S and at least
    `min_bits`; at every other lag all components stay below `max_other` bits."""
    comps = ("R", "U1", "U2", "S")
    for lag, row in rows.items():
        if lag in dominant:
            if max(comps, key=row.__getitem__) != dominant[lag] or row[dominant[lag]] < min_bits:
                return False
        elif max(row[k] for k in comps) >= max_other:
            return False
    return True


def lag_sample_sets(task: SyntheticTask, lags: list[int]) -> dict[int, Any]:
    """Per lag, the (X1_{t-τ}, X2_{t-τ}, Y_t) samples of a two-modality task (first modality's
    channels, then the second's) as multiscale.LagSamples, for the neural estimators."""
    from timoe.interactions._samples import step_index
    from timoe.interactions.multiscale import LagSamples

    first, second = (list(ch) for ch in task.modalities.values())
    out = {}
    for lag in lags:
        wi, ti = step_index(task.step_labels, lag, False, 10**9, 0)
        src = task.x[wi, ti - lag]
        out[lag] = LagSamples(src[:, first], src[:, second], task.step_labels[wi, ti])
    return out
