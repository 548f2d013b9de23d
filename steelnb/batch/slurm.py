"""Plan runs as Slurm jobs through submitit: ``steelnb run PLAN --executor slurm``.

Each run of a stage becomes a Slurm job, the runs of a ``parallel`` stage one job array (one per
resource shape), submitted with submitit from the machine ``steelnb run`` runs on; the stage is
waited for, then the next one goes, as with the local executor: the same ``book/runs`` outputs,
skip-if-finished, failure isolation and book (``pipeline.run_plan`` keeps all of that; this module
only runs a stage's runs). On the node a job calls ``pipeline.execute_run`` (papermill, working
directory ``notebooks/``) with the submitting Python, so the project folder, its virtual
environment and ``book/`` must be on a filesystem every node sees (as submitit requires).

Bookkeeping. submitit's files (the pickled call and its result, ``<job>_0_log.out`` and ``.err``)
go to ``book/runs/slurm/<job id>/``. Each run's record in ``status.json`` gets a ``slurm`` block:
``job_id`` ("123" or "123_4" for an array element), ``node``, ``state`` (what Slurm reported:
COMPLETED, CANCELLED, TIMEOUT, ...), ``exit_code``, ``log`` and ``err`` (relative to
``book/runs``), ``run_hash`` and ``resumed``. While a job is queued or running its record has the
status "submitted"; a ``steelnb run`` that finds such a job still alive (the previous one was
killed, a login session ended) waits for it instead of submitting the run twice.

Stops. A notebook error is a failed run as locally (the job itself COMPLETED). A job Slurm stops
(``scancel``, time limit, node failure, out of memory) is a failed run whose error names the state
and the log; its executed notebook gets the Slurm state and the log's last lines on top, so the
report shows them. Run again, such a run continues where it stopped: when its notebook declares a
``resume`` parameter and the plan's parameters and notebook did not change, it gets
``resume=True`` (``TrainConfig.resume``: continue from ``last.ckpt``). Within one ``steelnb run``,
a job that Slurm signals before its time limit or a preemption (USR2, ``signal_delay_s`` ahead) is
requeued by submitit (``submitit.helpers.Checkpointable``) with ``resume=True`` as well.
A stage whose jobs all fail stops the plan (``StageFailedError``, listing them); what finished
before stays, and the next ``steelnb run`` re-submits only what did not finish.

Multi-GPU and multi-node: a run whose parameters say ``devices=D`` and ``num_nodes=M`` is one job
of M nodes with D tasks per node (one process per device, launched by ``srun``), which is what
Lightning's ``SLURMEnvironment`` expects for ``strategy="ddp"``; ``--gpus-per-run`` gives each
node of the job that many GPUs. Rank 0 writes the run's outputs; the other ranks execute their
copy of the notebook into ``book/runs/slurm/<job id>/rank<k>/``. Lightning (2.6) refuses
``strategy="ddp"`` inside a Jupyter kernel, so such a notebook must run ``fit`` in a child Python
process (which inherits the task's ``SLURM_*`` variables); checked by hand with a stand-in
notebook: two tasks, one DDP world of two.

Checks before anything is submitted: the Slurm commands are on PATH (``SlurmUnavailableError``),
and ``sbatch --test-only`` accepts every job shape of the plan (``SlurmRequestError`` with Slurm's
words: an unknown partition, more GPUs, CPUs or memory than any node of the partition has, a time
limit above the partition's).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import JobPaths, pickle_load

from ..data.errors import SteelnbError
from ..data.fileio import atomic_path
from .pipeline import Plan, Run, _record, effective_parameters, execute_run, run_hash
from .pipeline import resume_inject as _resume_inject

COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")
# states after which Slurm runs nothing more for the job (anything else: wait)
FINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
    "UNKNOWN",  # no longer known to squeue nor sacct (purged, no accounting)
}
# submitit's parameters that are not sbatch options (left out of the ``--test-only`` check)
_NOT_SBATCH = {
    "job_name",
    "array_parallelism",
    "signal_delay_s",
    "setup",
    "teardown",
    "additional_parameters",
    "stderr_to_stdout",
    "srun_args",
    "use_srun",
    "map_count",
    "wckey",
}


class SlurmError(SteelnbError):
    """A plan cannot run on Slurm, or Slurm stopped it; the message says why."""


class SlurmUnavailableError(SlurmError):
    """A Slurm command (sbatch, squeue, ...) is not on PATH or its controller does not answer."""


class SlurmRequestError(SlurmError):
    """Slurm refuses a job the plan needs (partition, GPUs, memory, time); the message quotes Slurm."""


class StageFailedError(SlurmError):
    """Every run of a stage failed; the plan stops there. The message lists the runs and errors."""


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for (``steelnb run --executor slurm`` options).

    ``partition`` None: the cluster's default partition. ``gpus_per_run``: GPUs per node of each
    job (0: none). ``time_min``: each job's time limit. ``mem_gb``: memory per node (None: the
    partition's default). ``cpus_per_run``: CPUs per task (None: Slurm's default, one), also the
    threads PyTorch uses. ``max_parallel``: at most this many jobs of an array run at a time (None:
    as many as Slurm starts). ``poll_s``: the longest wait between two looks at the queue (the
    wait starts at one second and grows while nothing changes).
    """

    partition: str | None = None
    gpus_per_run: int = 0
    time_min: int = 120
    mem_gb: float | None = None
    cpus_per_run: int | None = None
    max_parallel: int | None = None
    poll_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("gpus_per_run", "time_min", "mem_gb", "cpus_per_run", "max_parallel", "poll_s"):
            value = getattr(self, name)
            if value is not None and (value < 0 or (value == 0 and name != "gpus_per_run")):
                raise SlurmError(f"{name}={value}: expected a positive number")


