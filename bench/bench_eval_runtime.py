"""What onnxruntime buys an evaluation on the CPU, side by side with torch.

Loads a run's model twice (``runtime="torch"`` and ``runtime="onnx"``), then predicts the run's
validation images with each in turn (its evaluation's TTA and tuning size, as tuning does), the two
alternating ``--repeats`` times, and prints the median seconds of each, their ratio, the one-off
export of the graph, and the largest difference between the two runtimes' probabilities. It reads
the validation images only (``sampling.sealed`` refuses the test split). ``--threads``: torch's
and onnxruntime's threads (default 1, as each run of a two-worker plan evaluates).

    cd notebooks && python ../bench/bench_eval_runtime.py ../weights/smoke/tu-tf_efficientnet_lite0__dice_bce__64x416

from notebooks/, where the plans ran the runs, so that their data paths hold.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def _predicted(ens, folder, batch_size: int):
    """The validation probabilities of ``ens`` at the run's tuning size and TTA."""
    from steelnb.judge.tuning import run_validation_arrays

    return run_validation_arrays(ens, folder, batch_size, "bench/bench_eval_runtime.py")[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="an evaluated run folder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from steelnb.judge.ensemble import load_run
    from steelnb.model.runfolder import RunFolder

    torch.set_num_threads(args.threads)
    folder = RunFolder.of(args.run)
    models = {rt: load_run(folder, "cpu", runtime=rt) for rt in ("torch", "onnx")}
    start = time.perf_counter()
    probs = {"onnx": _predicted(models["onnx"], folder, args.batch_size)}  # builds its graph
    export_s = time.perf_counter() - start
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.repeats):
        for name, ens in models.items():
            start = time.perf_counter()
            probs[name] = _predicted(ens, folder, args.batch_size)
            times[name].append(time.perf_counter() - start)
    for name in models:
        print(f"{name:6s} {statistics.median(times[name]):.2f} s (median of {args.repeats})")
    scale = 255.0 if probs["torch"].dtype == np.uint8 else 1.0  # tuning keeps them as uint8 x255
    diff = float(np.abs(probs["torch"].astype(np.float32) - probs["onnx"].astype(np.float32)).max()) / scale
    ratio = statistics.median(times["torch"]) / statistics.median(times["onnx"])
    print(f"first onnx pass (graph export and check included): {export_s:.2f} s")
    print(f"largest probability difference: {diff:.2e} (one uint8 step: {1 / 255:.2e})")
    print(
        f"prediction time, torch / onnx: {ratio:.2f}x on {len(probs['torch'])} validation images, "
        f"{args.threads} thread(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
