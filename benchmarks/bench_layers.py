"""Cost of one task-adaptive dense layer next to Linear + ReLU: forward + backward time and memory.

At N = 4096, in = out = 1024, T = 16 and M in {8, 24, 64} (a mixed-task batch with per-sample
task ids), measured in one run and interleaved, so that load from other processes hits every
variant alike:

- ``relu``: ``nn.Linear`` + ReLU, the yardstick every ratio is divided by;
- ``lookup``: ``TALinear`` in training mode (segment lookup, running statistics included), on
  whatever path ``task_adaptive_activation`` takes here (fused C kernel on CPU when it compiled);
- ``lookup_portable``: the same with the kernel's portable C forward path forced (only where
  the AVX-512 forward path exists, which ``lookup`` then takes);
- ``lookup_torch``: the same with the fused kernel switched off (plain torch operations);
- ``reference``: ``nn.Linear`` + ``task_adaptive_activation_reference``, the naive form that
  materialises (N, H, M); fewer repeats, since it is slow.

Every (variant, M) runs in one interleaved loop with a single Linear + ReLU yardstick, so times
compare across M as well as across variants. Time is the median over repeats (the minimum is
reported too); the reference runs only its first few repeats. Memory, two ways:
- ``saved_bytes``: bytes of activations autograd keeps for backward (unique storages packed by
  ``torch.autograd.graph.saved_tensors_hooks``, parameters excluded); exact and deterministic;
- ``peak_bytes``: on CUDA the allocator's peak during forward + backward above its level before;
  on CPU (Linux) the peak resident set during forward + backward above the resident set before
  it (the peak is reset through /proc/self/clear_refs, and glibc is told to mmap large blocks so
  that freed tensors leave the resident set). Gradients of the weights are included.

Usage: ``python benchmarks/bench_layers.py [--quick] [--device cpu|cuda] [--bf16] [--repeats N]``;
prints JSON. ``--quick`` uses small sizes (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from taan_core.nn import _kernels
from taan_core.nn.functional import task_adaptive_activation_reference
from taan_core.nn.layers import TALinear

VARIANTS = ("relu", "lookup", "lookup_portable", "lookup_torch", "reference")


@dataclass
class BenchConfig:
    batch: int = 4096
    features: int = 1024
    num_tasks: int = 16
    hinges: list[int] = field(default_factory=lambda: [8, 24, 64])


QUICK = BenchConfig(batch=256, features=128, num_tasks=4, hinges=[8, 64])


class _Case:
    """One variant at one M: a layer, its input and an upstream gradient, and a step to time."""

    def __init__(self, variant: str, cfg: BenchConfig, num_hinges: int, device: torch.device, bf16: bool):
        gen = torch.Generator().manual_seed(0)
        self.variant, self.device, self.bf16 = variant, device, bf16
        self.layer = TALinear(cfg.features, cfg.features, cfg.num_tasks, num_hinges)
        with torch.no_grad():  # away from relu, so that every segment is in use
            self.layer.alpha.normal_(0.0, 0.3, generator=gen)
        self.layer.to(device)
        self.x = torch.randn(cfg.batch, cfg.features, generator=gen).to(device)
        self.task = torch.randint(cfg.num_tasks, (cfg.batch,), generator=gen).to(device)
        self.grad = torch.randn(cfg.batch, cfg.features, generator=gen).to(device)
        if bf16:
            self.grad = self.grad.bfloat16()

    def forward(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.variant == "relu":
                return torch.relu(self.layer.linear(self.x))
            if self.variant == "reference":
                z = self.layer.linear(self.x)
                return task_adaptive_activation_reference(z, self.task, self.layer.alpha, self.layer.hinges)
            return self.layer(self.x, self.task)

    @contextlib.contextmanager
    def _kernel_setting(self):
        """The fused kernel off for ``lookup_torch``, its portable forward path for ``lookup_portable``."""
        enabled, path = _kernels.enabled(), _kernels.forward_path()
        _kernels.set_enabled(enabled and self.variant != "lookup_torch")
        _kernels.set_forward_path("portable" if self.variant == "lookup_portable" else path)
        try:
            yield
        finally:
            _kernels.set_enabled(enabled)
            _kernels.set_forward_path(path)

    def step(self) -> None:
        for p in self.layer.parameters():
            p.grad = None
        with self._kernel_setting():
            out = self.forward()
            out.backward(self.grad.to(out.dtype))

    def saved_bytes(self) -> int:
        params = {p.data_ptr() for p in self.layer.parameters()}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                seen[ptr] = t.untyped_storage().nbytes()
            return t

        with self._kernel_setting(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = self.forward()
        del out
        return sum(seen.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(case: _Case) -> float:
    _sync(case.device)
    start = time.perf_counter()
    case.step()
    _sync(case.device)
    return time.perf_counter() - start


def _cuda_peak(case: _Case) -> int:
    torch.cuda.synchronize(case.device)
    torch.cuda.reset_peak_memory_stats(case.device)
    before = torch.cuda.memory_allocated(case.device)
    case.step()
    torch.cuda.synchronize(case.device)
    return torch.cuda.max_memory_allocated(case.device) - before


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1])


def _cpu_peak(case: _Case) -> int | None:
    """Peak resident set during one forward + backward above the resident set before it (Linux).

    Writing 5 to /proc/self/clear_refs resets the process's peak RSS (VmHWM), so each case is
    measured in this process; large blocks go to mmap (see ``_return_freed_memory``) so that
    freed tensors leave the RSS.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS:")
        case.step()
        return 1024 * (_status_kib("VmHWM:") - before)
    except OSError:
        return None


