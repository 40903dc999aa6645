#!/usr/bin/env bash
# Static checks of a Dockerfile (no Docker engine runs here): dockerfilelint
# from npm (hadolint is not packaged by Debian), then checks of our own —
# every COPY source exists in the repository, the CUDA shim is built, the
# entrypoint is in exec form.
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
# COPY sources (not --from stages) must exist.
while read -r src; do
  for s in $src; do
    [ -e "$s" ] || { echo "$file: COPY source $s does not exist"; status=1; }
  done
done < <(grep -E '^COPY ' "$file" | grep -v -- '--from' | sed -E 's/^COPY +//; s/ +[^ ]+$//')
grep -q 'make shim FLAVOR=cuda' "$file" || { echo "$file: does not build the CUDA shim"; status=1; }
grep -qE '^ENTRYPOINT \[' "$file" || { echo "$file: ENTRYPOINT must use the exec form"; status=1; }
[ $status = 0 ] && echo "✓ $file"
exit $status
