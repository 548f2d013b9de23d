"""Streaming inference on CPU, torch eager against onnxruntime, side by side: what a line can plan on.

For each of the smoke's encoders (``plans/smoke.yaml``: UNet, its input size, encoder stages,
decoder widths and evaluation TTA), a run with random weights is exported (``export.export_runs``)
and both runtimes predict the same 256x1600 JPEG sheets one batch at a time as they arrive:
decode, resize, normalise, the TTA flips, forward, sigmoid, flip back, average, upsample to
256x1600, post-processing (threshold, minimum area) and RLE, as ``steelnb predict`` does. The
random head is rescaled so that about 1% of each class's pixels, in blobs, pass the threshold, as
a trained model's masks do (an untrained head gives ~0.5 everywhere, a noise mask whose
components and RLE cost what no real sheet does). Per runtime and batch size: images/s, and the
latency of each sheet from the start of its batch to its four RLE strings, median and p99
(with few sheets the p99 is near the slowest). Prints the table and writes
``bench/results/bench_serve_cpu.json`` for the performance page.

    python bench/bench_serve.py                                  # 2 threads, batch 1 and 8, 32 sheets
    python bench/bench_serve.py --images ../shared/data/severstal-test-sample/test_images
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from steelnb.batch.benchmarks import Measure, cpu_name, write_result  # noqa: E402
from steelnb.data.config import TrainConfig  # noqa: E402
from steelnb.judge import postprocess as pp  # noqa: E402
from steelnb.judge import submission as sub  # noqa: E402
from steelnb.judge.ensemble import load_ensemble  # noqa: E402
from steelnb.judge.export import export_runs  # noqa: E402
from steelnb.judge.exported import load_exported  # noqa: E402
from steelnb.model.models import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARAMS = pp.PostParams(classes=(pp.ClassParams(0.5, 500),) * 4)  # a tuned run's kind of setting


SMOKE = yaml.safe_load((ROOT / "plans" / "smoke.yaml").read_text())["defaults"]
TTA = SMOKE.get("eval_tta", "none")  # the TTA the smoke evaluates (and tunes) its runs with


def smoke_config(encoder: str) -> TrainConfig:
    """The smoke plan's model settings for ``encoder`` (the fields TrainConfig has)."""
    fields = {k: v for k, v in SMOKE.items() if k in TrainConfig.__dataclass_fields__}
    fields = {k: v for k, v in fields.items() if not k.endswith(("_dir", "subset", "folds"))}
    return TrainConfig(**{**fields, "encoder": encoder})


