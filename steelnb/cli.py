"""The ``steelnb`` command: synth, balance, train, predict, export, run, book, weights.

Each subcommand is a thin wrapper over one module's function; heavy imports happen lazily so
that ``steelnb --help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data.config import REFERENCE_ENCODERS, TrainConfig
from .data.errors import SteelnbError


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """One ``--field`` option per TrainConfig field, typed from the dataclass."""
    hints = typing.get_type_hints(TrainConfig)
    p.add_argument("--config", type=Path, help="YAML config file; options given here override it")
    for f in dataclasses.fields(TrainConfig):
        opt = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        if hint is bool:
            p.add_argument(
                opt,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default {default})",
            )
        elif f.name == "loss_params":
            p.add_argument(
                opt,
                dest=f.name,
                default=None,
                metavar="YAML",
                help="loss parameters as YAML, e.g. '{alpha: 0.1, beta: 0.9}'",
            )
        else:
            base = {int: int, float: float}.get(hint, str)
            p.add_argument(opt, dest=f.name, type=base, default=None, help=f"(default {default!r})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge ``--config FILE`` with the options given on the command line."""
    import yaml

    base = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name == "loss_params":
            value = yaml.safe_load(value) or {}
        if f.name == "encoder_weights" and str(value).lower() in ("none", "null", ""):
            value = None
        changes[f.name] = value
    return base.replace(**changes) if changes else base


def _add_data_commands(sub: Any) -> None:
    """steelnb synth, steelnb balance."""
    p = sub.add_parser("synth", help="write the synthetic data set in the Kaggle layout")
    p.add_argument("out", type=Path)
    p.add_argument("--images", type=int, default=200, help="number of train images")
    p.add_argument(
        "--test-images", type=int, default=None, help="number of test images (default: images // 4)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--old-format", action="store_true", help="write train.csv in the old ImageId_ClassId format"
    )
    p.add_argument(
        "--class-mix",
        choices=["kaggle", "study"],
        default="kaggle",
        help="masks per class: the Kaggle set's shares, or equal ones as the study subset draws them",
    )
    p.add_argument(
        "--sealed",
        type=int,
        default=0,
        help="of the train images, this many from their own stream (sealed_test.csv)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        metavar="DIR",
        help="a twin of a real label table (e.g. ../shared/data/severstal-labels): its image ids, masks, "
        "class sets and areas, and its test ids (--images and --test-images are then unused)",
    )
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="with --labels: keep this share of the images (by class set)",
    )

    p = sub.add_parser("balance", help="class-balanced subset of a label file (the reference's sampling)")
    p.add_argument("labels", type=Path)
    p.add_argument("--per-class", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)


def _add_train(sub: Any) -> None:
    """steelnb train: every config field is an option."""
    p = sub.add_parser(
        "train", help="train one model, then judge it on its test split; every config field is an option"
    )
    _add_config_options(p)
    p.add_argument(
        "--no-evaluate",
        dest="evaluate",
        action="store_false",
        help="skip the test-split evaluation after training",
    )
    p.add_argument(
        "--eval-tta",
        choices=["none", "h", "hv"],
        default="none",
        help="flips used when tuning post-processing on validation and scoring the test split",
    )
    p.add_argument(
        "--no-progress-bar",
        dest="progress_bar",
        action="store_false",
        help="no per-step progress bar (a log or a notebook that relays the output)",
    )


def _add_predict(sub: Any) -> None:
    """steelnb predict."""
    p = sub.add_parser(
        "predict", help="predict masks, write submission.csv, overlays and (with labels) an evaluation"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--weights",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="run folder or checkpoint file; several: an ensemble averaging their probabilities "
        "(the members are listed in members.json beside the submission)",
    )
    which.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="MODEL.onnx",
        help="a model written by steelnb export, run in onnxruntime with the TTA and post-processing "
        "of the model.json beside it (--postprocess, --class-id and --device do not apply)",
    )
    p.add_argument("--images", type=Path, required=True, help="folder of images")
    p.add_argument("--labels", type=Path, default=None, help="label CSV: evaluate against it")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--tta", choices=["none", "h", "hv"], default=None, help="default none; with --model: the export's"
    )
    p.add_argument("--overlays", type=int, default=0, help="number of overlay pictures to save")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    p.add_argument(
        "--class-id",
        type=int,
        default=None,
        help="for one-class checkpoints (the reference's): the class its mask stands for",
    )
    p.add_argument(
        "--postprocess",
        type=Path,
        default=None,
        help="postprocess.yaml (or a folder holding one, e.g. an ensemble's evaluation folder) to apply; "
        "default: the one beside a single run's checkpoint, else threshold 0.5",
    )