@dataclass(frozen=True)
class JobInfo:
    """What Slurm says about one job (an array element counts as a job)."""

    job_id: str
    state: str
    node: str = ""
    reason: str = ""
    elapsed_s: float | None = None


@dataclass
class _Submitted:
    """A job this process waits for: the run, the job, its folder and what it was given."""

    run: Run
    job_id: str
    folder: Path
    resumed: bool
    run_hash: str
    missing: int = 0  # consecutive looks at the queue that did not find the job
    state: str = "PENDING"
    node: str = ""
    started: float = field(default_factory=time.time)


# -- what runs on the node ------------------------------------------------------------------
def _task_threads() -> str:
    """CPUs Slurm gave this task (``--cpus-per-task``, else the node's CPUs / tasks per node)."""
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return os.environ["SLURM_CPUS_PER_TASK"]
    cpus = int(os.environ.get("SLURM_CPUS_ON_NODE", "1"))
    tasks = int(os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0] or 1)
    return str(max(1, cpus // max(1, tasks)))


class SlurmRun(submitit.helpers.Checkpointable):
    """What a job executes: one plan run through papermill on the node (``pipeline.execute_run``).

    Threads follow the CPUs Slurm gave the task. Rank 0 of a multi-process job writes the run's
    outputs; other ranks execute their copy of the notebook into ``rank<k>/`` of the job's folder
    (their Lightning processes join rank 0's). When Slurm signals the job before its time limit or a
    preemption, submitit calls ``checkpoint`` and requeues the job, which then runs with
    ``resume=True`` where the notebook declares it.
    """

    def __call__(
        self, run: Run, notebooks_dir: Path, runs_dir: Path, inject: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        threads = _task_threads()
        os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        rank = int(os.environ.get("SLURM_PROCID", "0"))
        out = runs_dir if rank == 0 else Path(submitit.JobEnvironment().paths.folder) / f"rank{rank}"
        out.mkdir(parents=True, exist_ok=True)
        return execute_run(run, notebooks_dir, out, progress=False, inject=inject)

    def checkpoint(
        self, run: Run, notebooks_dir: Path, runs_dir: Path, inject: Mapping[str, Any] | None = None
    ) -> Any:
        """The call the requeued job makes: the same run, continuing from its checkpoint."""
        resume = _resume_inject(run, notebooks_dir)
        return submitit.helpers.DelayedSubmission(
            self, run, notebooks_dir, runs_dir, {**(inject or {}), **(resume or {})}
        )


# -- talking to Slurm -----------------------------------------------------------------------
def _call(args: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; a missing command or a controller that never answers is an error."""
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmUnavailableError(f"{args[0]} not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailableError(
            f"{' '.join(args[:2])} did not answer in {timeout:.0f} s: is slurmctld running?"
        ) from None


def _words(proc: subprocess.CompletedProcess[str]) -> str:
    """Slurm's message of a failed command, on one line."""
    text = " ".join(ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip())
    return text or f"exit status {proc.returncode}, no message"


def check_commands() -> None:
    """Raise ``SlurmUnavailableError`` unless the Slurm client commands are on PATH."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise SlurmUnavailableError(
            f"{', '.join(missing)} not found on PATH: --executor slurm submits through Slurm's client "
            "commands (Debian: apt-get install slurm-client, on a machine of the cluster; a one-machine "
            "test cluster: bash .ci/slurm-up as root); without Slurm use --executor local"
        )


def _seconds(text: str) -> float | None:
    """Slurm's ``[D-]HH:MM:SS`` / ``MM:SS`` as seconds (None when it is not a time)."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def job_states(job_ids: Sequence[str]) -> dict[str, JobInfo] | None:
    """What Slurm says about ``job_ids`` ("123", "123_4"): squeue (which keeps finished jobs for
    the cluster's MinJobAge), then sacct for those it forgot. None when squeue does not answer."""
    proc = _call(
        ["squeue", "-h", "-r", "--states=all", "-u", getpass.getuser(), "-o", "%i|%T|%N|%r|%M"], timeout=60
    )
    if proc.returncode != 0:
        return None
    wanted, found = set(job_ids), {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5 and parts[0] in wanted:
            found[parts[0]] = JobInfo(parts[0], parts[1].split()[0], parts[2], parts[3], _seconds(parts[4]))
    rest = sorted(wanted - set(found))
    if rest and shutil.which("sacct"):
        proc = _call(
            ["sacct", "-n", "-P", "-X", "-j", ",".join(rest), "-o", "JobID,State,NodeList,Reason,ElapsedRaw"]
        )
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            parts = line.strip().split("|")
            if len(parts) == 5 and parts[0] in wanted:
                elapsed = float(parts[4]) if parts[4].isdigit() else None
                found[parts[0]] = JobInfo(parts[0], parts[1].split()[0], parts[2], parts[3], elapsed)
    return found


def _job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job``'s fields of a job still known to slurmctld ({} otherwise): ExitCode
    ("0:15": exit status 0, signal 15), Restarts (requeues), ..."""
    proc = _call(["scontrol", "show", "job", "-o", job_id], timeout=30)
    return dict(re.findall(r"\b(\w+)=(\S*)", proc.stdout)) if proc.returncode == 0 else {}


def _nodes_summary(partition: str | None) -> str:
    """The partition's nodes as Slurm describes them: name, CPUs, memory, GPUs."""
    proc = _call(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%P"], timeout=30)
    everything = [ln.split("|") for ln in proc.stdout.splitlines() if ln.count("|") == 4]
    rows = [r for r in everything if (r[4].rstrip("*") == partition if partition else r[4].endswith("*"))]
    if not rows:
        known = sorted({r[4].replace("*", " (default)") for r in everything})
        return f"the cluster's partitions: {', '.join(known)}" if known else ""
    name = partition or rows[0][4].rstrip("*")
    nodes = "; ".join(
        f"{r[0]}: {r[1]} CPUs, {r[2]} MB, GPUs {'none' if r[3] in ('(null)', '') else r[3]}"
        for r in sorted(set(map(tuple, rows)))[:8]
    )
    return f"partition {name} has {len(rows)} node(s) ({nodes})"


def _sbatch_flags(parameters: Mapping[str, Any]) -> list[str]:
    """submitit's executor parameters as the sbatch options it submits with."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in sorted(parameters.items()) if k not in _NOT_SBATCH]


# -- the executor ---------------------------------------------------------------------------
class SlurmExecutor:
    """``pipeline.StageExecutor`` that runs each stage's runs as Slurm jobs (see module docstring)."""

    def __init__(self, options: SlurmOptions | None = None) -> None:
        self.options = options or SlurmOptions()

    # what each run asks for
    def shape(self, run: Run, notebooks_dir: Path) -> dict[str, Any]:
        """submitit parameters of ``run``'s job: nodes and tasks from its ``num_nodes`` and
        ``devices``, the rest from the options."""
        eff = effective_parameters(run, notebooks_dir)
        devices, nodes = int(eff.get("devices") or 1), int(eff.get("num_nodes") or 1)
        if self.options.gpus_per_run and devices > self.options.gpus_per_run:
            raise SlurmRequestError(
                f"run {run.slug}: devices={devices} processes per node, but --gpus-per-run is "
                f"{self.options.gpus_per_run}: give each run at least {devices} GPUs"
            )
        return self._shape(devices, nodes)

    def _shape(self, devices: int = 1, nodes: int = 1) -> dict[str, Any]:
        o = self.options
        params: dict[str, Any] = {
            "nodes": nodes,
            "ntasks_per_node": devices,
            "time": o.time_min,
            "signal_delay_s": min(90, o.time_min * 15),  # USR2 this long before the time limit
        }
        optional = {
            "partition": o.partition,
            "gpus_per_node": o.gpus_per_run or None,
            "mem": o.mem_gb,
            "cpus_per_task": o.cpus_per_run,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params

    def _executor(self, runs_dir: Path, shape: Mapping[str, Any], name: str) -> submitit.SlurmExecutor:
        ex = submitit.SlurmExecutor(folder=str(runs_dir / "slurm" / "%j"))
        params = dict(shape)
        if "mem" in params:
            params["mem"] = f"{int(params['mem'] * 1024)}MB"
        ex.update_parameters(job_name=name, **params)
        if self.options.max_parallel:
            ex.update_parameters(array_parallelism=self.options.max_parallel)
        return ex

    def check(self, p: Plan) -> None:
        """Slurm's commands are there and ``sbatch --test-only`` accepts every job shape of the plan;
        raise ``SlurmUnavailableError`` or ``SlurmRequestError`` (Slurm's words) otherwise."""
        check_commands()
        shapes = {tuple(sorted(self.shape(r, p.notebooks_dir).items())) for r in p.runs}
        for shape in sorted(shapes):
            params = self._executor(p.book_dir / "runs", dict(shape), "steelnb-check").parameters
            flags = _sbatch_flags(params)
            proc = _call(["sbatch", "--test-only", *flags, "--wrap", "true"])
            if proc.returncode != 0:
                where = _nodes_summary(self.options.partition)
                raise SlurmRequestError(
                    f"Slurm refuses the job {' '.join(flags)}: {_words(proc)}"
                    + (f"; {where}" if where else "")
                )

    # one stage
    def run_stage(
        self,
        todo: list[Run],
        p: Plan,
        runs_dir: Path,
        finish: Callable[[dict[str, Any]], None],
        note: Callable[[dict[str, Any]], None],
        restart: bool,
    ) -> None:
        """Submit ``todo`` (one array per job shape for a parallel stage, else one job after
        another), wait, record each run as its job ends. ``StageFailedError`` when every run of the
        stage failed (none finished now or earlier): later stages would only read failures."""
        if not todo:
            return
        from .status import read_status

        previous = read_status(runs_dir)["runs"]
        ended: list[dict[str, Any]] = []

        def done(rec: dict[str, Any]) -> None:
            ended.append(rec)
            finish(rec)

        groups = [todo] if all(r.parallel for r in todo) else [[r] for r in todo]
        for group in groups:
            waiting = _adopt(group, p, previous, restart)
            fresh = [r for r in group if r.slug not in {s.run.slug for s in waiting}]
            try:
                waiting += self._submit(fresh, p, runs_dir, previous, restart, note)
                _wait(waiting, lambda sub, info: done(_harvest(sub, info, runs_dir)), self.options.poll_s)
            except KeyboardInterrupt:  # the user stops the plan: stop its jobs too
                _cancel(waiting)
                raise
        failed = [r for r in ended if r["status"] == "failed"]
        stage = next(s for s in p.stages if todo[0] in s)
        if failed and len(failed) == len(stage):  # none of the stage's runs finished, now or before
            listing = "; ".join(f"{r['slug']} ({r.get('error', '')[:200]})" for r in failed)
            raise StageFailedError(
                f"stage {todo[0].stage!r}: all {len(failed)} run(s) failed, so the plan stops here: {listing}. "
                f"Runs that finished are kept ({runs_dir}/status.json); fix the cause and run the plan "
                "again: only what did not finish is submitted"
            )

    def _submit(
        self,
        runs: list[Run],
        p: Plan,
        runs_dir: Path,
        previous: Mapping[str, Any],
        restart: bool,
        note: Callable[[dict[str, Any]], None],
    ) -> list[_Submitted]:
        """Submit ``runs``, one job array per job shape; record each as "submitted"."""
        submitted: list[_Submitted] = []
        by_shape: dict[tuple[Any, ...], list[Run]] = {}
        for run in runs:
            by_shape.setdefault(tuple(sorted(self.shape(run, p.notebooks_dir).items())), []).append(run)
        for shape, group in by_shape.items():
            injects = [_resume_after_stop(r, p, previous, restart) for r in group]
            ex = self._executor(runs_dir, dict(shape), f"steelnb-{p.name}-{group[0].stage}")
            call = SlurmRun()
            try:
                if len(group) == 1:
                    jobs = [ex.submit(call, group[0], p.notebooks_dir, runs_dir, injects[0])]
                else:
                    n = len(group)
                    jobs = ex.map_array(call, group, [p.notebooks_dir] * n, [runs_dir] * n, injects)
            except Exception as e:  # sbatch refused: submitit raises its own errors with sbatch's output
                raise SlurmRequestError(
                    f"sbatch refused the jobs of {', '.join(r.slug for r in group)}: {e}"
                ) from e
            for run, job, inject in zip(group, jobs, injects):
                sub = _Submitted(
                    run, str(job.job_id), job.paths.folder, bool(inject), run_hash(run, p.notebooks_dir)
                )
                submitted.append(sub)
                note(_record(run, status="submitted", error="", slurm=_slurm_block(sub, runs_dir)))
            ids = jobs[0].job_id.split("_")[0]
            what = f"job array {ids} ({len(jobs)} runs)" if len(jobs) > 1 else f"job {ids}"
            _say(f"stage {group[0].stage}: submitted {what}; logs in {runs_dir / 'slurm'}")
        return submitted

    def run_benchmarks(self, p: Plan, runs_dir: Path, force: bool) -> list[dict[str, Any]]:
        """The plan's benchmarks as one Slurm job of the runs' shape (GPU benchmarks need the
        cluster's GPUs); a job Slurm stopped makes every benchmark "failed"."""
        from .benchmarks import run_benchmarks

        finished = [
            not force
            and (runs_dir / f"bench_{n}.done").is_file()
            and (runs_dir / f"bench_{n}.done").read_text().strip() == command
            for n, command in enumerate(p.benchmarks, 1)
        ]
        if all(finished):  # nothing to run: no job for skipping
            return run_benchmarks(p.benchmarks, p.root, runs_dir, force=force)
        ex = self._executor(runs_dir, self._shape(), f"steelnb-{p.name}-benchmarks")
        job = ex.submit(run_benchmarks, p.benchmarks, p.root, runs_dir, force)
        _say(f"benchmarks: submitted job {job.job_id}")
        run = Run("benchmarks", {}, "benchmarks", "benchmarks")
        sub = _Submitted(run, str(job.job_id), job.paths.folder, False, "")
        states: list[JobInfo] = []
        _wait([sub], lambda _, info: states.append(info), self.options.poll_s)
        outcome = _result(sub, wait_s=30 if states[0].state == "COMPLETED" else 2)
        if outcome is not None and outcome[0] == "success":
            return list(outcome[1])
        err = _relative(_task0_paths(sub).stderr, runs_dir)
        why = f"Slurm job {sub.job_id} {states[0].state}; log {err}: {_last_line(_task0_paths(sub).stderr)}"
        return [{"command": c, "status": "failed", "error": why[:300]} for c in p.benchmarks]


# -- waiting for the jobs and reading what they left --------------------------------------------
def _adopt(group: list[Run], p: Plan, previous: Mapping[str, Any], restart: bool) -> list[_Submitted]:
    """Jobs an earlier ``steelnb run`` submitted for these runs that Slurm still runs: wait for
    them rather than submit the runs twice (the earlier process was killed)."""
    candidates = {
        r.slug: (r, previous[r.slug]["slurm"])
        for r in group
        if not restart
        and previous.get(r.slug, {}).get("status") == "submitted"
        and previous[r.slug].get("slurm", {}).get("run_hash") == run_hash(r, p.notebooks_dir)
    }
    if not candidates:
        return []
    states = job_states([s["job_id"] for _, s in candidates.values()]) or {}
    adopted = []
    for run, s in candidates.values():
        info = states.get(s["job_id"])
        if info is not None and info.state not in FINAL:
            _say(f"{run.slug}: waiting for Slurm job {s['job_id']} ({info.state}), submitted earlier")
            adopted.append(
                _Submitted(run, s["job_id"], Path(s["folder"]), bool(s.get("resumed")), s["run_hash"])
            )
    return adopted


def _resume_after_stop(
    run: Run, p: Plan, previous: Mapping[str, Any], restart: bool
) -> dict[str, Any] | None:
    """``{"resume": True}`` for a run whose last job Slurm stopped (same parameters and notebook)."""
    rec = previous.get(run.slug, {})
    slurm = rec.get("slurm") or {}
    # "submitted" and not adopted: the job ended without this process seeing it (cancelled on ^C)
    # "interrupted": Ctrl-C or SIGTERM stopped the plan, which cancelled the job
    stopped = rec.get("status") in ("submitted", "interrupted") or (
        rec.get("status") == "failed" and slurm.get("state") not in (None, "COMPLETED")
    )
    same = slurm.get("run_hash") == run_hash(run, p.notebooks_dir)
    return _resume_inject(run, p.notebooks_dir) if stopped and same and not restart else None


def _wait(waiting: list[_Submitted], ended: Callable[[_Submitted, JobInfo], None], poll_s: float) -> None:
    """Look at the queue (every second while something changes, then less often, up to
    ``poll_s``) until every job ended; call ``ended(job, what Slurm says)`` as each one does."""
    pending = {s.job_id: s for s in waiting}
    failures, delay = 0, 1.0
    while pending:
        changed = False
        states = job_states(list(pending))
        if states is None:
            failures += 1
            if failures >= 20:
                raise SlurmUnavailableError(
                    f"squeue failed {failures} times in a row; jobs {', '.join(pending)} may still run: "
                    "run the plan again to wait for them"
                )
        else:
            failures = 0
            changed = _look(pending, states, ended)
        if pending:
            delay = 1.0 if changed else min(delay * 1.5, poll_s)
            time.sleep(min(delay, poll_s))


def _look(
    pending: dict[str, _Submitted],
    states: Mapping[str, JobInfo],
    ended: Callable[[_Submitted, JobInfo], None],
) -> bool:
    """One look at the queue's ``states``: note each pending job's state, call ``ended`` for those
    that ended and take them out of ``pending`` (a job the queue forgot counts as ended, state
    UNKNOWN, after three looks); whether any job's state changed."""
    changed = False
    for job_id, sub in list(pending.items()):
        info = states.get(job_id)
        sub.missing = 0 if info else sub.missing + 1
        if info is None and sub.missing < 3:
            continue
        info = info or JobInfo(job_id, "UNKNOWN")
        if info.state != sub.state:
            _say(f"{sub.run.slug}: Slurm job {job_id} {info.state} {info.node}".rstrip())
            changed = True
        sub.state, sub.node = info.state, info.node or sub.node
        if info.state in FINAL:
            ended(sub, info)
            del pending[job_id]
    return changed


def _harvest(sub: _Submitted, info: JobInfo, runs_dir: Path) -> dict[str, Any]:
    """The run's record once its job ended: what execute_run returned on the node, or, when
    Slurm stopped the job, a failed record naming the state and the log."""
    slurm = _slurm_block(sub, runs_dir, info)
    outcome = _result(sub, wait_s=30 if info.state == "COMPLETED" else 2)
    if outcome is not None and outcome[0] == "success" and isinstance(outcome[1], dict):
        # a requeued job (preemption, time limit) ran with resume=True: say so
        slurm["resumed"] = slurm["resumed"] or bool((outcome[1].get("injected") or {}).get("resume"))
        rec = {**outcome[1], "slurm": slurm}
        if info.state == "COMPLETED" or rec.get("status") == "done":
            return rec
        error = rec.get("error", "")
    elif outcome is not None:  # the job's Python raised outside the notebook (submitit's traceback)
        error = str(outcome[1]).strip().splitlines()[-1] if str(outcome[1]).strip() else "error"
        rec = _record(sub.run, slurm=slurm)
    else:
        error = _last_line(_task0_paths(sub).stderr)
        rec = _record(sub.run, slurm=slurm)
    stopped = f"Slurm job {sub.job_id} {info.state}" + (f" on {slurm['node']}" if slurm["node"] else "")
    if slurm["exit_code"]:
        stopped += f" (exit code {slurm['exit_code']}{', ' + info.reason if info.reason not in ('', 'None') else ''})"
    message = f"{stopped}; log {slurm['err']}" + (f": {error}" if error else "")
    rec.update(status="failed", error=message[:300])
    rec.setdefault(
        "wall_s", info.elapsed_s if info.elapsed_s is not None else round(time.time() - sub.started, 1)
    )
    rec.setdefault("finished_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
    if info.state != "COMPLETED":
        _annotate(runs_dir / f"{sub.run.slug}.ipynb", sub.run, stopped, _task0_paths(sub))
    return rec


def _slurm_block(sub: _Submitted, runs_dir: Path, info: JobInfo | None = None) -> dict[str, Any]:
    """The ``slurm`` block of a run's record: its job, node, state (PENDING before ``info``, what
    Slurm says once it ended), exit code, restarts, logs and what it was given."""
    paths = _task0_paths(sub)
    fields = _job_fields(sub.job_id) if info else {}
    return {
        "job_id": sub.job_id,
        "node": (info.node if info else "") or sub.node,
        "state": info.state if info else "PENDING",
        "exit_code": fields.get("ExitCode", "") if info and info.state != "COMPLETED" else "",
        "restarts": int(fields.get("Restarts", "0") or 0),
        "log": _relative(paths.stdout, runs_dir),
        "err": _relative(paths.stderr, runs_dir),
        "folder": str(sub.folder),
        "run_hash": sub.run_hash,
        "resumed": sub.resumed,
    }


def _cancel(waiting: list[_Submitted]) -> None:
    """scancel the jobs of an interrupted stage (by id)."""
    ids = [s.job_id for s in waiting]
    if ids:
        _call(["scancel", *ids], timeout=60)
        _say(f"interrupted: cancelled Slurm job(s) {', '.join(ids)}")


# -- helpers --------------------------------------------------------------------------------
def _say(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def _task0_paths(sub: _Submitted) -> JobPaths:
    """submitit's paths of the job's first task (the one that writes the run's outputs)."""
    return JobPaths(sub.folder, job_id=sub.job_id, task_id=0)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _result(sub: _Submitted, wait_s: float) -> tuple[str, Any] | None:
    """("success", value) or ("error", traceback) that the job left; None when it left nothing
    (killed before it could). A shared filesystem may show the file late: wait up to ``wait_s``."""
    path = _task0_paths(sub).result_pickle
    deadline = time.time() + wait_s
    while not path.exists() and time.time() < deadline:
        time.sleep(0.5)
    if not path.exists():
        return None
    try:
        return pickle_load(path)
    except Exception as e:  # a half-written or foreign pickle: the job's log says more
        return ("error", f"unreadable result {path}: {e!r}")


def _last_line(path: Path) -> str:
    """The log's last line that says why the job ended: slurmstepd's ``*** JOB ... ***``, else a
    Python exception (a traceback's end), else any error line, else its last line; or ""."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    slurm = [ln for ln in lines if "*** JOB" in ln]  # slurmstepd: *** JOB 12 ON node CANCELLED AT ... ***
    python = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception|Interrupt|Exit)\b", ln)]
    errors = [ln for ln in lines if re.search(r"error|exception|killed|cancelled|oom", ln, re.I)]
    return (slurm or python or errors or lines or [""])[-1][:200]


def _annotate(notebook: Path, run: Run, stopped: str, paths: JobPaths) -> None:
    """Put the Slurm state and the log's last lines on top of the run's executed notebook (a new
    notebook when the job died before papermill wrote one), so the report shows why it stopped."""
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_notebook

    tails = []
    for name, path in (("stderr", paths.stderr), ("stdout", paths.stdout)):
        try:
            lines = Path(path).read_text(errors="replace").splitlines()[-20:]
        except OSError:
            lines = []
        if lines:
            tails.append(
                f"Last lines of its {name} ({Path(path).name}):\n\n```\n" + "\n".join(lines) + "\n```"
            )
    text = f"**{stopped}**: Slurm stopped this run before it finished.\n\n" + "\n\n".join(tails)
    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except (OSError, ValueError):
        nb = new_notebook(cells=[new_markdown_cell(f"# {run.title or run.slug}")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.insert(0, new_markdown_cell(text))
    with atomic_path(notebook) as tmp:
        nbformat.write(nb, str(tmp))
