"""CPU cost of the MoE models against the dense Transformer of equal width.

Prints (1) the median training-step time (forward, cross-entropy + auxiliary loss, backward,
AdamW step) of each model and its ratio to `transformer` (target for `timoe`: <= 2x), and
(2) the throughput of one MoE layer against a dense FFN with the same active parameters
(hidden k * d_ff), forward + backward.

    python benchmarks/bench_models.py [--batch 64 --steps 128 --repeats 10 --threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from timoe.config import ModelConfig
from timoe.models import MoELayer, RusPrior, SoftmaxRouter, build_model
from timoe.models.layers import FeedForward


def median_time(fn: Callable[[], None], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) per call. CPU time is what the ratios use: on a
    shared machine wall time mostly measures the neighbours' load."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def random_prior(m: int, t: int, gen: torch.Generator) -> RusPrior:
    def sym(x: torch.Tensor) -> torch.Tensor:
        x = 0.5 * (x + x.transpose(0, 1))
        return x * (1 - torch.eye(m))[:, :, None]

    return RusPrior(
        torch.rand(m, t, generator=gen),
        sym(torch.rand(m, m, t, generator=gen) * 0.3),
        sym(torch.rand(m, m, t, generator=gen) * 0.3),
    )


def bench_train_step(
    names: list[str], cfg: ModelConfig, batch: int, steps: int, m: int, repeats: int
) -> None:
    channels_per = 3
    modalities = {f"mod{k}": list(range(k * channels_per, (k + 1) * channels_per)) for k in range(m)}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, m * channels_per, generator=gen)
    y = torch.randint(0, 6, (batch,), generator=gen)
    rus = random_prior(m, steps, gen)
    print(
        f"training step, B={batch} T={steps} M={m} d={cfg.d_model} d_ff={cfg.d_ff} layers={cfg.n_layers} "
        f"moe_layers={cfg.moe_layers} E={cfg.n_experts} syn={cfg.n_synergy_experts} k={cfg.top_k}"
    )
    base = None
    for name in names:
        torch.manual_seed(0)
        model = build_model(
            name,
            cfg,
            n_channels=m * channels_per,
            n_timesteps=steps,
            n_classes=6,
            modalities=modalities,
            rus=rus,
        )
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            out = model(x)
            (F.cross_entropy(out.logits, y) + out.aux_loss).backward()
            opt.step()

        wall, cpu = median_time(step, repeats)
        base = cpu if base is None else base
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"  {name:<20s} cpu {cpu * 1e3:8.1f} ms/step  x{cpu / base:4.2f} vs {names[0]}  "
            f"(wall {wall * 1e3:8.1f} ms)  params {n_params:,}"
        )


def bench_moe_layer(cfg: ModelConfig, batch: int, steps: int, m: int, repeats: int) -> None:
    d, k = cfg.d_model, cfg.top_k
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, m, steps, d, generator=gen)
    n_tokens = x.shape[0] * x.shape[1] * x.shape[2]
    print(f"MoE layer vs dense FFN of equal active parameters, {n_tokens} tokens, d={d}, fwd+bwd")
    torch.manual_seed(0)
    dense = FeedForward(d, k * cfg.d_ff, 0.0)
    layers: dict[str, torch.nn.Module] = {f"dense FFN (hidden {k}x{cfg.d_ff})": dense}
    for n_syn in (0, cfg.n_synergy_experts):
        router = SoftmaxRouter(d, cfg.n_experts, k)
        layers[f"MoE E={cfg.n_experts} k={k} syn={n_syn}"] = MoELayer(
            d, cfg.d_ff, cfg.n_experts, n_syn, cfg.n_heads, 0.0, router
        )
    base = None
    for label, layer in layers.items():
        xin = x.clone().requires_grad_(True)

        def run(layer: torch.nn.Module = layer, xin: torch.Tensor = xin) -> None:
            out = layer(xin)
            y = out if isinstance(out, torch.Tensor) else out.y
            y.square().mean().backward()

        wall, cpu = median_time(run, repeats)
        base = cpu if base is None else base
        print(
            f"  {label:<32s} {n_tokens / cpu / 1e6:6.3f} M tokens/cpu-s  cpu {cpu * 1e3:7.1f} ms  "
            f"x{cpu / base:4.2f}  (wall {wall * 1e3:7.1f} ms)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--modalities", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: CPU time = work done; 0 keeps torch's default)",
    )
    ap.add_argument("--models", default="transformer,timoe,moe,fusemoe,modality-moe,hash-moe,timoe-nolosses")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    cfg = ModelConfig(d_model=64, dropout=0.1)
    bench_train_step(args.models.split(","), cfg, args.batch, args.steps, args.modalities, args.repeats)
    bench_moe_layer(cfg, args.batch, args.steps, args.modalities, args.repeats)


if __name__ == "__main__":
    main()
