"""The training loop: AdamW, warm-up + cosine schedule, clipping, early stopping, resumable.

A checkpoint is written atomically after every epoch. It holds everything the next epoch
depends on (weights, optimiser and schedule state, the RNG state that drives dropout, the
best-so-far weights and the early-stopping counter), and shuffling is derived from
(seed, epoch) alone, so a run killed at any point and resumed ends with exactly the metrics of
an uninterrupted run on CPU.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from timoe.atomic import atomic_write_bytes
from timoe.data.errors import NonFiniteError
from timoe.evaluation.metrics import classification_metrics
from timoe.training.seeding import epoch_generator

if TYPE_CHECKING:
    from timoe.config import TrainConfig

EpochCallback = Callable[[int, dict[str, float]], None]
NON_FINITE_HINT = "check model.losses.* and the prepared inputs"


class CheckpointWarning(UserWarning):
    """A resume checkpoint could not be read; it was moved aside and training started afresh."""


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    grad_clip: float
    warmup_epochs: int
    patience: int
    seed: int
    selection_metric: str = "val_accuracy"
    label_smoothing: float = 0.0
    augment_scale: float = 0.0
    augment_jitter: float = 0.0
    augment_shift: int = 0
    # Shifts are drawn in multiples of this many steps (the model's patch), so a shifted window
    # still splits into the same kind of tokens and a per-token prior can follow it exactly.
    augment_shift_unit: int = 1
    # One-hot channels of the true regime (synthetic-regimes), for MI(expert; regime) per epoch.
    regime_channels: tuple[int, ...] = ()

    @staticmethod
    def regularisation_from(train_cfg: TrainConfig, shift_unit: int = 1) -> dict[str, Any]:
        """The label-smoothing and augmentation fields of a config.TrainConfig, as keyword args;
        shift_unit: the model's patch size (shifts are drawn in whole tokens)."""
        a = train_cfg.augment
        return {
            "label_smoothing": train_cfg.label_smoothing,
            "augment_scale": a.scale,
            "augment_jitter": a.jitter,
            "augment_shift": a.shift,
            "augment_shift_unit": shift_unit,
        }

    @property
    def augments(self) -> bool:
        return self.augment_scale > 0 or self.augment_jitter > 0 or self.augment_shift > 0


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    resumed_from_epoch: int | None = None


