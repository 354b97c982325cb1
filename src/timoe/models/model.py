"""Full models and `build_model`.

Layout (method.md section 3), with B batch, M modalities, T steps, d width:

    x [B, T, C] -> split channels by modality -> per-modality encoder -> h [B, M, T, d]
    n_layers layers:
      plain layer   one Transformer block, weights shared by the modalities, attention over time
                    within each modality stream
      fusion layer  (at cfg.moe_layers) per-modality self-attention (own weights per modality),
                    then a token mixer over all B*M*T tokens (the MoE; the dense model: an FFN),
                    then fuse: out_m = LayerNorm(a_m + mean_j mixer(a)_j)
    head: LayerNorm, mean over modalities and time, linear -> logits [B, n_classes]

Fusion rule: the reference averages the streams into one; timoe keeps one stream per modality
(the router and the RUS losses are per modality) and adds the modality-mean of the expert outputs
to each stream's own residual. The dense `transformer` has the same fusion layers with a dense FFN
in place of the MoE, so it differs from the MoE models only in the mixer (equal width, same
attention and fusion), which is the comparison the benchmarks and ablations need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from timoe.config import ModelConfig
from timoe.models.layers import (
    Dropout,
    FeedForward,
    ModalityEncoder,
    modality_self_attention,
    transformer_block,
)
from timoe.models.losses import aux_losses
from timoe.models.moe import MoELayer
from timoe.models.prior import PriorProvider, RegimeReader, RoutingContext
from timoe.models.routers import (
    ContextRouter,
    HashRouter,
    LaplaceRouter,
    ModalityRouter,
    OracleRouter,
    Router,
    RouterOutput,
    RusAwareRouter,
    SoftmaxRouter,
)
from timoe.models.rus import RusPrior
from timoe.models.stats import RoutingStats

SHUFFLE_SEED = 0  # fixed generator seed of the shuffled-RUS ablation, so its prior is reproducible
HASH_SEED = 0  # fixed draw of the hash router's table: the same for every seed, like a hash function
RUS_TERMS = frozenset({"redundancy", "uniqueness", "synergy"})
GATE_TERMS = frozenset({"load", "z"})


@dataclass(frozen=True)
class ModelSpec:
    """router: "dense", "softmax", "laplace", "modality", "hash", "oracle", "rus" or "context".
    needs_rus: reads the quantify stage's output (the context router: only the context model and
    each window's context id, never the R/U/S values).
    prior: which quantify table a RUS model reads ("context": the per-context bank of rus.scope;
    "dataset": the single dataset-level table). lags: "all" estimated lags, or "lag0": the table
    restricted to lag 0, which the lag mapping then spreads over every step (the lag-range
    ablation). needs_regime: reads the true regime channels."""

    router: str
    losses: frozenset[str] = frozenset()
    needs_rus: bool = False
    shuffle_rus: bool = False
    prior: str = "context"
    lags: Literal["all", "lag0"] = "all"
    needs_regime: bool = False
    # "neural": a TimoeModel trained by training.loop (swept, routing diagnostics); "reference": a
    # non-neural classifier (models.reference) trained on the same windows, with no sweep, prior
    # or routing. config.REFERENCE_MODELS names the same models for the stage layer.
    kind: str = "neural"

    @property
    def neural(self) -> bool:
        return self.kind == "neural"


# Every learned gate trains under the same balance and z-loss pressure, so the ablations isolate
# the R/U/S losses (timoe-nolosses) or the prior (shuffled, dataset-level) and nothing else.
MODEL_SPECS: dict[str, ModelSpec] = {
    "transformer": ModelSpec("dense"),
    "moe": ModelSpec("softmax", GATE_TERMS),
    "fusemoe": ModelSpec("laplace", GATE_TERMS),
    "modality-moe": ModelSpec("modality", GATE_TERMS),
    "hash-moe": ModelSpec("hash"),
    "timoe": ModelSpec("rus", GATE_TERMS | RUS_TERMS, needs_rus=True),
    "timoe-nolosses": ModelSpec("rus", GATE_TERMS, needs_rus=True),
    "timoe-shuffled-rus": ModelSpec("rus", GATE_TERMS | RUS_TERMS, needs_rus=True, shuffle_rus=True),
    "timoe-dataset-rus": ModelSpec("rus", GATE_TERMS | RUS_TERMS, needs_rus=True, prior="dataset"),
    "timoe-lag0": ModelSpec("rus", GATE_TERMS | RUS_TERMS, needs_rus=True, lags="lag0"),
    "context-moe": ModelSpec("context", GATE_TERMS, needs_rus=True),
    "oracle": ModelSpec("oracle", GATE_TERMS, needs_regime=True),
    # MiniRocket features + ridge (models.reference): the level a practitioner reaches first.
    "minirocket": ModelSpec("none", kind="reference"),
}


@dataclass
class ModelOutput:
    """logits [B, n_classes]; aux_loss scalar (weighted sum of the active auxiliary losses, 0 for
    the dense model); aux_parts unweighted terms averaged over MoE layers (RUS terms the model is
    not trained on appear detached, as diagnostics, when a prior was given); routing stats; routes
    (one RouterOutput per MoE layer, for diagnostics) and the routing context used."""

    logits: Tensor
    aux_loss: Tensor
    aux_parts: dict[str, Tensor] = field(default_factory=dict)
    routing: RoutingStats | None = None
    routes: list[RouterOutput] = field(default_factory=list)
    context: RoutingContext | None = None


class FusionLayer(nn.Module):
    """Per-modality attention -> mixer over all tokens -> fuse (see module docstring)."""

    def __init__(
        self, d_model: int, n_heads: int, n_modalities: int, dropout: float, mixer: MoELayer | FeedForward
    ) -> None:
        super().__init__()
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
            for _ in range(n_modalities)
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = Dropout(dropout)
        self.mixer = mixer

    def forward(self, h: Tensor, context: RoutingContext | None = None) -> tuple[Tensor, RouterOutput | None]:
        """h [B, M, T, d] -> ([B, M, T, d], route or None)."""
        # Each modality's own MHA weights, all modalities in one batch; no dropout on the
        # attention probabilities (fused SDPA), see layers.modality_self_attention.
        a = self.norm1(h + self.drop(modality_self_attention(self.attn, h)))
        if isinstance(self.mixer, MoELayer):
            out = self.mixer(a, context)
            mixed, route = out.y, out.route
        else:
            mixed, route = self.mixer(a), None
        return self.norm2(a + self.drop(mixed.mean(dim=1, keepdim=True))), route


class TimoeModel(nn.Module):
    """Multimodal classifier; forward(x [B, T, C]) -> ModelOutput. See the module docstring.

    `provider` holds the per-context RUS bank (RUS models); `regime` reads the true regime
    (oracle). Both act on the raw windows, which a patching wrapper passes as `raw`."""

    def __init__(
        self,
        name: str,
        cfg: ModelConfig,
        *,
        n_channels: int,
        n_timesteps: int,
        n_classes: int,
        modalities: dict[str, list[int]],
        provider: PriorProvider | None = None,
        regime: RegimeReader | None = None,
    ) -> None:
        super().__init__()
        if name not in MODEL_SPECS:
            raise ValueError(f"unknown model {name!r}; known: {list(MODEL_SPECS)}")
        spec = MODEL_SPECS[name]
        if spec.needs_rus and provider is None:
            raise ValueError(f"model {name!r} needs a RUS prior (rus=RusPrior...), none was given")
        if spec.needs_regime and regime is None:
            raise ValueError(f"model {name!r} needs the true regime channels, which this data set lacks")
        self.name = name
        self.spec = spec
        self.cfg = cfg
        self.modality_names = list(modalities)
        self.n_channels = n_channels
        self.n_timesteps = n_timesteps
        self.n_synergy = cfg.n_synergy_experts if spec.router != "dense" else 0
        d, m = cfg.d_model, len(modalities)
        for k, idx in enumerate(modalities.values()):
            self.register_buffer(f"channels_{k}", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.encoders = nn.ModuleList(
            ModalityEncoder(
                len(idx),
                d,
                cfg.n_heads,
                cfg.d_ff,
                cfg.encoder_layers,
                cfg.dropout,
                n_timesteps,
                tokenizer=cfg.tokenizer,
                patch=cfg.patch_size,  # the input's steps per token (training.patching)
            )
            for idx in modalities.values()
        )
        self.provider = provider
        self.regime = regime
        self.moe_positions = sorted(set(cfg.moe_layers))
        layers: list[nn.Module] = []
        for pos in range(cfg.n_layers):
            if pos in self.moe_positions:
                if spec.router == "dense":
                    mixer: MoELayer | FeedForward = FeedForward(d, cfg.d_ff, cfg.dropout)
                else:
                    mixer = MoELayer(
                        d,
                        cfg.d_ff,
                        cfg.n_experts,
                        cfg.n_synergy_experts,
                        cfg.n_heads,
                        cfg.dropout,
                        self._router(spec.router, m),
                    )
                layers.append(FusionLayer(d, cfg.n_heads, m, cfg.dropout, mixer))
            else:
                layers.append(transformer_block(d, cfg.n_heads, cfg.d_ff, cfg.dropout))
        self.layers = nn.ModuleList(layers)
        self.head_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_classes)

    def _router(self, kind: str, n_modalities: int) -> Router:
        cfg = self.cfg
        e, k = cfg.n_experts, cfg.top_k
        if kind == "softmax":
            return SoftmaxRouter(cfg.d_model, e, k)
        if kind == "laplace":
            return LaplaceRouter(cfg.d_model, e, k)
        if kind == "modality":
            return ModalityRouter(cfg.d_model, e, k, n_modalities, cfg.n_synergy_experts)
        if kind == "hash":
            return HashRouter(cfg.d_model, e, k, n_modalities, self.n_timesteps, seed=HASH_SEED)
        if kind == "oracle":
            assert self.regime is not None  # checked in __init__
            return OracleRouter(cfg.d_model, e, k, n_modalities, self.regime.n_regimes)
        if kind == "context":
            assert self.provider is not None  # needs_rus, checked in __init__
            r = cfg.router
            return ContextRouter(
                cfg.d_model,
                e,
                k,
                n_modalities,
                self.provider.n_contexts,
                self.n_timesteps,
                token_dim=r.token_dim,
                code_dim=r.gru_dim,
            )
        if kind == "rus":
            r = cfg.router
            return RusAwareRouter(
                cfg.d_model, e, k, n_modalities, token_dim=r.token_dim, gru_dim=r.gru_dim, kv_dim=r.kv_dim
            )
        raise ValueError(f"unknown router kind {kind!r}")

    @property
    def rus(self) -> RusPrior | None:
        """The single prior of a one-context model (after shuffling, for the shuffled ablation), at
        the provider's step resolution; None without a prior or with several contexts."""
        if self.provider is None or self.provider.n_contexts != 1:
            return None
        pv = self.provider
        return RusPrior(pv.bank_U[0], pv.bank_R[0], pv.bank_S[0], tuple(self.modality_names))

    def routing_context(self, x: Tensor, raw: Tensor | None, shift: Tensor | None) -> RoutingContext:
        """The per-window prior and regime of a batch (x [B, T, C] model input, raw [B, Tr, Cr])."""
        source = x if raw is None else raw
        prior = self.provider(raw, x.shape[0], shift) if self.provider is not None else None
        regime = self.regime(source) if self.regime is not None else None
        return RoutingContext(prior, regime)

    def forward(self, x: Tensor, *, raw: Tensor | None = None, shift: Tensor | None = None) -> ModelOutput:
        """x [B, T, C] -> ModelOutput (logits [B, n_classes]). raw [B, Tr, Cr]: the unpatched
        windows (context assignment, regime); shift [B]: the augmentation's time shift in raw steps."""
        if x.dim() != 3 or x.shape[-1] != self.n_channels:
            raise ValueError(f"expected input [B, T, {self.n_channels}], got {tuple(x.shape)}")
        context = self.routing_context(x, raw, shift)
        h = torch.stack(
            [enc(x.index_select(-1, getattr(self, f"channels_{k}"))) for k, enc in enumerate(self.encoders)],
            dim=1,
        )  # [B, M, T, d]
        b, m, t, d = h.shape
        routes: list[RouterOutput] = []
        for layer in self.layers:
            if isinstance(layer, FusionLayer):
                h, route = layer(h, context)
                if route is not None:
                    routes.append(route)
            else:
                h = layer(h.reshape(b * m, t, d)).view(b, m, t, d)
        logits = self.head(self.head_norm(h).mean(dim=(1, 2)))
        if not routes:
            return ModelOutput(logits, logits.new_zeros(()), {}, None, [], context)
        diagnostic = RUS_TERMS if context.prior is not None else frozenset()
        aux, parts = aux_losses(
            routes, context.prior, self.cfg.losses, self.n_synergy, self.spec.losses, diagnostic
        )
        stats = RoutingStats.from_routes(self.moe_positions, routes, self.n_synergy)
        return ModelOutput(logits, aux, parts, stats, routes, context)


