#!/usr/bin/env bash
# One prepared run on a lent NVIDIA GPU (H100/H200: sm_90), with build/device-pack carried (scripts/device_pack.sh):
# the CUDA build, the device tests with the layers offloaded, then decode, prefill and 4 parallel streams on a
# synthetic Llama-3.1-8B-shaped model next to llama-bench and llama-server from the same build. Numbers and
# logs go to $OUT; the last lines printed are the table for the issue's note.
#
#   bash scripts/device_pack.sh
#   run(command="bash scripts/device_cuda.sh", carry=["build/device-pack"], timeout_s=600)
#
# STEPS="build tests bench" (the default) picks what runs; a second call on the same warm machine can skip
# the build (STEPS="tests bench"), as build/ and .venv-device are kept there between calls.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/llamabridge-device}
mkdir -p "$OUT"
STEPS=${STEPS:-build tests bench}
JOBS=$(nproc)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
timed() {  # timed NAME COMMAND...: runs it, logs to $OUT/NAME.log, notes its time and exit code
    local name=$1; shift
    local started=$SECONDS
    "$@" > "$OUT/$name.log" 2>&1
    local code=$?
    note "$name: exit $code in $((SECONDS - started)) s"
    return $code
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
note "gpu: $(cat "$OUT/gpu.txt")"

# -- the environment: the image's Python (numpy, cython, pytest) plus the server's packages from the pack
if [ ! -d .venv-device ]; then
    python3 -m venv --system-site-packages .venv-device
    .venv-device/bin/pip install --quiet --no-index --find-links build/device-pack/wheels \
        -r build/device-pack/requirements.txt > "$OUT/pip.log" 2>&1 || { note "pip install failed"; tail -5 "$OUT/pip.log"; }
fi
export PATH="$PWD/.venv-device/bin:$PATH"
if [ ! -f vendor/llama.cpp/include/llama.h ]; then
    mkdir -p vendor && tar -C vendor -xzf build/device-pack/llama.cpp.tar.gz
fi
export LLAMA_CPP_DIR=vendor/llama.cpp LLAMA_BUILD_DIR=build/llama.cpp-cuda

if step build; then
    timed cuda-libs make --no-print-directory libs GPU=cuda CMAKE_CUDA_ARCHITECTURES=90 JOBS="$JOBS" \
        LLAMA_CPP_DIR=vendor/llama.cpp || { tail -20 "$OUT/cuda-libs.log"; exit 1; }
    timed llama-server make --no-print-directory llama-server GPU=cuda CMAKE_CUDA_ARCHITECTURES=90 JOBS="$JOBS" \
        LLAMA_CPP_DIR=vendor/llama.cpp || tail -20 "$OUT/llama-server.log"
    timed extension pip install --no-build-isolation --no-deps -e . || { tail -20 "$OUT/extension.log"; exit 1; }
fi
llamabridge devices | tee "$OUT/devices.txt"

if step tests; then
    LLAMABRIDGE_DEVICE=CUDA0 timed device-tests python3 -m pytest -p no:cacheprovider -q tests/device
    tail -3 "$OUT/device-tests.log" | tee -a "$SUMMARY"
fi

if step bench; then
    MODEL=$(python3 -c "from llamabridge import synthetic; print(synthetic.ensure_model(synthetic.LLAMA31_8B_SHAPE))")
    note "model: $MODEL ($(du -h "$MODEL" | cut -f1))"
    timed engine-vs-llama-bench python3 benchmarks/engine_vs_llama_bench.py --model "$MODEL" --prompt 512 \
        --tokens 128 --reps 3
    tail -12 "$OUT/engine-vs-llama-bench.log" | tee -a "$SUMMARY"
    timed parallel-4 python3 benchmarks/parallel_stream.py --model "$MODEL" --clients 4 --tokens 128 --reps 3 \
        --threads 8 --llama-server "$LLAMA_BUILD_DIR/bin/llama-server"
    tail -12 "$OUT/parallel-4.log" | tee -a "$SUMMARY"
fi
cp "$SUMMARY" "$OUT/summary-final.txt"
echo "---- summary"
cat "$SUMMARY"
