#!/usr/bin/env bash
# Check the task-adaptive layers on a CUDA machine, in under 4 minutes, and print one JSON object:
#   1. the layer tests parametrised on CUDA (lookup against the naive reference in float64,
#      gradcheck/gradgradcheck on small sizes, float32/bfloat16 inputs, layers on CUDA);
#   2. bench_layers.py on CUDA under bf16 autocast, and in float32 for comparison.
# Without CUDA it prints {"gpu_check": "skipped", ...} and exits 0. A copy of the JSON goes to
# $OUT/gpu_check.json when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
OUT_DIR="${OUT:-}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo '{"gpu_check": "skipped", "reason": "torch.cuda.is_available() is False"}'
    exit 0
fi

# 1. tests: every CUDA-parametrised case of the layer tests (ids contain "cuda")
set +e
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -k cuda \
    tests/core/test_functional.py tests/core/test_layers.py --junitxml="$TMP/tests.xml" >"$TMP/tests.log" 2>&1
TESTS_RC=$?
# 2. benchmark: bf16 autocast (the training setting on GPUs), then float32
timeout 150 "$PY" benchmarks/bench_layers.py --device cuda --bf16 --repeats 20 >"$TMP/bench_bf16.json" 2>"$TMP/bench_bf16.err"
BF16_RC=$?
timeout 60 "$PY" benchmarks/bench_layers.py --device cuda --repeats 20 >"$TMP/bench_fp32.json" 2>"$TMP/bench_fp32.err"
FP32_RC=$?
set -e

"$PY" - "$TMP" "$TESTS_RC" "$BF16_RC" "$FP32_RC" "$OUT_DIR" <<'EOF'
import json, os, sys
import xml.etree.ElementTree as ET

import torch

tmp, tests_rc, bf16_rc, fp32_rc, out_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


def bench(name, rc):
    path = os.path.join(tmp, f"bench_{name}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        with open(os.path.join(tmp, f"bench_{name}.err")) as f:
            return {"error": f"exit {rc}", "stderr_tail": f.read()[-2000:]}


tests = {"exit_code": tests_rc}
try:
    suite = ET.parse(os.path.join(tmp, "tests.xml")).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    for key in ("tests", "failures", "errors", "skipped"):
        tests[key] = int(suite.get(key, 0))
    tests["time_s"] = float(suite.get("time", 0.0))
    tests["failed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
except (OSError, ET.ParseError):
    with open(os.path.join(tmp, "tests.log")) as f:
        tests["log_tail"] = f.read()[-3000:]

report = {
    "gpu_check": "ok" if tests_rc == 0 and bf16_rc == 0 and fp32_rc == 0 else "failed",
    "device": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "tests": tests,
    "bench_bf16": bench("bf16", bf16_rc),
    "bench_fp32": bench("fp32", fp32_rc),
}
text = json.dumps(report, indent=2)
print(text)
if out_dir:
    with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
        f.write(text + "\n")
EOF
