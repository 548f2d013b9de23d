"""Training throughput and peak memory: the reference's recipe vs ours, per encoder, side by side.

(a) reference: fp32, NCHW, 256x768, batch 8, torch's default Adam;  (b) ours: fused Adam, and on
CUDA mixed precision (bf16 where the card has it, else fp16 with loss scaling) + channels_last,
same size and batch;  (c) ours at full
256x1600 with the largest power-of-two batch that fits (CUDA only), and batch 16 for the memory
target. Inputs are random tensors: data loading is benched elsewhere. One training step =
forward, DiceBCE loss, backward, Adam step (the encoder/decoder+head groups of steelnb.model.training).

    python bench/bench_train.py --device cuda                      # on a GPU: full sizes
    python bench/bench_train.py --device cpu --size 64x192 --batch 2 --steps 3   # CPU smoke

On CPU training runs fp32 NCHW like the reference (channels_last gained nothing there), so the ratio
is the fused Adam's alone (~1.1); the targets are GPU ones:
EfficientNet-B4 ours >= 2.5x reference images/s on the same card, and B4 at 256x1600 batch 16
under 15 GB peak. Results go to ``bench/results/bench_train_<cpu|cuda>.json`` (``--out``) in the
schema of ``steelnb.batch.benchmarks.write_result``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from steelnb.batch.benchmarks import Measure, cpu_name, write_result  # noqa: E402
from steelnb.data.config import REFERENCE_ENCODERS  # noqa: E402
from steelnb.model.losses import build_loss  # noqa: E402
from steelnb.model.models import build_model  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    encoder: str,
    height: int,
    width: int,
    batch: int,
    ours: bool,
    device: torch.device,
    steps: int,
    warmup: int,
    compile_model: bool = False,
) -> dict[str, Any]:
    """Images/s over ``steps`` timed training steps (after ``warmup``) and peak CUDA memory (MB)."""
    model = build_model("Unet", encoder, encoder_weights=None, classes=4).to(device)
    enc_ids = {id(p) for p in model.encoder.parameters()}
    groups = [
        {"params": list(model.encoder.parameters()), "lr": 1e-3},
        {"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr": 1e-2},
    ]
    # ours: torch's fused Adam, as steelnb.model.training uses on CPU and CUDA; the reference: the default
    opt = torch.optim.Adam(groups, fused=ours and device.type in ("cpu", "cuda"))
    loss_fn = build_loss("dice_bce")
    # as steelnb.model.training: channels_last and mixed precision on CUDA only
    fmt = torch.channels_last if ours and device.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = torch.compile(model) if compile_model else model
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if use_bf16 else torch.float16
    # as steelnb.model.training does: mixed precision on CUDA only, fp32 on CPU (where it gains nothing)
    amp_on = ours and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp_on and dtype == torch.float16)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, height, width, generator=g).to(device).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 4, height, width, generator=g) > 0.9).float().to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        amp = torch.autocast(device.type, dtype=dtype) if amp_on else contextlib.nullcontext()
        with amp:
            loss = loss_fn(step_model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"images_per_s": batch * steps / dt, "peak_mb": peak, "batch": batch}


def largest_batch(
    encoder: str, height: int, width: int, device: torch.device, limit: int, compile_model: bool
) -> int:
    """Largest power-of-two batch (<= limit) whose training step fits in CUDA memory; 0 if none."""
    best, batch = 0, 1
    while batch <= limit:
        try:
            bench(encoder, height, width, batch, True, device, steps=1, warmup=1, compile_model=compile_model)
            best, batch = batch, batch * 2
        except torch.cuda.OutOfMemoryError:
            break
    gc.collect()
    torch.cuda.empty_cache()
    return best


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--encoders", nargs="+", default=list(REFERENCE_ENCODERS))
    p.add_argument("--size", default="256x768", help="HxW of the reference comparison")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--full-size", default="256x1600")
    p.add_argument("--max-batch", type=int, default=64, help="upper bound of the batch search at full size")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile our model")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument(
        "--out", type=Path, default=None, help="default: bench/results/bench_train_<cpu|cuda>.json"
    )
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device visible", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    h, w = (int(v) for v in a.size.split("x"))
    fh, fw = (int(v) for v in a.full_size.split("x"))
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    prec = (
        ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        if device.type == "cuda"
        else "fp32 (as training on CPU)"
    )
    layout = " + channels_last" if device.type == "cuda" else ", NCHW"
    print(
        f"device: {card}; reference = fp32 NCHW; ours = {prec}{layout}"
        f"{' + torch.compile' if a.compile else ''}; {h}x{w} batch {a.batch}; "
        f"{a.steps} timed steps after {a.warmup} warm-up"
    )
    cpu = device.type != "cuda"
    ref_is = "the reference's training step, fp32 NCHW"
    no_cuda = "CUDA memory only; this run is on CPU"
    speed, memory, batches, grid = [], [], [], []
    rows, targets = [], []
    for enc in a.encoders:
        is_b4 = enc == "efficientnet-b4"
        ref = bench(enc, h, w, a.batch, False, device, a.steps, a.warmup)
        our = bench(enc, h, w, a.batch, True, device, a.steps, a.warmup, a.compile)
        row = [
            enc,
            f"{ref['images_per_s']:.2f}",
            _mb(ref["peak_mb"]),
            f"{our['images_per_s']:.2f}",
            _mb(our["peak_mb"]),
            f"{our['images_per_s'] / ref['images_per_s']:.2f}x",
        ]
        speed.append(
            Measure(
                f"{enc}: training images/s at {h}x{w}, batch {a.batch}",
                "images/s",
                our["images_per_s"],
                ref["images_per_s"],
                baseline_is=ref_is,
                target=2.5 if is_b4 else None,
                reason="a GPU target; this run is on CPU" if is_b4 and cpu else "",
            )
        )
        memory.append(
            Measure(
                f"{enc}: peak memory at {h}x{w}, batch {a.batch}",
                "MB",
                our["peak_mb"],
                ref["peak_mb"],
                baseline_is=ref_is,
                better="lower",
                reason=no_cuda if cpu else "",
            )
        )
        record = {
            "encoder": enc,
            "reference images/s": ref["images_per_s"],
            "reference peak MB": ref["peak_mb"],
            "ours images/s": our["images_per_s"],
            "ours peak MB": our["peak_mb"],
        }
        if device.type == "cuda":
            nb = largest_batch(enc, fh, fw, device, a.max_batch, a.compile)
            full = bench(enc, fh, fw, nb, True, device, a.steps, a.warmup, a.compile) if nb else None
            row += [str(nb), f"{full['images_per_s']:.2f}" if full else "-", _mb(full and full["peak_mb"])]
            batches.append(
                Measure(
                    f"{enc}: largest batch at {fh}x{fw} (powers of two up to {a.max_batch}, ours)",
                    "images",
                    nb,
                    baseline_is="no baseline",
                )
            )
            record.update(
                {
                    f"max batch {fh}x{fw}": nb,
                    "full images/s": full["images_per_s"] if full else None,
                    "full peak MB": full["peak_mb"] if full else None,
                }
            )
            if is_b4:
                try:
                    b16 = bench(enc, fh, fw, 16, True, device, 2, 1, a.compile)["peak_mb"]
                except torch.cuda.OutOfMemoryError:
                    b16 = float("inf")
                targets.append(
                    f"B4 {fh}x{fw} batch 16 peak {_mb(b16)} MB < 15,000 MB: "
                    f"{'MET' if b16 < 15000 else 'NOT MET'}"
                )
        else:
            row += ["n/a", "n/a", "n/a"]
            batches.append(
                Measure(
                    f"{enc}: largest batch at {fh}x{fw} (ours)",
                    "images",
                    None,
                    baseline_is="no baseline",
                    reason="the batch search fills CUDA memory; this run is on CPU",
                )
            )
            b16 = None
        if is_b4:
            batches.append(
                Measure(
                    f"{enc}: peak memory at {fh}x{fw}, batch 16 (ours)",
                    "MB",
                    b16,
                    baseline_is="no baseline (an absolute target)",
                    better="lower",
                    target=15000.0,
                    target_on="value",
                    reason=no_cuda if cpu else "",
                )
            )
            ratio = our["images_per_s"] / ref["images_per_s"]
            verdict = (
                ("MET" if ratio >= 2.5 else "NOT MET") if device.type == "cuda" else "n/a on CPU (GPU target)"
            )
            targets.insert(0, f"B4 ours/reference images/s {ratio:.2f}x >= 2.5x: {verdict}")
        rows.append(row)
        grid.append(record)
    head = [
        "encoder",
        "ref img/s",
        "ref peak MB",
        "ours img/s",
        "ours peak MB",
        "ours/ref",
        f"max batch {fh}x{fw}",
        "full img/s",
        "full peak MB",
    ]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.rjust(wd) if i else c.ljust(wd) for i, (c, wd) in enumerate(zip(r, widths))))
    for t in targets:
        print("target:", t)
    kind = "cuda" if device.type == "cuda" else "cpu"
    out = a.out or Path(__file__).resolve().parent / "results" / f"bench_train_{kind}.json"
    setting = {
        "reference": "fp32, NCHW",
        "ours": f"{prec}{layout}{' + torch.compile' if a.compile else ''}",
        "size": f"{h}x{w}",
        "batch": a.batch,
        **({"full size": f"{fh}x{fw}"} if device.type == "cuda" else {"torch threads": a.threads}),
        "timed steps": a.steps,
        "warm-up steps": a.warmup,
        "inputs": "random tensors (data loading is benched apart)",
        "torch": torch.__version__,
    }
    write_result(
        out,
        benchmark=f"Training step: ours vs the reference's recipe ({kind.upper()})",
        device=card if device.type == "cuda" else f"CPU ({cpu_name()}), {a.threads} torch thread(s)",
        setting=setting,
        measures=speed + memory + batches,
        rows=grid if device.type == "cuda" else None,  # on CPU the measures hold the whole grid
    )
    print(f"wrote {out}")
    if device.type == "cpu":
        print(
            "note: CPU run (peak memory is measured on CUDA only); on CPU training runs the reference's "
            "fp32 NCHW setting (channels_last measured 0.84-1.02x there), so the ratio is the fused Adam's alone"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
