"""Speed of taan-viz: start-up of `taan-viz heatmap` and the cost of a large analysis.

Prints one JSON object:

- ``baseline_import_s``: median wall time of ``python -c "import torch, matplotlib.pyplot"``;
- ``heatmap_s``: median wall time of ``taan-viz heatmap`` on a T = 16, L = 3 checkpoint (PNG,
  300 dpi), and ``heatmap_ratio`` = heatmap_s / baseline_import_s (target <= 2);
- for T = 1000, L = 3: ``large_heatmap_s`` and ``large_export_s`` (the two commands, each a fresh
  process, clustering included), ``large_total_s`` (target <= 15), and ``large_library_s``, the
  same work in one process through the library;
- for T = 50, L = 5, M = 32 (the size of the reference Omniglot model), given as a reference-format
  state_dict like an imported model: ``t50_<command>_s`` for every command that draws or writes
  (heatmap, curves, cluster, tree, export, report, inspect) and ``t50_<command>_ratio`` to the
  baseline (target <= 3, the report <= 4), plus ``t50_max_ratio``;
- for T = 1000 and T = 5000, L = 5, M = 32, a checkpoint of a plain module of five
  ``TALinear`` layers saved with ``taan_core.save`` (nested planted groups, 2 to 32 per layer):
  ``t<T>_<command>_s`` and ``t<T>_<command>_peak_mb`` (peak resident memory of the command's
  process) for heatmap, curves, tree, cluster and report, their ratios to the bare import's
  time and peak memory (``*_ratio``, ``*_peak_ratio``), and ``t<T>_within_targets``: every
  command under 60 s and 2 GB (``--sizes 1000`` to skip 5000, ``--sizes ''`` to skip both);
  at T <= 1000 also ``t<T>_compare_s`` and ``_peak_mb``: ``taan-viz compare`` against the 32
  planted groups of the deepest layer with the default 9999 relabellings (its cost grows as
  permutations x T^2, so it is not timed at 5000);
- ``*_cpu_s``: the same in CPU seconds of the child processes, which stay meaningful on a machine
  busy with other work (wall times then grow with the load, CPU times barely).

Usage: python benchmarks/bench_viz.py [--repeats 3] [--skip-large] [--skip-t50] [--sizes 1000,5000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

_CLI = "import sys; from taan_viz.cli import main; sys.argv[0] = 'taan-viz'; main()"


def _checkpoint(path: Path, num_tasks: int, num_layers: int = 3, num_hinges: int = 16, seed: int = 0) -> Path:
    """A schema-v1 checkpoint with planted nested task groups and small noise."""
    gen = torch.Generator().manual_seed(seed)
    layers, groups = [], []
    for l in range(num_layers):
        g = torch.arange(num_tasks) * (2 ** l) // num_tasks
        centres = 0.5 * torch.randn(int(g.max()) + 1, num_hinges, generator=gen)
        alpha = centres[g] + 0.03 * torch.randn(num_tasks, num_hinges, generator=gen)
        layers.append({"name": f"blocks.{l}.act", "alpha": alpha, "hinges": torch.linspace(-1.5, 1.5, num_hinges),
                       "preact_mean": torch.zeros(num_tasks), "preact_std": torch.ones(num_tasks),
                       "preact_mean_overall": 0.1, "preact_std_overall": 0.9})
        groups.append(g.tolist())
    obj = {"format": "taan-checkpoint", "version": 1, "task_names": [f"task_{t}" for t in range(num_tasks)],
           "layer_names": [x["name"] for x in layers], "layers": layers, "history": [],
           "model": {"class": "TAAN", "config": {}, "state_dict": {}}, "epoch": 0, "step": 0, "metrics": [],
           "data": {"name": "planted", "config": {}, "groups": groups}}
    torch.save(obj, path)
    return path


def _reference_state_dict(path: Path, num_tasks: int = 50, num_layers: int = 5, num_hinges: int = 32,
                          seed: int = 0) -> Path:
    """A state_dict of the reference TAAN code (``<layer>.alpha`` (T, M), ``<layer>.basis`` (1, M)),
    with nested planted groups (1, 2, 4, ... groups from the first layer on) and noise."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for l in range(num_layers):
        g = torch.arange(num_tasks) * (2 ** min(l, 4)) // num_tasks
        centres = 0.5 * torch.randn(int(g.max()) + 1, num_hinges, generator=gen)
        state[f"layer{l + 1}.weight"] = torch.randn(4, 4, generator=gen)
        state[f"layer{l + 1}.alpha"] = centres[g] + 0.05 * torch.randn(num_tasks, num_hinges, generator=gen)
        state[f"layer{l + 1}.basis"] = torch.linspace(-2, 2, num_hinges).reshape(1, num_hinges)
    torch.save(state, path)
    return path