def _cosine_with_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Class probabilities [N, n_classes] for windows x [N, T, C]."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).to(device)
        out.append(torch.softmax(model(xb).logits.float(), dim=-1).cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


def routing_metrics(stats: Any) -> dict[str, float]:
    """Expert load balance and router entropy of one epoch, averaged over MoE layers.

    expert_load_cv: coefficient of variation of the experts' share of top-k assignments (0 when
    perfectly balanced); expert_load_max: the busiest expert's share; routing_entropy in nats.
    """
    usage = stats.usage.sum(dim=1).double()  # [L, E], over modalities
    share = usage / usage.sum(dim=-1, keepdim=True).clamp_min(1)
    cv = share.std(dim=-1, unbiased=False) / share.mean(dim=-1).clamp_min(1e-12)
    return {
        "train_expert_load_cv": float(cv.mean()),
        "train_expert_load_max": float(share.max(dim=-1).values.mean()),
        "train_routing_entropy": float(stats.entropy.double().mean()),
    }


def _diagnostics_for(stats: Any, n_classes: int, n_regimes: int) -> Any:
    from timoe.models.diagnostics import RoutingDiagnostics

    return RoutingDiagnostics(stats.layers, stats.usage.shape[-1], stats.n_synergy, n_classes, n_regimes)


def _regime(xb: torch.Tensor, channels: tuple[int, ...]) -> torch.Tensor | None:
    """[B] true regime from its one-hot channels, or None when the data record none."""
    from timoe.models.prior import regime_of

    return regime_of(xb, list(channels)) if channels else None


def random_routing_drop(
    model: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device, accuracy: float
) -> float:
    """Accuracy minus the accuracy with uniform-random routing (its own generator, so the
    training RNG stream, and with it every later epoch, is untouched)."""
    from timoe.models.diagnostics import random_routing

    with random_routing(model, seed=0):
        prob = predict(model, x, device)
    return accuracy - float((prob.argmax(axis=1) == y).mean()) if len(prob) else float("nan")


def augment_batch(
    xb: torch.Tensor, settings: LoopSettings, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random gain per (window, channel), additive noise, and a circular shift per window.

    xb [B, T, C] on the CPU; the draws come from `gen` (the epoch's generator), so they are
    fixed by (seed, epoch) whatever the device and however often the run was resumed. Returns
    (augmented [B, T, C], shifts [B] or None): out[t] = x[t - shift]; the model rolls any
    position-dependent prior by the same shift so prior and signal stay aligned.
    """
    b, t, c = xb.shape
    out = xb
    shifts = None
    if settings.augment_scale > 0:
        out = out * (1.0 + settings.augment_scale * torch.randn(b, 1, c, generator=gen))
    if settings.augment_jitter > 0:
        out = out + settings.augment_jitter * torch.randn(b, t, c, generator=gen)
    if settings.augment_shift > 0:
        n = settings.augment_shift // settings.augment_shift_unit
        shifts = torch.randint(-n, n + 1, (b,), generator=gen) * settings.augment_shift_unit
        idx = (torch.arange(t)[None, :] - shifts[:, None]) % t  # [B, T]
        out = out.gather(1, idx[:, :, None].expand(b, t, c))
    return out, shifts


def _state_bytes(obj: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _check_loss(parts: dict[str, float], epoch: int, step: int) -> None:
    """Stop on a NaN/inf loss: one NaN step makes every later weight NaN, and the run would
    otherwise finish at chance level and report success (epoch counted from 1, as the log)."""
    if math.isfinite(parts["loss"]):
        return  # a detached diagnostic part may be NaN without touching the weights
    bad = [k for k, v in parts.items() if k != "loss" and not math.isfinite(v)]
    where = f" (non-finite: {', '.join(bad)})" if bad else ""
    raise NonFiniteError(
        f"non-finite training loss at epoch {epoch + 1}, step {step}{where}: {NON_FINITE_HINT}"
    )


def _check_validation(val_prob: np.ndarray, metrics: dict[str, float], selection: str, epoch: int) -> None:
    """NaN probabilities argmax to class 0, which scores as a plausible chance-level accuracy."""
    if not np.isfinite(val_prob).all():
        raise NonFiniteError(f"non-finite validation output at epoch {epoch + 1}: {NON_FINITE_HINT}")
    value = metrics.get(selection)
    if value is not None and len(val_prob) and not math.isfinite(value):
        raise NonFiniteError(f"non-finite {selection} at epoch {epoch + 1}: {NON_FINITE_HINT}")


def _set_aside(checkpoint: Path, err: BaseException) -> None:
    """Rename an unreadable checkpoint to <name>.corrupt-<UTC time> and warn, naming both.

    Kept, not deleted, so it can be inspected; moved, so the next run does not fail on it again.
    torch's own message is not repeated: it suggests weights_only=False, which would execute
    whatever the damaged file holds.
    """
    dest = checkpoint.with_name(f"{checkpoint.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    checkpoint.replace(dest)
    warnings.warn(
        f"checkpoint {checkpoint} cannot be read ({type(err).__name__}); moved to {dest}; "
        "training starts from scratch",
        CheckpointWarning,
        stacklevel=3,
    )


def _apply_checkpoint(
    state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, sched: Any, result: TrainResult
) -> tuple[int, int]:
    """Load a checkpoint's states into the run; (start epoch, bad epochs)."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    result.history = [dict(h) for h in state["history"]]
    result.best_epoch = int(state["best_epoch"])
    result.best_metric = float(state["best_metric"])
    result.best_state = state["best_state"]
    result.resumed_from_epoch = int(state["epoch"]) + 1
    return result.resumed_from_epoch, int(state["bad_epochs"])


def _resume(
    checkpoint: Path, key: str, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, result: TrainResult
) -> tuple[int, int]:
    """Resume from a checkpoint written under `key`: (start epoch, bad epochs); (0, 0) to start
    afresh. An unreadable one is set aside, and whatever it half-loaded is put back."""
    before = (_clone_state(model), opt.state_dict(), sched.state_dict(), torch.get_rng_state())
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not a checkpoint mapping")
        if state.get("key") != key:
            return 0, 0  # another configuration's run: ignored, and overwritten after one epoch
        return _apply_checkpoint(state, model, opt, sched, result)
    except Exception as err:  # torch and pickle raise many types for a damaged file; all mean the same
        model.load_state_dict(before[0])
        opt.load_state_dict(before[1])
        sched.load_state_dict(before[2])
        torch.set_rng_state(before[3])
        for f in dataclasses.fields(TrainResult):
            setattr(result, f.name, getattr(TrainResult(), f.name))
        _set_aside(checkpoint, err)
        return 0, 0


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    settings: LoopSettings,
    device: torch.device,
    *,
    checkpoint: Path | None = None,
    checkpoint_key: str = "",
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train with model selection on validation; resume from `checkpoint` if it matches.

    `checkpoint_key` identifies the run configuration: a checkpoint written under another key
    is ignored rather than resumed, so a changed config never continues a stale run.
    """
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x_train) / settings.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _cosine_with_warmup(settings.warmup_epochs * steps_per_epoch, settings.epochs * steps_per_epoch)
    )
    result = TrainResult()
    start_epoch = 0
    bad_epochs = 0
    if checkpoint is not None and checkpoint.exists():
        start_epoch, bad_epochs = _resume(checkpoint, checkpoint_key, model, opt, sched, result)
    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train.astype(np.int64))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    stopped = bad_epochs >= settings.patience
    for epoch in range(start_epoch, settings.epochs):
        if stopped:
            break
        model.train()
        gen = epoch_generator(settings.seed, epoch)
        order = torch.randperm(len(xt), generator=gen)
        sums: dict[str, float] = {}
        n_seen = 0
        routing = None  # RoutingStats summed over the epoch's batches (MoE models only)
        diagnostics = None  # RoutingDiagnostics over the epoch's batches (MoE models only)
        batches = range(0, len(order), settings.batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch}", leave=False)
        for step, i in enumerate(batches):
            idx = order[i : i + settings.batch_size]
            xb, shifts = xt[idx], None
            if settings.augments:
                xb, shifts = augment_batch(xb, settings, gen)
            xb, yb = xb.to(device), yt[idx].to(device)
            out = model(xb) if shifts is None else model(xb, shift=shifts.to(device))
            ce = loss_fn(out.logits, yb)
            loss = ce + out.aux_loss
            parts = {"loss": float(loss.detach()), "ce": float(ce.detach())}
            parts.update({f"aux_{k}": float(v.detach()) for k, v in out.aux_parts.items()})
            _check_loss(parts, epoch, step)  # before the step, so no NaN reaches the weights
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            n_seen += len(idx)
            if out.routing is not None:
                routing = out.routing if routing is None else routing.merge(out.routing)
                n_regimes = len(settings.regime_channels)
                diagnostics = diagnostics or _diagnostics_for(out.routing, n_classes, n_regimes)
                diagnostics.update(out.routes, yb, _regime(xb, settings.regime_channels))
        metrics = {f"train_{k}": v / max(1, n_seen) for k, v in sums.items()}
        if routing is not None:
            metrics.update(routing_metrics(routing))
        if diagnostics is not None:
            metrics.update(diagnostics.flat_metrics("train_"))
        val_prob = predict(model, x_val, device)
        val_pred = val_prob.argmax(axis=1) if len(val_prob) else np.zeros(0, dtype=np.int64)
        for k, v in classification_metrics(y_val, val_pred, n_classes).items():
            metrics[f"val_{k}"] = v
        _check_validation(val_prob, metrics, settings.selection_metric, epoch)
        if routing is not None and len(val_prob):
            metrics["val_random_routing_drop"] = random_routing_drop(
                model, x_val, y_val, device, float((val_pred == y_val).mean())
            )
        metrics["lr"] = float(sched.get_last_lr()[0])
        metrics["epoch"] = float(epoch)
        result.history.append(metrics)
        score = metrics.get(settings.selection_metric, -math.inf)
        if score > result.best_metric:
            result.best_metric, result.best_epoch = score, epoch
            result.best_state = _clone_state(model)
            bad_epochs = 0
        else:
            bad_epochs += 1
        stopped = bad_epochs >= settings.patience
        # Report before the checkpoint: a job killed in between redoes this epoch and reports it
        # again, so every epoch a checkpoint covers has been reported (the resumed MLflow run
        # copies the killed run's epochs before its first one).
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if checkpoint is not None:
            atomic_write_bytes(
                checkpoint,
                _state_bytes(
                    {
                        "key": checkpoint_key,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "rng": torch.get_rng_state(),
                        "history": result.history,
                        "best_epoch": result.best_epoch,
                        "best_metric": result.best_metric,
                        "best_state": result.best_state,
                        "bad_epochs": bad_epochs,
                    }
                ),
            )
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result
