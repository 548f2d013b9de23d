"""Inference throughput at 256 x 1600 with and without test-time augmentation, side by side.

Times ``steelnb.judge.inference.predict_tensor`` (normalise, flips as one batch, forward under autocast
on CUDA, sigmoid, flip back, average) on uint8 images already on the device, for TTA none / h /
hv, and optionally the whole ``predict`` path from JPEG files (``--files``). Random weights.

    python bench/bench_infer.py                       # CPU: resnet18, batch 2, 4 images
    python bench/bench_infer.py --device cuda         # GPU: efficientnet-b4, batch 16, 512 images
    python bench/bench_infer.py --device cuda --files # also decode JPEGs from disk

On an H100-class card the target is efficientnet-b4 with hv TTA at >= 200 images/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from steelnb.data.config import HEIGHT, WIDTH  # noqa: E402
from steelnb.judge.inference import predict, predict_tensor, resolve_device  # noqa: E402
from steelnb.model.models import build_model  # noqa: E402

TARGET_HV = 200.0  # images/s, efficientnet-b4 + hv TTA on an H100-class GPU


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_tensor(
    model: torch.nn.Module, device: torch.device, tta: str, n_images: int, batch: int, warmup: int
) -> float:
    """Seconds to predict ``n_images`` images (B, 256, 1600, 3) uint8 in batches, after warm-up."""
    x = torch.randint(0, 256, (batch, HEIGHT, WIDTH, 3), dtype=torch.uint8, device=device)
    for _ in range(warmup):  # cuDNN autotuning, lazy CUDA init, allocator growth
        predict_tensor(model, x, tta)
    _sync(device)
    steps = max(1, n_images // batch)
    start = time.perf_counter()
    for _ in range(steps):
        probs, _ = predict_tensor(model, x, tta)
        probs = (probs * 255).to(torch.uint8)  # as predict(quantize=True) hands them to the CPU
    _sync(device)
    return (time.perf_counter() - start) / (steps * batch) * n_images


def time_files(model: torch.nn.Module, device: torch.device, tta: str, n_images: int, batch: int) -> float:
    """Seconds for ``predict`` over ``n_images`` JPEG files (decode, workers, transfer, quantise)."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
        for i in range(n_images):
            cv2.imwrite(str(Path(tmp) / f"{i:05d}.jpg"), np.roll(base, i, axis=1))
        for _ in predict(
            model, Path(tmp), tta=tta, batch_size=batch, device=device, quantize=True, progress=False
        ):  # warm-up pass (workers, cuDNN)
            break
        _sync(device)
        start = time.perf_counter()
        for _ in predict(
            model, Path(tmp), tta=tta, batch_size=batch, device=device, quantize=True, progress=False
        ):
            pass
        _sync(device)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--encoder", default=None, help="default: resnet18 on CPU, efficientnet-b4 on CUDA")
    p.add_argument("--arch", default="Unet")
    p.add_argument("--images", type=int, default=None, help="images per measurement (CPU 4, CUDA 512)")
    p.add_argument("--batch-size", type=int, default=None, help="CPU 2, CUDA 16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--tta", default="none,h,hv")
    p.add_argument("--files", action="store_true", help="also time predict() from JPEG files")
    p.add_argument(
        "--out", type=Path, default=None, help="default: bench/results/bench_infer_<cpu|cuda>.json"
    )
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA asked for but not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    encoder = args.encoder or ("efficientnet-b4" if cuda else "resnet18")
    n_images = args.images or (512 if cuda else 4)
    batch = args.batch_size or (16 if cuda else 2)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(args.arch, encoder, encoder_weights=None, classes=4).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    print(
        f"device: {name} | {args.arch}/{encoder} random weights | {HEIGHT}x{WIDTH} | batch {batch} | "
        f"{n_images} images | {amp} | torch {torch.__version__}"
    )
    rows = []
    for tta in args.tta.split(","):
        seconds = time_tensor(model, device, tta, n_images, batch, warmup=3 if cuda else 1)
        rows.append(("tensor", tta, n_images / seconds))
        if args.files:
            seconds = time_files(model, device, tta, n_images, batch)
            rows.append(("files", tta, n_images / seconds))
    base = {src: ips for src, tta, ips in rows if tta == "none"}
    print(f"{'input':8}{'tta':6}{'passes':>7}{'images/s':>11}{'ratio vs none':>15}")
    for src, tta, ips in rows:
        ratio = f"{ips / base[src]:.2f}" if src in base else "-"
        passes = {"none": 1, "h": 2, "hv": 4}.get(tta, 0)
        print(f"{src:8}{tta:6}{passes:>7}{ips:>11.2f}{ratio:>15}")
    if cuda:
        hv = next((ips for src, tta, ips in rows if src == "tensor" and tta == "hv"), None)
        if hv is not None:
            met = "met" if hv >= TARGET_HV and encoder == "efficientnet-b4" else "NOT met"
            print(f"target: {encoder} + hv TTA >= {TARGET_HV:.0f} images/s on the GPU: {hv:.1f} -> {met}")
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    from steelnb.batch.benchmarks import Measure, cpu_name, write_result

    how = {"tensor": "predict_tensor on uint8 tensors", "files": "predict() from JPEG files"}
    measures = []
    for src, tta, ips in rows:
        passes = {"none": 1, "h": 2, "hv": 4}.get(tta, 0)
        hv_target = src == "tensor" and tta == "hv"
        if tta == "none":
            baseline_is = "this is the baseline of the TTA rows"
        else:
            baseline_is = "TTA none" if src in base else "TTA none (not measured)"
        reason = ""
        if hv_target and not cuda:
            reason = "a GPU target, for an H100-class card; this run is on CPU"
        elif hv_target and encoder != "efficientnet-b4":
            reason = f"the target is for efficientnet-b4; this run is {encoder}"
        measures.append(
            Measure(
                f"{how[src]}: images/s, TTA {tta} ({passes} pass{'es' if passes != 1 else ''})",
                "images/s",
                ips,
                None if tta == "none" else base.get(src),
                baseline_is=baseline_is,
                target=TARGET_HV if hv_target else None,
                target_on="value",
                reason=reason,
            )
        )
    measures.append(
        Measure(
            "peak GPU memory (all the above)",
            "MiB",
            torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
            baseline_is="no baseline",
            better="lower",
            reason="" if cuda else "CUDA memory only; this run is on CPU",
        )
    )
    setting = {
        "model": f"{args.arch}/{encoder}, random weights",
        "size": f"{HEIGHT}x{WIDTH}",
        "batch": batch,
        "images per measure": n_images,
        "precision": amp,
        **({} if cuda else {"torch threads": torch.get_num_threads()}),
        "torch": torch.__version__,
    }
    kind = "cuda" if cuda else "cpu"
    path = args.out or Path(__file__).resolve().parent / "results" / f"bench_infer_{kind}.json"
    write_result(
        path,
        benchmark=f"Inference: images/s by test-time augmentation ({kind.upper()})",
        device=name if cuda else f"CPU ({cpu_name()}), {torch.get_num_threads()} thread(s)",
        setting=setting,
        measures=measures,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
