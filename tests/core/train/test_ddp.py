"""Data-parallel training: a 2-process torchrun (gloo, CPU) run equals the single-process run.

The relation, exactly: every rank draws the same global batch and trains on its shard; per-task
losses divide by the task's count in the *global* batch and the data term is multiplied by the
world size before DDP averages the gradients, so the summed gradient is the single-process
gradient. Weights, alpha and hinges then agree up to float32 rounding of the different summation
order (we check 1e-6), for any sharding. The running pre-activation statistics are averaged over
the ranks after every step. With even shards (balanced sampling, batch_size a multiple of the
world size) the means agree like the weights and the variances are the mean of the shards'
variances, which differs from the variance of the whole batch by the spread between shard means
(we check 2% relative); with uneven shards the statistics weigh the ranks equally, not by their
sample counts.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from taan_core.train._distributed import _shard_batch, _World
from taan_core.checkpoint import load_checkpoint
from taan_core.train import RUN_FILES

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    from taan_core.data import load_dataset
    from taan_core.models import build_model
    from taan_core.train import TrainConfig, Trainer

    CASES = {"balanced": dict(batch_size=8, sampler="balanced"),
             "uneven": dict(batch_size=5, sampler="proportional")}

    def run(out):
        data = load_dataset("planted", num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8],
                            num_hinges=4, num_outputs=2, samples_per_task=60)
        for name, case in CASES.items():
            torch.manual_seed(0)
            model = build_model("taan", data.input_shape, [2] * 4, hidden=[8, 8], num_hinges=4)
            config = TrainConfig(epochs=1, lr=1e-2, out=os.path.join(out, name), quiet=True, device="cpu", **case)
            Trainer(model, data, config).fit()

    if __name__ == "__main__":
        # One process group for both cases; the trainer joins it rather than making its own.
        dist.init_process_group("gloo")
        run(sys.argv[1])
        dist.destroy_process_group()
    """
)


def test_shards_partition_the_batch_and_count_globally():
    task = torch.tensor([0, 0, 0, 1, 1, 2, 0, 2, 1, 1])
    index = torch.arange(10) + 100
    seen = []
    for rank in range(2):
        t, i, counts = _shard_batch(task, index, 4, _World(rank=rank, size=2))
        assert counts.tolist() == [4, 4, 2, 0]
        for k in range(3):
            assert abs(int((t == k).sum()) - int(counts[k]) / 2) <= 0.5
        seen += list(zip(t.tolist(), i.tolist()))
    assert sorted(seen) == sorted(zip(task.tolist(), index.tolist()))
    t, i, counts = _shard_batch(task, index, 4, _World())
    assert torch.equal(t, task) and torch.equal(i, index) and counts.tolist() == [4, 4, 2, 0]


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(tmp_path):
    script = tmp_path / "ddp_planted.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    # The ranks must take the same activation path (compiled kernel or plain torch) as this
    # process, whose choice earlier tests may have switched.
    from taan_core.nn import _kernels

    if not (_kernels.enabled() and _kernels.available()):
        env["TAAN_NO_KERNELS"] = "1"
    child = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tmp_path / "ddp")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    runpy.run_path(str(script))["run"](str(tmp_path / "single"))

    for case in ("balanced", "uneven"):
        ddp_dir, single_dir = tmp_path / "ddp" / case, tmp_path / "single" / case
        # rank 0 alone wrote, and nothing else was left behind
        assert sorted(p.name for p in ddp_dir.iterdir()) == sorted(RUN_FILES)
        ddp, single = load_checkpoint(ddp_dir / "last.pt"), load_checkpoint(single_dir / "last.pt")
        assert ddp.raw["extra"]["world_size"] == 2 and single.raw["extra"]["world_size"] == 1
        assert ddp.raw["step"] == single.raw["step"] > 1
        for a, b in zip(ddp.layers, single.layers, strict=True):
            torch.testing.assert_close(a.alpha, b.alpha, rtol=0, atol=1e-6)
            torch.testing.assert_close(a.hinges, b.hinges, rtol=0, atol=1e-6)
            if case == "balanced":
                torch.testing.assert_close(a.preact_mean, b.preact_mean, rtol=0, atol=1e-6)
                torch.testing.assert_close(a.preact_std, b.preact_std, rtol=2e-2, atol=0)
        sa, sb = ddp.raw["model"]["state_dict"], single.raw["model"]["state_dict"]
        for key in sa:
            if ".preact_" in key:
                continue
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=1e-6, msg=f"{case}: {key}")
        (ma,), (mb,) = ddp.metrics, single.metrics
        assert ma["train_task_loss"] == pytest.approx(mb["train_task_loss"], rel=1e-5)
        assert ma["val"]["main"] == pytest.approx(mb["val"]["main"], rel=1e-4)
