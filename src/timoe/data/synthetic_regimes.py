"""Synthetic regime benchmark: windows whose label arises by a per-window interaction regime.

Generated at prepare from `data.synthetic_regimes` (seeded; no files). Every window draws one
regime (a row of `regimes`, shares `mix`); the regime decides how the label depends on the
modalities, at the regime's lag k.

Latent process (per window, steps t = 0..T−1): every modality m has a fair bit s_m(t), held
over blocks of `hold` steps (blocks end at the window's last step; hold = 1: i.i.d. steps; the
default hold = window gives one bit per modality and window, see "Routing sensitivity") and
drawn independently per block (exactly balanced within each split × regime × block position, so
that quantile bins split the modes cleanly); a `redundant(ma,mb)` term ties s_mb = s_ma. Each term
of the regime gives one label bit from the bits at step t − k:
    unique(a): s_a        redundant(a,b): s_a (= s_b)        xor(a,b): s_a ⊕ s_b    and(a,b): s_a ∧ s_b
and the per-step label is Y(t) = Σ_j 2^j · bit_j (one term: classes 0/1; two terms: 0..3).
Bits before the window's first step exist (a burn-in), so Y(t) is defined at every step.
`step_labels` hold Y(t) per step; the window `label` is Y(T−1), the label at the window's last
step (online recognition: the state now, from the recent past of the inputs; with hold = window
it is the label of the window's bits, which every step shows).

Channels, per modality m (in this order; `modalities["m<i>"]` lists them):
- `signal_channels` signal channels, ±a_j·(2 s_m(t) − 1) + σ_rm·N(0, 1) (alternating signs,
  shrinking a_j, as in interactions/synthetic.py), so the modality's first principal component
  is its bit; σ_rm = noise·exp(signal_context·sin φ_rm), φ_rm = θ_r + 2πm/M, θ_r = 2πr/R;
- one context channel, offset + scale·N(0, 1) with offset = context_offset·c·cos φ_rm and
  scale = exp(c/2 · sin φ_rm), c = context_strength: the regime r shows in the per-window std
  (and, with context_offset > 0, mean) of the context and signal channels (label-free, available
  at test time);
- one distractor channel, a sinusoid of random frequency and phase plus noise, unrelated to
  label and regime.
After the modality channels come R one-hot channels "regime-0".."regime-{R−1}", constant over
time, in NO modality: models read modality channels only; the `oracle` model reads these
(`extra["regime_channels"]`, names in `extra["regime_names"]`, each "<regime>@<lag>"); a
window's regime is the argmax over those channels, before and after prepare's normalisation.

Ground truth (`extra["ground_truth"]`, rows {regime, pair "ma|mb", lag τ, R, U1, U2, S, total},
bits): the exact BROJA PID of the population joint of (s_ma(t − τ), s_mb(t − τ); Y(t)) pooled, as
the estimator pools them, over the lag-τ samples t = τ..T−1 of that regime's windows, for every
modality pair and every τ in `extra["lags"]` (truth_lags ∪ regime lags). A share ρ(τ) of those
samples has its sources in the hold block of step t − k (the bits that made Y(t)); the rest sees
independent bits, so the joint is ρ·P_same + (1 − ρ)·P_indep (`same_block_share`): full RUS at
τ = k, fading over about `hold` steps on either side, 0 beyond.
It is the quantity that `timoe.interactions.temporal.compute_temporal_rus` estimates from the
training windows of one regime with per-step labels (`step_labels`; lag τ = sources τ steps
before the target inside the window; feature "pca"; quantile bins; form "lagged_mi"): the PC1 of a
modality recovers s_m(t) while noise is small (default 0.3: within 0.05 bits, tests/
test_data_synthetic_regimes.py). Not covered: the "directed" form (with hold > 1, Y(t−1) tells
about Y(t)) and `sequence_level` mean-pooling (a window mixes several blocks).
Routing sensitivity (the defaults): the regimes' rules conflict (the same bits give y = s0, s1,
s0 ⊕ s1 or a 4-class label), so a shared function must first infer the regime, while a router
given it (the `oracle`) or a context recovering it (`timoe`) selects per-regime experts. The cue
is weak per step and in stds only (context_offset 0: a mean would be one linear read for the dense
model), yet clear over a window (k-means purity ≥ 0.9, tests). hold = window because training
shifts windows circularly (train.augment.shift): with shorter blocks the label's block lands
anywhere and no model learns it; the price is a flat lag profile, full RUS at every τ ≥ k and a
share (T − k)/(T − τ) for τ < k (the first k labels come from the burn-in block). Measured at the
study's training settings (3 seeds): oracle 1.00, timoe 1.00, moe 0.82, dense Transformer 0.78.
Splits: the first n_train windows train, then n_val val, then n_test test (windows are independent
draws); subjects are consecutive groups of `windows_per_subject` windows inside one split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from timoe.config import DataConfig, SyntheticRegimesConfig
from timoe.data.base import WindowedDataset

NAME = "synthetic-regimes"
Terms = list[tuple[str, tuple[int, ...]]]


def regime_names(cfg: SyntheticRegimesConfig) -> list[str]:
    """One unique name per regime: its spec and lag, e.g. "xor(m0,m1)@3"."""
    return [f"{spec.replace(' ', '')}@{lag}" for spec, lag in zip(cfg.regimes, cfg.lags, strict=True)]


def _n_classes(regimes: list[Terms]) -> int:
    return 2 ** max(len(t) for t in regimes)


def _tie(bits: np.ndarray, terms: Terms) -> np.ndarray:
    """Apply redundant ties: bits (..., M) -> copy with s_b = s_a for every redundant(a, b)."""
    out = bits.copy()
    for kind, mods in terms:
        if kind == "redundant":
            out[..., mods[1]] = out[..., mods[0]]
    return out


def _label(bits: np.ndarray, terms: Terms) -> np.ndarray:
    """Label (...) of (tied) bits (..., M): Σ_j 2^j · term_j."""
    y = np.zeros(bits.shape[:-1], dtype=np.int64)
    for j, (kind, mods) in enumerate(terms):
        a = bits[..., mods[0]]
        bit = {"unique": a, "redundant": a}.get(kind)
        if bit is None:
            b = bits[..., mods[1]]
            bit = a ^ b if kind == "xor" else a & b
        y += bit.astype(np.int64) << j
    return y


def _block(u: np.ndarray, cfg: SyntheticRegimesConfig) -> np.ndarray:
    """Hold block of window step u (may be negative: burn-in); block −1 ends at the last step."""
    return np.floor_divide(u - cfg.window, cfg.hold)


def _balanced_bits(
    split: np.ndarray, regime: np.ndarray, n_blocks: int, m: int, rng: np.random.Generator
) -> np.ndarray:
    """Fair bits (N, n_blocks, M), exactly balanced (±1) within every split × regime × block × modality.

    Why: the estimator bins each modality's scalar at training quantiles; with held bits the sample
    share of ones strays from 1/2 by ~1/√(windows · blocks), which puts the median edge inside a
    mode and mixes the bits in one bin (measured: 0.08 bits lost on xor). Balanced columns keep
    the median in the gap between the modes; the draws stay uniform and independent otherwise.
    """
    out = np.empty((len(regime), n_blocks, m), dtype=np.int64)
    for s in np.unique(split):
        for r in np.unique(regime):
            idx = np.flatnonzero((split == s) & (regime == r))
            base = np.arange(len(idx)) % 2
            for b in range(n_blocks):
                for j in range(m):
                    out[idx, b, j] = rng.permutation(base)
    return out


def _latents(
    cfg: SyntheticRegimesConfig, regime: np.ndarray, split: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Bits s (N, T, M) inside the windows and per-step labels Y (N, T)."""
    n, t, m = len(regime), cfg.window, cfg.n_modalities
    burn = max(cfg.lags)
    steps = np.arange(-burn, t)
    blocks = _block(steps, cfg)
    raw = _balanced_bits(split, regime, int(blocks.max() - blocks.min()) + 1, m, rng)
    held = raw[:, blocks - blocks.min()]  # (N, burn + T, M): one draw per hold block
    bits = np.empty_like(held)
    y = np.empty((n, t), dtype=np.int64)
    for r, (terms, lag) in enumerate(zip(cfg.parsed_regimes(), cfg.lags, strict=True)):
        sel = regime == r
        bits[sel] = _tie(held[sel], terms)
        y[sel] = _label(bits[sel, burn - lag : burn - lag + t], terms)  # Y(t) from s(t − lag)
    return bits[:, burn:], y


