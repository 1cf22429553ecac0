"""Quick in-process training of a bundled checkpoint (no Ray): the stop-gap used for maugif_core/pretrained/mff.

    .venv/bin/python scripts/train_bundled_quick.py mff 400 400 128   # task, stage-1 steps, stage-2 steps, crop

Trains on MFI-WHU pairs 2,4,6,8-20 (pairs 1,3,5,7 are the bundled samples and stay out of training).
"""

import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import maugif_core
from maugif_core.imaging import luma, to_unit_float
from maugif_core.training import joint_random_resized_crop, make_optimizer, train_step

torch.set_num_threads(1)
task, steps1, steps2, crop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
D = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "datasets" / "MFI-WHU")
train_ids = [str(i) for i in range(1, 21) if i not in (1, 3, 5, 7)]
pairs = []
for i in train_ids:
    a = luma(to_unit_float(np.asarray(Image.open(f"{D}/source1/{i}.jpg").convert("RGB"))))
    b = luma(to_unit_float(np.asarray(Image.open(f"{D}/source2/{i}.jpg").convert("RGB"))))
    pairs.append((torch.from_numpy(a)[None], torch.from_numpy(b)[None]))
torch.manual_seed(0)
model = maugif_core.build_model(task)
gen = torch.Generator().manual_seed(0)


def batch(n=8):
    xs, ys = [], []
    for _ in range(n):
        a, b = pairs[int(torch.randint(len(pairs), (1,), generator=gen))]
        ca, cb = joint_random_resized_crop(a, b, crop, generator=gen)
        xs.append(ca)
        ys.append(cb)
    return torch.stack(xs), torch.stack(ys)


t0 = time.time()
for stage, steps in ((1, steps1), (2, steps2)):
    model.set_stage(stage)
    opt = make_optimizer(model)
    for s in range(steps):
        terms = train_step(model, opt, *batch(), stage=stage)
        if s % 100 == 0:
            print(stage, s, {k: round(v, 4) for k, v in terms.items()}, round(time.time() - t0), flush=True)
model.eval()
maugif_core.save_checkpoint(model, f"maugif_core/pretrained/{task}.safetensors")
print("saved", time.time() - t0)
