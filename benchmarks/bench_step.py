"""Cost of a full TAAN training step next to a hard-shared network and the reference-style step.

One step = forward, backward and Adam update on a balanced mixed-task batch with a BCE loss per
task, at the paper's YouTube-8M shapes (1152 -> 1024 x 3, T = 16, M = 64, 256 samples per task).
Measured in one run, interleaved so that load from other processes hits every variant alike:

- ``hard``: HardShare, the same network with ReLU and no task-specific parameters;
- ``taan``: TAAN, one forward on the mixed batch (per-sample task ids, segment lookup);
- ``taan+tracenorm`` / ``taan+cosine`` / ``taan+distance``: TAAN with each regulariser (c = 0.1);
- ``reference``: the TAAN step written the reference code's way: one forward per task with the
  naive activation ``task_adaptive_activation_reference``, which materialises (N_t, H, M).

Peak memory is what the step adds on top of the resting state (parameters, Adam state, batch):
on CUDA from the allocator's peak, on CPU from the process's peak resident set in a fresh
subprocess per variant (large blocks are forced to mmap so freed memory leaves the RSS).

Usage: ``python benchmarks/bench_step.py [--quick] [--device cpu|cuda] [--repeats N]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from taan_core.nn.functional import task_adaptive_activation_reference
from taan_core.models import build_model
from taan_core.nn.regularizers import functional_penalty

VARIANTS = ("hard", "taan", "taan+tracenorm", "taan+cosine", "taan+distance", "reference")
REG_COEF = 0.1


@dataclass
class BenchConfig:
    input_dim: int = 1152
    hidden: tuple[int, ...] = (1024, 1024, 1024)
    num_tasks: int = 16
    num_hinges: int = 64
    outputs_per_task: int = 10
    batch_per_task: int = 256


QUICK = BenchConfig(input_dim=64, hidden=(64, 64, 64), num_tasks=4, num_hinges=8, outputs_per_task=3,
                    batch_per_task=32)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_step(variant: str, cfg: BenchConfig, device: torch.device, seed: int = 0) -> Callable[[], None]:
    """Build a model, optimiser and batch for ``variant``; return a function running one step."""
    torch.manual_seed(seed)
    name = "hard" if variant == "hard" else "taan"
    overrides = {"hidden": list(cfg.hidden)}
    if name == "taan":
        overrides["num_hinges"] = cfg.num_hinges
    model = build_model(name, (cfg.input_dim,), [cfg.outputs_per_task] * cfg.num_tasks, **overrides).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n = cfg.num_tasks * cfg.batch_per_task
    x = torch.randn(n, cfg.input_dim, device=device)
    # A balanced batch in random order, as a shuffling sampler delivers it.
    task = torch.arange(cfg.num_tasks, device=device).repeat_interleave(cfg.batch_per_task)
    task = task[torch.randperm(n, device=device)]
    targets = [torch.randint(0, 2, (cfg.batch_per_task, cfg.outputs_per_task), device=device).float()
               for _ in range(cfg.num_tasks)]
    reg = variant.split("+")[1] if "+" in variant else None

    if variant == "reference":
        xs = [x[task == t] for t in range(cfg.num_tasks)]

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = x.new_zeros(())
            for t in range(cfg.num_tasks):
                h = xs[t]
                for block in model.blocks:
                    h = task_adaptive_activation_reference(block.linear(h), t, block.alpha, block.hinges)
                loss = loss + F.binary_cross_entropy_with_logits(model.heads[t](h), targets[t])
            loss.backward()
            opt.step()
    else:

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            out = model(x, task)
            loss = sum(F.binary_cross_entropy_with_logits(o, y) for o, y in zip(out, targets))
            if reg is not None:
                loss = loss + functional_penalty(model, reg, REG_COEF)
            loss.backward()
            opt.step()

    def run() -> None:
        step()
        _sync(device)

    run.zero_grad = lambda: opt.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
    return run


def _time(cfg: BenchConfig, device: torch.device, repeats: int, variants: tuple[str, ...]) -> dict:
    steps = {v: _make_step(v, cfg, device) for v in variants}
    for step in steps.values():  # warm-up: allocator, Adam state, lazy init
        step()
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v, step in steps.items():
            start = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - start)
    return {v: {"median_s": statistics.median(t), "min_s": min(t), "repeats": len(t)} for v, t in times.items()}


def _penalty_cost(cfg: BenchConfig, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each regulariser's forward + backward alone on the TAAN model.

    A step-to-step difference of ~1% drowns in the noise of a shared machine; the penalty's own
    cost, timed over many repeats, says what it adds to a step directly.
    """
    torch.manual_seed(0)
    model = build_model("taan", (cfg.input_dim,), [cfg.outputs_per_task] * cfg.num_tasks,
                        hidden=list(cfg.hidden), num_hinges=cfg.num_hinges).to(device)
    out = {}
    for reg in ("tracenorm", "cosine", "distance"):
        times = []
        for _ in range(repeats + 2):
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            functional_penalty(model, reg, REG_COEF).backward()
            _sync(device)
            times.append(time.perf_counter() - start)
        out[reg] = statistics.median(times[2:])
    return out