def same_block_share(cfg: SyntheticRegimesConfig, lag: int, tau: int) -> float:
    """Share of the estimator's lag-τ samples (targets t = τ..T−1) whose source step t − τ lies in
    the hold block of t − lag, the step that made Y(t); the other samples carry no information."""
    t = np.arange(tau, cfg.window)
    return float(np.mean(_block(t - tau, cfg) == _block(t - lag, cfg)))


def _context(
    cfg: SyntheticRegimesConfig, regime: np.ndarray, n_regimes: int, rng: np.random.Generator
) -> np.ndarray:
    """Context channels (N, T, M): regime-specific offset and scale (see module docstring)."""
    phase = _phase(cfg, regime, n_regimes)
    c = cfg.context_strength
    offset, scale = cfg.context_offset * c * np.cos(phase), np.exp(0.5 * c * np.sin(phase))
    noise = rng.standard_normal((len(regime), cfg.window, cfg.n_modalities))
    return offset[:, None, :] + scale[:, None, :] * noise


def _distractors(cfg: SyntheticRegimesConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Distractor channels (N, T, M): sinusoids of random frequency/phase plus noise."""
    m = cfg.n_modalities
    freq = rng.uniform(1 / 32, 1 / 4, size=(n, 1, m))  # cycles per step
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, m))
    steps = np.arange(cfg.window)[None, :, None]
    wave = cfg.distractor * np.sin(2 * np.pi * freq * steps + phase)
    return wave + cfg.noise * rng.standard_normal((n, cfg.window, m))


def _phase(cfg: SyntheticRegimesConfig, regime: np.ndarray, n_regimes: int) -> np.ndarray:
    """Regime phase φ (N, M) = θ_r + 2πm/M of each window's modalities (context and signal cues)."""
    return 2 * np.pi * (regime[:, None] / n_regimes + np.arange(cfg.n_modalities)[None, :] / cfg.n_modalities)


def _signals(
    cfg: SyntheticRegimesConfig,
    bits: np.ndarray,
    regime: np.ndarray,
    n_regimes: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Signal channels (N, T, M, S): ±a_j (2s − 1) + noise·exp(signal_context·sin φ)·N(0, 1)."""
    k = cfg.signal_channels
    amps = np.array([(-1.0) ** j * (1.0 - 0.3 * j / k) for j in range(k)])
    sign = (2.0 * bits - 1.0)[..., None]
    std = cfg.noise * np.exp(cfg.signal_context * np.sin(_phase(cfg, regime, n_regimes)))  # (N, M)
    return sign * amps + std[:, None, :, None] * rng.standard_normal((*bits.shape, k))


def _assemble(
    cfg: SyntheticRegimesConfig,
    sig: np.ndarray,
    ctx: np.ndarray,
    dis: np.ndarray,
    regime: np.ndarray,
    n_regimes: int,
) -> tuple[np.ndarray, list[str], dict[str, list[int]]]:
    """x (N, T, C) with per-modality [signals, context, distractor] blocks, then regime one-hots."""
    blocks, channels, modalities = [], [], {}
    for m in range(cfg.n_modalities):
        start = len(channels)
        blocks += [sig[:, :, m, :], ctx[:, :, m, None], dis[:, :, m, None]]
        channels += [f"m{m}-signal-{j}" for j in range(cfg.signal_channels)]
        channels += [f"m{m}-context", f"m{m}-distractor"]
        modalities[f"m{m}"] = list(range(start, len(channels)))
    onehot = np.eye(n_regimes)[regime][:, None, :].repeat(cfg.window, axis=1)
    blocks.append(onehot)
    channels += [f"regime-{r}" for r in range(n_regimes)]
    x = np.concatenate(blocks, axis=2).astype(np.float32)
    return x, channels, modalities


def _splits(cfg: SyntheticRegimesConfig) -> tuple[np.ndarray, np.ndarray]:
    """split (N,) and subject (N,): contiguous blocks per split, subjects never span two splits."""
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    split = np.concatenate([np.full(k, s, dtype="<U5") for s, k in sizes.items()])
    subject, first = [], 0
    for k in sizes.values():
        groups = np.arange(k) // cfg.windows_per_subject
        subject.append(first + groups)
        first += int(groups.max()) + 1
    return split, np.concatenate(subject).astype(np.int32)


def population_joint(terms: Terms, n_modalities: int, pair: tuple[int, int], share: float) -> np.ndarray:
    """Exact P(s_a(t−τ), s_b(t−τ), Y(t)) (2, 2, n_classes) of one regime, pooled over the lag-τ
    samples: a `share` of them sees the bits that made Y(t), the rest independent bits."""
    n_classes = 2 ** len(terms)
    grid = np.array(np.meshgrid(*[[0, 1]] * n_modalities, indexing="ij")).reshape(n_modalities, -1).T
    bits = _tie(grid, terms)  # every equally likely bit pattern of one step
    same = np.zeros((2, 2, n_classes))
    np.add.at(same, (bits[:, pair[0]], bits[:, pair[1]], _label(bits, terms)), 1.0)
    same /= same.sum()
    indep = np.einsum("ab,y->aby", same.sum(2), same.sum((0, 1)))
    return share * same + (1.0 - share) * indep


def truth_lags(cfg: SyntheticRegimesConfig) -> list[int]:
    return sorted(set(cfg.truth_lags) | set(cfg.lags))


def ground_truth(cfg: SyntheticRegimesConfig) -> list[dict[str, Any]]:
    """Rows {regime, pair, lag, R, U1, U2, S, total} (bits), exact PID of the latent process."""
    from timoe.interactions.exact import exact_pid

    m = cfg.n_modalities
    pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]
    keys, joints = [], []
    for name, terms, lag in zip(regime_names(cfg), cfg.parsed_regimes(), cfg.lags, strict=True):
        n_classes = 2 ** len(terms)
        for a, b in pairs:
            for tau in truth_lags(cfg):
                j = np.zeros((2, 2, 4))
                j[:, :, :n_classes] = population_joint(terms, m, (a, b), same_block_share(cfg, lag, tau))
                keys.append((name, f"m{a}|m{b}", tau))
                joints.append(j)
    res = exact_pid(np.stack(joints), device="cpu", tol=1e-9)
    rows = []
    for i, (name, pair, tau) in enumerate(keys):
        vals = {k: round(max(v, 0.0), 6) for k, v in res.row(i).items() if k != "gap"}
        rows.append({"regime": name, "pair": pair, "lag": tau, **vals})
    return rows


def build(cfg: DataConfig) -> WindowedDataset:
    """Generate the benchmark from cfg.synthetic_regimes (deterministic per its seed)."""
    sc = cfg.synthetic_regimes
    rng = np.random.default_rng(sc.seed)
    parsed = sc.parsed_regimes()
    n_regimes, n_classes = len(parsed), _n_classes(parsed)
    n = sc.n_train + sc.n_val + sc.n_test
    mix = np.asarray(sc.mix if sc.mix is not None else [1.0] * n_regimes, dtype=np.float64)
    regime = rng.choice(n_regimes, size=n, p=mix / mix.sum())
    split, subject = _splits(sc)
    bits, y = _latents(sc, regime, split, rng)
    sig = _signals(sc, bits, regime, n_regimes, rng)
    ctx, dis = _context(sc, regime, n_regimes, rng), _distractors(sc, n, rng)
    x, channels, modalities = _assemble(sc, sig, ctx, dis, regime, n_regimes)
    names = regime_names(sc)
    regime_channels = list(range(len(channels) - n_regimes, len(channels)))
    return WindowedDataset(
        name=NAME,
        x=x,
        label=y[:, -1].astype(np.int32),
        step_labels=y.astype(np.int32),
        subject=subject,
        recording=np.arange(n, dtype=np.int32),
        start=np.zeros(n, dtype=np.int32),
        split=split,
        channels=channels,
        modalities=modalities,
        classes=[str(c) for c in range(n_classes)],
        sources={},
        config={"seed": cfg.seed, "synthetic_regimes": sc.model_dump(mode="json")},
        sample_rate_hz=None,
        extra={
            "regime_channels": regime_channels,
            "regime_names": names,
            "lags": truth_lags(sc),
            "label_step": "last",  # label = step_labels[:, -1]
            "ground_truth": ground_truth(sc),
        },
    )