def _library_checkpoint(path: Path, num_tasks: int, num_layers: int = 5, num_hinges: int = 32, seed: int = 0) -> Path:
    """A checkpoint of a user's own module of ``TALinear`` layers, written by ``taan_core.save``:
    layer l has 2^(l + 1) planted groups of tasks (contiguous ids) and noise 0.03."""
    import warnings

    import taan_core

    layers = torch.nn.ModuleList([taan_core.TALinear(8, 8, num_tasks=num_tasks, num_hinges=num_hinges)
                                  for _ in range(num_layers)])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for l, layer in enumerate(layers):
            g = torch.arange(num_tasks) * (2 ** (l + 1)) // num_tasks
            centres = 0.5 * torch.randn(int(g.max()) + 1, num_hinges, generator=gen)
            layer.act.alpha.copy_(centres[g] + 0.03 * torch.randn(num_tasks, num_hinges, generator=gen))
    with warnings.catch_warnings():
        # "taan-core eval cannot rebuild" a module that is not one of taan_core.models: expected.
        warnings.simplefilter("ignore")
        taan_core.save(layers, path, task_names=[f"task_{t}" for t in range(num_tasks)])
    return path


# Commands run at T = 1000 and 5000 (L = 5, M = 32), each under 60 s and 2 GB.
_LARGE_COMMANDS = ("heatmap", "curves", "tree", "cluster", "report")
_LARGE_LIMITS = (60.0, 2048.0)


def _time_and_peak(cmd: list[str]) -> tuple[float, float]:
    """Wall time and peak resident memory (MB) of one run of ``cmd`` in a fresh process."""
    code = ("import resource, subprocess, sys, time\n"
            "start = time.perf_counter()\n"
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
            "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True,
                         env={**os.environ, "MPLBACKEND": "Agg"})
    wall, peak = out.stdout.split()
    return float(wall), float(peak)


# Commands timed at T = 50, L = 5 and their targets (ratio to the bare import).
_T50_COMMANDS = {"heatmap": 3.0, "curves": 3.0, "cluster": 3.0, "tree": 3.0, "export": 3.0, "report": 4.0,
                 "inspect": 3.0}


