# llamabridge: `make serve` and `make test` set up everything they need on a fresh machine.
#
#   make vendor   fetch llama.cpp from the pinned, hash-checked sdist (skipped with LLAMA_CPP_DIR)
#   make libs     build libllama + ggml (with its RPC backend) + llama-common (+ llama-bench, ggml-rpc-server) with CMake
#   make build    install the Python package and its native extension into .venv (uv)
#   make test     build, lint (ruff, mypy), the whole test suite, then the device tests on lavapipe (make test-vulkan)
#   make lint     ruff over the package, tests, benchmarks and scripts; mypy over the package
#   make test-busy  the same beside two busy-loop processes pinned one per core (a shared CI machine)
#   make serve    build, then start the server (on a small demo model unless MODEL/CONFIG is given)
#   make bench    build, then the engine next to llama-bench, streaming through the server, two caches at once
#   make llama-server   build llama.cpp's own server from the same tree (for comparisons only)
#   make bench-parallel build + llama-server, then 4 concurrent streams: llamabridge next to llama-server
#   make bench-restart  build + llama-server, then Claude Code's next turn after a restart (saved KV prefixes)
#   make bench-rpc      build + llama-server, then a model split over two loopback rpc-servers next to local and llama-server --rpc
#   make bench-tools    build + llama-server, then tool calls streamed (the grammar active) next to plain text and llama-server
#   make bench-spec     build + llama-server, then speculative decoding (n-gram drafts, a draft model) on an edit and on random text, next to llama-server
#   make clean    remove build outputs (keeps vendor/ and the downloaded sdist)
#
#   make test-vulkan  build with GPU=vulkan, then the device tests on Mesa's software Vulkan driver (lavapipe)
#
# GPU builds: `make build GPU=vulkan` (-DGGML_VULKAN=ON; scripts/vulkan_toolchain.sh installs or names what
# it needs), `make build GPU=cuda` (-DGGML_CUDA=ON; CMAKE_CUDA_ARCHITECTURES=90 for H100/H200) or
# `make build GPU=metal` (-DGGML_METAL=ON). Each GPU kind builds llama.cpp in its own directory
# (build/llama.cpp-vulkan, ...); the extension is rebuilt against the kind last built.
# Extra CMake flags: CMAKE_ARGS="...". Another llama.cpp checkout: LLAMA_CPP_DIR=/path/to/llama.cpp.

PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
GPU ?= cpu
JOBS ?= $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)
LLAMA_CPP_DIR ?= vendor/llama.cpp
build_dir_for = build/llama.cpp$(if $(filter-out cpu,$(1)),-$(1))
LLAMA_BUILD_DIR ?= $(call build_dir_for,$(GPU))
PYTEST_ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8000

export LLAMA_CPP_DIR
export LLAMA_BUILD_DIR

# OpenMP, not ggml's own thread pool (GGML_OPENMP=OFF): two caches decoding at once (2 x 128 tokens, 2 threads
# each) took 5.5-6.3 s with the pool instead of 0.36 s: its barriers spin without yielding, and two caches'
# threads outnumber the cores. (The pool's one-stream lead was libgomp throttling a team that the model's load
# left behind: shim/threads.cpp hands such teams back.)
CMAKE_FLAGS := -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON \
	-DGGML_NATIVE=ON -DGGML_OPENMP=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
	-DLLAMA_OPENSSL=OFF -DLLAMA_SUBPROCESS=OFF -DGGML_RPC=ON
ifeq ($(GPU),cuda)
CMAKE_FLAGS += -DGGML_CUDA=ON $(if $(CMAKE_CUDA_ARCHITECTURES),-DCMAKE_CUDA_ARCHITECTURES=$(CMAKE_CUDA_ARCHITECTURES))
else ifeq ($(GPU),metal)
CMAKE_FLAGS += -DGGML_METAL=ON
else ifeq ($(GPU),vulkan)
# the headers: the system's when new enough, else those scripts/vulkan_toolchain.sh fetched into build/
CMAKE_FLAGS += -DGGML_VULKAN=ON $(shell test -d build/vulkan-headers/include && echo -DVulkan_INCLUDE_DIR=$(CURDIR)/build/vulkan-headers/include)
else ifneq ($(GPU),cpu)
$(error GPU must be cpu, vulkan, cuda or metal, not $(GPU))
endif
# each kind's directory builds only its own backend (explicitly, whatever its cache says)
CMAKE_FLAGS += $(if $(filter vulkan,$(GPU)),,-DGGML_VULKAN=OFF) $(if $(filter cuda,$(GPU)),,-DGGML_CUDA=OFF)
CMAKE_GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

.PHONY: all uv vendor configure configure-if-changed libs build lint test test-busy test-vulkan serve bench llama-server bench-stream bench-parallel bench-restart bench-rpc bench-tools bench-spec clean

all: build

uv:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv

vendor:
ifeq ($(LLAMA_CPP_DIR),vendor/llama.cpp)
	@$(PYTHON) scripts/fetch_llama_cpp.py
else
	@test -f "$(LLAMA_CPP_DIR)/include/llama.h" || { echo "LLAMA_CPP_DIR=$(LLAMA_CPP_DIR) is not a llama.cpp checkout"; exit 2; }
