#!/usr/bin/env bash
# Runs `go test ARGS...` against a real rig: starts a project-local containerd
# (scripts/rig.sh) in a fresh directory, exports its address, runs the tests,
# and stops the rig whatever happens.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

[ -x bin/fsb ] && [ -x bin/fsb-helper ] || { echo "bin/fsb is missing: run 'make build' first" >&2; exit 1; }

dir=$(mktemp -d /tmp/fsb-rig.XXXXXX)
cleanup() { scripts/rig.sh down "$dir" || echo "warning: rig teardown failed; see $dir" >&2; }
trap cleanup EXIT
scripts/rig.sh up "$dir"
# shellcheck source=/dev/null
source "$dir/env"
export FSB_BINARY="$root/bin/fsb" FSB_HELPER_BINARY="$root/bin/fsb-helper"

go test "$@"
