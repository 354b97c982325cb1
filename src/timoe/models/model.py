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

import torch
from torch import Tensor, nn

from timoe.config import ModelConfig
from timoe.models.layers import FeedForward, ModalityEncoder, transformer_block
from timoe.models.losses import aux_losses
from timoe.models.moe import MoELayer
from timoe.models.routers import LaplaceRouter, Router, RouterOutput, RusAwareRouter, SoftmaxRouter
from timoe.models.rus import RusPrior
from timoe.models.stats import RoutingStats

SHUFFLE_SEED = 0  # fixed generator seed of the shuffled-RUS ablation, so its prior is reproducible
RUS_TERMS = frozenset({"redundancy", "uniqueness", "synergy"})


@dataclass(frozen=True)
class ModelSpec:
    router: str  # "dense", "softmax", "laplace", "rus"
    losses: frozenset[str] = frozenset()
    needs_rus: bool = False
    shuffle_rus: bool = False


# timoe-nolosses keeps the load-balance loss: every MoE model then trains under the same balance
# pressure, and the ablation isolates the R/U/S losses rather than also removing balancing.
MODEL_SPECS: dict[str, ModelSpec] = {
    "transformer": ModelSpec("dense"),
    "moe": ModelSpec("softmax", frozenset({"load"})),
    "fusemoe": ModelSpec("laplace", frozenset({"load"})),
    "timoe": ModelSpec("rus", frozenset({"load"}) | RUS_TERMS, needs_rus=True),
    "timoe-nolosses": ModelSpec("rus", frozenset({"load"}), needs_rus=True),
    "timoe-shuffled-rus": ModelSpec("rus", frozenset({"load"}) | RUS_TERMS, needs_rus=True, shuffle_rus=True),
}


@dataclass
class ModelOutput:
    """logits [B, n_classes]; aux_loss scalar (weighted sum of the active auxiliary losses, 0 for
    the dense model); aux_parts unweighted terms averaged over MoE layers (RUS terms the model is
    not trained on appear detached, as diagnostics, when a prior was given); routing stats."""

    logits: Tensor
    aux_loss: Tensor
    aux_parts: dict[str, Tensor] = field(default_factory=dict)
    routing: RoutingStats | None = None


class FusionLayer(nn.Module):
    """Per-modality attention -> mixer over all tokens -> fuse (see module docstring)."""

    def __init__(self, d_model: int, n_heads: int, n_modalities: int, dropout: float,
                 mixer: MoELayer | FeedForward) -> None:
        super().__init__()
        self.attn = nn.ModuleList(nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
                                  for _ in range(n_modalities))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.mixer = mixer

    def forward(self, h: Tensor) -> tuple[Tensor, RouterOutput | None]:
        """h [B, M, T, d] -> ([B, M, T, d], route or None)."""
        attended = []
        for m, attn in enumerate(self.attn):
            x = h[:, m]
            attended.append(self.norm1(x + self.drop(attn(x, x, x, need_weights=False)[0])))
        a = torch.stack(attended, dim=1)
        if isinstance(self.mixer, MoELayer):
            out = self.mixer(a)
            mixed, route = out.y, out.route
        else:
            mixed, route = self.mixer(a), None
        return self.norm2(a + self.drop(mixed.mean(dim=1, keepdim=True))), route