def _add_run(sub: Any) -> None:
    """steelnb run PLAN, steelnb book."""
    p = sub.add_parser(
        "run", help="run a papermill batch plan (plans/NAME.yaml or a path), then build the book"
    )
    p.add_argument("plan", help="plan name (smoke, full, ...) or path to a YAML plan")
    p.add_argument("--force", action="store_true", help="re-run runs that already finished")
    p.add_argument("--gpus", default=None, help="comma-separated GPU ids: independent runs side by side")
    p.add_argument("--no-book", action="store_true", help="do not build the book at the end")
    p.add_argument(
        "--offline",
        action="store_true",
        help="set HF_HUB_OFFLINE=1 for every notebook: an ImageNet request fails at once instead of "
        "trying the hub (the notebooks themselves leave the network to the user)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print every run with its effective parameters; run and write nothing",
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: print the runs as a JSON list")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="train every 03_train run once per seed, its folder <run>__seed<N>, instead of the plan's "
        "seeds (e.g. --seeds 0: one seed of a three-seed plan)",
    )
    p.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="local: this machine's processes (default); slurm: each run a Slurm job (a job array for a "
        "parallel stage) through submitit, from a machine of the cluster",
    )
    _add_slurm_options(p)

    p = sub.add_parser("book", help="build the Jupyter Book report from book/runs")
    p.add_argument("--book-dir", type=Path, default=Path("book"))


def _add_slurm_options(p: Any) -> None:
    """steelnb run's options of --executor slurm."""
    g = p.add_argument_group("with --executor slurm (what each run's job asks for)")
    g.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's default)")
    g.add_argument(
        "--gpus-per-run", type=int, default=None, metavar="N", help="GPUs per node of each job (0)"
    )
    g.add_argument("--time", type=int, default=None, metavar="MIN", help="time limit of each job (120)")
    g.add_argument(
        "--mem", type=float, default=None, metavar="GB", help="memory per node (partition default)"
    )
    g.add_argument("--cpus-per-run", type=int, default=None, metavar="N", help="CPUs (threads) per task (1)")
    g.add_argument(
        "--max-parallel", type=int, default=None, metavar="K", help="at most K jobs of a stage at a time"
    )


