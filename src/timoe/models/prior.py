"""Sample-conditioned interaction priors: a bank of RUS tables, one per context, and the module
that hands every window the table of its own context.

The quantify stage writes one RUS table per context (rus.scope: a single `dataset` context, one
per training `subject`, or one per cluster of label-free window features, `context`) and the
context model (`interactions.contexts.ContextSpec`). A model then holds:

    bank U [K, M, Tr], R [K, M, M, Tr], S [K, M, M, Tr]   K contexts, M modalities, Tr raw steps

and, per batch, assigns each window x [B, Tr, C] to its context from x alone (nearest centroid of
its per-channel mean/std features), so validation and test windows never need a label. The
selected tables are aligned with any time shift the training augmentation applied to x, then
pooled to the model's tokens (p raw steps per token):

    BatchPrior U [B, M, T], R [B, M, M, T], S [B, M, M, T], context [B]   T = Tr // p

The oracle model reads the true regime instead, from one-hot channels that the synthetic
benchmark appends outside every modality (`RegimeReader`).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch
from torch import Tensor, nn

from timoe.models.rus import LagMapping, RusPrior, pool_steps

VALUE_COLUMNS = ("R", "U1", "U2", "S")


@dataclass
class BatchPrior:
    """Per-window prior at token resolution (bits, or fractions of the pair's total information).

    U [B, M, T], R [B, M, M, T], S [B, M, M, T] (symmetric in the modality dims), context [B] long.
    tables: the per-context tables it was gathered from, (U [K, M, T], R, S [K, M, M, T]), and
    token_shift [B] the roll applied to window b's table (None: no shift), so a router can compute
    per context (K sequences instead of B) and align afterwards. Without tables every window
    counts as its own context.
    """

    U: Tensor
    R: Tensor
    S: Tensor
    context: Tensor
    tables: tuple[Tensor, Tensor, Tensor] | None = None
    token_shift: Tensor | None = None

    def per_context(self) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor, Tensor | None]:
        """(tables, context [B], token_shift [B] or None); windows as contexts when no tables."""
        if self.tables is None:
            return (self.U, self.R, self.S), torch.arange(self.U.shape[0], device=self.U.device), None
        return self.tables, self.context, self.token_shift


def roll_steps(x: Tensor, shift: Tensor) -> Tensor:
    """Per-window circular roll along the step axis: out[b, ..., t, :] = x[b, ..., t - shift[b], :].

    x [B, ..., T, F] (steps second to last), shift [B] long."""
    t = x.shape[-2]
    src = (torch.arange(t, device=x.device)[None, :] - shift.to(x.device)[:, None]) % t  # [B, T]
    view = src.view(src.shape[0], *([1] * (x.dim() - 3)), t, 1)
    return x.gather(-2, view.expand_as(x))


@dataclass
class RoutingContext:
    """What a router may condition on besides its tokens: the prior, and (oracle only) the true
    regime [B] long."""

    prior: BatchPrior | None = None
    regime: Tensor | None = None


def normalise_table(df: pl.DataFrame) -> pl.DataFrame:
    """R, U1, U2, S as fractions of the row's total I(X1, X2; Y) (0 where the total is 0), the
    form the authors' later code thresholds, so thresholds do not depend on the estimator's scale."""
    if "total" not in df.columns:
        raise ValueError("relative RUS needs the table's 'total' column (I(X1,X2;Y) per pair and lag)")
    tot = pl.col("total")
    return df.with_columns(
        [pl.when(tot > 1e-9).then(pl.col(c) / tot).otherwise(0.0).alias(c) for c in VALUE_COLUMNS]
    )


def lag0_table(df: pl.DataFrame) -> pl.DataFrame:
    """Only the lag-0 rows of a quantify table (timoe-lag0). Mapped onto steps (models.rus), the
    single lag fills every step under each mapping, so the prior is lag 0's values at every step."""
    part = df.filter(pl.col("lag") == 0)
    if part.is_empty():
        raise ValueError("the lag-0 prior needs lag 0 in the RUS table; add 0 to rus.lags")
    return part


def shuffle_table(df: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Permute whole (R, U1, U2, S, total) tuples across the rows (contexts, pairs and lags): each
    tuple stays a consistent decomposition, only where it applies is destroyed."""
    cols = [c for c in (*VALUE_COLUMNS, "total") if c in df.columns]
    perm = torch.randperm(df.height, generator=torch.Generator().manual_seed(seed)).numpy()
    return df.with_columns([df[c].gather(perm).alias(c) for c in cols])


def bank_from_table(
    df: pl.DataFrame, modality_names: list[str], n_raw_steps: int, mapping: LagMapping
) -> tuple[Tensor, Tensor, Tensor]:
    """The quantify table (optional `context` column, 0..K-1) -> U [K, M, Tr], R, S [K, M, M, Tr].

    Lags are in raw steps and mapped onto raw steps (models.rus); pooling to tokens happens per
    batch, after the shift alignment."""
    contexts = sorted(df["context"].unique().to_list()) if "context" in df.columns else [0]
    if contexts != list(range(len(contexts))):
        raise ValueError(f"RUS table contexts must be 0..K-1, got {contexts}")
    priors = []
    for k in contexts:
        part = df.filter(pl.col("context") == k) if "context" in df.columns else df
        priors.append(RusPrior.from_table(part, modality_names, n_raw_steps, mapping))
    return (
        torch.stack([p.U for p in priors]),
        torch.stack([p.R for p in priors]),
        torch.stack([p.S for p in priors]),
    )


class ContextAssigner(nn.Module):
    """Nearest-centroid assignment of windows to contexts from label-free features.

    channels [F/2] modality channel indices; mean, std [F] feature standardisation (training
    windows); centroids [K, F] in standardised space. forward(x [B, Tr, C]) -> [B] long."""

    def __init__(
        self, channels: list[int], mean: list[float], std: list[float], centroids: list[list[float]]
    ) -> None:
        super().__init__()
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).clamp_min(1e-8))
        self.register_buffer("centroids", torch.tensor(centroids, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        from timoe.interactions.contexts import window_features

        z = (window_features(x.float(), self.channels) - self.mean) / self.std  # [B, F]
        # Squared differences, not cdist's matmul shortcut, so near-ties resolve exactly as the
        # quantify stage's ContextSpec.assign resolves them (lowest index).
        return (z[:, None, :] - self.centroids[None]).square().sum(-1).argmin(dim=-1)


def regime_of(x: Tensor, channels: Tensor | list[int]) -> Tensor:
    """The true regime of each window from its one-hot regime channels (constant over time, so the
    time mean survives normalisation and jitter): x [B, T, C] -> [B] long."""
    idx = channels if isinstance(channels, Tensor) else torch.tensor(list(channels), dtype=torch.long)
    return x.index_select(-1, idx.to(x.device)).mean(dim=1).argmax(dim=-1)


class RegimeReader(nn.Module):
    """The true regime of each window from its one-hot regime channels: x [B, Tr, C] -> [B] long."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        if not channels:
            raise ValueError("the oracle needs regime channels (data sets that record a regime)")
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long))

    @property
    def n_regimes(self) -> int:
        return int(self.channels.numel())

    def forward(self, x: Tensor) -> Tensor:
        return regime_of(x, self.channels)


