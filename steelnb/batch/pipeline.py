"""Batch runs: execute the notebooks of a plan with papermill, then build the Jupyter Book.

A plan (``plans/<name>.yaml``) names notebooks and parameter sets, in stages that run in
order (data preparation, training, evaluation, results). An entry's ``matrix`` makes one run per
combination of its values; a string parameter may name a matrix parameter as ``{name}`` (a
matrix over ``seed`` with ``run_name: x__seed{seed}`` writes one folder per seed). Each run is executed with the
working directory ``notebooks/`` (so relative defaults such as ``../data/synthetic`` mean the
same in JupyterLab and in batch) into ``book/runs/<notebook>__<slug>.ipynb``. A plan's ``seeds: [0, 1, 2]``
(``steelnb run PLAN --seeds 0 1 2`` overrides it) repeats every training run once per seed
(``SEEDED_NOTEBOOKS``; ``seed`` set, ``{seed}`` in its string parameters filled, its folder, slug
and title ending in ``__seed<N>``). A run that
succeeds leaves ``<slug>.done`` holding the hash of its parameters and notebook; a re-run
skips it unless ``force``, the hash changed, or a run of an earlier stage ran again. A failed run keeps its executed notebook (with
the traceback), is marked failed in ``book/runs/status.json``, and the batch goes on.
One plan at a time writes a book: ``run_plan`` holds ``book/runs``' lock (``steelnb.data.locks``) from
its start to the built book, and a second start is refused before it writes anything. Ctrl-C or
SIGTERM ends the running runs' kernels, marks those runs "interrupted" and raises
``PlanInterrupted``; the next run of the plan runs them again, with ``resume=True`` where their
notebook declares ``resume`` (a training run continues from ``last.ckpt``).
The runs of a ``parallel`` stage go side by side: one worker per GPU with ``--gpus``, or, on a
CPU, the plan's ``cpu_workers`` processes sharing the cores (each gets cores / workers threads:
two one-thread trainings do about 1.35x the work of one two-thread training on two cores).
Consecutive parallel stages share the workers: a run waits for every run of the stages before it,
or, when its entry says ``after: [name, ...]``, for those runs only (the runs whose files it
reads), so it can start while other runs of an earlier stage still execute; a run that waits for
one that ran again runs again too. Elsewhere (one worker, a Slurm executor) stages keep their
order, which ``after`` only loosens.
Elsewhere than on this machine: ``run_plan(..., executor=...)`` hands each stage's runs to a
``StageExecutor`` (``steelnb.batch.slurm.SlurmExecutor``: Slurm jobs through submitit); the stages,
freshness checks, records and the book stay here.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from ..data.errors import SteelnbError
from ..data.fileio import read_mapping
from ..data.locks import hold
from ..data.synthetic import ensure_data, plan_set
from .benchmarks import run_benchmarks
from .book import build_book
from .interrupts import PlanInterrupted, install_sigterm, signal_of, sigterm_as_interrupt
from .notebook import TITLES
from .status import update_status

REPO = Path(__file__).resolve().parents[2]


class PlanError(SteelnbError):
    """A plan file is not valid; the message names the file and the stage or run."""


@dataclass(frozen=True)
class Run:
    """One notebook execution: ``parameters`` are all values injected by papermill."""

    notebook: str
    parameters: Mapping[str, Any]
    slug: str
    stage: str
    parallel: bool = False
    title: str = ""  # sidebar title, e.g. "Training: resnet50, dice_bce"
    per_seed: bool = False  # an entry's ``per_seed: true``: once per plan seed, ``{seed}`` filled
    # an entry's ``after``: the slugs of the earlier stages' runs it waits for (None: all of them)
    after: tuple[str, ...] | None = None


@dataclass
class Plan:
    """A parsed plan: where things are, what data it needs, and its stages of runs."""

    name: str
    notebooks_dir: Path
    book_dir: Path
    data_dir: Path | None = None
    synthetic: Mapping[str, Any] | None = None
    root: Path = Path(".")  # the project folder: benchmark commands run from here
    benchmarks: list[str] = field(default_factory=list)  # "bench/<script>.py ARGS", for the report
    cpu_workers: int = 1  # parallel stages without --gpus: this many worker processes share the cores
    seeds: list[int] | None = None  # each training run once per seed (``SEEDED_NOTEBOOKS``); None: as written
    stages: list[list[Run]] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [r for stage in self.stages for r in stage]


# -- plans ----------------------------------------------------------------------------------
def _slug(values: Sequence[Any]) -> str:
    text = "_".join(re.sub(r"[^A-Za-z0-9._+-]+", "-", str(v)).strip("-") for v in values)
    if len(text) > 60:  # keep file names short; the hash keeps them unique
        text = text[:50] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return text


def _declared(nb_path: Path) -> dict[str, Any]:
    """Parameters a notebook declares, with their default values (literals)."""
    import papermill as pm

    out = {}
    for name, info in pm.inspect_notebook(str(nb_path)).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = info["default"]
    return out


def find_plan(plan: str | Path) -> Path:
    """``smoke`` -> ``plans/smoke.yaml`` (in the working directory, else in the repository)."""
    p = Path(plan)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise PlanError(f"{p}: plan file not found")
        return p.resolve()
    for base in (Path.cwd(), REPO):
        cand = base / "plans" / f"{plan}.yaml"
        if cand.is_file():
            return cand.resolve()
    names = sorted(q.stem for q in (REPO / "plans").glob("*.yaml"))
    raise PlanError(f"no plan named {plan!r}: expected plans/{plan}.yaml; known plans: {', '.join(names)}")


def _read_spec(
    plan: str | Path | Mapping[str, Any], _seen: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], str, Path]:
    """(plan mapping, its source for messages, the project root its paths are relative to).

    A plan with ``extends: NAME`` (a plan beside it, or any name ``find_plan`` knows) is that plan
    with its own keys on top: ``defaults`` and ``data`` merged key by key, every other key
    (``stages``, ``benchmarks``, ``replace``, ...) replaced whole; ``name`` is its own."""
    if isinstance(plan, Mapping):
        spec, src, root, here = dict(plan), "<plan>", Path.cwd(), None
    else:
        path = find_plan(plan)
        spec = read_mapping(path, PlanError, "plan", "a mapping with 'stages'")
        spec.setdefault("name", path.stem)
        src, root, here = str(path), path.parent.parent if path.parent.name == "plans" else path.parent, path
    parent = spec.pop("extends", None)
    if parent is None:
        return spec, src, root
    near = here.parent / f"{parent}.yaml" if here is not None else None
    ppath = near if near is not None and near.is_file() else find_plan(str(parent))
    if ppath in _seen or ppath == here:
        raise PlanError(
            f"{src}: extends {parent!r} comes back to itself ({' -> '.join(map(str, _seen + (ppath,)))})"
        )
    base, _, _ = _read_spec(ppath, _seen + ((here,) if here else ()) + (ppath,))
    merged = {**base, **spec}
    for key in ("defaults", "data"):
        merged[key] = {**(base.get(key) or {}), **(spec.get(key) or {})}
    return merged, src, root


def _runs_per_notebook(stages: list[Any]) -> dict[str, int]:
    """How many runs each notebook has in the plan: a notebook run once keeps its plain name as slug."""
    counts: dict[str, int] = {}
    for stage in stages:
        for entry in stage.get("runs") or []:
            nb = str(entry.get("notebook", "")).removesuffix(".ipynb")
            n = 1
            for values in (entry.get("matrix") or {}).values():
                n *= len(values)
            counts[nb] = counts.get(nb, 0) + n
    return counts


def _named(entry: Mapping[str, Any], field: str, given: Mapping[str, Any], where: str) -> str:
    """An entry's ``name`` or ``title`` with ``{parameter}`` placeholders filled from the run's
    parameters (one name per matrix combination); "" when the entry has none."""
    text = str(entry.get(field) or "")
    try:
        return text.format(**given)
    except (KeyError, IndexError, ValueError) as e:
        raise PlanError(
            f"{where}: {field} {text!r}: placeholder {e} is not a parameter of the entry "
            f"({', '.join(given) or 'none'})"
        ) from None


def _filled(value: Any, combo: Mapping[str, Any]) -> Any:
    """A string parameter, or the strings of a list parameter (``runs: [x__seed{seed}]``), with the
    ``{name}`` placeholders of the matrix's parameters (or the plan seed) filled from one
    combination (so that a matrix over ``seed`` names each run's folder: ``x__seed{seed}``);
    other braces and other values pass through."""
    if isinstance(value, list):
        return [_filled(v, combo) for v in value]
    if not isinstance(value, str) or not combo:
        return value
    return re.sub(r"\{(\w+)\}", lambda g: str(combo[g[1]]) if g[1] in combo else g[0], value)


def _swap(replace: Mapping[str, Mapping[Any, Any]], key: str, value: Any) -> Any:
    """``value`` of parameter ``key`` after the plan's ``replace`` ({parameter: {old: new}})."""
    table = replace.get(key) or {}
    try:
        return table.get(value, value)
    except TypeError:  # an unhashable value (a list) is never replaced
        return value


def _entry_notebook(entry: Mapping[str, Any], nb_dir: Path, where: str) -> tuple[str, dict[str, Any]]:
    """(notebook name, the parameters it declares) of a plan entry; its file must exist."""
    nb = str(entry.get("notebook", "")).removesuffix(".ipynb")
    nb_path = nb_dir / f"{nb}.ipynb"
    if not nb_path.is_file():
        raise PlanError(f"{where}: notebook {nb_path} not found")
    return nb, _declared(nb_path)


def _entry_runs(
    entry: Mapping[str, Any],
    where: str,
    nb_dir: Path,
    defaults: Mapping[str, Any],
    several: bool,
    stage: Any,
    replace: Mapping[str, Mapping[Any, Any]] | None = None,
) -> list[Run]:
    """The runs of one plan entry (one notebook, its parameters and matrix), checked; ``replace``
    ({parameter: {old value: new value}}) swaps values of the defaults, parameters and matrix."""
    replace = replace or {}
    nb, declared = _entry_notebook(entry, nb_dir, where)
    params, matrix = dict(entry.get("parameters") or {}), dict(entry.get("matrix") or {})
    params = {k: _swap(replace, k, v) for k, v in params.items()}
    matrix = {k: [_swap(replace, k, v) for v in vs] for k, vs in matrix.items()}
    defaults = {k: _swap(replace, k, v) for k, v in defaults.items()}
    unknown = sorted((set(params) | set(matrix)) - set(declared))
    if unknown:
        raise PlanError(
            f"{where}, notebook {nb}: unknown parameter(s) "
            f"{', '.join(unknown)}; the notebook declares {', '.join(declared)}"
        )
    merged = {k: v for k, v in defaults.items() if k in declared}
    per_seed, after, runs = _per_seed_flag(entry, nb, where), _after_names(entry, nb, where), []
    for combo in product(*matrix.values()) if matrix else [()]:
        point = dict(zip(matrix, combo))
        given = {**{k: _filled(v, point) for k, v in params.items()}, **point}
        explicit = {k: given[k] for k in declared if k in given}  # the notebook's order
        named = several and explicit
        slug = _named(entry, "name", given, where) or (
            f"{nb}__{_slug(list(explicit.values()))}" if named else nb
        )
        base = TITLES.get(nb, nb)
        title = _named(entry, "title", given, where) or (
            f"{base}: {', '.join(map(str, explicit.values()))}" if named else base
        )
        runs.append(
            Run(
                nb,
                {**merged, **explicit},
                slug,
                str(stage.get("name")),
                bool(stage.get("parallel")),
                title,
                per_seed,
                after,
            )
        )
    return runs


def _after_names(entry: Mapping[str, Any], nb: str, where: str) -> tuple[str, ...] | None:
    """An entry's ``after`` (names of runs of earlier stages), checked: a list of strings, or absent."""
    names = entry.get("after")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise PlanError(
            f"{where}, notebook {nb}: after {names!r}: expected a list of run names, e.g. [02_class_balance]"
        )
    return tuple(names)


def _resolve_after(stages: list[list[Run]], src: str) -> list[list[Run]]:
    """Each run's ``after`` names as the slugs of earlier stages' runs: a name is a run's slug, or
    the slug of a run before the plan's seeds repeated it (then every seed's run). A name that is
    no run of an earlier stage is refused, naming the run and the runs it could wait for."""
    from dataclasses import replace

    out, before = [], []
    for stage in stages:
        resolved = []
        for run in stage:
            if run.after is not None:
                slugs = []
                for name in run.after:
                    found = [s for s in before if s == name or s.startswith(f"{name}__seed")]
                    if not found:
                        raise PlanError(
                            f"{src}, stage {run.stage!r}, run {run.slug}: after names {name!r}, no run of an "
                            f"earlier stage (a run waits only for earlier stages'; they are: {', '.join(before) or 'none'})"
                        )
                    slugs += [s for s in found if s not in slugs]
                run = replace(run, after=tuple(slugs))
            resolved.append(run)
        out.append(resolved)
        before += [r.slug for r in stage]
    return out


def load_plan(plan: str | Path | Mapping[str, Any], seeds: Sequence[int] | None = None) -> Plan:
    """Read and check a plan: notebooks exist, every run parameter is one the notebook declares.

    ``seeds`` (``steelnb run PLAN --seeds ...``) replaces the plan's own ``seeds``: every run of a
    notebook of ``SEEDED_NOTEBOOKS`` is repeated once per seed (``_with_seeds``). A plan that extends
    another has its ``seeds`` unless it sets its own (``seeds: null``: each run once, as written)."""
    spec, src, root = _read_spec(plan)
    if not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise PlanError(f"{src}: expected a list 'stages' of {{name, runs: [...]}}")
    nb_dir = (root / spec.get("notebooks_dir", "notebooks")).resolve()
    data = spec.get("data") or {}
    out = Plan(
        name=str(spec["name"]),
        notebooks_dir=nb_dir,
        book_dir=(root / spec.get("book_dir", "book")).resolve(),
        data_dir=(nb_dir / data["dir"]).resolve() if data.get("dir") else None,
        synthetic=data.get("synthetic"),
        root=root.resolve(),
        benchmarks=[str(c) for c in spec.get("benchmarks") or []],
        cpu_workers=int(spec.get("cpu_workers", 1)),
        seeds=_plan_seeds(list(seeds) if seeds is not None else spec.get("seeds"), src, seeds is not None),
    )
    replace = spec.get("replace") or {}
    if not isinstance(replace, dict) or not all(isinstance(v, dict) for v in replace.values()):
        raise PlanError(f"{src}: 'replace' must map a parameter to {{old value: new value}}, got {replace!r}")
    if out.seeds and "seed" in (spec.get("defaults") or {}):
        raise PlanError(
            f"{src}: defaults set seed while the plan's seeds {out.seeds} set it per run; drop one"
        )
    per_notebook = _runs_per_notebook(spec["stages"])
    seen: set[str] = set()
    for i, stage in enumerate(spec["stages"]):
        stage = {**stage, "name": str(stage.get("name", i))}
        where = f"{src}, stage {stage['name']!r}"
        runs = _stage_runs(
            stage, where, nb_dir, dict(spec.get("defaults") or {}), per_notebook, replace, out.seeds
        )
        for run in runs:
            if run.slug in seen:
                raise PlanError(f"{where}: two runs named {run.slug!r}; give one a 'name'")
            seen.add(run.slug)
        out.stages.append(runs)
    out.stages = _resolve_after(out.stages, src)
    _refuse_unfilled_seed(out.runs, src)
    if out.seeds and not any(r.notebook in SEEDED_NOTEBOOKS for r in out.runs):
        raise PlanError(
            f"{src}: seeds {out.seeds} but no run of {', '.join(SEEDED_NOTEBOOKS)} to repeat "
            "(09_real_sample takes its own seed parameter)"
        )
    return out


def _stage_runs(
    stage: Mapping[str, Any],
    where: str,
    nb_dir: Path,
    defaults: Mapping[str, Any],
    per_notebook: Mapping[str, int],
    replace: Mapping[str, Mapping[Any, Any]],
    seeds: list[int] | None,
) -> list[Run]:
    """The runs of one stage, in the plan's order, each training run once per seed of ``seeds``."""
    runs = []
    for k, entry in enumerate(stage.get("runs") or []):
        nb = str(entry.get("notebook", "")).removesuffix(".ipynb")
        if seeds:
            _refuse_own_seed(entry, f"{where}, run {k + 1} ({entry.get('name') or nb})", seeds)
        runs += _entry_runs(entry, where, nb_dir, defaults, per_notebook.get(nb, 0) > 1, stage, replace)
    return _with_seeds(runs, seeds, nb_dir, where) if seeds else runs


# -- training seeds -------------------------------------------------------------------------
#: The notebooks a plan's ``seeds`` repeats: each trains one run, seeded by its ``seed`` parameter,
#: into the folder ``TrainConfig.name`` derives from its parameters (03_train builds its config with
#: ``TrainConfig.from_parameters``). Named here rather than found (every notebook that declares
#: ``seed``): 09_real_sample's ``seed`` also draws its folds, so another seed there is another
#: cross-validation, not the same configuration trained again.
SEEDED_NOTEBOOKS = ("03_train",)


def _plan_seeds(value: Any, src: str, given: bool = False) -> list[int] | None:
    """A plan's ``seeds`` (``given``: from ``--seeds``) as distinct non-negative integers; None: none."""
    if value is None:
        return None
    fine = isinstance(value, list) and value and all(type(s) is int and s >= 0 for s in value)
    if not fine or len(set(value)) != len(value):
        what = "--seeds" if given else "seeds"
        raise PlanError(f"{src}: {what} {value!r}: expected distinct non-negative integers, e.g. [0, 1, 2]")
    return list(value)


def _refuse_own_seed(entry: Mapping[str, Any], where: str, seeds: list[int]) -> None:
    """A training entry that sets ``seed`` itself (a matrix over it, as plans/seeds.yaml's, or a
    parameter) cannot take the plan's seeds too: the two would name each folder twice."""
    nb = str(entry.get("notebook", "")).removesuffix(".ipynb")
    own = [k for k in ("matrix", "parameters") if "seed" in (entry.get(k) or {})]
    if nb in SEEDED_NOTEBOOKS and own:
        raise PlanError(
            f"{where}: sets seed in its {own[0]} while the plan's seeds {seeds} repeat every run of {nb} "
            "(folders <run>__seed<N>); drop the entry's seed, or the plan's seeds and --seeds"
        )


def _per_seed_flag(entry: Mapping[str, Any], nb: str, where: str) -> bool:
    """An entry's ``per_seed`` (a notebook other than a training run, e.g. 07_pseudo_labels labelling
    with each seed's run, repeated once per plan seed with ``{seed}`` filled), checked."""
    flag = entry.get("per_seed", False)
    if not isinstance(flag, bool):
        raise PlanError(f"{where}, notebook {nb}: per_seed {flag!r}: expected true or false")
    if flag and nb in SEEDED_NOTEBOOKS:
        raise PlanError(f"{where}, notebook {nb}: per_seed: a training run is repeated per seed already")
    return flag


def _refuse_unfilled_seed(runs: Sequence[Run], src: str) -> None:
    """A run whose parameter still names ``{seed}`` (no plan ``seeds`` and no matrix over seed
    filled it) would pass the braces on as text: refused, naming the run and the parameter."""
    for run in runs:
        for key, value in run.parameters.items():
            if any(
                isinstance(v, str) and "{seed}" in v for v in (value if isinstance(value, list) else [value])
            ):
                raise PlanError(
                    f"{src}, run {run.slug}: parameter {key} {value!r} names {{seed}} but nothing fills it "
                    "(no plan seeds, --seeds or matrix over seed for this run)"
                )


def _with_seeds(runs: list[Run], seeds: list[int], nb_dir: Path, where: str) -> list[Run]:
    """A stage's runs with each training run once per seed, seed after seed: every training run at
    the first seed, then every one at the next (a batch stopped halfway leaves every arm its first
    seeds, not some arms all of theirs); the runs of an entry with ``per_seed`` once per seed too
    (``_per_seed``); the other runs once, in the first seed's round."""
    return [
        _seeded(run, seed, nb_dir, where)
        if run.notebook in SEEDED_NOTEBOOKS
        else (_per_seed(run, seed, where) if run.per_seed else run)
        for i, seed in enumerate(seeds)
        for run in runs
        if run.notebook in SEEDED_NOTEBOOKS or run.per_seed or i == 0
    ]


def _per_seed(run: Run, seed: int, where: str) -> Run:
    """A ``per_seed`` run at one seed: ``{seed}`` filled in its parameters (``_filled``: strings and
    the strings of lists), its slug and title ending in the seed. A run none of whose parameters
    names ``{seed}`` is refused: every seed would write the same files."""
    from dataclasses import replace

    parameters = {k: _filled(v, {"seed": seed}) for k, v in run.parameters.items()}
    if parameters == dict(run.parameters):
        raise PlanError(f"{where}, run {run.slug}: per_seed but no parameter names {{seed}}")
    return replace(
        run, parameters=parameters, slug=f"{run.slug}__seed{seed}", title=f"{run.title}, seed {seed}"
    )


def _seeded(run: Run, seed: int, nb_dir: Path, where: str) -> Run:
    """``run`` at one training seed: ``seed`` set, ``{seed}`` in its parameters filled (``_filled``; e.g.
    ``encoder_weights: ../weights/x__seed{seed}/last.ckpt``, each seed from the same seed's earlier
    run); its folder, slug and title end in the seed. The
    folder is the run's ``run_name`` or, without one, the name ``TrainConfig`` derives from the run's
    parameters (``<encoder>__<loss>__<H>x<W>``), so that ``comparison.arm_of`` groups the seeds."""
    from dataclasses import replace

    from ..data.config import ConfigError, TrainConfig

    effective = effective_parameters(run, nb_dir)
    if not {"seed", "run_name"} <= set(effective):
        raise PlanError(f"{where}, run {run.slug}: seeds need a notebook that declares seed and run_name")
    name = run.parameters.get("run_name")
    if not name:
        try:
            name = TrainConfig.from_parameters(effective).name
        except ConfigError as e:
            raise PlanError(f"{where}, run {run.slug}: {e}") from None
    tail = f"__seed{seed}"
    # {seed} in a parameter: e.g. a path to the same seed's earlier run
    filled = {k: _filled(v, {"seed": seed}) for k, v in run.parameters.items()}
    parameters = {**filled, "seed": seed, "run_name": f"{name}{tail}"}
    return replace(run, parameters=parameters, slug=run.slug + tail, title=f"{run.title}, seed {seed}")


def effective_runs(plan: str | Path | Mapping[str, Any] | Plan) -> list[dict[str, Any]]:
    """What each run of a plan will execute with, without running or writing anything.

    Takes a plan (name, path, mapping or a loaded ``Plan``); returns one dict per run, in
    order: ``{"slug", "notebook", "stage", "parameters"}``, where ``parameters`` are the
    notebook's declared defaults overridden by the plan's values (the plan wins).
    """
    p = plan if isinstance(plan, Plan) else load_plan(plan)
    return [
        {
            "slug": run.slug,
            "notebook": run.notebook,
            "stage": run.stage,
            "parameters": effective_parameters(run, p.notebooks_dir),
        }
        for run in p.runs
    ]


def effective_parameters(run: Run, notebooks_dir: Path) -> dict[str, Any]:
    """The parameters ``run`` executes with: its notebook's declared defaults, the plan's values on top."""
    return {**_declared(notebooks_dir / f"{run.notebook}.ipynb"), **run.parameters}


def describe_plan(plan: str | Path | Mapping[str, Any] | Plan) -> str:
    """Readable text of a plan's runs (``steelnb run PLAN --dry-run``): one block per run with
    its stage, slug, title and every effective parameter; values the plan sets are marked ``*``."""
    p = plan if isinstance(plan, Plan) else load_plan(plan)
    runs = effective_runs(p)
    lines = [
        f"plan {p.name}: {len(runs)} run(s) in {len(p.stages)} stage(s); dry run, nothing executed or written",
        f"notebooks: {p.notebooks_dir}",
        f"executed runs would go to: {p.book_dir / 'runs'}",
    ]
    if p.data_dir is not None:
        state = "present" if (p.data_dir / "train.csv").is_file() else "missing"
        lines.append(f"data: {p.data_dir} (train.csv {state})")
    if p.seeds:
        lines.append(
            f"seeds: {', '.join(map(str, p.seeds))}: each run of {', '.join(SEEDED_NOTEBOOKS)} once per "
            "seed, its folder <run>__seed<N> (--seeds replaces them)"
        )
    lines.append("* = set by the plan; other values are the notebook's defaults")
    for run, eff in zip(p.runs, runs):
        width = max((len(k) for k in eff["parameters"]), default=0)
        lines += ["", f"[{eff['stage']}] {eff['slug']}  ({run.notebook}.ipynb: {run.title})"]
        if run.after is not None:
            lines.append(f"  after: {', '.join(run.after) or 'nothing: it starts once a worker is free'}")
        lines += [
            f"  {'*' if k in run.parameters else ' '} {k:<{width}} = {v!r}"
            for k, v in eff["parameters"].items()
        ]
    return "\n".join(lines)


def run_hash(run: Run, notebooks_dir: Path) -> str:
    """Hash of the run's parameters and its notebook's source: a change re-runs it."""
    h = hashlib.sha256(json.dumps(dict(run.parameters), sort_keys=True, default=str).encode())
    h.update((notebooks_dir / f"{run.notebook}.ipynb").read_bytes())
    return h.hexdigest()[:16]


# -- execution ------------------------------------------------------------------------------
def execute_run(
    run: Run,
    notebooks_dir: Path,
    runs_dir: Path,
    progress: bool = True,
    inject: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute one run with papermill (cwd = notebooks_dir); never raises for a notebook error.

    ``inject``: parameters for this execution only, outside the run's identity (its hash and
    record), e.g. ``{"resume": True}`` when a stopped Slurm job is run again.
    """
    import papermill as pm

    out = runs_dir / f"{run.slug}.ipynb"
    done = runs_dir / f"{run.slug}.done"
    done.unlink(missing_ok=True)  # an interrupted run must not look finished
    record = _record(
        run,
        effective=effective_parameters(run, notebooks_dir),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        run_hash=run_hash(run, notebooks_dir),
    )
    start = time.time()
    try:
        pm.execute_notebook(
            str(notebooks_dir / f"{run.notebook}.ipynb"),
            str(out),
            parameters={**run.parameters, **(inject or {})},
            cwd=str(notebooks_dir),
            progress_bar=progress,
            **kernel_options(),
        )
        record.update(status="done", error="")
        done.write_text(run_hash(run, notebooks_dir) + "\n")
    except Exception as e:  # the batch goes on; the failed notebook keeps the traceback
        evalue = getattr(e, "evalue", None)
        msg = f"{getattr(e, 'ename', type(e).__name__)}: {evalue if evalue is not None else e}"
        record.update(status="failed", error=msg.strip().splitlines()[0][:300] if msg.strip() else msg)
    record["wall_s"] = round(time.time() - start, 1)
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if inject:
        record["injected"] = dict(inject)
    return record


def kernel_options() -> dict[str, Any]:
    """papermill's engine options for the kernels a plan starts: jupyter_client provisions CurveZMQ
    keys (``transport_encryption="auto"``, for kernelspecs that declare it, as ipykernel's does) where
    pyzmq has curve. The kernel then talks over an encrypted transport instead of warning, once per
    notebook, that it runs over TCP without encryption; nothing else it logs is hidden. Empty (the
    warning stays) where jupyter_client predates the option or pyzmq lacks curve."""
    import zmq
    from jupyter_client import KernelManager
    from traitlets.config import Config

    if not (zmq.has("curve") and "transport_encryption" in KernelManager.class_trait_names()):
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def progress_label(plan: str, stage: str, runs: Sequence[str], shown: int = 2) -> str:
    """The plan's progress-bar label: the plan, the stage and the runs it is on (of a stage running
    side by side, the first ``shown`` of those not finished and how many more), e.g.
    ``plan smoke, train: 03_train__a, 03_train__b +3 more``."""
    names = ", ".join(runs[:shown]) + (f" +{len(runs) - shown} more" if len(runs) > shown else "")
    return f"plan {plan}, {stage}" + (f": {names}" if names else "")


def _init_worker(queue: Any) -> None:
    """Pin this worker process (and the kernels it starts) to one GPU, or to its share of the
    CPU cores ("cpu:<threads>": no GPU, that many threads). SIGTERM (the batch stopping) ends
    its run as Ctrl-C does: papermill shuts the kernel down."""
    install_sigterm()
    slot = str(queue.get())
    if slot.startswith("cpu:"):
        threads = slot.split(":", 1)[1]
        os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot


def _execute_in_worker(
    run: Run, notebooks_dir: Path, runs_dir: Path, inject: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return execute_run(run, notebooks_dir, runs_dir, progress=False, inject=inject)


def resume_inject(run: Run, notebooks_dir: Path) -> dict[str, Any] | None:
    """``{"resume": True}`` when the run's notebook declares ``resume`` and the plan does not set it."""
    if "resume" in run.parameters or "resume" not in _declared(notebooks_dir / f"{run.notebook}.ipynb"):
        return None
    return {"resume": True}


def _after_interrupt(run: Run, p: Plan, previous: Mapping[str, Any], restart: bool) -> dict[str, Any] | None:
    """``resume_inject`` for a run an interrupt stopped, with the same parameters and notebook."""
    rec = previous.get(run.slug) or {}
    if restart or rec.get("status") != "interrupted" or rec.get("run_hash") != run_hash(run, p.notebooks_dir):
        return None
    return resume_inject(run, p.notebooks_dir)


def _prepare_data(p: Plan) -> None:
    """Generate the plan's synthetic set when missing; a missing Kaggle folder raises with the
    download command."""
    if p.data_dir is None:
        return
    if p.synthetic is None:  # the Kaggle data (raises with the download command when missing), or
        ensure_data(p.data_dir)  # the embedded set every notebook defaults to, kept as it is
        return
    # a plan's synthetic block says what it sets, and what it leaves out is generate()'s (the
    # Kaggle mix, nothing sealed); a generated set made otherwise is generated again
    ensure_data(p.data_dir, **plan_set(p.synthetic), refresh=True)


def _record(run: Run, **fields: Any) -> dict[str, Any]:
    """A status record of ``run`` with ``fields`` (status, error, ...)."""
    base = {
        "slug": run.slug,
        "notebook": run.notebook,
        "stage": run.stage,
        "title": run.title,
        "parameters": dict(run.parameters),
        "output": f"{run.slug}.ipynb",
    }
    return {**base, **fields}


def _is_fresh(run: Run, p: Plan, runs_dir: Path) -> bool:
    """Finished earlier with the same parameters and notebook source."""
    done = runs_dir / f"{run.slug}.done"
    return (
        done.is_file()
        and (runs_dir / f"{run.slug}.ipynb").is_file()
        and done.read_text().strip() == run_hash(run, p.notebooks_dir)
    )


def _worker_slots(p: Plan, gpus: Sequence[int] | None) -> list[Any]:
    """One slot per worker of a parallel stage: a GPU id, or "cpu:<threads>" for a share of the cores."""
    if gpus:
        return list(gpus)
    if p.cpu_workers > 1:
        return [f"cpu:{max(1, (os.cpu_count() or 1) // p.cpu_workers)}"] * p.cpu_workers
    return []


def _waits_for(stages: Sequence[list[Run]]) -> dict[str, tuple[str, ...]]:
    """What each run of consecutive side-by-side stages waits for: its ``after``, else every run
    of the stages before it among them."""
    out: dict[str, tuple[str, ...]] = {}
    before: list[str] = []
    for stage in stages:
        for run in stage:
            out[run.slug] = run.after if run.after is not None else tuple(before)
        before += [r.slug for r in stage]
    return out


def waits_for(plan: str | Path | Mapping[str, Any] | Plan) -> dict[str, set[str]]:
    """Each run of a plan and the runs that have ended before it starts when its parallel stages
    run side by side (``cpu_workers`` or ``--gpus``): those of the stages before its group of
    consecutive parallel stages, and within the group those it waits for (``after``, else every
    earlier stage's runs), followed through. For checking a plan's order (tests/test_plans.py)."""
    p = plan if isinstance(plan, Plan) else load_plan(plan)
    out: dict[str, set[str]] = {}
    ended: set[str] = set()
    for group in _groups(p, True):
        direct = _waits_for(group)
        for run in (r for stage in group for r in stage):
            out[run.slug] = ended | {s for d in direct[run.slug] for s in {d} | out[d]}
        ended |= {r.slug for stage in group for r in stage}
    return out


def _run_side_by_side(
    stages: Sequence[list[Run]],
    slots: list[Any],
    p: Plan,
    runs_dir: Path,
    ctx: _Context,
    restart: bool,
) -> None:
    """Consecutive parallel stages' runs side by side, one worker process per slot: a run starts
    once the runs it waits for (``_waits_for``) have ended, the earliest of the plan's order first.
    A run finished earlier with the same parameters and notebook is skipped unless ``restart`` or
    a run it waits for ran again. A worker that dies fails its run only. On an interrupt the runs
    that were executing go into ``ctx.started``, and every worker gets SIGTERM (its kernel is shut
    down) before the interrupt goes on."""
    waits = _waits_for(stages)
    waiting = [r for stage in stages for r in stage]
    spawn = mp.get_context("spawn")
    queue = spawn.Queue()
    for slot in slots:
        queue.put(slot)
    running: dict[cf.Future[dict[str, Any]], Run] = {}
    with cf.ProcessPoolExecutor(
        len(slots), mp_context=spawn, initializer=_init_worker, initargs=(queue,)
    ) as pool:
        try:
            while waiting or running:
                _start_ready(waiting, running, waits, len(slots), pool, p, runs_dir, ctx, restart)
                if running:  # the stages of the runs executing, and those runs
                    stages = "+".join(dict.fromkeys(r.stage for r in running.values()))
                    ctx.bar.on(stages, [r.slug for r in running.values()])
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    run = running.pop(fut)
                    try:
                        ctx.finish(fut.result())
                    except Exception as e:  # a worker died (killed, out of memory): that run failed
                        ctx.finish(_record(run, status="failed", error=f"worker process failed: {e!r}"[:300]))
        except KeyboardInterrupt:
            ctx.started.update({r.slug: r for r in running.values()})
            for f in running:
                f.cancel()
            for proc in list(getattr(pool, "_processes", {}).values()):  # no public handle on them
                if proc.is_alive():
                    proc.terminate()
            raise


def _start_ready(
    waiting: list[Run],
    running: dict[cf.Future[dict[str, Any]], Run],
    waits: Mapping[str, tuple[str, ...]],
    slots: int,
    pool: cf.ProcessPoolExecutor,
    p: Plan,
    runs_dir: Path,
    ctx: _Context,
    restart: bool,
) -> None:
    """Start (or record as skipped) waiting runs whose runs waited for have ended, in the plan's
    order, until every slot is busy; a skip can make another run ready, so look again after one."""
    while len(running) < slots:
        ready = next((r for r in waiting if all(s in ctx.records for s in waits[r.slug])), None)
        if ready is None:
            if not running and waiting:  # cannot happen: a run waits only for earlier stages'
                raise PlanError(
                    f"plan {p.name}: {', '.join(r.slug for r in waiting)} wait for runs that never end"
                )
            return
        waiting.remove(ready)
        again = restart or any(ctx.records[s]["status"] == "done" for s in waits[ready.slug])
        if _is_fresh(ready, p, runs_dir) and not again:
            ctx.finish(_skipped(ready, ctx.previous))
            continue
        inject = _after_interrupt(ready, p, ctx.previous, again)
        running[pool.submit(_execute_in_worker, ready, p.notebooks_dir, runs_dir, inject)] = ready


class StageExecutor(Protocol):
    """Runs the runs of a stage somewhere other than this machine's processes (``steelnb.batch.slurm``)."""

    def check(self, p: Plan) -> None:
        """Raise (a ``SteelnbError``) when the plan cannot run there; called before anything is written."""

    def run_stage(
        self,
        todo: list[Run],
        p: Plan,
        runs_dir: Path,
        finish: Callable[[dict[str, Any]], None],
        note: Callable[[dict[str, Any]], None],
        restart: bool,
    ) -> None:
        """Execute ``todo`` and call ``finish(record)`` once per run as it ends (``note(record)``
        updates status.json without ending the run); ``restart``: an earlier stage ran again or
        ``force``, so nothing continues from an earlier attempt."""

    def run_benchmarks(self, p: Plan, runs_dir: Path, force: bool) -> list[dict[str, Any]]:
        """``steelnb.batch.benchmarks.run_benchmarks`` of the plan's benchmarks, run there."""


def run_plan(
    plan: str | Path | Mapping[str, Any],
    force: bool = False,
    gpus: Sequence[int] | None = None,
    build: bool = True,
    executor: StageExecutor | None = None,
    seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Execute every run of a plan, stage after stage; return one row per run with ``status``.

    ``status`` is "done", "skipped" (finished earlier with the same parameters) or "failed".
    With ``gpus`` the runs of a parallel stage go side by side, one worker process per GPU
    (``CUDA_VISIBLE_DEVICES`` set per worker). Builds the book at the end when ``build``.
    With ``executor`` (e.g. ``steelnb.batch.slurm.SlurmExecutor``) each stage's runs and the plan's
    benchmarks run there instead, after ``executor.check`` passed. ``seeds`` replaces the plan's
    ``seeds`` (``load_plan``).
    """
    p = load_plan(plan, seeds)
    if executor is not None:
        executor.check(p)  # bad requests fail before any file is written or job submitted
    runs_dir = p.book_dir / "runs"
    advice = "a second plan at the same time needs its own book_dir in its plan file"
    with hold(runs_dir, f"steelnb run {p.name}", advice), sigterm_as_interrupt():
        _prepare_data(p)
        recs = _run_stages(p, runs_dir, force, gpus, executor)
        return _finish_plan(p, recs, runs_dir, force, build, executor)


def _put(runs_dir: Path, rec: dict[str, Any]) -> None:
    """Record one run in status.json (read-modify-write under its lock)."""
    update_status(runs_dir, lambda status: status["runs"].__setitem__(rec["slug"], rec))


@dataclass
class _Context:
    """What executing a plan's stages shares: the runs' records so far (``finish`` adds one, writes
    it to status.json and moves the bar), the records of the plan's last run (``previous``), and
    the runs executing now (``started``, for an interrupt to mark)."""

    runs_dir: Path
    previous: Mapping[str, Any]
    bar: _Progress
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: dict[str, Run] = field(default_factory=dict)

    def finish(self, rec: dict[str, Any]) -> None:
        self.records[rec["slug"]] = rec
        self.started.pop(rec["slug"], None)
        _put(self.runs_dir, rec)
        self.bar.done(rec)


def _groups(p: Plan, side_by_side: bool) -> list[list[list[Run]]]:
    """The plan's stages, consecutive parallel ones in one group when their runs go side by side
    here (``side_by_side``: worker slots and no executor), so that a run of a later one can start
    before an earlier one has ended (``Run.after``); every other stage a group of its own."""
    groups: list[list[list[Run]]] = []
    for stage in p.stages:
        joins = side_by_side and stage and all(r.parallel for r in stage)
        if joins and groups and groups[-1][-1] and all(r.parallel for r in groups[-1][-1]):
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def _run_stages(
    p: Plan, runs_dir: Path, force: bool, gpus: Sequence[int] | None, executor: StageExecutor | None
) -> list[dict[str, Any]]:
    """Every stage of the plan in order (consecutive parallel stages side by side here:
    ``_run_side_by_side``); the runs' records in the plan's order."""
    order = [r.slug for r in p.runs]
    previous = update_status(runs_dir, lambda status: status.update(plan=p.name, order=order))["runs"]
    ctx = _Context(runs_dir, previous, _Progress(p))
    upstream_ran = False  # a later stage reads what an earlier one wrote: re-run it after a change
    slots = _worker_slots(p, gpus)
    side_by_side = bool(slots) and executor is None
    try:
        for group in _groups(p, side_by_side):
            restart = force or upstream_ran
            if side_by_side and all(r.parallel for r in group[0]) and group[0]:
                _run_side_by_side(group, slots, p, runs_dir, ctx, restart)
            else:
                _run_stage(group[0], p, runs_dir, ctx, restart, executor)
            upstream_ran = upstream_ran or any(
                ctx.records[r.slug]["status"] == "done" for s in group for r in s
            )
    except KeyboardInterrupt as e:
        raise _interrupted(e, p, runs_dir, ctx.started) from None
    finally:
        ctx.bar.close()
    return [ctx.records[r.slug] for r in p.runs]


def _run_stage(
    stage: list[Run], p: Plan, runs_dir: Path, ctx: _Context, restart: bool, executor: StageExecutor | None
) -> None:
    """One stage: on the executor, or here one run after another."""
    todo = _to_run(stage, p, runs_dir, ctx.previous, restart, ctx.finish)
    ctx.bar.on(stage[0].stage if stage else "", [r.slug for r in todo])
    if executor is not None:
        executor.run_stage(todo, p, runs_dir, ctx.finish, lambda rec: _put(runs_dir, rec), restart=restart)
    else:
        injects = {r.slug: _after_interrupt(r, p, ctx.previous, restart) for r in todo}
        _run_serial(todo, p, runs_dir, ctx.finish, injects, ctx.started, ctx.bar)


def _skipped(run: Run, previous: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a run finished earlier with the same parameters and notebook."""
    return {**previous.get(run.slug, {}), **_record(run, status="skipped", error="")}


def _to_run(
    stage: list[Run],
    p: Plan,
    runs_dir: Path,
    previous: Mapping[str, Any],
    restart: bool,
    finish: Callable[[dict[str, Any]], None],
) -> list[Run]:
    """The runs of ``stage`` to execute; a run finished earlier with the same parameters and
    notebook (and nothing upstream ran again: not ``restart``) is recorded "skipped" instead."""
    todo = []
    for run in stage:
        if _is_fresh(run, p, runs_dir) and not restart:
            finish(_skipped(run, previous))
        else:
            todo.append(run)
    return todo


def _run_serial(
    todo: list[Run],
    p: Plan,
    runs_dir: Path,
    finish: Callable[[dict[str, Any]], None],
    injects: Mapping[str, Any],
    started: dict[str, Run],
    bar: _Progress,
) -> None:
    """The runs one after another in this process, the bar naming the one running; each is in
    ``started`` while it executes, for an interrupt to mark."""
    for run in todo:
        bar.on(run.stage, [run.slug])  # one at a time: the bar names the one running
        started[run.slug] = run
        show = bar.bar.disable is False
        finish(execute_run(run, p.notebooks_dir, runs_dir, progress=show, inject=injects[run.slug]))


class _Progress:
    """The plan's progress bar: a step per run, labelled with the stage and the runs it is on
    (``progress_label``), the last run finished and its status beside it."""

    def __init__(self, p: Plan) -> None:
        from tqdm.auto import tqdm

        self.plan, self.stage, self.runs = p.name, "", []
        self.bar = tqdm(total=len(p.runs), desc=f"plan {p.name}", unit="run")

    def on(self, stage: str, slugs: list[str]) -> None:
        self.stage, self.runs = stage, list(slugs)
        self.bar.set_description(progress_label(self.plan, stage, self.runs))

    def done(self, rec: Mapping[str, Any]) -> None:
        if rec["slug"] in self.runs:
            self.on(self.stage, [s for s in self.runs if s != rec["slug"]])
        self.bar.set_postfix_str(f"{rec['slug']}: {rec['status']}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _interrupted(
    e: KeyboardInterrupt, p: Plan, runs_dir: Path, started: Mapping[str, Run]
) -> PlanInterrupted:
    """Mark the runs that were executing (here, or as Slurm jobs: "submitted") as interrupted;
    the error to end the plan with, naming them and what to do."""
    import signal

    name = signal.Signals(signal_of(e)).name
    slugs = {r.slug for r in p.runs}

    def mark(status: dict[str, Any]) -> None:
        for slug, rec in status["runs"].items():
            if slug in slugs and rec.get("status") == "submitted" and slug not in started:
                started_run = next(r for r in p.runs if r.slug == slug)
                status["runs"][slug] = {**rec, **_stopped(started_run, p, name)}
        for run in started.values():
            status["runs"][run.slug] = {**status["runs"].get(run.slug, {}), **_stopped(run, p, name)}

    status = update_status(runs_dir, mark)
    stopped = [
        s for s in (r.slug for r in p.runs) if status["runs"].get(s, {}).get("status") == "interrupted"
    ]
    what = f"run(s) {', '.join(stopped)} marked interrupted" if stopped else "no run was executing"
    return PlanInterrupted(
        f"plan {p.name} stopped by {name}: {what} in {runs_dir / 'status.json'}; run the same command "
        "again to run them again (a training run resumes from its last.ckpt) and the rest of the plan",
        signal_of(e),
    )


def _stopped(run: Run, p: Plan, signame: str) -> dict[str, Any]:
    """The fields of an interrupted run's record."""
    return _record(
        run,
        status="interrupted",
        error=f"stopped by {signame} while it ran; the next run of the plan runs it again",
        run_hash=run_hash(run, p.notebooks_dir),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def _finish_plan(
    p: Plan,
    recs: list[dict[str, Any]],
    runs_dir: Path,
    force: bool,
    build: bool,
    executor: StageExecutor | None = None,
) -> pd.DataFrame:
    """Print the summary, run the plan's benchmarks, build the book; return the summary table."""
    table = pd.DataFrame(recs, columns=["slug", "notebook", "stage", "status", "wall_s", "error", "output"])
    print(table[["slug", "status", "wall_s", "error"]].to_string(index=False))
    if not p.benchmarks:
        benchmarks = []
    elif executor is not None:
        benchmarks = executor.run_benchmarks(p, runs_dir, force)
    else:
        benchmarks = run_benchmarks(p.benchmarks, p.root, runs_dir, force=force)
    for rec in benchmarks:
        print(f"benchmark {rec['command']}: {rec['status']} {rec.get('error', '')}".rstrip())
    if build:
        print(f"built {build_book(p.book_dir)}")
    return table