def _add_export(sub: Any) -> None:
    """steelnb export."""
    p = sub.add_parser(
        "export",
        help="a run (or an ensemble) with its tuned post-processing as ONNX + model.json + model card",
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder(s) or checkpoint(s)")
    p.add_argument(
        "--out", type=Path, required=True, metavar="MODEL.onnx", help="model.json, model.md beside it"
    )
    p.add_argument(
        "--postprocess",
        type=Path,
        default=None,
        help="postprocess.yaml (or its folder) to export; default: the one run's own (an ensemble's "
        "evaluation folder for several runs)",
    )
    p.add_argument(
        "--tta",
        choices=["none", "h", "hv"],
        default=None,
        help="default: the TTA the post-processing was tuned with",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")


def _add_weights(sub: Any) -> None:
    """steelnb weights fetch|list|path."""
    p = sub.add_parser("weights", help="pretrained encoder weights cached for offline use ($STEELNB_CACHE)")
    wsub = p.add_subparsers(dest="weights_command")  # none: the status of the study's encoders
    w = wsub.add_parser(
        "status", help="whether each encoder's ImageNet weights load offline here, and from where"
    )
    w.add_argument("encoders", nargs="*", metavar="ENCODER", help="default: the study's encoders")
    w = wsub.add_parser("fetch", help="download encoders' pretrained weights into the cache (online)")
    w.add_argument("encoders", nargs="+", metavar="ENCODER")
    w.add_argument("--weights", default="imagenet", help="pretrained weights name (default imagenet)")
    wsub.add_parser("list", help="list cached weight files: encoder, weights, size, path")
    w = wsub.add_parser("path", help="print the cache file of ENCODER (exit 1 if it is not there yet)")
    w.add_argument("encoder", metavar="ENCODER")
    w.add_argument("--weights", default="imagenet")


def _version() -> str:
    """'steelnb <version> (<repository>)', from the installed package's metadata."""
    from importlib import metadata

    from .batch.notebook import MetadataError, repository_url

    try:
        return f"steelnb {metadata.version('steelnb')} ({repository_url()})"
    except (metadata.PackageNotFoundError, MetadataError):
        return "steelnb (not installed: no package metadata)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steelnb", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_data_commands, _add_train, _add_predict, _add_export, _add_run, _add_weights):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .batch.interrupts import PlanInterrupted

    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except SteelnbError as e:  # bad input: one clear line; anything else is a bug and keeps its traceback
        print(f"steelnb {args.command}: error: {e}", file=sys.stderr)
        return 2
    except PlanInterrupted as e:  # Ctrl-C or SIGTERM: what was stopped, and exit as the signal says
        print(f"steelnb {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum


def _synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate

    if args.labels is not None:
        from .data.twin import generate_twin

        if args.old_format:
            raise SteelnbError("--old-format: a twin writes the new format only")
        out = generate_twin(args.labels, args.out, fraction=args.fraction, seed=args.seed)
        print(f"wrote the twin of {args.labels} (fraction {args.fraction}) to {out}")
        return 0
    out = generate(
        args.out,
        n_images=args.images,
        n_test=args.test_images,
        seed=args.seed,
        old_format=args.old_format,
        class_mix=args.class_mix,
        sealed=args.sealed,
    )
    print(f"wrote synthetic data set to {out}")
    return 0


def _balance(args: argparse.Namespace) -> int:
    from .data.labels import read_labels, write_labels
    from .data.sampling import balanced_subset

    subset = balanced_subset(read_labels(args.labels), per_class=args.per_class, seed=args.seed)
    write_labels(subset, args.out)
    counts = subset["ClassId"].value_counts().sort_index()
    print(
        f"wrote {len(subset)} masks to {args.out}: " + ", ".join(f"class {c}: {n}" for c, n in counts.items())
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from .data.locks import hold
    from .model.training import RUN_ADVICE, fit

    config = config_from_args(args)
    # the run folder is this command's from training to its scores; a DDP run's other processes
    # (copies of this command that Lightning or srun starts) leave the lock to rank 0
    rank0 = all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
    lock = hold(config.run_dir, f"steelnb train {config.name}", RUN_ADVICE) if rank0 else None
    with lock or contextlib.nullcontext():
        run_dir = fit(config, progress_bar=args.progress_bar)
        print(f"run folder: {run_dir}")
        if args.evaluate and (config.test_share > 0 or config.folds):
            _evaluate(args, config, run_dir)
    return 0


def _print(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if value not in ("", None):
            print(f"{key}: {value}")


def _evaluate(args: argparse.Namespace, config: TrainConfig, run_dir: Path) -> None:
    from .judge.evaluation import evaluate_run
    from .judge.stats import format_ci

    t = evaluate_run(run_dir, tta=args.eval_tta, batch_size=config.batch_size, device=config.device)
    print(
        f"test split ({t['images']} images): Kaggle metric {format_ci(t['kaggle'], *t['kaggle_ci95'])}, "
        f"all-empty {t['all_empty_kaggle']:.3f}, gain {format_ci(t['kaggle_gain'], *t['kaggle_gain_ci95'])}"
    )


def _predict(args: argparse.Namespace) -> int:
    from .judge.predict_run import run_predict

    if args.model is not None:
        return _predict_model(args)
    args.tta = args.tta or "none"

    options = (
        "weights",
        "images",
        "out",
        "labels",
        "tta",
        "overlays",
        "batch_size",
        "device",
        "on_error",
        "class_id",
        "postprocess",
    )
    kwargs = {k: getattr(args, k) for k in options}
    if len(args.weights) == 1:  # one run: exactly as before ensembles
        kwargs["weights"] = args.weights[0]
    _print(run_predict(**kwargs))
    return 0


def _predict_model(args: argparse.Namespace) -> int:
    """``steelnb predict --model MODEL.onnx``: the exported recipe through onnxruntime."""
    from .judge.exported import predict_exported

    if args.postprocess is not None or args.class_id is not None:
        raise SteelnbError("--postprocess and --class-id go with --weights; an export carries its own")
    options = ("images", "out", "labels", "tta", "overlays", "batch_size", "on_error")
    _print(predict_exported(args.model, **{k: getattr(args, k) for k in options}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .judge.export import OPSET, export_runs

    _print(export_runs(args.runs, args.out, args.postprocess, args.tta, args.opset or OPSET))
    return 0


def _run(args: argparse.Namespace) -> int:
    from .batch.pipeline import describe_plan, effective_runs, run_plan

    if args.json and not args.dry_run:
        raise SteelnbError("--json only goes with --dry-run (a real run prints its table)")
    if args.dry_run:  # reads the plan and the notebooks' parameters; writes nothing
        import json

        from .batch.pipeline import load_plan

        plan = load_plan(args.plan, args.seeds)
        if args.json:
            print(json.dumps(effective_runs(plan), indent=1, default=str))
            return 0
        from .batch.estimate import estimate_text

        print(describe_plan(plan))
        # from measured parts, or says unmeasured
        print(estimate_text(effective_runs(plan), plan.data_dir, synthetic=plan.synthetic))
        return 0
    gpus = [int(g) for g in args.gpus.split(",")] if args.gpus else None
    slurm_opts = {
        "partition": args.partition,
        "gpus_per_run": args.gpus_per_run,
        "time_min": args.time,
        "mem_gb": args.mem,
        "cpus_per_run": args.cpus_per_run,
        "max_parallel": args.max_parallel,
    }
    given = {k: v for k, v in slurm_opts.items() if v is not None}
    executor = None
    if args.executor == "slurm":
        from .batch.slurm import SlurmExecutor, SlurmOptions

        if gpus:
            raise SteelnbError("--gpus picks this machine's GPUs; with --executor slurm use --gpus-per-run N")
        executor = SlurmExecutor(SlurmOptions(**given))
    elif given:
        names = ", ".join("--" + k.removesuffix("_min").removesuffix("_gb").replace("_", "-") for k in given)
        raise SteelnbError(f"{names}: only with --executor slurm (the local executor runs on this machine)")
    if args.offline:  # the kernels papermill starts inherit the environment
        os.environ["HF_HUB_OFFLINE"] = "1"
    results = run_plan(
        args.plan, force=args.force, gpus=gpus, build=not args.no_book, executor=executor, seeds=args.seeds
    )
    failed = int((results["status"] == "failed").sum()) if len(results) else 0
    return 1 if failed else 0


def _book(args: argparse.Namespace) -> int:
    from .batch.book import build_book

    print(f"built {build_book(args.book_dir)}")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    commands = {
        "synth": _synth,
        "balance": _balance,
        "train": _train,
        "predict": _predict,
        "export": _export,
        "run": _run,
        "book": _book,
        "weights": _weights,
    }
    return commands[args.command](args)


def _weights(args: argparse.Namespace) -> int:
    """``steelnb weights fetch|list|path``: the offline cache of pretrained encoder weights."""
    from .model import models

    if args.weights_command in (None, "status"):
        from .model.pretrained import PACKAGED

        names = getattr(args, "encoders", None) or [*REFERENCE_ENCODERS, *PACKAGED]
        for name in names:
            ok, where = models.weights_source(name)
            print(f"{name}\t{'offline' if ok else 'missing'}\t{where}")
    elif args.weights_command == "fetch":
        for name in args.encoders:  # every name checked before any network access
            models.check_encoder(name)
        for name in args.encoders:
            path = models.fetch_encoder_weights(name, args.weights)
            print(f"{name}: {path} ({path.stat().st_size / 2**20:.1f} MB)")
    elif args.weights_command == "list":
        rows = models.list_cached_weights()
        if not rows:
            print(f"no cached weights in {models.weights_cache_dir()}")
        for encoder, weights, path, size in rows:
            print(f"{encoder}\t{weights}\t{size / 2**20:.1f} MB\t{path}")
    elif args.weights_command == "path":
        models.check_encoder(args.encoder)
        path = models.cached_weights_path(args.encoder, args.weights)
        print(path)
        return 0 if path.is_file() else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
