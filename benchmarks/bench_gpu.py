"""The GPU path in one short run: activation kernels, a layer, a training step, fullgraph compile.

Prints one JSON object. Four measurements, each interleaved over ``--repeats`` rounds so that
load from other processes hits every variant alike (median seconds, after two warm-up calls):

- ``activation``: forward + backward of the task-adaptive activation alone on an (N, H) input
  with per-sample tasks, on each path this machine has: ``triton`` (the Triton kernels),
  ``plain`` (the plain torch operations, the fallback), ``c_kernel`` (the fused C kernels, CPU
  only), and ``relu`` (``torch.relu``), the yardstick of every ratio;
- ``layer``: forward + backward of ``TALinear`` (training mode) on the Triton path and on the
  plain path, next to ``nn.Linear`` + ReLU (target on a GPU: Triton <= 1.1x Linear + ReLU);
- ``step``: samples per second of a training step (forward, BCE per task, backward, Adam) of
  TAAN and of hard sharing (HardShare: the same network with ReLU) at YouTube-8M shapes: 1152
  features, ``--tasks`` binary tasks (3862 classes in YouTube-8M), hidden 1024 x 3, M = 64,
  balanced batches of ``--per-task`` samples per task, the task counts passed to the model
  (target on a GPU: >= 1e6 samples/s for TAAN); and ``taan_shared_head``, TAAN with one head
  for all tasks, which separates the trunk's cost from that of T small head matmuls;
- ``compile``: ``torch.compile(model, fullgraph=True)`` of the TAAN step at ``--compile-tasks``
  tasks (per-task heads make a graph per head's matmul, so the full task count would spend the
  run compiling): whether it compiled as one graph, the seconds of the first (compiling) step,
  and compiled against eager samples/s.

``--bf16`` runs everything under bfloat16 autocast (the training setting on GPUs). ``--tiny``
shrinks every size so that the whole run takes seconds on a CPU (a test of this script, not a
measurement); on CPU the Triton path shows as skipped with its reason unless Triton's
interpreter is on. scripts/gpu_check.sh runs this on CUDA.

Usage: ``python benchmarks/bench_gpu.py [--device cuda] [--bf16] [--tiny] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from taan_core.models import HardShare, MLPConfig, TAAN, TAANConfig
from taan_core.nn import _kernels, _triton
from taan_core.nn.functional import task_adaptive_activation
from taan_core.nn.layers import TALinear


@dataclass
class Shapes:
    input_dim: int = 1152
    hidden: tuple[int, ...] = (1024, 1024, 1024)
    num_tasks: int = 3862
    num_hinges: int = 64
    per_task: int = 16
    layer_batch: int = 16384
    compile_tasks: int = 16


TINY = Shapes(input_dim=24, hidden=(32, 32), num_tasks=6, num_hinges=8, per_task=4, layer_batch=64, compile_tasks=3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _path(name: str):
    """Run the activation on ``name``: "triton", "plain" or "c_kernel"."""
    previous = _triton.mode(), _kernels.enabled()
    _triton.set_mode("always" if name == "triton" else "off")
    _kernels.set_enabled(name == "c_kernel")
    try:
        yield
    finally:
        _triton.set_mode(previous[0])
        _kernels.set_enabled(previous[1])


def _paths(device: torch.device) -> tuple[dict[str, bool], dict[str, str]]:
    """Which activation paths run here, and why the others do not."""
    probe_z = torch.zeros(1, 1, device=device)
    probe_alpha = torch.zeros(1, 1, device=device)
    skipped = {}
    with _path("triton"):
        if not _triton.usable(probe_z, probe_alpha):
            skipped["triton"] = (_triton.status if not _triton.available() else
                                 "Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if device.type != "cpu":
        skipped["c_kernel"] = "the C kernels are for CPU tensors"
    elif not _kernels.available():
        skipped["c_kernel"] = f"C kernels not available: {_kernels.status}"
    runs = {name: name not in skipped for name in ("triton", "plain", "c_kernel")}
    return runs, skipped


def _interleaved(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in interleaved rounds after two warm-up calls."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _on_path(fn: Callable[[], None], name: str) -> Callable[[], None]:
    def run() -> None:
        with _path(name):
            fn()
    return run


def bench_activation(shapes: Shapes, device: torch.device, bf16: bool, repeats: int, runs: dict) -> dict:
    gen = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if bf16 else torch.float32
    n, h, t, m = shapes.layer_batch, shapes.hidden[0], shapes.num_tasks, shapes.num_hinges
    z = torch.randn(n, h, generator=gen).to(device, dtype).requires_grad_()
    task = torch.randint(t, (n,), generator=gen).to(device)
    alpha = (0.1 * torch.randn(t, m, generator=gen)).to(device).requires_grad_()
    hinges = torch.linspace(-1, 1, m).to(device).requires_grad_()
    grad = torch.randn(n, h, generator=gen).to(device, dtype)

    def lookup() -> None:
        torch.autograd.backward(task_adaptive_activation(z, task, alpha, hinges), grad)

    def relu() -> None:
        torch.autograd.backward(torch.relu(z), grad)

    fns = {"relu": relu, **{p: _on_path(lookup, p) for p, ok in runs.items() if ok}}
    times = _interleaved(fns, device, repeats)
    return {"ms": {k: 1e3 * v for k, v in times.items()},
            "over_relu": {k: v / times["relu"] for k, v in times.items() if k != "relu"}}


def bench_layer(shapes: Shapes, device: torch.device, bf16: bool, repeats: int, runs: dict) -> dict:
    torch.manual_seed(0)
    n, d_in, d_out, t = shapes.layer_batch, shapes.input_dim, shapes.hidden[0], shapes.num_tasks
    layer = TALinear(d_in, d_out, t, shapes.num_hinges).to(device).train()
    linear = torch.nn.Linear(d_in, d_out).to(device)
    x = torch.randn(n, d_in, device=device)
    task = torch.randint(t, (n,), device=device)

    def talinear() -> None:
        with _autocast(device, bf16):
            out = layer(x, task)
        out.float().square().mean().backward()

    def linear_relu() -> None:
        with _autocast(device, bf16):
            out = torch.relu(linear(x))
        out.float().square().mean().backward()

    fns = {"linear_relu": linear_relu, **{f"talinear_{p}": _on_path(talinear, p) for p, ok in runs.items() if ok}}
    times = _interleaved(fns, device, repeats)
    return {"ms": {k: 1e3 * v for k, v in times.items()},
            "over_linear_relu": {k: v / times["linear_relu"] for k, v in times.items() if k != "linear_relu"}}


def _step(model: torch.nn.Module, shapes: Shapes, num_tasks: int, device: torch.device, bf16: bool,
          forward: Callable | None = None) -> Callable[[], None]:
    """One training step on a balanced mixed batch in shuffled order, the counts given."""
    gen = torch.Generator().manual_seed(1)
    n = num_tasks * shapes.per_task
    x = torch.randn(n, shapes.input_dim, generator=gen).to(device)
    task = torch.arange(num_tasks).repeat_interleave(shapes.per_task)[torch.randperm(n, generator=gen)].to(device)
    target = (torch.rand(n, 1, generator=gen) < 0.3).float().to(device)
    counts = [shapes.per_task] * num_tasks
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = model if forward is None else forward

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, bf16):
            out = forward(x, task, counts=counts)
        # the outputs list every task's rows in turn: one BCE over all of them
        loss = F.binary_cross_entropy_with_logits(torch.cat(out).float(), target)
        loss.backward()
        opt.step()

    return step


def _taan(shapes: Shapes, num_tasks: int, device: torch.device, shared_head: bool = False) -> TAAN:
    torch.manual_seed(0)
    return TAAN(TAANConfig(input_dim=shapes.input_dim, output_dims=[1] * num_tasks, hidden=list(shapes.hidden),
                           num_hinges=shapes.num_hinges, shared_head=shared_head)).to(device).train()


def bench_step(shapes: Shapes, device: torch.device, bf16: bool, repeats: int) -> dict:
    torch.manual_seed(0)
    hard = HardShare(MLPConfig(input_dim=shapes.input_dim, output_dims=[1] * shapes.num_tasks,
                               hidden=list(shapes.hidden))).to(device).train()
    t = shapes.num_tasks
    steps = {"hard": _step(hard, shapes, t, device, bf16),
             "taan": _step(_taan(shapes, t, device), shapes, t, device, bf16),
             "taan_shared_head": _step(_taan(shapes, t, device, shared_head=True), shapes, t, device, bf16)}
    times = _interleaved(steps, device, repeats)
    n = t * shapes.per_task
    return {"batch": n, "samples_per_s": {k: n / v for k, v in times.items()},
            "taan_over_hard": times["taan"] / times["hard"]}


def bench_compile(shapes: Shapes, device: torch.device, bf16: bool, repeats: int, backend: str) -> dict:
    num_tasks = shapes.compile_tasks
    graphs: list = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return torch._dynamo.backends.registry.lookup_backend(backend)(graph, example_inputs)

    torch._dynamo.reset()
    eager_model, compiled_model = _taan(shapes, num_tasks, device), _taan(shapes, num_tasks, device)
    compiled = torch.compile(compiled_model, backend=counting, fullgraph=True)
    eager_step = _step(eager_model, shapes, num_tasks, device, bf16)
    compiled_step = _step(compiled_model, shapes, num_tasks, device, bf16, forward=compiled)
    result: dict = {"tasks": num_tasks, "backend": backend}
    start = time.perf_counter()
    try:
        compiled_step()
        _sync(device)
    except Exception as err:  # a graph break under fullgraph=True, or a backend failure: report it
        result.update(fullgraph=False, error=f"{type(err).__name__}: {str(err)[:2000]}")
        return result
    result["first_step_s"] = time.perf_counter() - start
    times = _interleaved({"eager": eager_step, "compiled": compiled_step}, device, repeats)
    n = num_tasks * shapes.per_task
    result.update(fullgraph=True, forward_graphs=len(graphs), samples_per_s={k: n / v for k, v in times.items()},
                  compiled_over_eager=times["compiled"] / times["eager"])
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a test of this script, not a measurement")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=None, help="tasks of the training step (default 3862)")
    parser.add_argument("--per-task", type=int, default=None, help="samples per task in a batch (default 16)")
    parser.add_argument("--compile-tasks", type=int, default=None, help="tasks of the compiled step (default 16)")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor on CUDA, aot_eager on CPU)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: activation,layer,step,compile")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    shapes = TINY if args.tiny else Shapes()
    overrides = {k: v for k, v in (("num_tasks", args.tasks), ("per_task", args.per_task),
                                   ("compile_tasks", args.compile_tasks)) if v is not None}
    shapes = replace(shapes, **overrides)
    backend = args.compile_backend or ("inductor" if device.type == "cuda" else "aot_eager")
    skip = {s for s in args.skip.split(",") if s}
    runs, skipped = _paths(device)

    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "triton": _triton.status, "bf16": args.bf16, "tiny": args.tiny,
        "repeats": args.repeats, "shapes": asdict(shapes), "paths_skipped": skipped,
    }
    parts = {
        "activation": lambda: bench_activation(shapes, device, args.bf16, args.repeats, runs),
        "layer": lambda: bench_layer(shapes, device, args.bf16, args.repeats, runs),
        "step": lambda: bench_step(shapes, device, args.bf16, args.repeats),
        "compile": lambda: bench_compile(shapes, device, args.bf16, max(3, args.repeats // 2), backend),
    }
    for name, part in parts.items():
        if name in skip:
            continue
        start = time.perf_counter()
        report[name] = part()
        report[name]["wall_s"] = time.perf_counter() - start
    triton_layer = report.get("layer", {}).get("over_linear_relu", {}).get("talinear_triton")
    taan_rate = report.get("step", {}).get("samples_per_s", {}).get("taan")
    report["targets"] = {
        "layer_triton_over_linear_relu_at_most_1.1": None if triton_layer is None else triton_layer <= 1.1,
        "taan_step_at_least_1e6_samples_per_s": None if taan_rate is None or args.tiny else taan_rate >= 1e6,
        "fullgraph": report.get("compile", {}).get("fullgraph"),
    }
    return report


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=2)
    print()
