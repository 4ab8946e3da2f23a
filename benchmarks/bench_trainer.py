"""Cost of the Trainer next to a hand-written loop with the same model and batches.

Prints one JSON object. For each case, measured in one run and interleaved (trainer, loop,
trainer, loop, ...) so that load from other processes hits both alike:

- ``<case>_trainer_cpu_s`` and ``<case>_loop_cpu_s``: median CPU time (user + system of this
  process) of ``Trainer.fit`` with one start, and of a hand-written loop: the same
  ``MultiTaskBatchSampler`` batches read with one gather from tensors concatenated beforehand,
  forward, the Trainer's per-task loss, backward, fused Adam, the same learning-rate schedule,
  and the validation metrics of every epoch (``taan_core.metrics.evaluate``), saving nothing;
  ``<case>_ratio`` their ratio (target <= 1.1).
- at the YouTube-8M-like case, ``starts_extra_peak_mb`` and ``starts_extra_peak_ratio``: the
  peak resident memory that three candidate starts add to a one-start run of the same
  epochs (the peak while ``fit`` runs, each in a fresh process), as a fraction of the
  one-start run's peak (target <= 0.10).

Cases:

- ``planted``: the planted data set with its ``taan-core train`` defaults (TAAN 32-32-32, M = 4,
  balanced batches of 16 per task, cosine schedule), no warm-up, ``--epochs`` epochs;
- ``yt8m``: synthetic data at YouTube-8M's input width (1152 features, one binary task per
  class) scaled to fit two shared CPU cores: ``--yt-tasks`` tasks (3862 in YouTube-8M, 386
  by default), 96 training and 8 validation samples per task, TAAN ``--yt-hidden`` wide x 3
  (1024 by default, as in the paper), M = 64, balanced batches of 4 per task (B = 1544, 24
  batches an epoch), ``max(2, --epochs // 3)`` epochs.

- ``save_ms_<layout>_epoch_<K>``: the median cost of one ``save_checkpoint`` of a planted
  checkpoint holding K epochs of history and metrics, in schema v2 (the history stacked, one
  tensor a layer) and in the v1 layout (2L tensors an epoch); ``save_growth_<layout>`` the cost
  at K = 200 over K = 1 (target for v2: <= 1.25, a save that does not grow with the epochs).

Usage: ``python benchmarks/bench_trainer.py [--repeats 3] [--epochs 6] [--skip-memory] [--skip-save]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from taan_core.data import MultiTaskBatchSampler, load_dataset
from taan_core.data.base import MultiTaskData, TaskSpec, TensorSplit
from taan_core.metrics import evaluate
from taan_core.models import build_model
from taan_core.train import Trainer, TrainConfig
from taan_core.train._support import _per_sample_loss


def _yt8m_data(num_tasks: int, seed: int = 0) -> MultiTaskData:
    """Synthetic binary tasks on 1152 features, 96 train / 8 val / 8 test samples each."""
    gen = torch.Generator().manual_seed(seed)
    tasks = [TaskSpec(f"class_{t}", "binary", 1) for t in range(num_tasks)]
    splits = {}
    for which, n in (("train", 96), ("val", 8), ("test", 8)):
        xs = [torch.randn(n, 1152, generator=gen) for _ in range(num_tasks)]
        ys = [(torch.rand(n, generator=gen) < 0.3).float() for _ in range(num_tasks)]
        splits[which] = TensorSplit(tasks, xs, ys, source=f"yt8m-like {which}")
    return MultiTaskData("yt8m-like", {"num_tasks": num_tasks}, tasks, splits, input_shape=(1152,))


def _case(name: str, args) -> tuple[MultiTaskData, dict, dict]:
    """The data, the model's build arguments and the TrainConfig fields of a case."""
    if name == "planted":
        data = load_dataset("planted")
        model = {"name": "taan", "hidden": [32, 32, 32], "num_hinges": 4}
        config = {"batch_size": 16, "lr": 1e-2, "schedule": "cosine", "epochs": args.epochs}
    else:
        data = _yt8m_data(args.yt_tasks)
        model = {"name": "taan", "hidden": [args.yt_hidden] * 3, "num_hinges": 64}
        config = {"batch_size": 4, "lr": 1e-4, "schedule": "none", "epochs": max(2, args.epochs // 3)}
    return data, model, config


def _model(data: MultiTaskData, spec: dict):
    torch.manual_seed(0)
    spec = dict(spec)
    return build_model(spec.pop("name"), data.input_shape, [t.num_outputs for t in data.tasks], **spec)


def _trainer_cpu(data, model_spec, config, out: str, starts: int = 1) -> float:
    model = _model(data, model_spec)
    cfg = TrainConfig(**config, shared_warmup=0.0, starts=starts, threads=1, quiet=True, out=out, device="cpu")
    tic = time.process_time()
    Trainer(model, data, cfg).fit(overwrite=True)
    return time.process_time() - tic


def _loop_cpu(data, model_spec, config) -> float:
    """The hand-written loop: what a user would write for the same training, without files."""
    model = _model(data, model_spec)
    train = data.split("train")
    tasks = data.tasks
    # Concatenated once, as a user holding the data in memory would have it.
    sizes = [train.num_samples(t) for t in range(len(tasks))]
    offsets = torch.tensor([0] + sizes[:-1]).cumsum(0)
    parts = [train.get(t, torch.arange(n)) for t, n in enumerate(sizes)]
    x_all = torch.cat([x for x, _ in parts])
    y_all = torch.cat([y.reshape(y.shape[0], -1).float() for _, y in parts])
    tic = time.process_time()
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"], fused=True)
    sampler = MultiTaskBatchSampler(train, config["batch_size"], seed=0)
    total = config["epochs"] * len(sampler)
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + torch.cos(torch.tensor(
        torch.pi * min(s, total) / total)).item())) if config["schedule"] == "cosine" else None)
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        sampler.set_epoch(epoch)
        for task, index in sampler:
            rows = offsets[task] + index
            x, y = x_all[rows], y_all[rows]
            counts = torch.bincount(task, minlength=len(tasks)).tolist()
            outputs = model(x, task)
            loss = torch.zeros(())
            for t, (spec, out, target) in enumerate(zip(tasks, outputs, y.split(counts))):
                loss = loss + _per_sample_loss(spec.kind, out, target).sum() / counts[t]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        with torch.no_grad():
            evaluate(model, data.split("val"), tasks, 1024, "cpu")
    return time.process_time() - tic


