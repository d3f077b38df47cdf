#!/usr/bin/env bash
# The prepared run for a lent GPU machine (its image has nvcc, cmake, ninja, pybind11,
# scikit-build-core, numpy, scipy, pytest, hypothesis, torch and cupy; nothing can be
# fetched there): build aas-core with its CUDA kernels, run the GPU tests, then
# bench_gpu.py. Everything it prints also lands in $OUT (default gpu_check_out/).
#
#   bash benchmarks/gpu_check.sh                      # sm_90, bench at n = 100k and 300k
#   ARCH=80 BENCH_N="100000" bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
site="$(mktemp -d)"
nvidia-smi -L 2>&1 | tee "$out/gpu.txt"
echo "building aas-core with -DAAS_CUDA=ON for sm_${ARCH:-90} into $site" >&2
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" \
  -C cmake.define.AAS_CUDA=ON -C cmake.define.CMAKE_CUDA_ARCHITECTURES="${ARCH:-90}" . \
  >"$out/build.txt" 2>&1 || { tail -40 "$out/build.txt"; exit 1; }
export PYTHONPATH="$site"
python3 -c "import aas_core as aas; print('aas_core', aas.__file__, 'cuda_available', aas.cuda_available())" |
  tee -a "$out/gpu.txt"
# the GPU test files (every gpu-marked test of the CUDA kernels, and their CPU twins)
timeout "${TEST_SECONDS:-300}" python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_gpu.py tests/test_gpu_exec.py tests/test_gpu_inputs.py tests/test_jaccard_exec.py \
  2>&1 | tee "$out/pytest_gpu.txt"
tests=${PIPESTATUS[0]}
# shellcheck disable=SC2086  # BENCH_N is a list of sizes
timeout "${BENCH_SECONDS:-300}" python3 benchmarks/bench_gpu.py --n ${BENCH_N:-100000 300000} \
  --device-input 2>&1 | tee "$out/bench_gpu.jsonl"
exit "$tests"
