# gotorch-train build. `make help` lists the targets.
#
#   make deps                  install Debian packages (libtorch-dev, OpenBLAS, HDF5, ...)
#   make shim                  build cgotorch/build/cpu/libcgotorch.so against Debian's libtorch 1.13
#   make shim FLAVOR=cuda TORCH_PYTHON=/venv/bin/python3
#                              build cgotorch/build/cuda/libcgotorch.so against a pip torch 2.x
#   make shim FLAVOR=cuda TORCH_PREFIX=/opt/libtorch
#                              ... against a libtorch with CUDA installed under a prefix
#   make build | test | bench | clean

SHELL := /bin/bash
GO ?= go
FLAVOR ?= cpu
TORCH_PYTHON ?= python3
# Debian's python3-torch is only visible to /usr/bin/python3.
REF_PYTHON ?= /usr/bin/python3

SHIM_DIR ?= cgotorch/build/$(FLAVOR)
# Go binaries of the CPU flavour go to bin/, the others' to bin/<flavour>/.
BIN_DIR ?= $(if $(filter cpu,$(FLAVOR)),bin,bin/$(FLAVOR))
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
  # loops (at::parallel_for in the fused AdamW) share its OpenMP runtime and
  # thread settings.
  OPENMP_CFLAGS := -fopenmp
  OPENMP_LIBS := -fopenmp
else ifeq ($(FLAVOR),cuda)
  # Probe the installed libtorch instead of assuming (as tch-rs's build.rs
  # does): scripts/probe_torch.py writes TORCH_INC, TORCH_LIBS (with the CUDA
  # runtime libtorch_cuda loads), TORCH_ABI and libtorch's own OpenMP runtime
  # (OPENMP_CFLAGS/OPENMP_LIBS) into torch.mk. TORCH_PREFIX: a libtorch under
  # a prefix (Debian's libtorch-cuda-dev, the libtorch zip); else the torch
  # of TORCH_PYTHON (a pip wheel).
  PROBE_CMD := $(TORCH_PYTHON) scripts/probe_torch.py$(if $(TORCH_PREFIX), --prefix $(TORCH_PREFIX))
  ifeq ($(filter print-% clean help,$(MAKECMDGOALS)),)
    # Re-probe when the probe's command line changes.
    $(shell mkdir -p $(SHIM_DIR) && { echo '$(PROBE_CMD)' | cmp -s - $(SHIM_DIR)/probe.cmd || echo '$(PROBE_CMD)' > $(SHIM_DIR)/probe.cmd; })
    -include $(SHIM_DIR)/torch.mk
  endif
  # Go binaries of this flavour link against its shim (and find it first
  # through their RUNPATH); CGO_LDFLAGS_EXTRA adds to that (CI's CUDA lane:
  # -Wl,--allow-shlib-undefined, as cuDNN is absent there).
  GO_ENV := CGO_LDFLAGS="-L$(abspath $(SHIM_DIR)) -Wl,-rpath,$(abspath $(SHIM_DIR)) $(CGO_LDFLAGS_EXTRA) $(CGO_LDFLAGS)"
else
  $(error FLAVOR must be cpu or cuda, not $(FLAVOR))
endif

# EXTRA_CXXFLAGS: e.g. -Werror (CI's CUDA lane).
CXXFLAGS_SHIM := -std=c++17 -O3 -fno-math-errno -fPIC -Wall -Wno-unused-function -fvisibility=hidden \
	-D_GLIBCXX_USE_CXX11_ABI=$(TORCH_ABI) $(TORCH_DEFS) $(TORCH_INC) $(OPENMP_CFLAGS) $(EXTRA_CXXFLAGS)
LDFLAGS_SHIM := -shared -Wl,-soname,libcgotorch.so -Wl,--no-undefined

# Runtime settings for tests and benchmarks: passive OpenMP waits (spinning
# workers made 2-thread runs on 2 vCPUs slow and erratic), and the real data.
export OMP_WAIT_POLICY ?= PASSIVE
export GOTORCH_TESTDATA_DIR ?= $(abspath ../shared/data)
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: help deps shim build test test-race vet fmt bench bench-ops clean fixtures gpu-binaries test-binaries

help:
	@sed -n '3,10p' Makefile

# make print-VAR prints a variable (scripts/lint-dockerfile.sh reads the
# flavour logic from here).
print-%:
	@echo '$($*)'

# ---------------------------------------------------------------- deps
DEBIAN_PACKAGES := libtorch-dev libgloo-dev libopenblas0-pthread libhdf5-dev pkg-config g++ make \
	python3-torch python3-numpy python3-h5py python3-anndata python3-scipy python3-sklearn debootstrap shellcheck time rsync

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
	  echo "  (the CUDA flavour: make shim FLAVOR=cuda TORCH_PYTHON=<python with a CUDA torch> or TORCH_PREFIX=<libtorch>)"; fi

$(SHIM_DIR)/torch.mk: scripts/probe_torch.py $(SHIM_DIR)/probe.cmd
	@mkdir -p $(SHIM_DIR)
	$(PROBE_CMD) > $@.tmp && mv $@.tmp $@