def _peak_child(case: str, starts: int, args) -> float:
    """Peak RSS in MB of a fresh process that trains ``case`` with ``starts`` starts."""
    code = ("import sys, resource; sys.argv = sys.argv[:1] + sys.argv[2:]\n"
            "import bench_trainer as b\n"
            "b._memory_child()\n")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.abspath(__file__)),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", code, "child", "--child-case", case, "--child-starts", str(starts),
           "--epochs", str(args.epochs), "--yt-tasks", str(args.yt_tasks), "--yt-hidden", str(args.yt_hidden)]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return float(result.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_child() -> None:
    """Prints the peak resident memory (MB) while ``fit`` runs, read every 2 ms: the process's
    lifetime peak can be set by building the data, before training starts."""
    import threading

    args = _parser().parse_args()
    data, model_spec, config = _case(args.child_case, args)
    # Enough epochs that every start trains one trial epoch and the chosen one continues.
    config = {**config, "epochs": 2, "start_epochs": 0.5}
    peak, done = [_rss_mb()], threading.Event()

    def watch() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], _rss_mb())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with tempfile.TemporaryDirectory() as tmp:
        _trainer_cpu(data, model_spec, config, tmp + "/run", starts=args.child_starts)
    done.set()
    watcher.join()
    print(max(peak[0], _rss_mb()))


