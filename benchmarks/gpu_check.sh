#!/usr/bin/env bash
# The whole GPU check in one call (for the `device` tool's machine, or any CUDA machine):
# build the extension with CUDA, run the GPU tests, then benchmarks/gpu.py.
#
#     OUT=/some/dir bash benchmarks/gpu_check.sh      # logs and gpu.json land in $OUT
#
# The system compiler, not /opt/gcc: that one links libstdc++ statically (setup.py refuses
# such a build; README "GPU status"). Each step has its own time limit so that a slow step
# still leaves the earlier steps' logs; the tests come before the benchmark because they
# are what must not be skipped.
set -u
OUT=${OUT:-/tmp/pixelar_gpu_check}
mkdir -p "$OUT"
export CC=/usr/bin/gcc CXX=/usr/bin/g++ PYTHONUNBUFFERED=1 PIXELAR_EXPECT_CUDA=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    > "$OUT/versions.txt" 2>&1

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -3 "$OUT/$name.log"
    return $rc
}

step build 240 env PIXELAR_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
    MAX_JOBS=${MAX_JOBS:-16} python3 setup.py build_ext --inplace || exit 1
step tests_gpu_dispatch 120 python3 -m pytest -q -x tests/test_gpu_dispatch.py tests/test_link_check.py
step tests_cuda 300 python3 -m pytest -q -k cuda tests/test_ops_on_device.py \
    tests/test_sampling_exactness.py tests/test_nade_sample.py tests/test_pixel_network_sample.py
step gpu_bench ${BENCH_LIMIT_S:-240} python3 benchmarks/gpu.py --sampling --train --out "$OUT/gpu.json"
cat "$OUT/summary.txt"
