"""Models: per-modality encoders, MoE layers, routers (softmax, Laplace, RUS-aware), auxiliary
losses, routing statistics and the named models of config.MODEL_NAMES."""

from timoe.models.losses import (
    LOSS_TERMS,
    aux_losses,
    jsd,
    load_balance_loss,
    redundancy_loss,
    synergy_loss,
    uniqueness_loss,
)
from timoe.models.model import MODEL_SPECS, SHUFFLE_SEED, ModelOutput, TimoeModel, build_model
from timoe.models.moe import MoELayer, MoEOutput, SynergyExpert
from timoe.models.prior import BatchPrior, PriorProvider, RoutingContext
from timoe.models.routers import (
    HashRouter,
    LaplaceRouter,
    ModalityRouter,
    OracleRouter,
    Router,
    RouterOutput,
    RusAwareRouter,
    SoftmaxRouter,
    route_from_logits,
)
from timoe.models.rus import RusPrior, map_lags_to_steps
from timoe.models.stats import RoutingStats, interaction_regime_usage, regime_masks

__all__ = [
    "LOSS_TERMS",
    "MODEL_SPECS",
    "SHUFFLE_SEED",
    "BatchPrior",
    "HashRouter",
    "LaplaceRouter",
    "MoELayer",
    "MoEOutput",
    "ModalityRouter",
    "ModelOutput",
    "OracleRouter",
    "PriorProvider",
    "Router",
    "RouterOutput",
    "RoutingContext",
    "RoutingStats",
    "RusAwareRouter",
    "RusPrior",
    "SoftmaxRouter",
    "SynergyExpert",
    "TimoeModel",
    "aux_losses",
    "build_model",
    "interaction_regime_usage",
    "jsd",
    "load_balance_loss",
    "map_lags_to_steps",
    "redundancy_loss",
    "regime_masks",
    "route_from_logits",
    "synergy_loss",
    "uniqueness_loss",
]