def random_run(cfg: TrainConfig, folder: Path, sample: torch.Tensor) -> Path:
    """A run folder of ``cfg`` with random weights, a head rescaled to blobs, post-processing and
    the evaluation TTA in metrics.json (what ``export`` reads)."""
    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.encoder, None, 4, **cfg.model_kwargs).eval()
    with torch.no_grad():
        logits = model(sample).transpose(0, 1).reshape(4, -1)
    head = model.segmentation_head[0]
    scale = 2.0 / logits.std(1)  # (z - mean) / std > 2.33 (the 1% tail) passes sigmoid > 0.5
    with torch.no_grad():
        head.weight *= scale.view(-1, 1, 1, 1)
        head.bias.copy_((head.bias - logits.mean(1)) * scale - 2 * 2.33)
    folder.mkdir(parents=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": cfg.to_dict()}}, folder / "best.ckpt")
    PARAMS.to_yaml(folder)
    (folder / "metrics.json").write_text(json.dumps({"test": {"tta": TTA}}))
    return folder


def stream(ens, images: list[Path], tta: str, batch: int) -> tuple[float, list[float], np.ndarray]:
    """Predict ``images`` batch by batch -> (seconds in all, each sheet's latency, probabilities)."""
    latencies, probs = [], []
    start = last = time.perf_counter()
    for b in ens.predict(images, tta, batch_size=batch, device="cpu", quantize=True, progress=False):
        for k, image_id in enumerate(b.ids):
            sub.mask_rows(image_id, pp.apply(b.probs[k], PARAMS))
        now = time.perf_counter()
        latencies += [now - last] * len(b.ids)  # a sheet waits for its whole batch
        probs.append(b.probs[:1])
        last = now
    return time.perf_counter() - start, latencies, np.concatenate(probs)


def sheets(folder: Path | None, n: int, tmp: Path) -> list[Path]:
    """``n`` 256x1600 JPEG sheets: the folder's (cycled), else synthetic ones."""
    if folder is None:
        from steelnb.data.synthetic import generate

        folder = generate(tmp / "synthetic", n_images=min(n, 16), n_test=0, seed=0) / "train_images"
    found = sorted(folder.glob("*.jpg"))
    (tmp / "sheets").mkdir()
    out = []
    for i in range(n):  # unique names: a submission keys images by file name
        out.append(tmp / "sheets" / f"{i:04d}_{found[i % len(found)].name}")
        out[-1].write_bytes(found[i % len(found)].read_bytes())
    return out


def sample_input(images: list[Path], cfg: TrainConfig) -> torch.Tensor:
    """Two sheets as the model sees them (resized, normalised): (2, 3, H, W)."""
    import cv2

    from steelnb.data.images import IMAGENET_MEAN, IMAGENET_STD, read_image

    x = np.stack([cv2.resize(read_image(p), (cfg.width, cfg.height)) for p in images[:2]]) / 255.0
    x = (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2)


def measure(cfg: TrainConfig, images: list[Path], batches: list[int], tmp: Path) -> list[dict]:
    """One encoder: export, then each batch size with torch and onnxruntime, alternating."""
    run = random_run(cfg, tmp / cfg.encoder, sample_input(images, cfg))
    model = export_runs([run], tmp / f"{cfg.encoder}.onnx")["model"]
    meta = json.loads(model.with_suffix(".json").read_text())
    runtimes = {"torch eager": load_ensemble([run], "cpu"), "onnxruntime": load_exported(model).ensemble}
    rows = []
    for batch in batches:
        for (
            ens
        ) in runtimes.values():  # warm-up at this batch's shapes: allocator, oneDNN / onnxruntime kernels
            stream(ens, images[: 2 * batch], TTA, batch)
        for name, ens in runtimes.items():
            seconds, lat, _ = stream(ens, images, TTA, batch)
            rows.append(
                {
                    "encoder": cfg.encoder,
                    "runtime": name,
                    "batch": batch,
                    "images/s": len(images) / seconds,
                    "median ms": 1000 * float(np.median(lat)),
                    "p99 ms": 1000 * float(np.quantile(lat, 0.99)),
                    "export max |diff|": meta["export_parity_max_diff"],
                }
            )
            print(
                f"{cfg.encoder:18}{name:13}{batch:>6}{rows[-1]['images/s']:>10.2f}"
                f"{rows[-1]['median ms']:>12.1f}{rows[-1]['p99 ms']:>10.1f}",
                flush=True,
            )
    return rows


def _measures(rows: list[dict]) -> list[Measure]:
    """Per encoder and batch: onnxruntime against torch eager (the baseline), in each measure's direction."""
    out = []
    for r in rows:
        if r["runtime"] != "onnxruntime":
            continue
        base = next(
            b
            for b in rows
            if b["runtime"] == "torch eager" and b["encoder"] == r["encoder"] and b["batch"] == r["batch"]
        )
        what = f"{r['encoder']}, batch {r['batch']}"
        for key, unit, better in (
            ("images/s", "images/s", "higher"),
            ("median ms", "ms", "lower"),
            ("p99 ms", "ms", "lower"),
        ):
            label = {"images/s": "images/s", "median ms": "median latency", "p99 ms": "p99 latency"}[key]
            out.append(
                Measure(f"onnxruntime {label}: {what}", unit, r[key], base[key], "torch eager", better=better)
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", default="resnet50,efficientnet-b3,efficientnet-b4")
    p.add_argument("--sheets", type=int, default=32, help="sheets per measurement")
    p.add_argument("--batch", type=int, default=8, help="the batch job's batch size (the line's is 1)")
    p.add_argument("--threads", type=int, default=2, help="threads of both runtimes")
    p.add_argument("--images", type=Path, default=None, help="folder of 256x1600 JPEGs (default: synthetic)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_serve_cpu.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoders = args.encoders.split(",")
    print(f"CPU ({cpu_name()}), {args.threads} thread(s) | {args.sheets} sheets 256x1600 JPEG | smoke models")
    print(f"{'encoder':18}{'runtime':13}{'batch':>6}{'images/s':>10}{'median ms':>12}{'p99 ms':>10}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = sheets(args.images, args.sheets, Path(tmp))
        for encoder in encoders:
            rows += measure(smoke_config(encoder), images, [1, args.batch], Path(tmp))
    for r in (r for r in rows if r["runtime"] == "onnxruntime"):
        base = next(
            b
            for b in rows
            if b["runtime"] == "torch eager" and b["encoder"] == r["encoder"] and b["batch"] == r["batch"]
        )
        ratio = r["images/s"] / base["images/s"]
        verdict = "faster" if ratio > 1.05 else "slower" if ratio < 0.95 else "about the same"
        print(
            f"{r['encoder']}, batch {r['batch']}: onnxruntime {ratio:.2f}x torch eager's images/s ({verdict})"
        )
    cfg = smoke_config(encoders[0])
    setting = {
        "models": f"UNet of plans/smoke.yaml at {cfg.height}x{cfg.width}, {cfg.encoder_depth} encoder stages, "
        "random weights, head rescaled to ~1% blobs",
        "sheets": f"{args.sheets} JPEG 256x1600 ({args.images or 'synthetic'})",
        "tta": TTA,
        "postprocess": "threshold 0.5, min area 500, RLE",
        "threads": args.threads,
        "torch": torch.__version__,
    }
    write_result(
        args.out,
        benchmark="Streaming inference on CPU: torch eager vs onnxruntime (steelnb export)",
        device=f"CPU ({cpu_name()}), {args.threads} thread(s)",
        setting=setting,
        measures=_measures(rows),
        rows=rows,
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
