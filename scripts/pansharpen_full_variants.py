"""Full-resolution QNR / D_λ / D_s and chroma speckle of fusion-time variants of ours vs bicubic (issue 15).

One fit per scene (``build_model("pansharpen", steps=...)``), then the fitted state fused with the default
settings and with ``chroma_window`` 1 and 2 and ``consistency_steps`` 0; QNR with the PAN degraded at the metric's
default phase and at the registration measured on the pair (as scripts/pansharpen_robustness.py). Chroma speckle
is that script's: the RMS of the high-pass (minus a 5×5 mean) of the RGB chromaticity.

    python scripts/pansharpen_full_variants.py --rs-dir /tmp/rs_pairs --steps 300 --pairs landsat7_1,wv2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pansharpen_robustness as robustness  # noqa: E402

import maugif_core  # noqa: E402
from maugif_core.metrics import evaluate_full  # noqa: E402
from maugif_core.multiplicative import MultiplicativeMAUGIF  # noqa: E402

VARIANTS = ({"chroma_window": 1}, {"chroma_window": 2}, {"consistency_steps": 0})


def speckle(image: np.ndarray) -> float:
    rgb = np.clip(image[..., :3], 0, 1).astype(np.float64)
    chroma = rgb / np.maximum(rgb.sum(axis=2, keepdims=True), 1e-6)
    high = chroma - ndimage.uniform_filter(chroma, size=(5, 5, 1))
    return float(np.sqrt((high**2).mean()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rs-dir", type=Path, required=True, help="scripts/convert_remote_sensing.py's output.")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pairs", default="landsat7_1,wv2")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for pair in args.pairs.split(","):
        a, b = robustness._read(args.rs_dir / f"{pair}_a.tif"), robustness._read(args.rs_dir / f"{pair}_b.tif")
        ratio, pan = b.shape[0] // a.shape[0], b[..., 0]
        start = time.time()
        model = maugif_core.build_model("pansharpen", steps=args.steps)
        model.fit(a, pan)
        registration = robustness.measure_registration(a, b, ratio)
        results = {"bicubic": maugif_core.baselines.bicubic(a, pan), "ours": model.fuse(a, pan)}
        for update in VARIANTS:
            variant = MultiplicativeMAUGIF(model.fitted_config().model_copy(update=update))
            variant.load_state_dict(model.state_dict())
            results["ours " + ",".join(f"{k}={v}" for k, v in update.items())] = variant.fuse(a, pan)
        for name, image in results.items():
            fused = np.clip(image, 0, 1)
            at_phase = evaluate_full(fused, a, pan, ratio)
            registered = evaluate_full(fused, a, pan, ratio, registration=registration)
            print(
                f"{pair} | {name} | QNR {at_phase['qnr']:.4f} D_l {at_phase['d_lambda']:.4f} "
                f"D_s {at_phase['d_s']:.4f} | registered QNR {registered['qnr']:.4f} D_s {registered['d_s']:.4f} "
                f"| speckle {speckle(fused):.4f}",
                flush=True,
            )
        print(pair, f"{time.time() - start:.0f} s", model.details, "measured registration", registration, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