def _return_freed_memory() -> None:
    # glibc serves big blocks from mmap only above a threshold that grows as blocks are freed;
    # pin it at 64 KiB so that every tensor of interest is unmapped when freed.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def run(cfg: BenchConfig, device: torch.device, repeats: int, reference_repeats: int, bf16: bool,
        memory: bool) -> dict:
    torch.manual_seed(0)
    if device.type == "cpu":
        _return_freed_memory()
    variants = [v for v in VARIANTS if v != "relu"]
    if device.type == "cuda" or not _kernels.available():
        variants.remove("lookup_torch")  # the same path as "lookup" there
    if device.type == "cuda" or not _kernels.has_avx512():
        variants.remove("lookup_portable")  # the same path as "lookup" there
    # One yardstick for every M, and every (variant, M) timed in the same interleaved loop, so
    # that times compare across M as well as across variants.
    cases = {("relu", None): _Case("relu", cfg, cfg.hinges[0], device, bf16)}
    cases.update({(v, m): _Case(v, cfg, m, device, bf16) for m in cfg.hinges for v in variants})
    forward_path = {}
    for key, case in cases.items():
        _kernels.last_forward_path = "none"
        case.step()  # warm-up: first-call costs, allocator growth
        forward_path[key] = _kernels.last_forward_path
    times: dict[tuple, list[float]] = {key: [] for key in cases}
    for r in range(repeats):
        for key, case in cases.items():
            if key[0] == "reference" and r >= reference_repeats:
                continue
            times[key].append(_time_once(case))
    median = {key: statistics.median(t) for key, t in times.items()}
    minimum = {key: min(t) for key, t in times.items()}
    relu = ("relu", None)
    results = []
    for m in cfg.hinges:
        keys = [relu] + [(v, m) for v in variants]
        row = {
            "M": m,
            "time_ms": {k[0]: round(1e3 * median[k], 2) for k in keys},
            "min_time_ms": {k[0]: round(1e3 * minimum[k], 2) for k in keys},
            "repeats": {k[0]: len(times[k]) for k in keys},
            "ratio_to_relu": {k[0]: round(median[k] / median[relu], 3) for k in keys[1:]},
            "min_ratio_to_relu": {k[0]: round(minimum[k] / minimum[relu], 3) for k in keys[1:]},
            "saved_bytes": {k[0]: cases[k].saved_bytes() for k in keys},
            "kernel_forward_path": {k[0]: forward_path[k] for k in keys[1:]},
        }
        if memory:
            peak = _cuda_peak if device.type == "cuda" else _cpu_peak
            row["peak_bytes"] = {k[0]: peak(cases[k]) for k in keys}
        results.append(row)
    del cases
    summary: dict = {"lookup_ratio_max": max(row["ratio_to_relu"]["lookup"] for row in results)}
    if 8 in cfg.hinges and 64 in cfg.hinges:
        summary["lookup_m64_over_m8"] = round(median[("lookup", 64)] / median[("lookup", 8)], 3)
    summary["target_ratio_le_1.25"] = summary["lookup_ratio_max"] <= 1.25
    if "lookup_m64_over_m8" in summary:
        summary["target_flat_le_1.15"] = summary["lookup_m64_over_m8"] <= 1.15
    return {
        "benchmark": "bench_layers",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "bf16_autocast": bf16,
        "kernel": _kernels.status if device.type == "cpu" else "plain torch path (CUDA)",
        "kernel_forward_path": forward_path[("lookup", cfg.hinges[0])] if device.type == "cpu" else None,
        "config": asdict(cfg),
        "results": results,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="run under bf16 autocast")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 15; quick 3)")
    parser.add_argument("--reference-repeats", type=int, default=3, help="repeats of the slow reference variant")
    parser.add_argument("--hinges", type=int, nargs="+", default=None, help="values of M")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else BenchConfig()
    if args.hinges:
        cfg = BenchConfig(cfg.batch, cfg.features, cfg.num_tasks, list(args.hinges))
    repeats = args.repeats or (3 if args.quick else 15)
    device = torch.device(args.device)
    report = run(cfg, device, repeats, min(args.reference_repeats, repeats), args.bf16, not args.no_memory)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
