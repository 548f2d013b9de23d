"""The benchmark result schema (steelnb.batch.benchmarks): ratios, verdicts, atomic writes and the
performance page's markdown; and that bench/bench_layout.py runs. No assertion is on a measured
speed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from steelnb.batch.benchmarks import Measure, bench_markdown, format_quantity, format_ratio, write_result


def test_ratio_is_above_one_when_ours_is_better_in_either_direction() -> None:
    faster = Measure("decode", "ms", 0.05, 0.2, better="lower")  # lower time is better
    assert faster.ratio == pytest.approx(4.0)
    slower = Measure("decode", "ms", 0.4, 0.2, better="lower")
    assert slower.ratio == pytest.approx(0.5)
    more = Measure("train", "images/s", 300.0, 100.0, better="higher")
    assert more.ratio == pytest.approx(3.0)
    fewer = Measure("train", "images/s", 50.0, 100.0)  # higher is better by default
    assert fewer.ratio == pytest.approx(0.5)
    assert Measure("rate", "samples/s", 120.0).ratio is None  # no baseline, no ratio
    assert Measure("peak", "MB", None, 900.0, better="lower").ratio is None  # not measured here
    assert Measure("peak", "MB", math.inf, 900.0, better="lower").ratio is None


def test_target_verdicts_on_ratio_and_on_value() -> None:
    on_ratio = dict(unit="ms", baseline=0.2, better="lower", target=4.0)
    assert Measure("decode", ours=0.04, **on_ratio).met is True  # 5x
    assert Measure("decode", ours=0.1, **on_ratio).met is False  # 2x
    assert Measure("decode", ours=0.1, **on_ratio).verdict == "missed"
    assert Measure("decode", ours=0.04, **on_ratio).target_text == ">= 4x"

    rate = Measure("rate", "samples/s", 120.0, target=100.0, target_on="value")
    assert (rate.met, rate.verdict, rate.target_text) == (True, "met", ">= 100 samples/s")
    assert Measure("rate", "samples/s", 80.0, target=100.0, target_on="value").met is False

    memory = dict(unit="MB", better="lower", target=15000.0, target_on="value")
    assert Measure("peak", ours=12000.0, **memory).met is True
    assert Measure("peak", ours=16000.0, **memory).met is False
    assert Measure("peak", ours=math.inf, **memory).met is False  # out of memory
    assert Measure("peak", ours=12000.0, **memory).target_text == "<= 15,000 MB"

    gpu = Measure("b4", "images/s", 3.0, 1.0, target=2.5, reason="a GPU target; this run is on CPU")
    assert gpu.met is None  # 3x, yet the target does not apply on this device
    assert gpu.verdict == "n/a (a GPU target; this run is on CPU)"
    assert Measure("b4", "images/s", None, target=2.5).met is None
    untargeted = Measure("rate", "samples/s", 50.0)
    assert (untargeted.met, untargeted.verdict, untargeted.target_text) == (None, "", None)
    with pytest.raises(ValueError, match="better"):
        Measure("x", "ms", 1.0, better="faster")
    with pytest.raises(ValueError, match="target_on"):
        Measure("x", "ms", 1.0, target_on="speed")


def test_numbers_carry_units_at_a_sensible_precision() -> None:
    assert format_quantity(0.04551, "ms") == "0.0455 ms"
    assert format_quantity(3.049, "images/s") == "3.05 images/s"
    assert format_quantity(204.8, "samples/s") == "205 samples/s"
    assert format_quantity(15000.0, "MB") == "15,000 MB"
    assert format_quantity(16, "images") == "16 images"
    assert format_quantity(None, "MB") == "n/a"
    assert [format_ratio(r) for r in (4.73, 0.539, 1.0, 12.4, None)] == ["4.7x", "0.54x", "1.0x", "12x", "—"]


def _write_example(path: Path) -> Path:
    return write_result(
        path,
        benchmark="Data: RLE coding",
        device="CPU (Test CPU), one core",
        setting={"masks": 1000, "size": "256x1600", "torch_threads": 1},
        measures=[
            Measure("RLE decode", "ms", 0.04551, 0.2151, "Kaggle-kernel RLE decoder", "lower", 4.0),
            Measure("RLE encode", "ms", 0.2368, 0.3791, "Kaggle-kernel RLE encoder", "lower", 2.0),
            Measure("rate", "samples/s", 210.2, None, "no baseline", target=100.0, target_on="value"),
            Measure("peak memory", "MB", None, reason="CUDA memory only; this run is on CPU"),
        ],
        rows=[{"encoder": "resnet50", "images/s": 3.05, "peak MB": None}],
    )


def test_written_result_holds_the_schema_and_renders_as_a_measure_table(tmp_path: Path) -> None:
    path = _write_example(tmp_path / "bench_data.json")
    data = json.loads(path.read_text())
    assert {"schema", "benchmark", "device", "date", "setting", "measures", "rows"} <= set(data)
    decode = data["measures"][0]
    assert decode["ratio"] == pytest.approx(0.2151 / 0.04551)
    assert (decode["met"], decode["verdict"], decode["target_text"]) == (True, "met", ">= 4x")
    assert Measure.from_dict(decode) == Measure(
        "RLE decode", "ms", 0.04551, 0.2151, "Kaggle-kernel RLE decoder", "lower", 4.0
    )

    md = bench_markdown(tmp_path)
    lines = md.splitlines()
    assert lines[0] == "## Data: RLE coding"
    device_line = next(line for line in lines if line.startswith("**Device:**"))
    assert "CPU (Test CPU), one core" in device_line
    assert "masks: 1,000" in device_line and "torch threads: 1" in device_line
    assert data["date"] in device_line and "bench/results/bench_data.json" in device_line
    assert "| measure | ours | baseline | ratio | target | verdict |" in lines
    assert "| RLE decode | 0.0455 ms | 0.215 ms (Kaggle-kernel RLE decoder) | 4.7x | >= 4x | met |" in lines
    assert "| RLE encode | 0.237 ms | 0.379 ms (Kaggle-kernel RLE encoder) | 1.6x | >= 2x | missed |" in lines
    assert "| rate | 210 samples/s | no baseline | — | >= 100 samples/s | met |" in lines
    assert "| peak memory | n/a | — | — | — | n/a (CUDA memory only; this run is on CPU) |" in lines
    assert "True" not in md and "False" not in md and "ms_ours" not in md
    detail = lines.index("**Detail: every setting measured**")
    assert lines[detail + 2 : detail + 5] == [  # the column that holds nothing is left out
        "| encoder | images/s |",
        "| --- | --- |",
        "| resnet50 | 3.05 |",
    ]


def test_old_shape_and_unreadable_results_still_render(tmp_path: Path) -> None:
    old_data = {
        "decode": {"ms_ours": 0.045, "ms_baseline": 0.215, "speedup": 4.73},
        "n_masks": 1000,
        "targets_met": {"decode": True},
    }
    (tmp_path / "bench_data.json").write_text(json.dumps(old_data))
    old_train = {"device": "CPU", "results": [{"encoder": "resnet50", "ours/ref": "0.91x"}]}
    (tmp_path / "bench_train_cpu.json").write_text(json.dumps(old_train))
    (tmp_path / "bench_infer_cpu.json").write_text('{"device": "CPU", "results": [')  # cut short
    broken = {"benchmark": "B", "device": "CPU", "measures": [{"name": "x"}]}  # new shape, no unit
    (tmp_path / "bench_zz.json").write_text(json.dumps(broken))
    md = bench_markdown(tmp_path)
    assert "## bench_data" in md and "ms_ours" in md and "0.045" in md  # the generic tables
    assert "## bench_train_cpu" in md and "resnet50" in md and "0.91x" in md
    assert "`bench/results/bench_infer_cpu.json` is not readable JSON" in md
    assert "`bench/results/bench_zz.json` has measures this version cannot read" in md
    assert bench_markdown(tmp_path / "nothing here") == ""


def test_write_result_is_atomic_and_keeps_the_old_file_when_serialisation_fails(tmp_path: Path) -> None:
    path = _write_example(tmp_path / "result.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary file left
    before = path.read_text()
    loop: dict = {}
    loop["self"] = loop  # JSON cannot hold it
    with pytest.raises(ValueError):
        write_result(
            path, benchmark="B", device="CPU", setting={}, measures=[Measure("x", "ms", 1.0)], rows=[loop]
        )
    with pytest.raises(TypeError):
        write_result(path, benchmark="B", device="CPU", setting={}, measures=[{"name": "x"}])
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_write_in_progress_is_not_rendered(tmp_path: Path) -> None:
    _write_example(tmp_path / "bench_data.json")
    (tmp_path / ".bench_data.abc123.tmp.json").write_text('{"half": ')
    md = bench_markdown(tmp_path)
    assert md.count("## ") == 1 and "tmp" not in md


def test_bench_layout_prints_both_layouts_and_their_ratio_for_each_encoder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """bench/bench_layout.py runs end to end on a tiny size: one row per study encoder with both
    layouts' times, their ratio and the logits' difference (the numbers themselves are not checked)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_layout", Path(__file__).resolve().parents[1] / "bench" / "bench_layout.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--size", "32x64", "--batch", "1", "--repeats", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["resnet50", "efficientnet-b3", "efficientnet-b4"]
    for row in rows:
        _, contiguous, channels_last, ratio, diff = row.split()
        assert contiguous.endswith("ms") and channels_last.endswith("ms") and ratio.endswith("x")
        assert float(diff) < 1e-3  # the same model in either layout gives the same logits


