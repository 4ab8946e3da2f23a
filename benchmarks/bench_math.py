"""Speed and memory of the T x T matrices of taan_core.gaussian against a plain matmul.

For each number of tasks T (M hinges, float64, no autograd) and each of ``distance_matrix``,
``inner_product_matrix`` and ``cosine_matrix``, a fresh process measures

- ``<fn>_s``: the best of ``--repeats`` calls, and ``<fn>_ratio`` = that / ``matmul_s``, the best
  of as many plain ``(A @ W) @ A.T`` products (T x M)(M x M)(M x T) timed in turn with it in the
  same process (target: ratio <= 5). The two are interleaved so that a busy machine slows both;
- ``<fn>_peak_mb``: the growth of the process' peak resident memory (``ru_maxrss``) over its
  resident memory just before the first call, after a small warm-up call, and
  ``<fn>_peak_ratio`` = that / the size of the result (target <= 3).

The tasks are planted groups with small noise (``centres[group] + 0.03 * noise``, 16 groups)
plus, for every group, one task 1e-9 from another, so that the exact recomputation of near-zero
distances is part of what is timed.

``--threads N`` sets torch's thread count in the measuring processes: on a machine busy with
other work, a parallel region waits for its slowest thread, and the many block-sized regions of
the GEMM path suffer from that more than one large product; one thread shows the cost itself.

Prints one JSON object. Usage: python benchmarks/bench_math.py [--sizes 1000,10000] [--hinges 64]
[--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

_FUNCTIONS = ("distance_matrix", "inner_product_matrix", "cosine_matrix")


def _tasks(num_tasks: int, num_hinges: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    groups = torch.arange(num_tasks) * 16 // num_tasks
    centres = 0.5 * torch.randn(16, num_hinges, generator=gen, dtype=torch.float64)
    alpha = centres[groups] + 0.03 * torch.randn(num_tasks, num_hinges, generator=gen, dtype=torch.float64)
    firsts = torch.unique(groups, return_inverse=False)
    for g in firsts.tolist():
        members = (groups == g).nonzero().flatten()
        if len(members) > 1:
            alpha[members[1]] = alpha[members[0]] + 1e-9 * torch.randn(num_hinges, generator=gen, dtype=torch.float64)
    return alpha, torch.linspace(-1.5, 1.5, num_hinges, dtype=torch.float64)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _child(fn_name: str, num_tasks: int, num_hinges: int, repeats: int, threads: int) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from taan_core import gaussian

    fn = getattr(gaussian, fn_name)
    alpha, hinges = _tasks(num_tasks, num_hinges)
    w = gaussian.gram_matrix(hinges)[1:, 1:].contiguous()
    with torch.no_grad():
        small_alpha, small_hinges = _tasks(16, num_hinges)
        fn(small_alpha, small_hinges)
        (small_alpha @ w) @ small_alpha.T
        before = _resident_bytes()
        result = fn(alpha, hinges)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        result_bytes = result.numel() * result.element_size()
        del result
        fn_times, mm_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            product = (alpha @ w) @ alpha.T
            mm_times.append(time.perf_counter() - start)
            del product
            start = time.perf_counter()
            result = fn(alpha, hinges)
            fn_times.append(time.perf_counter() - start)
            del result
    name = fn_name.removesuffix("_matrix")
    return {
        f"{name}_s": round(min(fn_times), 4),
        f"{name}_matmul_s": round(min(mm_times), 4),
        f"{name}_ratio": round(min(fn_times) / min(mm_times), 2),
        f"{name}_peak_mb": round(peak / 2**20, 1),
        f"{name}_peak_ratio": round(peak / result_bytes, 2),
        "result_mb": round(result_bytes / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--hinges", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(_child(args.child, sizes[0], args.hinges, args.repeats, args.threads)))
        return
    import torch

    out: dict = {"hinges": args.hinges, "threads": args.threads or torch.get_num_threads(), "sizes": {}}
    for num_tasks in sizes:
        row: dict = {}
        for fn_name in _FUNCTIONS:
            done = subprocess.run([sys.executable, __file__, "--child", fn_name, "--sizes", str(num_tasks),
                                   "--hinges", str(args.hinges), "--repeats", str(args.repeats),
                                   "--threads", str(args.threads)],
                                  check=True, capture_output=True, text=True)
            row.update(json.loads(done.stdout))
        out["sizes"][str(num_tasks)] = row
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
