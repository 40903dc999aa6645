#!/usr/bin/env bash
# Proves the one-binary-two-libtorch design with a libtorch 2.x on a CPU
# machine (binding.md §7b): Debian trixie's libtorch-dev 2.6 in a chroot
# builds libcgotorch.so; the Go test binaries built outside (against the
# Debian 12 / libtorch 1.13 shim, linking only -lcgotorch) run inside
# against the 2.6 shim via LD_LIBRARY_PATH. The same flow runs on the GPU
# machine with the CUDA flavour (scripts/gpu-check.sh).
#
#   scripts/ci-torch2.sh            # chroot cached in $TRIXIE_ROOT
#   scripts/ci-torch2.sh --chroot   # only create the chroot (scripts/ci-cuda.sh uses it too)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${TRIXIE_ROOT:-/var/tmp/gotorch-trixie}
REPO=$PWD
DATA=${GOTORCH_TESTDATA_DIR:-$REPO/../shared/data}
PKGS="libtorch-dev libgloo-dev g++ make python3-torch python3-numpy python3-safetensors"
export CGO_CFLAGS=${CGO_CFLAGS:-"-O2 -g -Wno-deprecated-declarations"}

# One user of the chroot at a time (this script and scripts/ci-cuda.sh);
# the caller may hold the lock already (TRIXIE_LOCKED=1).
if [ "${TRIXIE_LOCKED:-}" != 1 ]; then
  exec 9>"$ROOT.lock"
  flock 9
fi

# An existing chroot that lacks a package (one added to PKGS later, e.g.
# libgloo-dev) gets it installed; only a missing or broken one is rebuilt.
if [ -x "$ROOT/usr/bin/apt-get" ] && ! chroot "$ROOT" sh -c "dpkg -s $PKGS >/dev/null 2>&1" 2>/dev/null; then
  echo "== installing the missing packages of $PKGS into $ROOT"
  chroot "$ROOT" sh -c "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS" >/dev/null || true
fi
if ! chroot "$ROOT" sh -c "dpkg -s $PKGS >/dev/null 2>&1" 2>/dev/null; then
  echo "== creating the trixie chroot in $ROOT (libtorch 2.x)"
  command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
  # Nothing may stay mounted inside (a killed run's binds of host folders).
  awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$ROOT"
  debootstrap --variant=minbase trixie "$ROOT" http://deb.debian.org/debian >/dev/null
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  chroot "$ROOT" sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS" >/dev/null
fi
grep -E 'TORCH_VERSION_(MAJOR|MINOR)' "$ROOT/usr/include/torch/csrc/api/include/torch/version.h"
[ "${1:-}" = --chroot ] && exit 0

echo "== Go test binaries (outside, linked against the host shim)"
make -s shim
# Packages that link HDF5 (scdata and its importers, e.g. eval) stay out:
# built here against Debian 12's libhdf5 (soname .103), they cannot load in
# trixie (1.14, .310). The CUDA lane compiles them against trixie's HDF5.
PKGS_GO=${CI_PKGS:-$(go list -f '{{.ImportPath}} {{join .Deps " "}}' ./cgotorch/... ./nn/... ./cellunet/... ./monitor/... |
  awk '$0 !~ /scdata\/hdf5/ && $1 !~ /\/scdata/ && $1 !~ /cgotorchtest/ {print $1}')}
rm -rf bin/torch2 && mkdir -p bin/torch2
for p in $PKGS_GO; do
  rel=${p#github.com/scdiffusion/gotorch-train/}
  go test -c -o "bin/torch2/$(echo "$rel" | tr / _).test" "$p" >/dev/null
done
find bin/torch2 -name '*.test' | wc -l

echo "== copying the tree into the chroot and building the 2.x shim there"
W=$ROOT/work
mkdir -p "$W"
rsync -a --delete --exclude .git --exclude cgotorch/build "$REPO/" "$W/repo/" 2>/dev/null || { rm -rf "$W/repo"; cp -a "$REPO" "$W/repo"; rm -rf "$W/repo/.git" "$W/repo/cgotorch/build"; }
mkdir -p "$W/shared" && rm -rf "$W/shared/data" && cp -a "$DATA" "$W/shared/data"
chroot "$ROOT" sh -c "cd /work/repo && make -s -j2 shim SHIM_DIR=cgotorch/build/torch2" | grep -v '✗'
chroot "$ROOT" sh -c "ldd /work/repo/cgotorch/build/torch2/libcgotorch.so | grep -E 'torch|c10'"

echo "== running the tests against libtorch 2.x"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
trap 'umount -l "$ROOT/proc" "$ROOT/dev" 2>/dev/null || true' EXIT
fail=0
for t in "$W"/repo/bin/torch2/*.test; do
  name=$(basename "$t" .test)
  dir=${name//_//}
  if chroot "$ROOT" env LD_LIBRARY_PATH=/work/repo/cgotorch/build/torch2 GOTORCH_TESTDATA_DIR=/work/shared/data \
       OMP_WAIT_POLICY=PASSIVE HOME=/root sh -c "cd /work/repo/$dir && /work/repo/bin/torch2/$name.test -test.timeout 20m" > "$W/$name.log" 2>&1; then
    echo "ok   $dir ($(tail -1 "$W/$name.log"))"
  else
    echo "FAIL $dir"; tail -40 "$W/$name.log"; fail=1
  fi
done
exit $fail
