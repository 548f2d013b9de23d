"""Plans: which notebooks a batch runs, with which parameters, in which order.

A plan (``plans/<name>.yaml``) names notebooks and parameter sets in stages that run in order
(data preparation, training, evaluation, results). An entry's ``matrix`` makes one run per
combination of its values; a string parameter may name a matrix parameter as ``{name}``. A
plan's ``seeds`` repeats every training run once per seed (``SEEDED_NOTEBOOKS``), an entry's
``per_seed`` a notebook that is not a training run. An entry's ``after: [name, ...]`` names the
runs of earlier stages it waits for (``steelnb.batch.pipeline`` starts it once those ended).
``load_plan`` reads and checks a plan (every error names the file, the stage and the run);
``effective_runs`` and ``describe_plan`` say what each run will execute with; ``run_hash`` is a
run's identity for freshness. Executing a plan is ``steelnb.batch.pipeline``'s.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from ..data.errors import SteelnbError
from ..data.fileio import read_mapping
from .notebook import TITLES

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
