# gotorch-train build. `make help` lists the targets.
#
#   make deps                  install Debian packages (libtorch-dev, OpenBLAS, HDF5, ...)
#   make shim                  build cgotorch/build/cpu/libcgotorch.so against Debian's libtorch 1.13
#   make shim FLAVOR=cuda TORCH_PYTHON=/venv/bin/python3
#                              build cgotorch/build/cuda/libcgotorch.so against a pip torch 2.x
#   make build | test | bench | clean

SHELL := /bin/bash
GO ?= go
FLAVOR ?= cpu
TORCH_PYTHON ?= python3
# Debian's python3-torch is only visible to /usr/bin/python3.
REF_PYTHON ?= /usr/bin/python3

SHIM_DIR ?= cgotorch/build/$(FLAVOR)
SHIM := $(SHIM_DIR)/libcgotorch.so
SHIM_SRCS := $(sort $(wildcard cgotorch/csrc/*.cc))
SHIM_HDRS := cgotorch/cgotorch.h $(wildcard cgotorch/csrc/*.h)
SHIM_OBJS := $(patsubst cgotorch/csrc/%.cc,$(SHIM_DIR)/%.o,$(SHIM_SRCS))

ifeq ($(FLAVOR),cpu)
  TORCH_INC := -I/usr/include/torch/csrc/api/include
  TORCH_LIBS := -ltorch -ltorch_cpu -lc10
  TORCH_ABI := 1
  TORCH_DEFS :=
  # Debian's libtorch runs on the system libgomp, so the shim's own parallel
  # loops (fused AdamW) share its OpenMP runtime and thread settings.
  OPENMP := -fopenmp
else ifeq ($(FLAVOR),cuda)
  # Probe the wheel instead of assuming (as tch-rs's build.rs does).
  -include $(SHIM_DIR)/torch.mk
  OPENMP :=
else
  $(error FLAVOR must be cpu or cuda, not $(FLAVOR))
endif

CXXFLAGS_SHIM := -std=c++17 -O3 -fno-math-errno -fPIC -Wall -Wno-unused-function -fvisibility=hidden \
	-D_GLIBCXX_USE_CXX11_ABI=$(TORCH_ABI) $(TORCH_DEFS) $(TORCH_INC) $(OPENMP)
LDFLAGS_SHIM := -shared -Wl,-soname,libcgotorch.so -Wl,--no-undefined $(OPENMP)

# Runtime settings for tests and benchmarks: passive OpenMP waits (spinning
# workers made 2-thread runs on 2 vCPUs slow and erratic), and the real data.
export OMP_WAIT_POLICY ?= PASSIVE
export GOTORCH_TESTDATA_DIR ?= $(abspath ../shared/data)
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: help deps shim build test test-race vet fmt bench bench-ops clean fixtures gpu-binaries

help:
	@sed -n '3,8p' Makefile

# ---------------------------------------------------------------- deps
DEBIAN_PACKAGES := libtorch-dev libopenblas0-pthread libhdf5-dev pkg-config g++ make \
	python3-torch python3-numpy python3-h5py python3-anndata python3-scipy debootstrap shellcheck time rsync

deps:
	@if dpkg-query -W -f='$${Status}\n' $(DEBIAN_PACKAGES) 2>/dev/null | grep -vq 'install ok installed' \
	   || [ $$(dpkg-query -W -f='$${Status}\n' $(DEBIAN_PACKAGES) 2>/dev/null | wc -l) -ne $(words $(DEBIAN_PACKAGES)) ]; then \
	  echo "installing Debian packages: $(DEBIAN_PACKAGES)"; \
	  SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(DEBIAN_PACKAGES); \
	else echo "✓ Debian packages present"; fi

# ---------------------------------------------------------------- shim
shim: $(SHIM)
	@echo "✓ $(SHIM) ($(FLAVOR) flavour)"
	@if [ "$(FLAVOR)" = cpu ]; then \
	  if command -v nvcc >/dev/null; then echo "✓ nvcc found: make shim FLAVOR=cuda TORCH_PYTHON=... builds the CUDA flavour"; \
	  else echo "✗ nvcc not found: CUDA flavour not built (only the GPU machine needs it)"; fi; fi

$(SHIM_DIR)/torch.mk: scripts/probe_torch.py
	@mkdir -p $(SHIM_DIR)
	$(TORCH_PYTHON) scripts/probe_torch.py > $@.tmp && mv $@.tmp $@

$(SHIM_DIR)/%.o: cgotorch/csrc/%.cc $(SHIM_HDRS) Makefile | $(SHIM_DIR)/.dir
	$(CXX) $(CXXFLAGS_SHIM) -c $< -o $@

$(SHIM): $(SHIM_OBJS)
	$(CXX) $(LDFLAGS_SHIM) -o $@ $^ $(TORCH_LIBS)

$(SHIM_DIR)/.dir:
	@mkdir -p $(SHIM_DIR) && touch $@

# ---------------------------------------------------------------- Go
build: $(SHIM)
	$(GO) build -o bin/gotorch-train ./cmd/gotorch-train

vet: $(SHIM)
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# -count=1: the shim is loaded at run time, so Go's test cache cannot see it change.
test: $(SHIM)
	$(GO) test -count=1 -timeout 30m ./...

test-race: $(SHIM)
	$(GO) test -count=1 -race ./cgotorch/safetensors/... ./cgotorch/ptfile/...

bench: $(SHIM)
	./scripts/bench.sh
	./scripts/bench-data.sh

# Golden fixtures for the parity tests, from Debian's python3-torch.
fixtures:
	cd cgotorch/testdata && $(REF_PYTHON) make_golden.py
	cd nn/testdata && $(REF_PYTHON) make_golden.py
	cd cellunet/testdata && $(REF_PYTHON) make_golden.py
	cd cellunet/diffusion/testdata && $(REF_PYTHON) make_golden.py
	cd cellunet/autoencoder/testdata && $(REF_PYTHON) make_golden.py
	cd cellunet/classifier/testdata && $(REF_PYTHON) make_golden.py

# Test binaries for the GPU machine (see scripts/gpu-check.sh): one per
# package that runs on libtorch, named after its directory (a/b -> a_b).
GPU_PKGS := cgotorch nn cellunet cellunet/diffusion cellunet/trainer cellunet/autoencoder cellunet/classifier cellunet/generate monitor
gpu-binaries: $(SHIM)
	@rm -rf bin/gpu && mkdir -p bin/gpu
	for p in $(GPU_PKGS); do $(GO) test -c -o bin/gpu/$$(echo $$p | tr / _).test ./$$p || exit 1; done
	$(GO) build -o bin/gpu/gotorch-bench ./cmd/gotorch-bench
	@readelf -d bin/gpu/gotorch-bench | grep NEEDED

clean:
	rm -rf cgotorch/build bin
	$(GO) clean -testcache