@pytest.mark.slow  # 5-14 s on two cores (trains, exports or starts a process): CI runs it, the fast loop does not
def test_bench_serve_writes_torch_and_onnxruntime_side_by_side(tmp_path: Path) -> None:
    """bench/bench_serve.py end to end on a tiny size (one small encoder, four synthetic sheets):
    per batch size a row for each runtime, the measures of onnxruntime against torch eager with
    their ratio, in the results schema the performance page reads (timings not checked)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_serve", Path(__file__).resolve().parents[1] / "bench" / "bench_serve.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "serve.json"
    args = ["--encoders", "resnet18", "--sheets", "3", "--batch", "2", "--threads", "1", "--out", str(out)]
    assert bench.main(args) == 0
    data = json.loads(out.read_text())
    assert [(r["runtime"], r["batch"]) for r in data["rows"]] == [
        ("torch eager", 1),
        ("onnxruntime", 1),
        ("torch eager", 2),
        ("onnxruntime", 2),
    ]
    assert all(r["images/s"] > 0 and r["p99 ms"] >= r["median ms"] > 0 for r in data["rows"])
    assert len(data["measures"]) == 6 and all(m["baseline_is"] == "torch eager" for m in data["measures"])
    assert "onnxruntime p99 latency: resnet18, batch 2" in bench_markdown(tmp_path)


def _project(root: Path, kaggle: float, wall: float, rate: str, table: str = "T_abc12") -> Path:
    """A project folder as a plan leaves it, with one run, a recipe table and one executed page."""
    run = root / "weights" / "smoke" / "r"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"test": {"kaggle": kaggle}, "wall_time_s": wall}))
    (root / "weights" / "smoke" / "recipe.csv").write_text(
        f"step,kaggle,images/s\nsingle run,{kaggle},{rate}\n"
    )
    runs = root / "book" / "runs"
    runs.mkdir(parents=True)
    html = (
        f'<table id="{table}"><th id="x" class="col_heading level0 col1" >images/s</th>'
        f'<td id="y" class="data row0 col0" >{kaggle}</td><td id="z" class="data row0 col1" >{rate}</td></table>'
    )
    page = {"cells": [{"cell_type": "code", "outputs": [{"data": {"text/html": html}}]}]}
    (runs / "06_results.ipynb").write_text(json.dumps(page))
    status = {"runs": {"03_train": {"slug": "03_train", "status": "done", "wall_s": wall, "stage": "train"}}}
    (runs / "status.json").write_text(json.dumps(status))
    return root


def test_same_smoke_tells_a_changed_number_from_a_changed_clock(tmp_path: Path) -> None:
    """bench/same_smoke.py: two runs of a plan that differ only in wall times, measured rates and
    pandas' table ids are the same study; a number that differs in metrics.json, in a table or
    on a page is named, and the script exits 1."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "same_smoke", Path(__file__).resolve().parents[1] / "bench" / "same_smoke.py"
    )
    same = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(same)
    before = _project(tmp_path / "a", 0.885, 61.0, "26.33")
    assert same.compare(before, _project(tmp_path / "b", 0.885, 73.5, "29.10", table="T_fe901")) == []
    changed = same.compare(before, _project(tmp_path / "c", 0.886, 61.0, "26.33"))
    assert changed == [
        "weights/smoke/r/metrics.json: differs",
        "weights/smoke/recipe.csv: differs",
        "book/runs/06_results.ipynb: its outputs differ",
    ]
    assert same.main([str(before), str(tmp_path / "c")]) == 1


