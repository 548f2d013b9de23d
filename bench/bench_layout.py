"""CPU inference (or, with ``--train``, training steps) in channels_last against the default
(contiguous) layout, side by side.

Times the forward pass of the study's three encoders (UNet, random weights, eval mode, batches of
8 at the smoke's 64x416, the encoders' first four stages and its narrow decoder, as
``plans/smoke.yaml`` builds them; ``--depth 5`` for smp's whole encoder) with one thread, as the
smoke's workers run, alternating the two layouts so that both see the same machine state. Prints
milliseconds per image, the ratio and the largest difference of the logits.

    python bench/bench_layout.py
    python bench/bench_layout.py --size 32x224 --depth 5
    python bench/bench_layout.py --train      # training steps at the smoke's crops: 4 x 64x128

``--train`` times one training step (forward, Dice+BCE, backward, Adam step) per pass, in train
mode, as ``steelnb.model.training`` runs it, for the study's encoders and EfficientNet-Lite0. In
train mode smp's EfficientNet-B3/B4 drop blocks at random (stochastic depth), so their logits'
difference there is that draw's, not the layout's.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from steelnb.model.losses import build_loss  # noqa: E402
from steelnb.model.models import REFERENCE_ENCODERS, build_model  # noqa: E402

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _timed(model: torch.nn.Module, x: torch.Tensor, repeats: int, train: bool) -> tuple[dict, dict]:
    """Seconds per pass for each layout, alternating them, and each layout's last output."""
    seconds: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    outs: dict[str, torch.Tensor] = {}
    loss = build_loss("dice_bce")
    target = (torch.rand(x.shape[0], 4, *x.shape[2:]) > 0.9).float()
    for rep in range(repeats + 1):
        for name, fmt in LAYOUTS.items():
            model = model.to(memory_format=fmt)
            xx = x.contiguous(memory_format=fmt)
            if train:  # the same start for both layouts: a fresh optimiser, the step not kept
                state = {k: v.clone() for k, v in model.state_dict().items()}
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)
                start = time.perf_counter()
                out = model(xx)
                loss(out, target).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                elapsed = time.perf_counter() - start
                model.load_state_dict(state)
            else:
                start = time.perf_counter()
                with torch.inference_mode():
                    out = model(xx)
                elapsed = time.perf_counter() - start
            if rep:  # the first pass of each layout warms it up
                seconds[name].append(elapsed)
            outs[name] = out.detach()
    return seconds, outs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="", help="HxW of the images (default 64x416; 64x128 with --train)")
    p.add_argument("--batch", type=int, default=0, help="images per pass (default 8; 4 with --train)")
    p.add_argument("--train", action="store_true", help="time training steps instead of inference")
    p.add_argument("--depth", type=int, default=4, choices=(4, 5), help="encoder stages")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per layout (after one warm-up)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    size, batch = args.size or ("64x128" if args.train else "64x416"), args.batch or (4 if args.train else 8)
    h, w = (int(v) for v in size.lower().split("x"))
    decoder = (64, 32, 16, 8) if args.depth == 4 else (128, 64, 32, 16, 8)
    what = "training steps" if args.train else "inference"
    print(f"CPU, {args.threads} thread(s) | {what}, batch {batch} at {h}x{w} | {args.depth} encoder stages")
    print(f"{'encoder':26}{'contiguous':>12}{'channels_last':>15}{'ratio':>8}{'max |diff|':>12}")
    encoders = list(REFERENCE_ENCODERS) + (["tu-tf_efficientnet_lite0"] if args.train else [])
    for encoder in encoders:
        torch.manual_seed(0)
        kw = {"encoder_depth": args.depth} if args.depth != 5 else {}
        model = build_model("Unet", encoder, None, 4, decoder_channels=decoder, **kw)
        model = model.train() if args.train else model.eval()
        x = torch.randn(batch, 3, h, w)
        seconds, outs = _timed(model, x, args.repeats, args.train)
        ms = {k: 1000 * min(v) / batch for k, v in seconds.items()}
        diff = float((outs["contiguous"] - outs["channels_last"]).abs().max())
        ratio = ms["contiguous"] / ms["channels_last"]
        print(
            f"{encoder:26}{ms['contiguous']:>10.1f}ms{ms['channels_last']:>13.1f}ms{ratio:>7.2f}x{diff:>12.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
