"""Seeds sharing a process (issue 19): K copies of a model trained in one vmapped step against K
ordinary training steps one after another, one torch thread, the same batches.

The shared step stacks the K models' parameters (`torch.func.stack_module_state`), takes each
copy's gradient of its own loss on its own batch under `vmap(grad_and_value(...),
randomness="different")`, clips each copy's gradient norm separately and steps one fused AdamW
over the stacked tensors: what a K-seed job would run. Per-op overhead is what sharing saves; the
benchmark says whether that outweighs vmap's own costs on this CPU.

Dropout: timoe's CPU dropout (`models.layers.keep_mask`) draws in place, which vmap cannot give a
different draw per copy, so the vmapped step runs torch's own dropout (the sequential one keeps
timoe's). Run with `--dropout 0` for HAPT's setting, where no dropout is drawn at all.
MoE models route with data-dependent shapes (the dispatch's per-expert counts), which vmap cannot
batch; they are reported as such.

    python benchmarks/bench_seeds.py [--models transformer,moe] [--setting fixed|study]
                                     [--seeds 5] [--dropout 0] [--repeats 6]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models

from timoe.models import layers

PARAMS = bench_models.REPO / "params.yaml"


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall milliseconds per call after `warmup` untimed calls (bench_models' timer)."""
    return 1e3 * bench_models._median_times(fn, repeats, warmup)[1]


@contextlib.contextmanager
def vmappable_dropout() -> Iterator[None]:
    """Route timoe's dropout through F.dropout, which vmap batches with a draw per copy."""
    original = layers.dropout
    layers.dropout = lambda x, p, training: F.dropout(x, p, training)
    try:
        yield
    finally:
        layers.dropout = original


def build_copies(name: str, setting: str, seeds: int, dropout: float | None):
    """`seeds` models of one kind (initialised from seeds 0..K-1) with their own random batches;
    dropout None keeps the setting's. Returns (models, xs, ys, loop settings)."""
    models, xs, ys = [], [], []
    for k in range(seeds):
        torch.manual_seed(k)
        model, x, y, settings = bench_models._build(name, setting, PARAMS)
        if dropout is not None:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = dropout
        model.train()
        # Distinct batches per copy, as K seeds shuffle differently.
        gen = torch.Generator().manual_seed(1000 + k)
        xs.append(x + 0.1 * torch.randn(x.shape, generator=gen))
        models.append(model)
        ys.append(y)
    return models, xs, ys, settings


def sequential_step(models, xs, ys, settings) -> Callable[[], None]:
    """The K ordinary training steps (bench_models.training_step), one after another."""
    steps = [bench_models.training_step(m, x, y, settings) for m, x, y in zip(models, xs, ys, strict=True)]

    def step() -> None:
        for s in steps:
            s()

    return step


def vmapped_gradients(models, settings):
    """The K copies' stacked parameters as leaves, their buffers, and grads(leaves, buffers, x, y)
    -> (per-copy gradients {name: [K, ...]}, per-copy losses [K]) for x [K, B, T, C], y [K, B]."""
    params, buffers = stack_module_state(models)
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    template = copy.deepcopy(models[0]).to("meta")

    def loss(p, b, xb, yb):
        out = functional_call(template, (p, b), (xb,))
        return F.cross_entropy(out.logits, yb, label_smoothing=settings.label_smoothing) + out.aux_loss

    grads_of = vmap(grad_and_value(loss), randomness="different")

    def grads(leaves, buffers, x, y):
        with vmappable_dropout():
            return grads_of(leaves, buffers, x, y)

    return leaves, buffers, grads


def shared_step(models, xs, ys, settings) -> tuple[Callable[[], Tensor], dict[str, Tensor]]:
    """One vmapped step of all K copies: per-copy loss and gradient, per-copy clipping, one fused
    AdamW over the stacked parameters [K, ...]. Returns the step (-> the K losses before it) and
    the stacked parameters it updates."""
    leaves, buffers, grads_of = vmapped_gradients(models, settings)
    x, y = torch.stack(xs), torch.stack(ys)  # [K, B, T, C], [K, B]
    k = len(models)
    opt = torch.optim.AdamW(
        list(leaves.values()), lr=settings.lr, weight_decay=settings.weight_decay, fused=True
    )

    def step() -> Tensor:
        grads, losses = grads_of(leaves, buffers, x, y)
        norms = torch.stack([g.reshape(k, -1).norm(dim=1) for g in grads.values()]).norm(dim=0)  # [K]
        scale = (settings.grad_clip / (norms + 1e-6)).clamp(max=1.0)  # each copy clipped alone
        for name, p in leaves.items():
            p.grad = grads[name] * scale.view(-1, *([1] * (p.dim() - 1)))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return losses

    return step, leaves


def measure(name: str, args: argparse.Namespace) -> str:
    """One table row: sequential and shared ms per K-seed step, and the ratio."""
    models, xs, ys, settings = build_copies(name, args.setting, args.seeds, args.dropout)
    sequential = median_ms(sequential_step(models, xs, ys, settings), args.repeats)
    try:
        shared = median_ms(shared_step(models, xs, ys, settings)[0], args.repeats)
    except RuntimeError as err:  # data-dependent shapes (MoE dispatch) cannot be vmapped
        reason = str(err).splitlines()[0][:60]
        return f"{name:14s} {sequential:13.1f} {'-':>10s} {'-':>9s}  not vmappable: {reason}"
    return f"{name:14s} {sequential:13.1f} {shared:10.1f} {sequential / shared:8.2f}x"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="transformer,moe")
    ap.add_argument("--setting", choices=sorted(bench_models.SETTINGS), default="fixed")
    ap.add_argument("--seeds", type=int, default=5, help="copies sharing the process (K)")
    ap.add_argument("--dropout", type=float, default=None, help="override the setting's dropout")
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.repeats < 1:
        ap.error("--seeds and --repeats must be >= 1")
    torch.set_num_threads(1)
    warnings_off()
    print(
        f"{args.seeds} seeds, setting {args.setting}, dropout {args.dropout}, one thread,",
        "ms per step of all seeds",
    )
    print(f"{'model':14s} {'sequential':>13s} {'shared':>10s} {'speed-up':>9s}")
    for name in args.models.split(","):
        print(measure(name, args), flush=True)  # each row as it is measured


def warnings_off() -> None:
    """vmap warns once per op that falls back to a loop (CPU flash attention has no batching
    rule in torch 2.13); the table states the cost, the warnings would bury it."""
    import warnings

    warnings.filterwarnings("ignore", message="There is a performance drop")


if __name__ == "__main__":
    main()
