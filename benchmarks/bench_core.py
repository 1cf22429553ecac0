"""maugif_core figures for issue 2: parameter counts, MACs per pixel, CPU time per megapixel of additive fusion vs
the Laplacian-pyramid baseline (as a ratio within one run).

    .venv/bin/python benchmarks/bench_core.py [--size 1024] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from torch import nn

import maugif_core
from maugif_core import baselines


def conv_macs_per_pixel(module: nn.Module) -> int:
    """MACs per output pixel of the stride-1 'same' convolutions in ``module`` (BN, activations excluded)."""
    total = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += m.in_channels // m.groups * m.out_channels * kh * kw
    return total


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    additive = maugif_core.build_model("vif").eval()
    print("## Model size")
    print("| model | parameters | MACs / pixel |")
    print("|---|---|---|")
    for name, module in [
        ("additive encoder (each of E_A, E_B)", additive.encoder_a),
        ("additive injector decoder (each of D_B, D_A)", additive.decoder_b),
    ]:
        print(f"| {name} | {count(module):,} | {conv_macs_per_pixel(module):,} |")
    try:
        mult = maugif_core.build_model("pansharpen")
        for L, l in ((6, 1), (100, 4)):
            k = min(15, L)
            from maugif_core.multiplicative import SpectralDecoder, SpectralEncoder

            enc, dec = SpectralEncoder(k, l), SpectralDecoder(l, k)
            print(f"| spectral encoder (K={k}, l={l}; low res) | {count(enc):,} | {conv_macs_per_pixel(enc):,} |")
            print(f"| spectral decoder (K={k}, l={l}; high res) | {count(dec):,} | {conv_macs_per_pixel(dec):,} |")
        del mult
    except (ImportError, TypeError) as e:  # pragma: no cover - multiplicative API not present
        print(f"(multiplicative sizes skipped: {e})")

    rng = np.random.default_rng(0)
    size = args.size
    image_a = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    image_b = (rng.random((size, size)) * 255).astype(np.uint8)
    mp = size * size / 1e6
    t_model = timed(lambda: additive.fuse(image_a, image_b), args.repeats)
    t_model_details = timed(lambda: additive.fuse_with_details(image_a, image_b), args.repeats)
    t_lap = timed(lambda: baselines.fuse("laplacian", image_a, image_b), args.repeats)
    t_avg = timed(lambda: baselines.fuse("average", image_a, image_b), args.repeats)
    print()
    print(
        f"## CPU time per megapixel ({size}x{size} RGB+grey uint8, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}, median of {args.repeats})"
    )
    print("| method | s / MP | ratio to Laplacian |")
    print("|---|---|---|")
    for name, t in [
        ("MAUGIF additive fuse (D_B only)", t_model),
        ("MAUGIF additive fuse + both detail maps", t_model_details),
        ("Laplacian pyramid baseline", t_lap),
        ("average baseline", t_avg),
    ]:
        print(f"| {name} | {t / mp:.3f} | {t / t_lap:.2f} |")


if __name__ == "__main__":
    main()