endif

# configured again whenever the flags differ from those it was configured with (kept beside its cache),
# after the Vulkan toolchain script has run, so that the flags see the headers it fetched
CONFIGURED = $(LLAMA_BUILD_DIR)/.llamabridge-cmake-flags
FLAGS = $(CMAKE_GENERATOR) $(CMAKE_FLAGS) $(CMAKE_ARGS)

configure: vendor
	$(if $(filter vulkan,$(GPU)),@bash scripts/vulkan_toolchain.sh $(if $(LAVAPIPE),--lavapipe))
	@$(MAKE) --no-print-directory configure-if-changed

configure-if-changed:
	@if [ ! -f $(LLAMA_BUILD_DIR)/CMakeCache.txt ] || ! echo '$(FLAGS)' | cmp -s - $(CONFIGURED); then \
		echo "cmake -S $(LLAMA_CPP_DIR) -B $(LLAMA_BUILD_DIR) $(FLAGS)"; \
		cmake -S $(LLAMA_CPP_DIR) -B $(LLAMA_BUILD_DIR) $(FLAGS) && echo '$(FLAGS)' > $(CONFIGURED); \
	fi

libs: configure
	cmake --build $(LLAMA_BUILD_DIR) --config Release -j $(JOBS) --target llama llama-common llama-bench ggml-rpc-server

build: uv libs
	$(UV) sync --extra test
	@# uv keeps the editable build cached; rebuild the extension when it is missing
	@ls llamabridge/_core*.so >/dev/null 2>&1 || $(UV) sync --extra test --reinstall-package llamabridge

lint: build
	$(UV) run --no-sync ruff check llamabridge tests benchmarks scripts setup.py
	$(UV) run --no-sync mypy

test: build lint
	$(UV) run --no-sync pytest $(PYTEST_ARGS)
	@# then the device tests on lavapipe, where the Vulkan toolchain is here or can be installed (root, apt);
	@# elsewhere skipped with the reason (macOS, no root): `make test-vulkan` says what is missing
	@if bash scripts/vulkan_toolchain.sh --lavapipe; then $(MAKE) --no-print-directory test-vulkan; \
	else echo "device tests skipped: the Vulkan toolchain above is missing (make test-vulkan once it is there)"; fi

# the device tests on a real non-CPU backend: Vulkan on lavapipe (a CPU-type device, which ggml's Vulkan
# backend skips unless GGML_VK_VISIBLE_DEVICES names it); every change to the engine runs this before it lands
test-vulkan:
	$(MAKE) build GPU=vulkan LLAMA_BUILD_DIR=$(call build_dir_for,vulkan) LAVAPIPE=1
	GGML_VK_VISIBLE_DEVICES=$${GGML_VK_VISIBLE_DEVICES:-0} LLAMABRIDGE_DEVICE=Vulkan0 \
		$(UV) run --no-sync pytest -m device $(PYTEST_ARGS) tests/device

# no assertion may depend on how fast the machine is: this proves it (BUSY=N loops, default 2)
test-busy: build
	bash scripts/busy.sh -n $(or $(BUSY),2) $(UV) run --no-sync pytest $(PYTEST_ARGS)

serve: build
	$(UV) run --no-sync llamabridge serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG),$(if $(MODEL),--model $(MODEL),--demo))

bench: build
	$(UV) run --no-sync python benchmarks/engine_vs_llama_bench.py
	$(UV) run --no-sync python benchmarks/server_stream.py
	$(UV) run --no-sync python benchmarks/two_caches.py

# llama-server from the same vendored tree and build directory, for benchmarks; never part of `make test`
llama-server: libs
	cmake -S $(LLAMA_CPP_DIR) -B $(LLAMA_BUILD_DIR) -DLLAMA_BUILD_SERVER=ON
	cmake --build $(LLAMA_BUILD_DIR) --config Release -j $(JOBS) --target llama-server

bench-parallel: build llama-server
	$(UV) run --no-sync python benchmarks/parallel_stream.py --llama-server $(LLAMA_BUILD_DIR)/bin/llama-server

bench-stream: build llama-server
	$(UV) run --no-sync python benchmarks/server_stream.py --llama-server $(LLAMA_BUILD_DIR)/bin/llama-server

bench-rpc: build llama-server
	$(UV) run --no-sync python benchmarks/rpc_split.py --llama-server $(LLAMA_BUILD_DIR)/bin/llama-server

bench-tools: build llama-server
	$(UV) run --no-sync python benchmarks/tool_calls.py --llama-server $(LLAMA_BUILD_DIR)/bin/llama-server

bench-spec: build llama-server
	$(UV) run --no-sync python benchmarks/speculation.py --llama-server $(LLAMA_BUILD_DIR)/bin/llama-server

bench-restart: build llama-server
	$(UV) run --no-sync python benchmarks/restart_ttft.py --llama-server $(LLAMA_BUILD_DIR)/bin/llama-server

clean:
	rm -rf build/llama.cpp build/lib.* build/temp.* .cache/models llamabridge/_core*.so llamabridge/_core.cpp \
		llamabridge/lib*.so* llamabridge/lib*.dylib