class TimoeModel(nn.Module):
    """Multimodal classifier; forward(x [B, T, C]) -> ModelOutput. See the module docstring."""

    def __init__(self, name: str, cfg: ModelConfig, *, n_channels: int, n_timesteps: int, n_classes: int,
                 modalities: dict[str, list[int]], rus: RusPrior | None = None) -> None:
        super().__init__()
        if name not in MODEL_SPECS:
            raise ValueError(f"unknown model {name!r}; known: {list(MODEL_SPECS)}")
        spec = MODEL_SPECS[name]
        if spec.needs_rus and rus is None:
            raise ValueError(f"model {name!r} needs a RUS prior (rus=RusPrior...), none was given")
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
            ModalityEncoder(len(idx), d, cfg.n_heads, cfg.d_ff, cfg.encoder_layers, cfg.dropout, n_timesteps)
            for idx in modalities.values()
        )
        if rus is not None:
            # Buffers: they follow .to(device) and are saved with the weights (the checkpoint then
            # records the train-split prior the model saw).
            self.register_buffer("rus_U", rus.U.clone())
            self.register_buffer("rus_R", rus.R.clone())
            self.register_buffer("rus_S", rus.S.clone())
        self.has_rus = rus is not None
        self.moe_positions = sorted(set(cfg.moe_layers))
        layers: list[nn.Module] = []
        for pos in range(cfg.n_layers):
            if pos in self.moe_positions:
                if spec.router == "dense":
                    mixer: MoELayer | FeedForward = FeedForward(d, cfg.d_ff, cfg.dropout)
                else:
                    router = self._router(spec.router, rus)
                    mixer = MoELayer(d, cfg.d_ff, cfg.n_experts, cfg.n_synergy_experts, cfg.n_heads,
                                     cfg.dropout, router)
                layers.append(FusionLayer(d, cfg.n_heads, m, cfg.dropout, mixer))
            else:
                layers.append(transformer_block(d, cfg.n_heads, cfg.d_ff, cfg.dropout))
        self.layers = nn.ModuleList(layers)
        self.head_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_classes)

    def _router(self, kind: str, rus: RusPrior | None) -> Router:
        cfg = self.cfg
        if kind == "softmax":
            return SoftmaxRouter(cfg.d_model, cfg.n_experts, cfg.top_k)
        if kind == "laplace":
            return LaplaceRouter(cfg.d_model, cfg.n_experts, cfg.top_k)
        if kind == "rus":
            assert rus is not None  # build_model checks
            r = cfg.router
            return RusAwareRouter(cfg.d_model, cfg.n_experts, cfg.top_k, rus, token_dim=r.token_dim,
                                  gru_dim=r.gru_dim, kv_dim=r.kv_dim)
        raise ValueError(f"unknown router kind {kind!r}")

    @property
    def rus(self) -> RusPrior | None:
        """The prior the model uses (after shuffling, for the shuffled ablation)."""
        if not self.has_rus:
            return None
        return RusPrior(self.rus_U, self.rus_R, self.rus_S, tuple(self.modality_names))

    def forward(self, x: Tensor) -> ModelOutput:
        """x [B, T, C] -> ModelOutput (logits [B, n_classes])."""
        if x.dim() != 3 or x.shape[-1] != self.n_channels:
            raise ValueError(f"expected input [B, T, {self.n_channels}], got {tuple(x.shape)}")
        h = torch.stack([enc(x.index_select(-1, getattr(self, f"channels_{k}")))
                         for k, enc in enumerate(self.encoders)], dim=1)  # [B, M, T, d]
        b, m, t, d = h.shape
        routes: list[RouterOutput] = []
        for layer in self.layers:
            if isinstance(layer, FusionLayer):
                h, route = layer(h)
                if route is not None:
                    routes.append(route)
            else:
                h = layer(h.reshape(b * m, t, d)).view(b, m, t, d)
        logits = self.head(self.head_norm(h).mean(dim=(1, 2)))
        if not routes:
            return ModelOutput(logits, logits.new_zeros(()), {}, None)
        diagnostic = RUS_TERMS if self.has_rus else frozenset()
        aux, parts = aux_losses(routes, self.rus, self.cfg.losses, self.n_synergy, self.spec.losses,
                                diagnostic)
        stats = RoutingStats.from_routes(self.moe_positions, routes, self.n_synergy)
        return ModelOutput(logits, aux, parts, stats)


def build_model(name: str, cfg: ModelConfig, *, n_channels: int, n_timesteps: int, n_classes: int,
                modalities: dict[str, list[int]], rus: RusPrior | None = None) -> TimoeModel:
    """Build a model by name (config.MODEL_NAMES). RUS models need `rus` (train-split prior, its
    modalities in the order of `modalities`); other models use it only for diagnostic loss parts."""
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown model {name!r}; known: {list(MODEL_SPECS)}")
    spec = MODEL_SPECS[name]
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
    if rus is not None:
        if rus.n_modalities != len(modalities):
            raise ValueError(f"RUS prior has {rus.n_modalities} modalities, the data {len(modalities)}")
        if rus.modality_names is not None and list(rus.modality_names) != list(modalities):
            raise ValueError(f"RUS prior modalities {list(rus.modality_names)} differ from the data's "
                             f"{list(modalities)}")
        if rus.n_timesteps < n_timesteps:
            raise ValueError(f"RUS prior covers {rus.n_timesteps} steps, the windows {n_timesteps}")
        if spec.shuffle_rus:
            rus = rus.shuffled(torch.Generator().manual_seed(SHUFFLE_SEED))
    return TimoeModel(name, cfg, n_channels=n_channels, n_timesteps=n_timesteps, n_classes=n_classes,
                      modalities=modalities, rus=rus)
