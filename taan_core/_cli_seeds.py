"""``taan-core train --seeds 0,1,2 --out runs/NAME``: one run per seed, into runs/NAME/seed-K/.

Each seed trains in its own process, started with multiprocessing's "spawn" method (a fresh
interpreter, nothing inherited but the environment), which runs ``taan-core train`` in-process
(the CLI hands its ``main`` in, so this module never imports the CLI) with the same options plus ``--seed K --out runs/NAME/seed-K``. So
every seed folder is a normal run (resumable, readable by ``taan-viz``), a seed that fails or
crashes leaves the others running, and no executable has to be found on PATH. ``--workers N``
runs N seeds side by side; their output goes to ``runs/NAME/logs/seed-K.log`` and, unless
``--threads`` is given, each gets an equal share of the CPU cores.

No seed outlives the command. On Linux each seed's process asks the kernel (``prctl``
``PR_SET_PDEATHSIG``) to be killed when the parent dies, even by SIGKILL; a seed killed that
way keeps the ``last.pt`` of its last completed epoch (``--resume`` continues it) and the lock
it held is dropped by the kernel. ``--seeds ... --resume`` continues every seed that saved an
epoch and starts the seeds that never did. Ctrl-C (or SIGINT to the parent alone) starts no further
seed, passes SIGINT to the running ones, waits a few seconds for them to stop cleanly, kills
those still running, and ends the command with status 130.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from taan_core._atomic import refuse_link
from taan_core._memory import memory_available as _memory_available
from taan_core.errors import UserError

__all__ = ["MAX_SEEDS", "SeedResult", "child_arguments", "parse_seeds", "train_seeds"]

# More seeds than anyone trains; a larger count is a typo (--seeds 0-100000000) that would
# otherwise fill memory with the list before anything is said.
MAX_SEEDS = 10_000

# Options of `train` that the parent consumes; every other option given is passed to each seed.
_PARENT_ONLY = ("seeds", "workers", "seed", "out")


def _too_many(count: int) -> ValueError:
    return ValueError(f"--seeds names {count} seeds, more than the {MAX_SEEDS} one command trains; "
                      "split them over several commands")


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0,1,2"`` or a range ``"0-4"`` (or a mix, ``"0-2,7"``); ValueError otherwise.

    At most :data:`MAX_SEEDS` seeds; the count of a range is checked before it is expanded, and
    repeats are found in one pass.
    """
    parts: list[tuple[int, int]] = []
    count = 0
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
            else:
                lo_i = hi_i = int(part)
            parts.append((lo_i, hi_i))
            count += hi_i - lo_i + 1
    except ValueError:
        raise UserError(f"--seeds must be comma-separated ints or ranges like 0,1,2 or 0-4, got {text!r}") from None
    if not parts or any(lo < 0 for lo, _ in parts):
        raise UserError(f"--seeds must name at least one seed, each >= 0, got {text[:80]!r}")
    if count > MAX_SEEDS:
        raise _too_many(count)
    seeds: list[int] = []
    seen: set[int] = set()
    for lo, hi in parts:
        for s in range(lo, hi + 1):
            if s in seen:
                raise UserError(f"--seeds names seed {s} twice")
            seen.add(s)
            seeds.append(s)
    return seeds


def child_arguments(ctx: Any) -> list[str]:
    """The command-line options the user gave to ``train`` (a click context), minus the parent's.

    Only options given on the command line are repeated, so each seed resolves its defaults
    exactly as a single ``taan-core train`` would.
    """
    args: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name in _PARENT_ONLY or not getattr(param, "opts", None):
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[name]
        if getattr(param, "is_flag", False):
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
            continue
        # Choice options arrive as Enum members; the child wants their plain value.
        args += [param.opts[0], str(getattr(value, "value", value))]
    return args


@dataclass(frozen=True)
class SeedResult:
    """How one seed's training ended: ``code`` 0 on success; ``log`` holds its output when it
    ran side by side with others; ``message`` is its last line of error output."""

    seed: int
    code: int
    seconds: float
    out: Path
    log: Path | None
    message: str


