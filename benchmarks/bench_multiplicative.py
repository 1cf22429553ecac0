"""Benchmark of the multiplicative mechanism's per-scene fitting (SPEC §1.2).

Measures, on synthetic scenes of realistic size (timings do not depend on the content):

* per-scene fitting time, reported per 1,000 steps, at 128×128 low resolution, for a pansharpening case
  (L = 6, l = 1, r = 2) and a hyperspectral case (L = 100, K = 15, l = 4, r = 4), plus the one-off scene
  preparation (basis, projection, decimation), the fit of the injection gains G, and the fusion pass under
  both fusion rules (``injection``, the default, and SPEC's ``decoder``);
* ``fit_many`` against a loop of solo fits, for S scenes of one shape, in both stacking modes (``loop``:
  per-scene convolutions inside one shared optimiser step; ``grouped``: one grouped convolution per layer for
  all scenes).

Run: ``python benchmarks/bench_multiplicative.py [--steps 100] [--scenes 4] [--threads N] [--device cpu]
[--cpu-time]``.
Prints a Markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from maugif_core.config import preset
from maugif_core.multiplicative import MultiplicativeMAUGIF, fit_many
from maugif_core.multiplicative.model import to_chw
from maugif_core.multiplicative.spectral import spectral_basis

CLOCK: Callable[[], float] = time.perf_counter


def make_scene(seed: int, bands_low: int, bands_high: int, size_low: int, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random ``(image_a (m, n, L) uint8, image_b (r·m, r·n[, l]) uint8)`` pair."""
    rng = np.random.default_rng(seed)
    size_high = size_low * ratio
    coarse = torch.from_numpy(rng.random((1, 4, size_high // 8, size_high // 8)).astype(np.float32))
    abundances = F.interpolate(coarse, size=(size_high, size_high), mode="bilinear", align_corners=False)[0]
    latent = torch.einsum("lk,khw->lhw", torch.rand(bands_low, 4), abundances) / 4
    high = torch.einsum("ml,lhw->mhw", torch.rand(bands_high, bands_low) / bands_low, latent)
    low = F.avg_pool2d(latent[None], ratio)[0]
    image_a = (low.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image_b = (high.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return image_a, (image_b[..., 0] if bands_high == 1 else image_b)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by ``fn()``, CUDA synchronised; wall time, or CPU time with ``--cpu-time``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = CLOCK()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return CLOCK() - start


def bench_single(name: str, task: str, shape: tuple[int, int, int, int], steps: int, device: torch.device) -> str:
    bands_low, bands_high, size, ratio = shape
    image_a, image_b = make_scene(0, bands_low, bands_high, size, ratio)
    model = MultiplicativeMAUGIF(preset(task, steps=steps, early_stop_patience=0)).to(device)
    prep = timed(lambda: model.prepare_scene(to_chw(image_a).to(device), to_chw(image_b).to(device), ratio), device)
    model.fit(image_a, image_b)  # warm-up (allocator, oneDNN primitive cache)
    fit_s = timed(lambda: model.fit(image_a, image_b), device)
    a_t, b_t = to_chw(image_a).to(device), to_chw(image_b).to(device)
    coeffs = torch.einsum("lk,lhw->khw", spectral_basis(a_t, model.config.rank), a_t)
    gains_s = timed(lambda: model.calibrate_injection(coeffs, b_t), device)
    fuse_s = timed(lambda: model.fuse(image_a, image_b), device)
    decoder_rule = MultiplicativeMAUGIF(model.fitted_config().model_copy(update={"fusion": "decoder"})).to(device)
    decoder_rule.load_state_dict(model.state_dict())
    fuse_decoder_s = timed(lambda: decoder_rule.fuse(image_a, image_b), device)
    return (
        f"| {name} | L={bands_low}, K={model.rank}, l={bands_high}, r={ratio} | {size}×{size} → "
        f"{size * ratio}×{size * ratio} | {(fit_s - gains_s) / steps * 1000:.1f} s | {prep * 1000:.0f} ms | "
        f"{gains_s * 1000:.0f} ms | {fuse_s * 1000:.0f} ms | {fuse_decoder_s * 1000:.0f} ms |"
    )


def bench_many(size: int, scenes: int, steps: int, device: torch.device) -> list[str]:
    pairs = [make_scene(s, 6, 1, size, 2) for s in range(scenes)]
    config = preset("pansharpen", steps=steps, early_stop_patience=0)

    def loop() -> None:
        for a, b in pairs:
            MultiplicativeMAUGIF(config).to(device).fit(a, b)

    loop()  # warm-up
    rows = []
    base = timed(loop, device)
    rows.append(f"| loop of {scenes} solo fits | {size}×{size} | {base:.2f} s | {scenes * steps / base:.0f} | 1.00× |")
    for mode in ("loop", "grouped"):
        fit_many(config, pairs, device=device, conv_mode=mode)  # warm-up
        seconds = timed(lambda mode=mode: fit_many(config, pairs, device=device, conv_mode=mode), device)
        rows.append(
            f"| fit_many, conv_mode={mode} | {size}×{size} | {seconds:.2f} s | "
            f"{scenes * steps / seconds:.0f} | {base / seconds:.2f}× |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps timed per fit (reported per 1,000)")
    parser.add_argument("--scenes", type=int, default=4, help="scenes fitted together in the fit_many comparison")
    parser.add_argument("--many-size", type=int, default=64, help="low-resolution size of the fit_many scenes")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time instead of wall time: on a shared, busy machine and with "
        "--threads 1 it approximates the wall time the run would take on an idle one",
    )
    args = parser.parse_args(argv)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, steps timed per fit: {args.steps}, "
        f"clock: {'process CPU time' if args.cpu_time else 'wall time'}, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| case | bands | low → high res | fit per 1,000 steps | prepare (Φ, Z, M↓) | injection gains G | "
        "fuse (injection) | fuse (decoder) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(bench_single("pansharpen", "pansharpen", (6, 1, 128, 2), args.steps, device))
    print(bench_single("hsi_msi", "hsi_msi", (100, 4, 128, 4), args.steps, device))
    print(f"\n{args.scenes} pansharpen scenes (L=6, l=1, r=2), {args.steps} steps each:\n")
    print("| how | low res | time | scene-steps/s | speed-up |")
    print("|---|---|---|---|---|")
    for row in bench_many(args.many_size, args.scenes, args.steps, device):
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
