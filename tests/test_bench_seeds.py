"""benchmarks/bench_seeds.py: the vmapped K-seed step computes each copy's own gradient, and the
benchmark prints its table (MoE models marked as not vmappable)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_seeds


def test_vmapped_gradients_equal_each_copys_own() -> None:
    torch.set_num_threads(1)
    models, xs, ys, settings = bench_seeds.build_copies("transformer", "study", seeds=2, dropout=0.0)
    leaves, buffers, grads_of = bench_seeds.vmapped_gradients(models, settings)
    grads, losses = grads_of(leaves, buffers, torch.stack(xs), torch.stack(ys))
    for k, (model, x, y) in enumerate(zip(models, xs, ys, strict=True)):
        model.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out.logits, y, label_smoothing=settings.label_smoothing) + out.aux_loss
        loss.backward()
        assert torch.allclose(losses[k], loss.detach(), atol=1e-5)
        for name, p in model.named_parameters():
            assert torch.allclose(grads[name][k], p.grad, atol=1e-5, rtol=1e-4), name


def test_shared_step_trains_each_copy_on_its_own_batch() -> None:
    torch.set_num_threads(1)
    models, xs, ys, settings = bench_seeds.build_copies("transformer", "study", seeds=2, dropout=0.0)
    step, leaves = bench_seeds.shared_step(models, xs, ys, settings)
    first = step()
    for _ in range(8):
        last = step()
    assert first.shape == (2,) and bool((last < first).all()), (first, last)
    w = next(p for name, p in leaves.items() if name.endswith("head.weight"))
    assert not torch.equal(w[0], w[1])  # the copies stay distinct models


def test_table(capsys) -> None:
    bench_seeds.main(["--models", "transformer,moe", "--setting", "study", "--seeds", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert rows["transformer"].endswith("x") and float(rows["transformer"].split()[-1][:-1]) > 0
    assert "not vmappable" in rows["moe"]