def _time(cmd: list[str], repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system of the child) of ``cmd``.

    CPU time is reported too because it hardly changes when other processes share the machine,
    while wall time does.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "MPLBACKEND": "Agg"})
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-t50", action="store_true")
    parser.add_argument("--sizes", default="1000,5000", help="task counts of the L = 5, M = 32 rows")
    args = parser.parse_args()
    py = sys.executable
    out: dict[str, float | int | str] = {"cpu_count": os.cpu_count() or 0}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = _checkpoint(tmp / "small.pt", 16)
        # Warm the file cache and compiled bytecode before timing anything.
        subprocess.run([py, "-c", _CLI, "heatmap", str(small), "-o", str(tmp / "warm"), "--overwrite"], check=True,
                       stdout=subprocess.DEVNULL)
        baseline, baseline_cpu = _time([py, "-c", "import torch, matplotlib.pyplot"], args.repeats)
        heat, heat_cpu = _time([py, "-c", _CLI, "heatmap", str(small), "-o", str(tmp / "small-viz"), "--overwrite"],
                               args.repeats)
        out.update(baseline_import_s=round(baseline, 3), heatmap_s=round(heat, 3),
                   heatmap_ratio=round(heat / baseline, 3), baseline_import_cpu_s=round(baseline_cpu, 3),
                   heatmap_cpu_s=round(heat_cpu, 3), heatmap_cpu_ratio=round(heat_cpu / baseline_cpu, 3))
        if not args.skip_t50:
            ref = _reference_state_dict(tmp / "reference50.pt")
            ratios = {}
            for command, target in _T50_COMMANDS.items():
                extra = [] if command == "inspect" else ["-o", str(tmp / "t50-viz"), "--overwrite"]
                wall, cpu = _time([py, "-c", _CLI, command, str(ref), *extra], args.repeats)
                ratios[command] = wall / baseline
                out.update({f"t50_{command}_s": round(wall, 3), f"t50_{command}_ratio": round(wall / baseline, 3),
                            f"t50_{command}_cpu_ratio": round(cpu / baseline_cpu, 3),
                            f"t50_{command}_target": target})
            out.update(t50_max_ratio=round(max(ratios.values()), 3),
                       t50_within_targets=all(ratios[c] <= t for c, t in _T50_COMMANDS.items()))
        if not args.skip_large:
            large = _checkpoint(tmp / "large.pt", 1000)
            lh, lh_cpu = _time([py, "-c", _CLI, "heatmap", str(large), "-o", str(tmp / "large-viz"), "--overwrite"], 1)
            le, le_cpu = _time([py, "-c", _CLI, "export", str(large), "-o", str(tmp / "large-viz"), "--overwrite"], 1)
            start = time.perf_counter()
            subprocess.run([py, "-c", (
                "import sys\n"
                "from taan_core.checkpoint import load_checkpoint\n"
                "from taan_viz.analysis import analyze\n"
                "from taan_viz.export import export_analysis\n"
                "from taan_viz.plots.heatmap import plot_heatmaps\n"
                "from taan_viz.plots._style import save_figure\n"
                "a = analyze(load_checkpoint(sys.argv[1]))\n"
                "save_figure(plot_heatmaps(a), sys.argv[2] + '/heatmap.png', dpi=300)\n"
                "export_analysis(a, sys.argv[2], overwrite=True)\n"),
                str(large), str(tmp / "large-viz")], check=True)
            lib = time.perf_counter() - start
            out.update(large_num_tasks=1000, large_heatmap_s=round(lh, 3), large_export_s=round(le, 3),
                       large_total_s=round(lh + le, 3), large_total_cpu_s=round(lh_cpu + le_cpu, 3),
                       large_library_s=round(lib, 3),
                       large_export_mb=round(sum(p.stat().st_size for p in (tmp / "large-viz").iterdir()) / 2**20, 1))
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
        if sizes:
            base_wall, base_peak = _time_and_peak([py, "-c", "import torch, matplotlib.pyplot"])
            # Measured again beside these rows: on a shared machine the load changes in minutes.
            out.update(baseline_import_large_s=round(base_wall, 3), baseline_import_peak_mb=round(base_peak, 1))
        for t in sizes:
            ckpt = _library_checkpoint(tmp / f"lib{t}.pt", t)
            ok = True
            for command in _LARGE_COMMANDS:
                wall, peak = _time_and_peak([py, "-c", _CLI, command, str(ckpt), "-o", str(tmp / f"lib{t}-viz"),
                                             "--overwrite"])
                ok = ok and wall <= _LARGE_LIMITS[0] and peak <= _LARGE_LIMITS[1]
                out.update({f"t{t}_{command}_s": round(wall, 2), f"t{t}_{command}_ratio": round(wall / base_wall, 2),
                            f"t{t}_{command}_peak_mb": round(peak, 1),
                            f"t{t}_{command}_peak_ratio": round(peak / base_peak, 2)})
            out[f"t{t}_within_targets"] = ok
            if t <= 1000:
                # The Mantel test costs O(permutations T^2): timed at T <= 1000 with its default
                # 9999 relabellings, every layer against the planted groups of the deepest one.
                known = tmp / f"groups{t}.csv"
                known.write_text("task,group\n" + "".join(f"task_{k},g{k * 32 // t}\n" for k in range(t)))
                wall, peak = _time_and_peak([py, "-c", _CLI, "compare", str(ckpt), "--against", str(known), "-o",
                                             str(tmp / f"lib{t}-viz"), "--overwrite"])
                out.update({f"t{t}_compare_s": round(wall, 2), f"t{t}_compare_peak_mb": round(peak, 1),
                            f"t{t}_compare_within_targets": wall <= _LARGE_LIMITS[0] and peak <= _LARGE_LIMITS[1]})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
