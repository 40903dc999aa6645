#!/usr/bin/env bash
# Static checks of Dockerfile.cuda (no Docker engine runs here):
# dockerfilelint from npm (hadolint is not packaged by Debian), then checks
# of our own:
#  - every COPY source exists; .dockerignore keeps host build outputs out;
#  - the image builds with the Makefile's flavour logic (`make shim` and
#    `make build` with FLAVOR=cuda, the shim and binary paths the Makefile
#    names, the probe's link check) and repeats none of it by hand;
#  - the Go download is checked against a SHA-256 and is go.mod's version;
#  - base images are pinned by digest, build and runtime on the same torch;
#  - LD_LIBRARY_PATH is extended, not replaced; the entrypoint is exec form;
#  - scripts/train.sh runs in the image's layout as shipped (bin/, lib/,
#    scripts/ under one root; run here on the CPU flavour with a few steps
#    when bin/gotorch-train is built);
#  - every `docker` line of the README is one of the Dockerfile's documented
#    commands, uses its tag, and names commands, flags and environment
#    variables that exist.
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-Dockerfile.cuda}
tools=${LINT_TOOLS:-/var/tmp/gotorch-lint}
if [ ! -x "$tools/node_modules/.bin/dockerfilelint" ]; then
  command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q nodejs npm; }
  mkdir -p "$tools"
  (cd "$tools" && npm install --no-audit --no-fund --silent dockerfilelint@1.8.0)
fi
"$tools/node_modules/.bin/dockerfilelint" "$file"
status=0
bad() { echo "$file: $*"; status=1; }
# The instructions with continuation lines joined.
joined=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$file" | grep -v '^#')

# COPY sources (not --from stages) must exist.
while read -r src; do
  for s in $src; do
    [ -e "$s" ] || bad "COPY source $s does not exist"
  done
done < <(grep -E '^COPY ' "$file" | grep -v -- '--from' | sed -E 's/^COPY +//; s/ +[^ ]+$//')
for p in .git bin/ output/ cgotorch/build/; do
  grep -qxF "$p" .dockerignore 2>/dev/null || bad ".dockerignore does not exclude $p"
done

# The flavour logic is the Makefile's.
shim=$(make -s print-SHIM FLAVOR=cuda)
bindir=$(make -s print-BIN_DIR FLAVOR=cuda)
grep -qE 'make( -j[^ ]+)? shim FLAVOR=cuda TORCH_PYTHON=' <<<"$joined" || bad "does not build the shim with make shim FLAVOR=cuda TORCH_PYTHON=..."
grep -qE 'make build FLAVOR=cuda TORCH_PYTHON=' <<<"$joined" || bad "does not build the binary with make build FLAVOR=cuda TORCH_PYTHON=..."
grep -qF "probe_torch.py --check $shim" <<<"$joined" || bad "does not check $shim with scripts/probe_torch.py --check"
grep -qF "cp $shim " <<<"$joined" || bad "does not ship $shim (make print-SHIM FLAVOR=cuda)"
grep -qF "cp $bindir/gotorch-train " <<<"$joined" || bad "does not ship $bindir/gotorch-train (make print-BIN_DIR FLAVOR=cuda)"
for by_hand in CGT_WITH_CUDA CGO_LDFLAGS -fopenmp -lcudart 'go build' 'g++ -' 'torch.mk'; do
  grep -qF -- "$by_hand" <<<"$joined" && bad "repeats the Makefile's flavour logic by hand ($by_hand)"
done

# Go: checked download of go.mod's version.
gomod=$(awk '$1 == "go" {print $2}' go.mod)
grep -qE "^ARG GO_VERSION=$gomod\$" "$file" || bad "ARG GO_VERSION is not go.mod's go $gomod"
grep -qE '^ARG GO_ZIP_SHA256=[0-9a-f]{64}$' "$file" || bad "no ARG GO_ZIP_SHA256 with a SHA-256"
grep -qF 'sha256sum -c' <<<"$joined" || bad "the Go download is not checked with sha256sum -c"

# Base images: pinned by digest, the same torch in both stages.
froms=$(grep -E '^FROM ' "$file" | awk '{print $2}')
for f in $froms; do
  grep -qE '@sha256:[0-9a-f]{64}$' <<<"$f" || bad "base image $f is not pinned by digest"
done
stems=$(sed -E 's/@.*//; s/-(devel|runtime)$//' <<<"$froms" | sort -u | wc -l)
[ "$stems" = 1 ] || bad "build and runtime images differ in more than devel/runtime: $(tr '\n' ' ' <<<"$froms")"

# shellcheck disable=SC2016  # literal ${...}
grep -E '^ENV .*LD_LIBRARY_PATH=' <<<"$joined" | grep -F '${LD_LIBRARY_PATH' >/dev/null \
  || bad "LD_LIBRARY_PATH must extend the base image's (\${LD_LIBRARY_PATH:+:\${LD_LIBRARY_PATH}})"
grep -qE '^ENTRYPOINT \[' "$file" || bad "ENTRYPOINT must use the exec form"