def _save_cost(epochs: tuple[int, ...] = (1, 45, 200), repeats: int = 15) -> dict:
    """Median milliseconds of ``save_checkpoint`` of a planted run's checkpoint at epoch K, with
    K history snapshots and K metrics records, in schema v2 (stacked history) and in the v1
    layout it replaced (a list of per-epoch dicts); ``save_growth_v2`` is the cost at the last K
    over the cost at K = 1 (target: flat, <= 1.25)."""
    from taan_core.checkpoint import History, MetricsLog, save_checkpoint
    from taan_core.train._distributed import _World

    data, model_spec, config = _case("planted", argparse.Namespace(epochs=1))
    out: dict[str, float | bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(_model(data, model_spec), data, TrainConfig(**config, shared_warmup=0.0, starts=1,
                                                                      threads=1, quiet=True, out=tmp + "/run"))
        trainer.fit()
        base = trainer._checkpoint(_World())
        snapshot, record = trainer.history[-1], trainer.metrics[-1]
        for k in epochs:
            history = History()
            for e in range(k):
                history.append(e + 1, e, snapshot["alphas"], snapshot["hinges"])
            # As the Trainer saves: v2 joins the metrics' cached JSON texts at every save.
            log = MetricsLog(dict(record) for _ in range(k))
            log.json()
            layouts = {"v2": lambda: dict(base, history=history.record(), metrics=log.json()),
                       "v1": lambda: dict(base, version=1, history=list(history), metrics=[dict(record)] * k)}
            for name, build in layouts.items():
                times = []
                for _ in range(repeats):
                    tic = time.perf_counter()
                    save_checkpoint(build(), tmp + "/save.pt")
                    times.append(time.perf_counter() - tic)
                out[f"save_ms_{name}_epoch_{k}"] = round(1e3 * statistics.median(times), 2)
    for name in ("v2", "v1"):
        out[f"save_growth_{name}"] = round(out[f"save_ms_{name}_epoch_{epochs[-1]}"] / out[f"save_ms_{name}_epoch_1"], 3)
    out["save_within_target"] = out["save_growth_v2"] <= 1.25
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--yt-tasks", type=int, default=386)
    parser.add_argument("--yt-hidden", type=int, default=1024)
    parser.add_argument("--cases", default="planted,yt8m")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-save", action="store_true")
    parser.add_argument("--child-case", default="yt8m", help=argparse.SUPPRESS)
    parser.add_argument("--child-starts", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = _parser().parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    out: dict[str, float | int | str | bool] = {"yt8m_tasks": args.yt_tasks, "yt8m_hidden": args.yt_hidden,
                                               "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        for case in [c for c in args.cases.split(",") if c]:
            data, model_spec, config = _case(case, args)
            # Untimed first pass: imports, the kernels' first load and the allocator's warm-up.
            _trainer_cpu(data, model_spec, {**config, "epochs": 1}, f"{tmp}/{case}")
            _loop_cpu(data, model_spec, {**config, "epochs": 1})
            trainer, loop = [], []
            for _ in range(args.repeats):
                trainer.append(_trainer_cpu(data, model_spec, config, f"{tmp}/{case}"))
                loop.append(_loop_cpu(data, model_spec, config))
            t, l = statistics.median(trainer), statistics.median(loop)
            out.update({f"{case}_trainer_cpu_s": round(t, 3), f"{case}_loop_cpu_s": round(l, 3),
                        f"{case}_ratio": round(t / l, 3), f"{case}_within_target": t / l <= 1.1})
    if not args.skip_save:
        out.update(_save_cost())
    if not args.skip_memory:
        one = _peak_child("yt8m", 1, args)
        three = _peak_child("yt8m", 3, args)
        out.update(starts1_peak_mb=round(one, 1), starts3_peak_mb=round(three, 1),
                   starts_extra_peak_mb=round(three - one, 1), starts_extra_peak_ratio=round((three - one) / one, 3),
                   starts_within_target=(three - one) / one <= 0.10)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
