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
from collections.abc import Callable, Iterable, Sequence
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
    from timoe.config import Params, TrainConfig

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
    # Keep the last epoch's weights instead of the best on validation (train.select: last); then
    # validation only draws the curves, and no early stopping applies.
    select_last: bool = False
    # The validation accuracy lost under random routing, at the last epoch: a train job's curve
    # shows it; a sweep trial, which reads only its metric, skips the extra pass.
    routing_drop: bool = True
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


@dataclass(frozen=True)
class LoopData:
    """The windows the loop fits and selects on.

    x_train [N, T, C] float32, y_train [N] int class ids; x_val [M, T, C], y_val [M]; n_classes:
    the number of classes (the width of the logits).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int


@dataclass(frozen=True)
class CheckpointSpec:
    """Where the loop keeps its resume checkpoint, and the key of the run configuration.

    A checkpoint written under another key is ignored rather than resumed, so a changed config
    never continues a stale run.
    """

    path: Path
    key: str = ""


def loop_settings(
    params: Params, *, seed: int, regime_channels: Sequence[int] = (), sweep_trial: bool = False
) -> LoopSettings:
    """The loop's settings from validated params: the one place a config becomes LoopSettings.

    Optimisation and regularisation come from `params.train`, the shift unit from the model's
    patch. A train job (sweep_trial=False) runs train.epochs with train.patience and selects on
    val_accuracy; a sweep trial runs sweep.epochs, selects on sweep.metric and never stops
    early, since pruning, not early stopping, ends hopeless trials. regime_channels: the one-hot
    channels of the true regime (synthetic-regimes), for MI(expert; regime) per epoch.
    """
    tc = params.train
    if sweep_trial:
        sc = params.sweep
        budget: dict[str, Any] = {
            "epochs": sc.epochs,
            "warmup_epochs": min(tc.warmup_epochs, sc.epochs - 1),  # a short trial still reaches peak lr
            "patience": sc.epochs,
            "selection_metric": sc.metric,
            "routing_drop": False,
        }
    else:
        budget = {
            "epochs": tc.epochs,
            "warmup_epochs": tc.warmup_epochs,
            "patience": tc.patience,
            "select_last": tc.select == "last",
        }
    return LoopSettings(
        batch_size=tc.batch_size,
        lr=tc.lr,
        weight_decay=tc.weight_decay,
        grad_clip=tc.grad_clip,
        seed=seed,
        **budget,
        **LoopSettings.regularisation_from(tc, shift_unit=params.model.patch_size),
        regime_channels=tuple(regime_channels),
    )


def _optimiser(
    model: nn.Module, settings: LoopSettings, n_train: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a per-step warm-up + cosine schedule over settings.epochs epochs.

    fused=True (CPU and CUDA kernels alike): one kernel over every parameter instead of torch's
    per-tensor loop, which for these ~200 small tensors cost 5.5 ms a step against 0.8 ms (clip
    + step of timoe's 222 tensors: 8.8 -> 3.0 ms). Other devices keep torch's default."""
    params = list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused or None)
    steps_per_epoch = max(1, math.ceil(n_train / settings.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _cosine_with_warmup(settings.warmup_epochs * steps_per_epoch, settings.epochs * steps_per_epoch)
    )
    return opt, sched


@dataclass
class _EpochTally:
    """One epoch's running sums: loss parts weighted by batch size, and routing statistics."""

    n_classes: int
    regime_channels: tuple[int, ...]
    sums: dict[str, float] = field(default_factory=dict)
    n_seen: int = 0
    routing: Any = None  # RoutingStats summed over the epoch's batches (MoE models only)
    diagnostics: Any = None  # RoutingDiagnostics over the epoch's batches (MoE models only)

    def add(self, parts: dict[str, float], out: Any, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Count one batch: xb [B, T, C] as the model saw it, yb [B] its labels."""
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * len(yb)
        self.n_seen += len(yb)
        if out.routing is not None:
            self.routing = out.routing if self.routing is None else self.routing.merge(out.routing)
            n_regimes = len(self.regime_channels)
            self.diagnostics = self.diagnostics or _diagnostics_for(out.routing, self.n_classes, n_regimes)
            self.diagnostics.update(out.routes, yb, _regime(xb, self.regime_channels))

    def metrics(self) -> dict[str, float]:
        """Mean loss parts (train_*), then load balance and routing diagnostics when routed."""
        metrics = {f"train_{k}": v / max(1, self.n_seen) for k, v in self.sums.items()}
        if self.routing is not None:
            metrics.update(routing_metrics(self.routing))
        if self.diagnostics is not None:
            metrics.update(self.diagnostics.flat_metrics("train_"))
        return metrics


def _batch_starts(n: int, settings: LoopSettings, epoch: int, progress: bool) -> Iterable[int]:
    """The first index into the epoch's order of each batch, behind a progress bar if asked."""
    batches: Iterable[int] = range(0, n, settings.batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"epoch {epoch}", leave=False)
    return batches


def _loss_parts(out: Any, yb: torch.Tensor, loss_fn: nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
    """The batch loss (cross-entropy plus the model's auxiliary losses) and its parts as floats."""
    ce = loss_fn(out.logits, yb)
    loss = ce + out.aux_loss
    parts = {"loss": float(loss.detach()), "ce": float(ce.detach())}
    parts.update({f"aux_{k}": float(v.detach()) for k, v in out.aux_parts.items()})
    return loss, parts


def _optimiser_step(
    loss: torch.Tensor, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, grad_clip: float
) -> None:
    """Backpropagate, clip the gradient norm, step the optimiser and the schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()


@dataclass(frozen=True)
class _EpochContext:
    """What every epoch of one run shares: the settings, device, loss and optimiser state."""

    settings: LoopSettings
    device: torch.device
    n_classes: int
    loss_fn: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    progress: bool = False


def _train_epoch(
    model: nn.Module, xt: torch.Tensor, yt: torch.Tensor, epoch: int, ctx: _EpochContext
) -> tuple[dict[str, float], bool]:
    """One pass over the training windows xt [N, T, C], yt [N] in the (seed, epoch) order.

    Returns the epoch's train_* metrics and whether the model routed (an MoE model).
    """
    settings, device = ctx.settings, ctx.device
    model.train()
    gen = epoch_generator(settings.seed, epoch)  # shuffling and augmentation: fixed by (seed, epoch)
    order = torch.randperm(len(xt), generator=gen)
    tally = _EpochTally(ctx.n_classes, settings.regime_channels)
    for step, i in enumerate(_batch_starts(len(order), settings, epoch, ctx.progress)):
        idx = order[i : i + settings.batch_size]
        xb, shifts = xt[idx], None
        if settings.augments:
            xb, shifts = augment_batch(xb, settings, gen)
        xb, yb = xb.to(device), yt[idx].to(device)
        out = model(xb) if shifts is None else model(xb, shift=shifts.to(device))
        loss, parts = _loss_parts(out, yb, ctx.loss_fn)
        _check_loss(parts, epoch, step)  # before the step, so no NaN reaches the weights
        _optimiser_step(loss, model, ctx.opt, ctx.sched, settings.grad_clip)
        tally.add(parts, out, xb, yb)
    return tally.metrics(), tally.routing is not None


def _add_validation(
    metrics: dict[str, float],
    model: nn.Module,
    data: LoopData,
    ctx: _EpochContext,
    epoch: int,
    routed: bool,
) -> None:
    """Add the val_* metrics of the epoch's weights to `metrics`; stop on non-finite output.

    With routing, at the last scheduled epoch, also the accuracy lost under uniform-random
    routing (val_random_routing_drop): one more validation pass, which at every epoch cost a
    timoe job on HAPT about 4 s of its ~80, for a curve nothing reads (the test windows' drop is
    the reported one).
    """
    val_prob = predict(model, data.x_val, ctx.device)
    val_pred = val_prob.argmax(axis=1) if len(val_prob) else np.zeros(0, dtype=np.int64)
    for k, v in classification_metrics(data.y_val, val_pred, data.n_classes).items():
        metrics[f"val_{k}"] = v
    _check_validation(val_prob, metrics, ctx.settings.selection_metric, epoch)
    if routed and len(val_prob) and ctx.settings.routing_drop and epoch == ctx.settings.epochs - 1:
        metrics["val_random_routing_drop"] = random_routing_drop(
            model, data.x_val, data.y_val, ctx.device, float((val_pred == data.y_val).mean())
        )


def _keep_if_best(
    result: TrainResult,
    metrics: dict[str, float],
    epoch: int,
    model: nn.Module,
    selection: str,
    bad_epochs: int,
) -> int:
    """Keep the weights of an epoch that improves the selection metric; the new bad-epoch count."""
    score = metrics.get(selection, -math.inf)
    if score > result.best_metric:
        result.best_metric, result.best_epoch = score, epoch
        result.best_state = _clone_state(model)
        return 0
    return bad_epochs + 1


def _write_checkpoint(
    spec: CheckpointSpec,
    epoch: int,
    model: nn.Module,
    ctx: _EpochContext,
    result: TrainResult,
    bad_epochs: int,
) -> None:
    """Atomically write everything the next epoch depends on (see the module docstring)."""
    state = {
        "key": spec.key,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": ctx.opt.state_dict(),
        "scheduler": ctx.sched.state_dict(),
        "rng": torch.get_rng_state(),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_metric": result.best_metric,
        "best_state": result.best_state,
        "bad_epochs": bad_epochs,
    }
    atomic_write_bytes(spec.path, _state_bytes(state))


def train(
    model: nn.Module,
    data: LoopData,
    settings: LoopSettings,
    device: torch.device,
    *,
    checkpoint: CheckpointSpec | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train with model selection on validation (or keep the last epoch, settings.select_last);
    resume from `checkpoint` if its key matches.

    Returns the history and selected epoch; the model is left holding the selected weights.
    """
    model.to(device)
    opt, sched = _optimiser(model, settings, len(data.x_train))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    ctx = _EpochContext(settings, device, data.n_classes, loss_fn, opt, sched, progress)
    result = TrainResult()
    start_epoch, bad_epochs = 0, 0
    if checkpoint is not None and checkpoint.path.exists():
        start_epoch, bad_epochs = _resume(checkpoint.path, checkpoint.key, model, opt, sched, result)
    xt = torch.from_numpy(data.x_train)
    yt = torch.from_numpy(data.y_train.astype(np.int64))
    for epoch in range(start_epoch, settings.epochs):
        if bad_epochs >= settings.patience:
            break  # early stopping (also when resuming a run that had already stopped)
        metrics, routed = _train_epoch(model, xt, yt, epoch, ctx)
        _add_validation(metrics, model, data, ctx, epoch, routed)
        metrics["lr"] = float(sched.get_last_lr()[0])
        metrics["epoch"] = float(epoch)
        result.history.append(metrics)
        if settings.select_last:
            result.best_metric, result.best_epoch = metrics.get(settings.selection_metric, -math.inf), epoch
        else:
            bad_epochs = _keep_if_best(result, metrics, epoch, model, settings.selection_metric, bad_epochs)
        # Report before the checkpoint: a job killed in between redoes this epoch and reports it
        # again, so every epoch a checkpoint covers has been reported (the resumed MLflow run
        # copies the killed run's epochs before its first one).
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if checkpoint is not None:
            _write_checkpoint(checkpoint, epoch, model, ctx, result, bad_epochs)
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result