def build_model(
    name: str,
    cfg: ModelConfig,
    *,
    n_channels: int,
    n_timesteps: int,
    n_classes: int,
    modalities: dict[str, list[int]],
    rus: RusPrior | PriorProvider | None = None,
    regime: RegimeReader | None = None,
) -> TimoeModel:
    """Build a model by name (config.MODEL_NAMES). RUS models need `rus`: a PriorProvider (the
    per-context bank, raw-step tables) or a single RusPrior at the model's step resolution; other
    models use it only for diagnostic loss parts. The oracle needs `regime`."""
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown model {name!r}; known: {list(MODEL_SPECS)}")
    spec = MODEL_SPECS[name]
    if not spec.neural:
        raise ValueError(f"{name!r} is a {spec.kind} model, not a TimoeModel (models.reference fits it)")
    if not modalities:
        raise ValueError("at least one modality is needed")
    for mod, idx in modalities.items():
        if not idx:
            raise ValueError(f"modality {mod!r} has no channels")
        bad = [c for c in idx if not 0 <= c < n_channels]
        if bad:
            raise ValueError(f"modality {mod!r} names channel(s) {bad} outside 0..{n_channels - 1}")
    if spec.needs_rus and rus is None:
        raise ValueError(f"model {name!r} needs a RUS prior (rus=RusPrior...), none was given")
    provider = None
    if isinstance(rus, RusPrior):
        if rus.n_modalities != len(modalities):
            raise ValueError(f"RUS prior has {rus.n_modalities} modalities, the data {len(modalities)}")
        if rus.modality_names is not None and list(rus.modality_names) != list(modalities):
            raise ValueError(
                f"RUS prior modalities {list(rus.modality_names)} differ from the data's {list(modalities)}"
            )
        if rus.n_timesteps < n_timesteps:
            raise ValueError(f"RUS prior covers {rus.n_timesteps} steps, the windows {n_timesteps}")
        if spec.shuffle_rus:
            rus = rus.shuffled(torch.Generator().manual_seed(SHUFFLE_SEED))
        provider = PriorProvider.from_prior(rus)
    elif rus is not None:
        provider = rus
        if provider.n_modalities != len(modalities):
            raise ValueError(f"RUS prior has {provider.n_modalities} modalities, the data {len(modalities)}")
        if provider.n_raw_steps // provider.patch < n_timesteps:
            raise ValueError(
                f"RUS prior covers {provider.n_raw_steps // provider.patch} steps, the windows {n_timesteps}"
            )
    return TimoeModel(
        name,
        cfg,
        n_channels=n_channels,
        n_timesteps=n_timesteps,
        n_classes=n_classes,
        modalities=modalities,
        provider=provider,
        regime=regime if spec.needs_regime else None,
    )


def needs_rus(model_name: str) -> bool:
    """Whether a model reads the quantify stage's output (models.MODEL_SPECS says)."""
    return model_name in MODEL_SPECS and MODEL_SPECS[model_name].needs_rus
