"""Batch runs: execute the notebooks of a plan with papermill, then build the Jupyter Book.

A plan (``plans/<name>.yaml``, read and checked by ``steelnb.batch.plans``) names notebooks and
parameter sets, in stages that run in order (data preparation, training, evaluation, results). An entry's ``matrix`` makes one run per
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

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from ..data.locks import hold
from ..data.synthetic import ensure_data, plan_set
from .benchmarks import run_benchmarks
from .book import build_book
from .interrupts import PlanInterrupted, install_sigterm, signal_of, sigterm_as_interrupt
from .plans import (  # re-exported (__all__): steelnb.batch.pipeline keeps the names it had
    SEEDED_NOTEBOOKS,
    Plan,
    PlanError,
    Run,
    _declared,
    describe_plan,
    effective_parameters,
    effective_runs,
    find_plan,
    load_plan,
    run_hash,
)
from .status import update_status

__all__ = [
    "SEEDED_NOTEBOOKS",
    "Plan",
    "PlanError",
    "PlanInterrupted",
    "Run",
    "StageExecutor",
    "describe_plan",
    "effective_parameters",
    "effective_runs",
    "execute_run",
    "find_plan",
    "kernel_options",
    "load_plan",
    "progress_label",
    "resume_inject",
    "run_hash",
    "run_plan",
    "waits_for",
]


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