# The image's layout: /out/{bin,lib,scripts} copied to one root.
root=$(sed -nE 's|^COPY --from=build /out/ (/[^ ]+)/$|\1|p' "$file")
[ -n "$root" ] || bad "expected COPY --from=build /out/ <root>/ (bin/, lib/, scripts/ together)"
grep -qF 'cp scripts/train.sh /out/scripts/' <<<"$joined" || bad "does not ship scripts/train.sh in /out/scripts/"
grep -qF "cp $bindir/gotorch-train /out/bin/" <<<"$joined" || bad "does not ship gotorch-train in /out/bin/"
grep -qF "cp $shim /out/lib/" <<<"$joined" || bad "does not ship the shim in /out/lib/"
grep -qF "LD_LIBRARY_PATH=$root/lib" <<<"$joined" || bad "LD_LIBRARY_PATH does not start with $root/lib"
# shellcheck disable=SC2016  # literal ${...}
grep -qF 'BIN=${BIN:-bin/gotorch-train}' scripts/train.sh || bad "scripts/train.sh no longer defaults to bin/gotorch-train (the image's layout)"
# ... and train.sh run in that layout, on the CPU flavour (the same script and paths).
datadir=${GOTORCH_TESTDATA_DIR:-../shared/data}
if [ -x bin/gotorch-train ] && [ -f cgotorch/build/cpu/libcgotorch.so ] && { [ -n "${DATA:-}" ] || [ -d "$datadir" ]; }; then
  img=$(mktemp -d /tmp/lint-image.XXXXXX)
  mkdir -p "$img$root/bin" "$img$root/lib" "$img$root/scripts" "$img/output"
  cp bin/gotorch-train "$img$root/bin/" && cp cgotorch/build/cpu/libcgotorch.so "$img$root/lib/" && cp scripts/train.sh "$img$root/scripts/"
  data=${DATA:-$(cd "$datadir" && pwd)/format_fixtures/anndata_0.8_written/pbmc4k_top2000_counts_csr_gzip.h5ad}
  if (cd / && env LD_LIBRARY_PATH="$img$root/lib" DATA="$data" OUT="$img/output" AE_STEPS=2 DIFF_STEPS=2 SAVE_INTERVAL=2 LOG_INTERVAL=1 \
        "$img$root/scripts/train.sh") > "$img/train.log" 2>&1 && [ -f "$img/output/checkpoint/pbmc4k/model000002.pt" ]; then
    echo "✓ scripts/train.sh runs in the image's layout ($root/{bin,lib,scripts}; CPU flavour, 2 steps)"
  else
    bad "scripts/train.sh failed in the image's layout:"; tail -15 "$img/train.log"
  fi
  rm -rf "$img"
else
  echo "(train.sh in the image's layout not run: build bin/gotorch-train first)"
fi

# README: its docker lines are the Dockerfile's documented ones and valid.
documented=$(sed -nE 's/^#   (docker .*)$/\1/p' "$file")
tag=$(sed -nE 's/^docker build .*-t ([^ ]+) .*/\1/p' <<<"$documented")
[ -n "$tag" ] || bad "the header documents no docker build -t TAG line"
readme=$(sed -e ':a' -e '/\\$/N; s/\\\n *//; ta' README.md | grep -E '^docker ' || true)
[ -n "$readme" ] || bad "README.md shows no docker commands"
while read -r line; do
  [ -z "$line" ] && continue
  norm=$(tr -s ' ' <<<"$line")
  grep -qxF -- "$norm" <<<"$(tr -s ' ' <<<"$documented")" || bad "README line is not one of the documented commands: $line"
  case $line in docker\ run*) ;; *) continue ;; esac
  read -ra w <<<"$line"
  i=2 entry="" envs=()
  while [ $i -lt ${#w[@]} ] && [ "${w[$i]}" != "$tag" ]; do
    case ${w[$i]} in
      --entrypoint) entry=${w[$((i + 1))]}; i=$((i + 1)) ;;
      -e) envs+=("${w[$((i + 1))]%%=*}"); i=$((i + 1)) ;;
      -v) i=$((i + 1)) ;;
    esac
    i=$((i + 1))
  done
  [ $i -lt ${#w[@]} ] || { bad "README docker run line does not use the image $tag: $line"; continue; }
  args=("${w[@]:$((i + 1))}")
  if [ -n "$entry" ]; then
    [ "$entry" = "$root/scripts/train.sh" ] || bad "entrypoint $entry is not the shipped $root/scripts/train.sh"
    for e in "${envs[@]}"; do
      grep -qF "\${$e:-" scripts/train.sh || bad "scripts/train.sh reads no $e (README: $line)"
    done
  elif [ ${#args[@]} -gt 0 ] && [ -x bin/gotorch-train ]; then
    help=$(bin/gotorch-train "${args[0]}" --help 2>&1) || { bad "gotorch-train has no command ${args[0]} (README: $line)"; continue; }
    for a in "${args[@]:1}"; do
      case $a in --*) grep -qE -- "(^|[ ,])${a%%=*}([ ,=]|$)" <<<"$help" || bad "gotorch-train ${args[0]} has no flag $a (README: $line)" ;; esac
    done
  fi
done <<<"$readme"

[ $status = 0 ] && echo "✓ $file"
exit $status