# The CUDA flavour's objects also depend on what the probe found.
$(SHIM_DIR)/%.o: cgotorch/csrc/%.cc $(SHIM_HDRS) Makefile $(if $(filter cuda,$(FLAVOR)),$(SHIM_DIR)/torch.mk) | $(SHIM_DIR)/.dir
	$(CXX) $(CXXFLAGS_SHIM) -c $< -o $@

$(SHIM): $(SHIM_OBJS)
	$(CXX) $(LDFLAGS_SHIM) -o $@ $^ $(TORCH_LIBS) $(OPENMP_LIBS)

$(SHIM_DIR)/.dir:
	@mkdir -p $(SHIM_DIR) && touch $@

# ---------------------------------------------------------------- Go
# The commit for --version when Go's own VCS stamping is off (-buildvcs=false).
GIT_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -modified)

build: $(SHIM)
	$(GO_ENV) $(GO) build -ldflags "-X main.commit=$(GIT_COMMIT)" -o $(BIN_DIR)/gotorch-train ./cmd/gotorch-train

vet: $(SHIM)
	$(GO_ENV) $(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# -count=1: the shim is loaded at run time, so Go's test cache cannot see it change.
test: $(SHIM)
	$(GO_ENV) $(GO) test -count=1 -timeout 30m ./...

test-race: $(SHIM)
	$(GO) test -count=1 -race ./cgotorch/safetensors/... ./cgotorch/ptfile/...

bench: $(SHIM)
	./scripts/bench.sh
	./scripts/bench-data.sh
	./scripts/bench-defaults.sh
	./scripts/bench-dist.sh

# Golden fixtures for the parity tests, from Debian's python3-torch.
fixtures:
	cd cgotorch/testdata && $(REF_PYTHON) make_golden.py
	cd nn/testdata && $(REF_PYTHON) make_golden.py
	cd cellunet/testdata && $(REF_PYTHON) make_golden.py
	cd cellunet/diffusion/testdata && $(REF_PYTHON) make_golden.py
	cd cellunet/autoencoder/testdata && $(REF_PYTHON) make_golden.py && $(REF_PYTHON) make_scimilarity.py
	cd cellunet/classifier/testdata && $(REF_PYTHON) make_golden.py
	cd cellunet/scdata/testdata && $(REF_PYTHON) make_label_golden.py
	cd cellunet/eval/testdata && $(REF_PYTHON) make_golden.py

# The kit for the GPU machine, which has a pip torch but no Go (see
# scripts/gpu-check.sh): bin/gpu/ holds a stripped test binary per package
# that runs on libtorch (a/b -> a_b.test), gotorch-bench, gotorch-train and
# gotorch-synth, all linked only to -lcgotorch (and libhdf5); bin/gpu/lib the
# HDF5 library with its dependencies outside glibc (gpu-check.sh uses those
# the machine lacks); bin/gpu/data the test data. bin/gpu-kit.tar.xz packs it
# for the device tool, which carries at most 64 MiB.
GPU_PKGS := cgotorch nn cellunet cellunet/diffusion cellunet/trainer cellunet/autoencoder cellunet/classifier cellunet/generate monitor
GPU_CMDS := gotorch-bench gotorch-train gotorch-synth
gpu-binaries: $(SHIM)
	@rm -rf bin/gpu bin/gpu-kit.tar.xz && mkdir -p bin/gpu/lib
	for p in $(GPU_PKGS); do $(GO) test -c -ldflags='-s -w' -o bin/gpu/$$(echo $$p | tr / _).test ./$$p || exit 1; done
	for c in $(GPU_CMDS); do $(GO) build -ldflags='-s -w' -o bin/gpu/$$c ./cmd/$$c || exit 1; done
	@hdf5=$$(ldd bin/gpu/gotorch-train | awk '/libhdf5/ {print $$3}'); \
	  { echo $$hdf5; ldd $$hdf5 | awk '/=> \// {print $$3}'; } \
	  | grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' \
	  | sort -u | xargs -r cp -L -t bin/gpu/lib
	cp -rL $(GOTORCH_TESTDATA_DIR) bin/gpu/data
	XZ_OPT=-T0 tar -C bin -cJf bin/gpu-kit.tar.xz gpu
	@du -sh bin/gpu bin/gpu-kit.tar.xz

# Every package's test binary, linked against this flavour's shim, into
# $(BIN_DIR)/tests/ (named after the package directory, a/b -> a_b): CI's CUDA
# lane links them against libtorch-cuda (scripts/ci-cuda.sh).
test-binaries: $(SHIM)
	@rm -rf $(BIN_DIR)/tests && mkdir -p $(BIN_DIR)/tests
	@for p in $$($(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}{{end}}' ./...); do \
	  rel=$${p#$(CURDIR)/}; \
	  $(GO_ENV) $(GO) test -c -o $(BIN_DIR)/tests/$$(echo $$rel | tr / _).test ./$$rel || exit 1; \
	done
	@ls $(BIN_DIR)/tests | wc -l | xargs echo "test binaries in $(BIN_DIR)/tests:"

clean:
	rm -rf cgotorch/build bin
	$(GO) clean -testcache
