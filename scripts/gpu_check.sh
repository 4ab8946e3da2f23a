#!/usr/bin/env bash
# Check the GPU path on a CUDA machine in one short run (under 5 minutes on an H200) and print
# one JSON object:
#   1. tests on CUDA: the Triton kernels compiled for the device (tests/core/nn/triton_cases.py:
#      against the naive form and the plain path, float32/float64/bfloat16, values at the
#      hinges, gradcheck, fullgraph compile) and every CUDA-parametrised case of the layer tests;
#   2. benchmarks/bench_gpu.py under bf16 autocast: the activation on the Triton and the plain
#      path against ReLU, TALinear against Linear + ReLU, samples/s of a training step of TAAN
#      and of hard sharing at YouTube-8M shapes (1152 features, 3862 tasks), and the training
#      step compiled with fullgraph=True.
# A copy of the JSON goes to $OUT/gpu_check.json when $OUT is set. Without a CUDA device it
# prints {"gpu_check": "no_gpu", ...} (also to $OUT) and exits 2, having run nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
OUT_DIR="${OUT:-}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

reason=""
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    reason="$PY cannot import torch"
elif ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    reason="torch.cuda.is_available() is False"
fi
if [ -n "$reason" ]; then
    text="{\"gpu_check\": \"no_gpu\", \"reason\": \"$reason\"}"
    echo "$text"
    if [ -n "$OUT_DIR" ]; then mkdir -p "$OUT_DIR" && echo "$text" >"$OUT_DIR/gpu_check.json"; fi
    echo "gpu_check.sh: no CUDA device here; nothing was measured" >&2
    exit 2
fi

# 1. tests on CUDA (no TRITON_INTERPRET: the kernels are compiled for the device)
set +e
env -u TRITON_INTERPRET timeout 100 "$PY" -m pytest -q -p no:cacheprovider tests/core/nn/triton_cases.py \
    --junitxml="$TMP/triton.xml" >"$TMP/triton.log" 2>&1
TRITON_RC=$?
timeout 60 "$PY" -m pytest -q -p no:cacheprovider -k cuda \
    tests/core/nn/test_functional.py tests/core/nn/test_layers.py --junitxml="$TMP/layers.xml" >"$TMP/layers.log" 2>&1
LAYERS_RC=$?
# 2. benchmark: bf16 autocast, the training setting on GPUs
timeout 150 "$PY" benchmarks/bench_gpu.py --device cuda --bf16 --repeats 10 >"$TMP/bench.json" 2>"$TMP/bench.err"
BENCH_RC=$?
set -e

"$PY" - "$TMP" "$TRITON_RC" "$LAYERS_RC" "$BENCH_RC" "$OUT_DIR" <<'PYEOF'
import json, os, sys
import xml.etree.ElementTree as ET

import torch

tmp, triton_rc, layers_rc, bench_rc, out_dir = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]


def tests(name, rc):
    result = {"exit_code": rc}
    try:
        suite = ET.parse(os.path.join(tmp, f"{name}.xml")).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        for key in ("tests", "failures", "errors", "skipped"):
            result[key] = int(suite.get(key, 0))
        result["time_s"] = float(suite.get("time", 0.0))
        result["failed"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                            if case.find("failure") is not None or case.find("error") is not None]
    except (OSError, ET.ParseError):
        with open(os.path.join(tmp, f"{name}.log")) as f:
            result["log_tail"] = f.read()[-3000:]
    return result


try:
    with open(os.path.join(tmp, "bench.json")) as f:
        bench = json.load(f)
except (OSError, ValueError):
    with open(os.path.join(tmp, "bench.err")) as f:
        bench = {"error": f"exit {bench_rc}", "stderr_tail": f.read()[-3000:]}

report = {
    "gpu_check": "ok" if triton_rc == 0 and layers_rc == 0 and bench_rc == 0 else "failed",
    "device": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "tests_triton": tests("triton", triton_rc),
    "tests_layers": tests("layers", layers_rc),
    "bench_bf16": bench,
}
text = json.dumps(report, indent=2)
print(text)
if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
        f.write(text + "\n")
PYEOF
