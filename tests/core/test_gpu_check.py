"""scripts/gpu_check.sh and benchmarks/bench_gpu.py, run here as far as a machine without a GPU can."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_gpu_runs_every_part_at_tiny_sizes():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--tiny", "--bf16",
                           "--repeats", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["tiny"] and report["bf16"] and report["device"] == "cpu"
    # no interpreter here: the Triton path is skipped with its reason, the others ran
    assert "triton" in report["paths_skipped"]
    assert set(report["activation"]["over_relu"]) >= {"plain"}
    assert set(report["layer"]["over_linear_relu"]) >= {"talinear_plain"}
    assert all(v > 0 for v in report["activation"]["over_relu"].values())
    assert set(report["step"]["samples_per_s"]) == {"hard", "taan", "taan_shared_head"}
    assert report["step"]["batch"] == report["shapes"]["num_tasks"] * report["shapes"]["per_task"]
    compiled = report["compile"]
    assert compiled["fullgraph"] is True, compiled.get("error")
    assert compiled["forward_graphs"] == 1
    assert report["targets"]["fullgraph"] is True
    # tiny sizes measure nothing: the throughput target is not judged
    assert report["targets"]["taan_step_at_least_1e6_samples_per_s"] is None


@pytest.mark.slow
def test_bench_gpu_refuses_cuda_without_a_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--device", "cuda", "--tiny"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 2
    assert "--device cuda, but torch.cuda.is_available() is False" in done.stderr


@pytest.mark.slow
def test_gpu_check_fails_cleanly_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run its checks")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report == {"gpu_check": "no_gpu", "reason": "torch.cuda.is_available() is False"}
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == report
    assert "no CUDA device here" in done.stderr


def test_gpu_check_names_a_python_without_torch(tmp_path):
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": "/bin/false", "OUT": ""}, timeout=60)
    assert done.returncode == 2
    assert json.loads(done.stdout)["reason"] == "/bin/false cannot import torch"
