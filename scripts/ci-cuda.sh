#!/usr/bin/env bash
# CI's CUDA build lane, on a machine without a GPU: builds the CUDA flavour
# of libcgotorch.so with -Werror against Debian trixie's libtorch-cuda 2.6
# (CUDA 12.4), links every Go test binary and gotorch-train against it, and
# compiles the Go side with trixie's gcc 14 and HDF5 1.14, whose
# HDF5-only tests it also runs there.
#
#   scripts/ci-cuda.sh      # TRIXIE_ROOT (default /var/tmp/gotorch-trixie),
#                           # CUDA_LANE_CACHE (default /var/cache/gotorch-cuda)
#
# Recipe, in the trixie chroot of scripts/ci-torch2.sh (created if missing;
# its libtorch-dev brings libtorch's non-CUDA dependencies):
#  - libhdf5-dev, pkg-config and python3-h5py installed with apt;
#  - libtorch-cuda-2.6, libtorch-cuda-dev, libcudart12 (contrib/non-free),
#    NCCL's and libcu++'s headers (libnccl-dev, libcu++-dev: the shim's NCCL
#    process group, cgotorch/csrc/dist.cc) and
#    nvidia-cuda-dev's headers and libcudart.so link downloaded by apt into
#    $CUDA_LANE_CACHE/debs (signed indices; kept between runs, refreshed
#    weekly) and unpacked with dpkg -x into /opt/gotorch-cuda in the chroot,
#    not installed: libtorch-cuda-2.6 depends on nvidia-cudnn, an installer
#    that downloads from NVIDIA and fails offline;
#  - `make shim FLAVOR=cuda TORCH_PREFIX=/opt/gotorch-cuda EXTRA_CXXFLAGS=-Werror`
#    (the Makefile's flavour logic; scripts/probe_torch.py --prefix writes
#    torch.mk from the unpacked libraries);
#  - Go from this machine (/usr/local/go and the module cache bind-mounted
#    read-only, the build cache in $CUDA_LANE_CACHE/go-build):
#    `make test-binaries build FLAVOR=cuda ...` with
#    CGO_LDFLAGS_EXTRA=-Wl,--allow-shlib-undefined, because libtorch_cuda's
#    cuDNN, cuBLAS, NCCL ... are absent here (the shim itself links with
#    --no-undefined).
# Nothing runs on CUDA here: scripts/gpu-check.sh does that on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${TRIXIE_ROOT:-/var/tmp/gotorch-trixie}
CACHE=${CUDA_LANE_CACHE:-/var/cache/gotorch-cuda}
STAGE=/opt/gotorch-cuda            # inside the chroot
W=/work/cuda                       # inside the chroot: the lane's copy of the repo
DATA=${GOTORCH_TESTDATA_DIR:-$REPO/../shared/data}
CUDA_DEBS="libtorch-cuda-2.6 libtorch-cuda-dev libcudart12 nvidia-cuda-dev libnccl-dev libcu++-dev"
EXTRA_PKGS="libhdf5-dev pkg-config python3-h5py"
JOBS=${JOBS:-$(nproc)}
start=$(date +%s)
step() { echo "== $* ($(($(date +%s) - start)) s)"; }

exec 9>"$ROOT.lock"
flock 9
export TRIXIE_LOCKED=1
scripts/ci-torch2.sh --chroot

# Every mount below is undone on exit, whatever happens.
MOUNTS=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # bind SRC DST [ro]
  mkdir -p "$2"
  mountpoint -q "$2" && umount -l "$2"
  mount --bind "$1" "$2"
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
  MOUNTS+=("$2")
}
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

step "chroot packages: $EXTRA_PKGS"
if ! in_root sh -c "dpkg -s $EXTRA_PKGS >/dev/null 2>&1"; then
  in_root sh -c "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $EXTRA_PKGS >/dev/null"
fi
# shellcheck disable=SC2016  # expanded in the chroot
in_root sh -c 'echo "gcc $(gcc -dumpfullversion), HDF5 $(pkg-config --modversion hdf5-serial)"'

