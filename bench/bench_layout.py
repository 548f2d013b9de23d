"""CPU inference in channels_last against the default (contiguous) layout, side by side.

Times the forward pass of the study's three encoders (UNet, random weights, eval mode, batches of
8 at the smoke's 64x416, the encoders' first four stages and its narrow decoder, as
``plans/smoke.yaml`` builds them; ``--depth 5`` for smp's whole encoder) with one thread, as the
smoke's workers run, alternating the two layouts so that both see the same machine state. Prints
milliseconds per image, the ratio and the largest difference of the logits.

    python bench/bench_layout.py
    python bench/bench_layout.py --size 32x224 --depth 5
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from steelnb.model.models import REFERENCE_ENCODERS, build_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="64x416", help="HxW of the images")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--depth", type=int, default=4, choices=(4, 5), help="encoder stages")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per layout (after one warm-up)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    decoder = (64, 32, 16, 8) if args.depth == 4 else (128, 64, 32, 16, 8)
    print(f"CPU, {args.threads} thread(s) | batch {args.batch} at {h}x{w} | {args.depth} encoder stages")
    print(f"{'encoder':18}{'contiguous':>12}{'channels_last':>15}{'ratio':>8}{'max |diff|':>12}")
    torch.manual_seed(0)
    for encoder in REFERENCE_ENCODERS:
        kw = {"encoder_depth": args.depth} if args.depth != 5 else {}
        model = build_model("Unet", encoder, None, 4, decoder_channels=decoder, **kw).eval()
        x = torch.randn(args.batch, 3, h, w)
        layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
        seconds = {k: [] for k in layouts}
        outs = {}
        with torch.inference_mode():
            for rep in range(args.repeats + 1):
                for name, fmt in layouts.items():
                    model = model.to(memory_format=fmt)
                    xx = x.contiguous(memory_format=fmt)
                    start = time.perf_counter()
                    out = model(xx)
                    if rep:  # the first pass of each layout warms it up
                        seconds[name].append(time.perf_counter() - start)
                    outs[name] = out
        ms = {k: 1000 * min(v) / args.batch for k, v in seconds.items()}
        diff = float((outs["contiguous"] - outs["channels_last"]).abs().max())
        ratio = ms["contiguous"] / ms["channels_last"]
        print(
            f"{encoder:18}{ms['contiguous']:>10.1f}ms{ms['channels_last']:>13.1f}ms{ratio:>7.2f}x{diff:>12.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