def _read_status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _memory_here(variant: str, cfg: BenchConfig, device: torch.device) -> int:
    """Bytes a step of ``variant`` adds to the resting state, measured in this process."""
    step = _make_step(variant, cfg, device)
    step()  # Adam state and caches exist from here on
    step.zero_grad()  # type: ignore[attr-defined]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return torch.cuda.max_memory_allocated(device) - base
    base = _read_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM to the current RSS
        fh.write("5")
    step()
    return _read_status("VmHWM") - base


def _memory(cfg: BenchConfig, device: torch.device, variants: tuple[str, ...]) -> dict[str, float]:
    if device.type == "cuda":
        return {v: _memory_here(v, cfg, device) / 2**20 for v in variants}
    out = {}
    # glibc keeps freed heap blocks in the RSS; a fixed mmap threshold makes every large tensor a
    # mapping of its own, returned to the system when freed, so RSS follows live tensors.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for v in variants:
        cmd = [sys.executable, __file__, "--memory-child", v, "--config", json.dumps(asdict(cfg)),
               "--threads", str(torch.get_num_threads())]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        out[v] = int(res.stdout.strip().splitlines()[-1]) / 2**20
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per variant")
    parser.add_argument("--reference-repeats", type=int, default=None, help="timed steps of the slow reference")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.memory_child:
        cfg = BenchConfig(**json.loads(args.config))
        print(_memory_here(args.memory_child, cfg, device))
        return {}

    cfg = QUICK if args.quick else BenchConfig()
    repeats = args.repeats or (3 if args.quick else 5)
    # The reference step takes about a minute at full size on two cores: one timed step.
    ref_repeats = args.reference_repeats or (2 if args.quick else 1)
    fast = tuple(v for v in VARIANTS if v != "reference")
    timing = _time(cfg, device, repeats, fast)
    timing.update(_time(cfg, device, ref_repeats, ("reference",)))
    med = {v: t["median_s"] for v, t in timing.items()}
    low = {v: t["min_s"] for v, t in timing.items()}
    regs = ("tracenorm", "cosine", "distance")
    penalty = _penalty_cost(cfg, device, 30)

    def _ratios(t: dict[str, float]) -> dict[str, float]:
        return {
            "taan_over_hard": t["taan"] / t["hard"],
            **{f"{r}_over_taan": t[f"taan+{r}"] / t["taan"] for r in regs},
            "reference_over_taan": t["reference"] / t["taan"],
        }

    ratios = _ratios(med)
    report: dict = {
        "benchmark": "training step (forward + backward + Adam)",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # Other processes on the machine distort timings; the load average says how much.
        "load_average_1min": os.getloadavg()[0],
        "config": {**asdict(cfg), "batch": cfg.num_tasks * cfg.batch_per_task, "reg_coef": REG_COEF},
        "time": timing,
        "ratios": ratios,
        "ratios_of_min": _ratios(low),
        # Each regulariser's forward + backward alone, as a fraction of the TAAN step (median).
        "penalty_s": penalty,
        "penalty_over_taan_step": {r: penalty[r] / med["taan"] for r in regs},
    }
    targets = {
        "taan_over_hard <= 1.15": ratios["taan_over_hard"] <= 1.15,
        **{f"{r}_over_taan <= 1.05": ratios[f"{r}_over_taan"] <= 1.05 for r in regs},
        **{f"{r}_penalty_over_taan_step <= 0.05": penalty[r] / med["taan"] <= 0.05 for r in regs},
        "reference_over_taan >= 3": ratios["reference_over_taan"] >= 3,
    }
    if not args.no_memory:
        mem = _memory(cfg, device, ("hard", "taan", "reference"))
        report["step_peak_memory_mib"] = mem
        report["memory_ratios"] = {
            "taan_over_hard": mem["taan"] / mem["hard"],
            "taan_over_reference": mem["taan"] / mem["reference"],
        }
        targets["taan_over_reference_memory <= 0.25"] = report["memory_ratios"]["taan_over_reference"] <= 0.25
    report["targets_met"] = targets
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