step "libtorch-cuda packages (cache $CACHE/debs)"
# A private apt configuration inside the chroot: contrib and non-free, own
# lists, so the chroot's own apt state (main only) is left alone.
APT_LISTS=/var/lib/apt/gotorch-cuda-lists
APT_OPTS=(-o Dir::Etc::SourceList=/etc/apt/gotorch-cuda.list -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$APT_LISTS" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root)
echo "deb http://deb.debian.org/debian trixie main contrib non-free" > "$ROOT/etc/apt/gotorch-cuda.list"
mkdir -p "$ROOT$APT_LISTS/partial" "$CACHE/debs"
if [ ! -e "$ROOT$APT_LISTS/.updated" ] || [ -n "$(find "$ROOT$APT_LISTS/.updated" -mtime +7)" ]; then
  in_root apt-get "${APT_OPTS[@]}" update -q >/dev/null
  touch "$ROOT$APT_LISTS/.updated"
fi
files=() missing=()
for p in $CUDA_DEBS; do
  f=$(in_root apt-cache "${APT_OPTS[@]}" show --no-all-versions "$p" | sed -n 's|^Filename: .*/||p')
  [ -n "$f" ] || { echo "ci-cuda: package $p not found in trixie contrib/non-free"; exit 1; }
  files+=("$f")
  [ -f "$CACHE/debs/$f" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "downloading ${missing[*]} (about 1.4 GB when all are missing)"
  bind "$CACHE/debs" "$ROOT/var/cache/gotorch-cuda-debs"
  in_root sh -c "cd /var/cache/gotorch-cuda-debs && apt-get ${APT_OPTS[*]} download -q ${missing[*]}" | grep -v '^Get:' || true
  umount -l "$ROOT/var/cache/gotorch-cuda-debs"; unset 'MOUNTS[-1]'
fi
# Older versions of the same packages go.
for f in "$CACHE"/debs/*.deb; do
  case " ${files[*]} " in *" $(basename "$f") "*) ;; *) echo "removing old $(basename "$f")"; rm -f "$f" ;; esac
done
printf '%s\n' "${files[@]}"

step "unpacking into $STAGE"
stamp=$(printf '%s\n' "${files[@]}" | sort)
if [ "$(cat "$ROOT$STAGE/.debs" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$ROOT$STAGE.new" && mkdir -p "$ROOT$STAGE.new"
  for f in "${files[@]}"; do
    case $f in
      nvidia-cuda-dev_*)  # 2.5 GB unpacked, mostly static libraries: headers and the libcudart.so link only
        dpkg-deb --fsys-tarfile "$CACHE/debs/$f" | tar -x -C "$ROOT$STAGE.new" ./usr/include ./usr/lib/x86_64-linux-gnu/libcudart.so ;;
      *) dpkg -x "$CACHE/debs/$f" "$ROOT$STAGE.new" ;;
    esac
  done
  echo "$stamp" > "$ROOT$STAGE.new/.debs"
  rm -rf "$ROOT$STAGE" && mv "$ROOT$STAGE.new" "$ROOT$STAGE"
  # Objects built against another libtorch must not be reused.
  rm -rf "$ROOT$W/repo/cgotorch/build/cuda"
fi
grep -E 'TORCH_VERSION_(MAJOR|MINOR)' "$ROOT$STAGE/usr/include/torch/csrc/api/include/torch/version.h"

step "copying the tree into the chroot ($W/repo)"
mkdir -p "$ROOT$W/repo"
# cgotorch/build/cuda stays between runs: make rebuilds what changed (the
# sources, headers, Makefile and probe are its prerequisites).
rsync -a --delete --exclude .git --exclude /bin --exclude /output --exclude '/cgotorch/build/*' "$REPO/" "$ROOT$W/repo/"
rm -rf "$ROOT$W/repo/cgotorch/build/cpu"
mkdir -p "$ROOT$W/shared" && rsync -a --delete "$DATA/" "$ROOT$W/shared/data/"

MAKE_CUDA="FLAVOR=cuda TORCH_PREFIX=$STAGE TORCH_PYTHON=python3"
step "CUDA shim: make shim $MAKE_CUDA EXTRA_CXXFLAGS=-Werror"
in_root sh -c "cd $W/repo && make -s -j$JOBS shim $MAKE_CUDA EXTRA_CXXFLAGS=-Werror"
shim=$ROOT$W/repo/cgotorch/build/cuda/libcgotorch.so
sed -n '1p;/^OPENMP/p;/^TORCH_VERSION/p' "$ROOT$W/repo/cgotorch/build/cuda/torch.mk"
# The same check as scripts/gpu-check.sh's on the GPU machine: the shim links
# libtorch_cuda, c10_cuda and the very CUDA and OpenMP runtimes libtorch uses.
in_root sh -c "cd $W/repo && python3 scripts/probe_torch.py --prefix $STAGE --check cgotorch/build/cuda/libcgotorch.so"
grep -q ' T cgt_cuda_memory_stats$' <<<"$(nm -D --defined-only "$shim")" || { echo "ci-cuda: cgt_cuda_memory_stats not exported"; exit 1; }
# dist.cc compiles the NCCL process group only when it finds nccl.h.
grep -q 'c10d::ProcessGroupNCCL::' <<<"$(nm -DC --undefined-only "$shim")" || { echo "ci-cuda: the CUDA shim was built without NCCL's process group"; exit 1; }
echo "NCCL process group compiled in"

step "Go: every test binary and gotorch-train, linked against the CUDA shim"
bind /usr/local/go "$ROOT/usr/local/go" ro
bind "$(go env GOMODCACHE)" "$ROOT/root/go/pkg/mod" ro
mkdir -p "$CACHE/go-build"
bind "$CACHE/go-build" "$ROOT/root/.cache/go-build"
mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc"); }
mountpoint -q "$ROOT/dev" || { mount --bind /dev "$ROOT/dev"; MOUNTS+=("$ROOT/dev"); }
GO_ENV="GOFLAGS=-buildvcs=false GOPROXY=off GOTOOLCHAIN=local GOMODCACHE=/root/go/pkg/mod GOCACHE=/root/.cache/go-build"
# ld warns once per missing library of libtorch_cuda (cuDNN, cuBLAS, ...) and link.
in_root sh -c "cd $W/repo && $GO_ENV make -s test-binaries build $MAKE_CUDA CGO_LDFLAGS_EXTRA=-Wl,--allow-shlib-undefined" 2>&1 \
  | grep -v -e 'not found (try using -rpath or -rpath-link)' -e '^# ' || true
tests=$ROOT$W/repo/bin/cuda/tests
bin=$ROOT$W/repo/bin/cuda/gotorch-train
[ -x "$bin" ] || { echo "ci-cuda: gotorch-train was not built"; exit 1; }
want=$(cd "$REPO" && go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./... | wc -l)
have=$(find "$tests" -name '*.test' | wc -l)
[ "$have" = "$want" ] || { echo "ci-cuda: $have test binaries, want $want"; exit 1; }
linked=0
for t in "$tests"/*.test "$bin"; do
  dyn=$(readelf -d "$t")
  if grep -q 'NEEDED.*\[libcgotorch.so\]' <<<"$dyn"; then
    grep -q "RUNPATH.*\[$W/repo/cgotorch/build/cuda:" <<<"$dyn" || { echo "ci-cuda: $(basename "$t") does not find the CUDA shim first"; exit 1; }
    linked=$((linked + 1))
  fi
done
echo "$have test binaries; $linked of them and gotorch-train link libcgotorch.so (CUDA flavour, found first through RUNPATH)"

step "HDF5 $(in_root pkg-config --modversion hdf5-serial): the tests that need no libtorch"
# Trixie has no python3-anndata: the h5ad writer's anndata round trips are
# skipped here (make test runs them on Debian 12).
skip='^TestH5ADWriter(RoundTrip|NoLabelsAndErrors)$'
fail=0
for t in "$tests"/*.test; do
  grep -q 'NEEDED.*\[libcgotorch.so\]' <<<"$(readelf -d "$t")" && continue
  name=$(basename "$t" .test)
  dir=${name//_//}
  if in_root GOTORCH_TESTDATA_DIR=$W/shared/data sh -c "cd $W/repo/$dir && $W/repo/bin/cuda/tests/$name.test -test.timeout 10m -test.skip '$skip'" > "$ROOT$W/$name.log" 2>&1; then
    echo "ok   $dir"
  else
    echo "FAIL $dir"; tail -30 "$ROOT$W/$name.log"; fail=1
  fi
done
step "done (fail=$fail)"
exit $fail
