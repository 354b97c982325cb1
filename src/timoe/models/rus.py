"""RUS prior: interaction estimates (per modality pair and lag) mapped onto the model's time steps.

The quantify stage writes one row per (pair, lag) with R, U1, U2, S in bits. The router and the
auxiliary losses need per-step tensors instead:

    U [M, T]       U_m(t) = max over the pairs containing m of that pair's U for m
    R [M, M, T]    symmetric, zero on the diagonal
    S [M, M, T]    symmetric, zero on the diagonal

Mapping lags onto steps. The reference code (aaronhan223/merge, `load_multimodal_rus_data`) cuts
the window into len(lags) equal contiguous segments and gives segment i the values of the i-th
lag, i.e. it treats the lag index as a position in the window. That ties the prior to how many
lags were estimated rather than to what a lag means. timoe's default, ``"hold"``, reads step t as
"t steps of in-window history": step t takes the values of the largest estimated lag <= t (steps
before the smallest lag take the smallest lag's values, steps past the largest lag keep the
largest lag's). ``"interp"`` interpolates linearly in lag between estimated lags, with the same
clamping at both ends; ``"segments"`` reproduces the reference behaviour for comparison.
``"end"`` is for one label per window, read at (or summarising up to) its last step: step t lies
T-1-t steps before the label, so it takes the largest estimated lag <= T-1-t (the last step gets
lag 0, steps far from the end keep the largest lag).

Lags are in raw steps. The mapping is made at raw-step resolution; a model that merges p steps
into one token then takes, for token j, the mean of the per-step values of steps jp .. jp+p-1
(`pool_steps`), so a lag tau lands on token floor(tau / p) under "hold" and on token
floor((T-1-tau) / p) under "end", and lags that share a token are never averaged before mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl
import torch
from torch import Tensor

LagMapping = Literal["hold", "interp", "segments", "end"]
TABLE_COLUMNS = ("pair", "lag", "R", "U1", "U2", "S")


@dataclass(frozen=True)
class PairLagTable:
    """The estimates in long form, one entry per (unordered pair, lag), kept so that the
    shuffled ablation permutes estimates rather than already-mapped steps.

    pairs [N, 2] long (i < j, modality indices), lags [N] long, values [N, 4] = (R, U_i, U_j, S).
    """

    pairs: Tensor
    lags: Tensor
    values: Tensor


def map_lags_to_steps(lags: Tensor, values: Tensor, n_timesteps: int, mapping: LagMapping) -> Tensor:
    """Map per-lag values of one pair onto steps.

    lags [L] sorted ascending distinct, values [L, F] -> [T, F].
    """
    n_lags = lags.numel()
    steps = torch.arange(n_timesteps, dtype=torch.long)
    if mapping == "end":
        return map_lags_to_steps(lags, values, n_timesteps, "hold").flip(0)
    if mapping == "segments":
        seg = max(1, n_timesteps // n_lags)
        idx = (steps // seg).clamp(max=n_lags - 1)
        return values[idx]
    if mapping == "hold":
        idx = (torch.searchsorted(lags, steps, right=True) - 1).clamp(min=0)
        return values[idx]
    if mapping == "interp":
        t = steps.to(values.dtype).clamp(float(lags[0]), float(lags[-1]))
        hi = torch.searchsorted(lags.to(values.dtype), t, right=False).clamp(max=n_lags - 1)
        lo = (hi - 1).clamp(min=0)
        span = (lags[hi] - lags[lo]).to(values.dtype)
        # span is 0 where t sits exactly on an estimated lag (or a single lag): take that lag.
        frac = torch.where(span > 0, (t - lags[lo].to(values.dtype)) / span.clamp(min=1), torch.ones_like(t))
        return values[lo] + frac[:, None] * (values[hi] - values[lo])
    raise ValueError(f"unknown lag mapping {mapping!r}; known: hold, interp, segments, end")


def pool_steps(x: Tensor, patch: int) -> Tensor:
    """Mean over each patch of p consecutive steps along the last dim: [..., T] -> [..., T // p].

    Trailing steps that do not fill a patch are dropped, as `training.patching.patch_input` does."""
    if patch == 1:
        return x
    t = (x.shape[-1] // patch) * patch
    return x[..., :t].reshape(*x.shape[:-1], t // patch, patch).mean(-1)


def _build_tensors(
    table: PairLagTable, n_modalities: int, n_timesteps: int, mapping: LagMapping
) -> tuple[Tensor, Tensor, Tensor]:
    U = torch.zeros(n_modalities, n_timesteps)
    R = torch.zeros(n_modalities, n_modalities, n_timesteps)
    S = torch.zeros(n_modalities, n_modalities, n_timesteps)
    for i, j in torch.unique(table.pairs, dim=0).tolist():
        sel = (table.pairs[:, 0] == i) & (table.pairs[:, 1] == j)
        lags, order = table.lags[sel].sort()
        per_step = map_lags_to_steps(lags, table.values[sel][order], n_timesteps, mapping)  # [T, 4]
        R[i, j] = R[j, i] = per_step[:, 0]
        S[i, j] = S[j, i] = per_step[:, 3]
        U[i] = torch.maximum(U[i], per_step[:, 1])
        U[j] = torch.maximum(U[j], per_step[:, 2])
    return U, R, S


@dataclass
class RusPrior:
    """Per-step interaction prior. U [M, T], R [M, M, T], S [M, M, T] (float32, bits)."""

    U: Tensor
    R: Tensor
    S: Tensor
    modality_names: tuple[str, ...] | None = None
    mapping: LagMapping = "hold"
    table: PairLagTable | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.U.dim() != 2:
            raise ValueError(f"U must be [M, T], got shape {tuple(self.U.shape)}")
        m, t = self.U.shape
        for name, x in (("R", self.R), ("S", self.S)):
            if tuple(x.shape) != (m, m, t):
                raise ValueError(f"{name} must be [M, M, T] = {(m, m, t)}, got {tuple(x.shape)}")
        if self.modality_names is not None and len(self.modality_names) != m:
            raise ValueError(f"{len(self.modality_names)} modality names for {m} modalities")
        self.U, self.R, self.S = (x.detach().float() for x in (self.U, self.R, self.S))

    @property
    def n_modalities(self) -> int:
        return self.U.shape[0]

    @property
    def n_timesteps(self) -> int:
        return self.U.shape[1]

    @classmethod
    def from_table(
        cls,
        df: pl.DataFrame,
        modality_names: list[str],
        n_timesteps: int,
        mapping: LagMapping = "hold",
    ) -> RusPrior:
        """Build the prior from the quantify stage's table.

        Columns: pair ("m1|m2"), lag (int), R, U1, U2, S (bits); extra columns (e.g. total)
        are ignored. U1 belongs to m1, U2 to m2. A pair written in either orientation is the
        same unordered pair; repeated (pair, lag) rows (e.g. several estimator seeds) are averaged.
        """
        missing = [c for c in TABLE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"RUS table lacks column(s) {missing}; needs {list(TABLE_COLUMNS)}")
        if n_timesteps < 1:
            raise ValueError("n_timesteps must be positive")
        index = {name: k for k, name in enumerate(modality_names)}
        sums: dict[tuple[int, int, int], list[float]] = {}
        counts: dict[tuple[int, int, int], int] = {}
        for row in df.select(TABLE_COLUMNS).iter_rows():
            pair, lag, r, u1, u2, s = row
            names = str(pair).split("|")
            if len(names) != 2:
                raise ValueError(f"pair {pair!r} is not of the form 'm1|m2'")
            unknown = [n for n in names if n not in index]
            if unknown:
                raise ValueError(f"pair {pair!r} names unknown modality {unknown}; known: {modality_names}")
            i, j = index[names[0]], index[names[1]]
            if i == j:
                raise ValueError(f"pair {pair!r} pairs a modality with itself")
            if i > j:  # store as i < j; U1/U2 follow their modality
                i, j, u1, u2 = j, i, u2, u1
            key = (i, j, int(lag))
            acc = sums.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            for k, v in enumerate((r, u1, u2, s)):
                acc[k] += float(v)
            counts[key] = counts.get(key, 0) + 1
        keys = sorted(sums)
        if keys:
            table = PairLagTable(
                pairs=torch.tensor([[k[0], k[1]] for k in keys], dtype=torch.long),
                lags=torch.tensor([k[2] for k in keys], dtype=torch.long),
                values=torch.tensor([[v / counts[k] for v in sums[k]] for k in keys], dtype=torch.float32),
            )
        else:
            table = PairLagTable(
                torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4)
            )
        U, R, S = _build_tensors(table, len(modality_names), n_timesteps, mapping)
        return cls(U, R, S, tuple(modality_names), mapping, table)

    def shuffled(self, generator: torch.Generator) -> RusPrior:
        """A copy whose estimates are permuted across pairs and lags (the shuffled-RUS ablation).

        With a table, whole (R, U_i, U_j, S) tuples move together between (pair, lag) slots, so
        each tuple stays a consistent decomposition and only its placement is destroyed; then
        the tuples are mapped onto steps as before. Without one (a prior built from tensors),
        (R, S) are permuted jointly across (unordered pair, step) and U across (modality, step).
        """
        if self.table is not None:
            perm = torch.randperm(self.table.values.shape[0], generator=generator)
            table = PairLagTable(self.table.pairs, self.table.lags, self.table.values[perm])
            U, R, S = _build_tensors(table, self.n_modalities, self.n_timesteps, self.mapping)
            return RusPrior(U, R, S, self.modality_names, self.mapping, table)
        m, t = self.U.shape
        i, j = torch.triu_indices(m, m, offset=1)
        rs = torch.stack([self.R[i, j], self.S[i, j]], dim=-1).reshape(-1, 2)  # [P*T, 2]
        rs = rs[torch.randperm(rs.shape[0], generator=generator)].reshape(-1, t, 2)
        R = torch.zeros_like(self.R)
        S = torch.zeros_like(self.S)
        R[i, j] = R[j, i] = rs[..., 0]
        S[i, j] = S[j, i] = rs[..., 1]
        U = self.U.reshape(-1)[torch.randperm(m * t, generator=generator)].reshape(m, t)
        return RusPrior(U, R, S, self.modality_names, self.mapping, None)

    def to_dict(self) -> dict[str, object]:
        """Plain lists for JSON (audit / figures)."""
        return {
            "modality_names": list(self.modality_names) if self.modality_names else None,
            "mapping": self.mapping,
            "U": self.U.tolist(),
            "R": self.R.tolist(),
            "S": self.S.tolist(),
        }