def test_packing_is_the_summed_run_time_over_workers_times_the_span(tmp_path: Path, capsys) -> None:
    """bench/packing.py: runs start at their finished_at less their wall_s; two workers that are
    both busy throughout pack 100 %, the same three runs one after another 50 %."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "packing", Path(__file__).resolve().parents[1] / "bench" / "packing.py"
    )
    packing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(packing)

    def status(ends: dict[str, tuple[str, float]]) -> Path:
        runs = {
            slug: {"finished_at": f"2026-12-03T10:00:{end}", "wall_s": wall}
            for slug, (end, wall) in ends.items()
        }
        runs["planned"] = {"status": "pending"}  # never ran: no time, left out
        path = tmp_path / f"status{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps({"runs": runs}))
        return path

    side_by_side = status({"long": ("20", 20.0), "a": ("10", 10.0), "b": ("20", 10.0)})
    assert [slug for slug, _, _ in packing.spans(json.loads(side_by_side.read_text()))] == ["long", "a", "b"]
    packing.main([str(side_by_side), "--workers", "2"])
    assert "40 s summed, 20 s span" in capsys.readouterr().out.splitlines()[-2]
    packing.main([str(status({"long": ("20", 20.0), "a": ("30", 10.0), "b": ("40", 10.0)}))])
    assert capsys.readouterr().out.splitlines()[-1].startswith("packing: 50.0%")
    with pytest.raises(SystemExit, match="no run with a recorded time"):
        packing.main([str(status({}))])


@pytest.mark.slow  # a few seconds: predicts six images with a tiny model
def test_bench_tuning_times_both_gate_grids_on_the_validation_images(
    make_tiny_run, synthetic_data: Path, tmp_path: Path, capsys
) -> None:
    """bench/bench_tuning.py tunes the same validation probabilities with the old gate grid and
    the default one, prints both and their ratio, and refuses a run without a classification head."""
    import importlib.util

    from steelnb.model.runfolder import RunFolder, Splits

    spec = importlib.util.spec_from_file_location(
        "bench_tuning", Path(__file__).resolve().parents[1] / "bench" / "bench_tuning.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ids = sorted(p.name for p in (synthetic_data / "train_images").iterdir())
    runs = {}
    for name, head in (("gate", True), ("plain", False)):
        run = make_tiny_run(tmp_path / name, classifier=head, data_dir=str(synthetic_data), subset="all")
        RunFolder.of(run).write_splits(Splits(tuple(ids[:2]), tuple(ids[2:]), tuple(ids[:2])))
        (run / "metrics.json").write_text(json.dumps({"test": {"tta": "none", "tune_size": [64, 320]}}))
        runs[name] = run
    assert bench.main([str(runs["gate"]), "--repeats", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("old      gate grid (0.3, 0.4, 0.5, 0.6, 0.7): ")
    assert out[1].startswith("default  gate grid (0.01, 0.02, ")
    assert out[2].startswith("tuning time, default grid / old grid: ") and out[2].endswith(
        "on 4 validation images"
    )
    with pytest.raises(SystemExit, match="plain: the model has no classification head"):
        bench.main([str(runs["plain"]), "--repeats", "1"])


@pytest.mark.slow  # a few seconds: predicts four images with a tiny model, exported once
def test_bench_eval_runtime_times_torch_and_onnx_on_the_validation_images(
    make_tiny_run, synthetic_data: Path, tmp_path: Path, capsys
) -> None:
    """bench/bench_eval_runtime.py predicts the same validation images in torch and onnxruntime
    and prints both, the ratio and their largest difference (small: the same network)."""
    import importlib.util

    from steelnb.model.runfolder import RunFolder, Splits

    spec = importlib.util.spec_from_file_location(
        "bench_eval_runtime", Path(__file__).resolve().parents[1] / "bench" / "bench_eval_runtime.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ids = sorted(p.name for p in (synthetic_data / "train_images").iterdir())
    run = make_tiny_run(tmp_path / "run", data_dir=str(synthetic_data), subset="all")
    RunFolder.of(run).write_splits(Splits(tuple(ids[:2]), tuple(ids[2:]), tuple(ids[:2])))
    (run / "metrics.json").write_text(json.dumps({"test": {"tta": "h", "tune_size": [64, 320]}}))
    assert bench.main([str(run), "--repeats", "1", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("torch ") and out[1].startswith("onnx ")
    assert float(out[3].split(": ")[1].split()[0]) <= 1 / 255 + 1e-6  # at most one uint8 step apart
    assert out[4].startswith("prediction time, torch / onnx: ") and out[4].endswith(
        "on 4 validation images, 1 thread(s)"
    )
