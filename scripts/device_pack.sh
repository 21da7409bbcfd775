#!/usr/bin/env bash
# What scripts/device_cuda.sh needs on a lent GPU machine, which reaches no network: the llama.cpp source
# (without what neither the build nor the tests read) and wheels of the packages its image lacks, into
# build/device-pack (carried with the call; the run tool carries at most 64 MiB).
#
#   bash scripts/device_pack.sh && du -sh build/device-pack
#   run(command="bash scripts/device_cuda.sh", carry=["build/device-pack"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/device-pack
rm -rf "$OUT"
mkdir -p "$OUT/wheels"
test -f vendor/llama.cpp/include/llama.h || make vendor
tar -C vendor -czf "$OUT/llama.cpp.tar.gz" \
    --exclude='llama.cpp/docs' --exclude='llama.cpp/examples' --exclude='llama.cpp/tests' \
    --exclude='llama.cpp/media' --exclude='llama.cpp/.devops' --exclude='llama.cpp/tools/server/webui' \
    --exclude='llama.cpp/tools/server/public*' \
    --exclude='llama.cpp/models/ggml-vocab-[!lq]*.gguf' --exclude='llama.cpp/models/ggml-vocab-l[!l]*.gguf' \
    llama.cpp
# the locked versions (uv.lock) for Python 3.12, but for what the image has and the device run does not pin
uv export --frozen --extra test --no-hashes --no-emit-project 2>/dev/null \
    | grep -vE '^(#| )|^(numpy|cython|mypy|mypy-extensions|ruff|librt|ast-serialize|pathspec|pytest|pluggy|iniconfig|huggingface-hub|hf-xet|fsspec|tqdm|filelock|psutil|requests|urllib3|charset-normalizer|packaging|pexpect|ptyprocess|prompt-toolkit)==' \
    > "$OUT/requirements.txt"
python3 -m pip download --quiet --no-deps --dest "$OUT/wheels" --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any -r "$OUT/requirements.txt" \
    2> >(grep -v "is ignored" >&2)
du -sh "$OUT"/* | sed 's/^/  /'