# What one seed's process needs at least: an interpreter with torch loaded, before any data.
_WORKER_MEMORY = 512 * 2**20


def max_workers() -> int:
    """Seeds that can train side by side here: one per CPU core, and 512 MiB of available memory
    each (at least one)."""
    cores = os.cpu_count() or 1
    memory = _memory_available()
    by_memory = cores if memory is None else max(1, memory // _WORKER_MEMORY)
    return max(1, min(cores, by_memory))


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (Linux); exit at once if it
    already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the parent's clean-up still stops the seeds
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _seed_main(entry: Callable[[list[str]], Any], argv: list[str], log: str | None, parent: int | None = None) -> None:
    """The body of one seed's process: ``entry(argv)`` (``taan-core``'s main), its output to ``log``.

    The process's exit status is the command's (``main`` ends in ``SystemExit``).
    """
    if parent is not None:
        _die_with_parent(parent)
    if log is not None:
        # File descriptors, not just sys.stdout: warnings from C code land in the log too.
        from taan_core._atomic import WriteError, open_nofollow

        try:
            # Never through a link planted as the log: O_TRUNC would empty its target.
            fd = open_nofollow(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as err:
            message = str(err) if isinstance(err, WriteError) else f"cannot write {log}: {err.strerror}"
            print(f"taan-core: error: {message}", file=sys.stderr)
            sys.exit(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    sys.argv = ["taan-core", *argv]
    entry(argv)


@contextlib.contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` while the seeds' processes start (a spawned process reads its
    environment at start-up, before torch sizes its thread pools)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Options that only make sense for a run that exists.
_RESUME_ONLY = ("--resume", "--allow-data-change")


def _seed_arguments(args: Sequence[str], run_out: Path, seed: int, echo: Callable[[str], None]) -> list[str]:
    """``args`` for one seed: with ``--resume``, a seed that never saved an epoch (the command
    stopped before it started, or before its first epoch ended) is trained from the start."""
    if "--resume" not in args or (run_out / "last.pt").is_file():
        return list(args)
    echo(f"seed {seed}: nothing to resume in {run_out}, training it from the start")
    return [a for a in args if a not in _RESUME_ONLY]


def train_seeds(
    seeds: Sequence[int],
    out: Path,
    args: Sequence[str],
    *,
    entry: Callable[[list[str]], Any],
    workers: int = 1,
    threads_given: bool = False,
    echo: Callable[[str], None] = print,
) -> list[SeedResult]:
    """Train one run per seed into ``out/seed-K`` and report each as it ends.

    Parameters
    ----------
    seeds : sequence of int
    out : Path
        Folder of the runs.
    args : sequence of str
        Options for every seed's ``taan-core train`` (without ``--seed`` and ``--out``). With
        ``--resume``, seeds without a ``last.pt`` start from the beginning.
    entry : callable
        ``taan-core``'s main, called with the arguments in each seed's process (it travels to
        the spawned process by name, as a picklable module-level function).
    workers : int, default 1
        Seeds trained at the same time (each seed is its own process in any case).
    threads_given : bool
        The user chose ``--threads`` (or the data set's default is a fixed count); otherwise,
        with several workers, each gets ``cpu_count // workers`` threads.
    echo : callable
        Receives one line per finished seed.

    Returns
    -------
    list of SeedResult, in the order of ``seeds``
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"--workers must be an int >= 1, got {workers!r}")
    workers = min(workers, len(seeds))
    limit = max_workers()
    if workers > limit:
        raise UserError(f"--workers {workers} is more than this machine runs side by side ({limit}: one per CPU core "
                         f"({os.cpu_count()}), 512 MiB of available memory each); use --workers {limit} or fewer")
    parallel = workers > 1
    extra: list[str] = []
    env: dict[str, str] = {}
    if parallel and not threads_given:
        n = _threads_per_worker(workers)
        extra = ["--threads", str(n)]
        # Also the BLAS/OpenMP pools the children start before torch reads --threads.
        env = {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    guard = threading.Lock()
    running: set = set()
    out.mkdir(parents=True, exist_ok=True)
    if parallel:
        refuse_link(out / "logs")
        (out / "logs").mkdir(exist_ok=True)

    def one(seed: int) -> SeedResult | None:
        run_out = out / f"seed-{seed}"
        argv = ["train", *_seed_arguments(args, run_out, seed, echo), *extra, "--seed", str(seed),
                "--out", str(run_out)]
        start = time.perf_counter()
        # One at a time, a seed's progress bar and errors go straight to the terminal.
        log = out / "logs" / f"seed-{seed}.log" if parallel else None
        if log is not None and log.is_symlink():
            message = f"{log} is a symbolic link; refused to write through it (remove the link)"
            echo(f"seed {seed}: failed: {message}")
            return SeedResult(seed, 2, 0.0, run_out, log, message)
        with guard:
            if stopping.is_set():
                return None
            proc = spawn.Process(target=_seed_main, args=(entry, argv, None if log is None else str(log), os.getpid()),
                                 name=f"seed-{seed}")
            proc.start()
            running.add(proc)
        proc.join()
        with guard:
            running.discard(proc)
        if stopping.is_set():
            return None
        # A process killed by signal N reports -N; a shell would say 128 + N.
        code = proc.exitcode if proc.exitcode >= 0 else 128 - proc.exitcode
        if log is not None:
            lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()] \
                if log.exists() and not log.is_symlink() else []
            message = lines[-1] if code and lines else ""
        else:
            message = "its error is printed above" if code else ""
        result = SeedResult(seed, code, time.perf_counter() - start, run_out, log, message)
        if code == 0:
            echo(f"seed {seed}: done in {result.seconds:.1f}s -> {run_out}")
        else:
            where = f" (log: {log})" if log is not None else ""
            echo(f"seed {seed}: failed with exit status {code}{where}: {message or 'no error output'}")
        return result

    with _environment(env):
        pool = ThreadPoolExecutor(max_workers=workers) if parallel else None
        try:
            results = list(pool.map(one, seeds)) if pool is not None else [one(s) for s in seeds]
        except BaseException:
            # Ctrl-C (or any failure of the parent): start nothing more, stop what runs.
            stopping.set()
            _stop(running, guard)
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return [r for r in results if r is not None]


def _stop(running: set, guard: threading.Lock, grace: float = 5.0) -> None:
    """SIGINT to every running seed, then SIGKILL to those still alive after ``grace`` seconds."""
    with guard:
        procs = list(running)
    for proc in procs:
        if proc.pid is not None and proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def train_many(ctx: Any, seeds: str | None, workers: int | None, *, seed: int | None, out: Path | None,
               dataset: str, model: str | None, entry: Callable[[list[str]], Any]) -> None:
    """The ``--seeds`` branch of ``taan-core train``: check the options, train, summarise.

    Raises ValueError for option errors; exits with status 1 when any seed failed.
    """
    import typer

    if seeds is None:
        raise UserError("--workers applies only with --seeds")
    if seed is not None:
        raise UserError("--seed and --seeds exclude each other")
    from taan_core._names import DATASET_NAMES

    if dataset not in DATASET_NAMES:
        raise UserError(f"--dataset must be one of {', '.join(DATASET_NAMES)}, got {dataset!r}")
    chosen = parse_seeds(seeds)
    if out is None:
        out = Path("runs") / f"{dataset}-{model or ('taan-conv' if dataset == 'omniglot' else 'taan')}"
    from taan_core.train._defaults import DATASET_DEFAULTS

    # planted trains on one thread by default (its model is too small to gain from more).
    fixed_threads = ctx.params.get("threads") is not None or DATASET_DEFAULTS.get(dataset, {}).get("threads", 0) > 0
    results = train_seeds(chosen, out, child_arguments(ctx), entry=entry, workers=1 if workers is None else workers,
                          threads_given=fixed_threads,
                          echo=lambda line: typer.echo(line, err=True))
    failed = [r.seed for r in results if r.code != 0]
    typer.echo(f"{len(results) - len(failed)} of {len(results)} seeds trained into {out}"
               + (f"; failed: {', '.join(map(str, failed))}" if failed else f"; taan-viz consensus {out} combines them"),
               err=True)
    if failed:
        raise typer.Exit(1)