class PriorProvider(nn.Module):
    """The bank of per-context tables and the per-batch selection (see the module docstring).

    Buffers, so `.to(device)` moves them and checkpoints record the train-split priors."""

    def __init__(
        self, U: Tensor, R: Tensor, S: Tensor, patch: int, assigner: ContextAssigner | None = None
    ) -> None:
        super().__init__()
        k, m, t = U.shape
        if tuple(R.shape) != (k, m, m, t) or tuple(S.shape) != (k, m, m, t):
            raise ValueError(
                f"R and S must be [K, M, M, Tr] = {(k, m, m, t)}, got {tuple(R.shape)}, {tuple(S.shape)}"
            )
        if assigner is None and k != 1:
            raise ValueError(f"a bank of {k} contexts needs a context assigner")
        if assigner is not None and assigner.centroids.shape[0] != k:
            raise ValueError(f"{assigner.centroids.shape[0]} context centroids for a bank of {k} tables")
        if patch < 1:
            raise ValueError("patch must be >= 1")
        self.register_buffer("bank_U", U.detach().float().clone())
        self.register_buffer("bank_R", R.detach().float().clone())
        self.register_buffer("bank_S", S.detach().float().clone())
        self.patch = patch
        self.assigner = assigner

    @property
    def n_contexts(self) -> int:
        return self.bank_U.shape[0]

    @property
    def n_modalities(self) -> int:
        return self.bank_U.shape[1]

    @property
    def n_raw_steps(self) -> int:
        return self.bank_U.shape[2]

    def assign(self, x: Tensor | None, batch_size: int) -> Tensor:
        """[B] long context of each window (all 0 with a single context)."""
        if self.assigner is None:
            return torch.zeros(batch_size, dtype=torch.long, device=self.bank_U.device)
        if x is None:
            raise ValueError("context priors need the raw windows to assign contexts")
        return self.assigner(x)

    def token_tables(self) -> tuple[Tensor, Tensor, Tensor]:
        """The bank pooled to tokens: U [K, M, T], R, S [K, M, M, T] (T = Tr // patch)."""
        p = self.patch
        return pool_steps(self.bank_U, p), pool_steps(self.bank_R, p), pool_steps(self.bank_S, p)

    def forward(self, x: Tensor | None, batch_size: int, shift: Tensor | None = None) -> BatchPrior:
        """x [B, Tr, C] raw windows (None for a single context), shift [B] the circular time shift
        the augmentation applied, in raw steps (x'[t] = x[t - shift]). The training loop draws
        shifts in whole tokens (multiples of the patch), so rolling the token tables by
        shift // patch keeps the prior of token j describing the signal now at token j exactly."""
        ctx = self.assign(x, batch_size)
        tables = self.token_tables()
        u, r, s = (tab[ctx] for tab in tables)
        token_shift = None
        if shift is not None:
            if bool((shift % self.patch != 0).any()):
                raise ValueError(f"time shifts {shift.tolist()} are not whole tokens of {self.patch} steps")
            token_shift = torch.div(shift, self.patch, rounding_mode="floor").to(u.device)
            u = roll_steps(u[..., None], token_shift)[..., 0]
            r = roll_steps(r[..., None], token_shift)[..., 0]
            s = roll_steps(s[..., None], token_shift)[..., 0]
        return BatchPrior(u, r, s, ctx, tables, token_shift)

    @classmethod
    def from_prior(cls, rus: RusPrior) -> PriorProvider:
        """One context, already at token resolution (a prior built directly from tensors)."""
        return cls(rus.U[None], rus.R[None], rus.S[None], patch=1)
