"""Data benchmarks: RLE encode/decode against the common Kaggle-kernel code, and Dataset speed.

Run ``python bench/bench_data.py``. Part 1 times ``steelnb.data.rle`` side by side with the
baseline most public Severstal kernels use, on the real masks in
``../shared/data/severstal-labels/train_partial.csv`` (5,174 masks), after checking that both
give identical results. Part 2 measures Dataset samples per second on one core (no workers)
with the training transforms, on a synthetic set generated into a temporary folder.
Targets: decode >= 4x and encode >= 2x the baseline; >= 100 samples/s at 256x768.
Results are printed and written to ``bench/results/bench_data.json`` (``--out``) in the
schema of ``steelnb.batch.benchmarks.write_result``, each with its verdict (met or missed). A missed
target is a result, not a failure: the exit status is 0 once the results are written (with 1, a
plan's run reported the benchmark as failed and ran it again every time).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from steelnb.batch.benchmarks import Measure, cpu_name, write_result
from steelnb.data import rle
from steelnb.data.config import HEIGHT, WIDTH
from steelnb.data.labels import read_labels

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "severstal-labels" / "train_partial.csv"
TARGETS = {"decode": 4.0, "encode": 2.0, "samples_per_s_256x768": 100.0}


# -- the Kaggle-kernel baseline (as in most public Severstal kernels) ------------------------
def baseline_decode(mask_rle: str, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    s = mask_rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends):
        img[lo:hi] = 1
    return img.reshape(shape, order="F")


def baseline_encode(img: np.ndarray) -> str:
    pixels = img.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def _per_call(fn, items: list, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds per call; results are dropped at once, as in a data loader
    (keeping thousands of 400 kB masks alive would time the allocator's page faults instead)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - t) / len(items))
    return best


def time_rle(encodings: list[str], chunk: int = 256) -> dict[str, float]:
    """Seconds per mask for our and the baseline encode/decode; raises if any result differs."""
    total = {"decode_ours": 0.0, "decode_base": 0.0, "encode_ours": 0.0, "encode_base": 0.0}
    for k in range(0, len(encodings), chunk):
        batch = encodings[k : k + chunk]
        masks = [rle.decode(e) for e in batch]
        for e, m in zip(batch, masks):  # identical results first
            if not np.array_equal(m, baseline_decode(e)):
                raise AssertionError(f"decoders differ on mask {e[:40]}...")
            if not rle.encode(m) == baseline_encode(m) == e:
                raise AssertionError(f"encoders differ on mask {e[:40]}...")
        n = len(batch)
        total["decode_ours"] += _per_call(rle.decode, batch) * n
        total["decode_base"] += _per_call(baseline_decode, batch) * n
        total["encode_ours"] += _per_call(rle.encode, masks) * n
        total["encode_base"] += _per_call(baseline_encode, masks) * n
    return {k: v / len(encodings) for k, v in total.items()}


def samples_per_s(data_dir: Path, height: int, width: int, n: int) -> float:
    from steelnb.data.dataset import SteelDataset, train_transforms
    from steelnb.data.images import list_images

    ids = list_images(data_dir / "train_images")
    ds = SteelDataset(
        data_dir / "train_images", read_labels(data_dir / "train.csv"), ids, train_transforms(height, width)
    )
    for i in range(5):  # warm up
        ds[i]
    t = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=0, help="use only the first N real masks (0 = all)")
    parser.add_argument("--samples", type=int, default=300, help="Dataset items to time per size")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_data.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    measures: list[Measure] = []
    setting: dict[str, object] = {}
    if REAL.is_file():
        enc = read_labels(REAL)["EncodedPixels"].tolist()
        enc = enc[: args.masks] if args.masks else enc
        r = time_rle(enc)
        setting["RLE masks"] = f"{len(enc):,} real {HEIGHT}x{WIDTH} masks, identical results checked"
        print(f"RLE on {len(enc)} real masks (256x1600), identical results checked; ms per mask:")
        print(f"{'':8}{'steelnb':>10}{'baseline':>10}{'speed-up':>10}{'target':>8}")
        for op in ("decode", "encode"):
            m = Measure(
                f"RLE {op}, time per mask",
                "ms",
                r[f"{op}_ours"] * 1e3,
                r[f"{op}_base"] * 1e3,
                baseline_is=f"Kaggle-kernel RLE {op}r",
                better="lower",
                target=TARGETS[op],
            )
            measures.append(m)
            print(
                f"{op:8}{m.ours:10.3f}{m.baseline:10.3f}{m.ratio:9.1f}x{TARGETS[op]:7.0f}x  "
                f"{'met' if m.met else 'MISSED'}"
            )
    else:
        print(f"real masks not found at {REAL}: RLE part skipped")
        setting["RLE masks"] = "none (real masks not found: RLE part skipped)"
        for op in ("decode", "encode"):
            measures.append(
                Measure(
                    f"RLE {op}, time per mask",
                    "ms",
                    None,
                    baseline_is=f"Kaggle-kernel RLE {op}r",
                    better="lower",
                    target=TARGETS[op],
                    reason="skipped: the real masks (../shared/data) were not found",
                )
            )
    from steelnb.data.synthetic import generate

    setting.update(
        {
            "Dataset": "synthetic, 40 images, train transforms",
            "items timed": args.samples,
            "torch threads": 1,
            "workers": 0,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = generate(Path(tmp) / "synth", n_images=40, n_test=0, seed=0)
        print(f"Dataset with train transforms, one core (torch threads 1, no workers), {args.samples} items:")
        for h, w in ((256, 1600), (256, 768)):
            rate = samples_per_s(data, h, w, args.samples)
            key = f"samples_per_s_{h}x{w}"
            m = Measure(
                f"Dataset samples/s at {h}x{w} (read JPEG, decode masks, augment)",
                "samples/s",
                rate,
                baseline_is="no baseline (an absolute target)" if key in TARGETS else "no baseline",
                target=TARGETS.get(key),
                target_on="value",
            )
            measures.append(m)
            line = f"  {h}x{w}: {rate:7.1f} samples/s"
            if key in TARGETS:
                line += f"   target {TARGETS[key]:.0f}: {'met' if m.met else 'MISSED'}"
            print(line)
    write_result(
        args.out,
        benchmark="Data: RLE coding and Dataset speed",
        device=f"CPU ({cpu_name()}), one core",
        setting=setting,
        measures=measures,
    )
    missed = [m.name for m in measures if m.met is False]
    print(f"wrote {args.out}" + (f" (targets missed: {'; '.join(missed)})" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
