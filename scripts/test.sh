#!/usr/bin/env bash
# Runs `go test ARGS...` against a real rig: starts a project-local containerd
# (scripts/rig.sh) and, beside it, an etcd and a Kubernetes API server
# (scripts/kube.sh, which builds the pinned kube-apiserver once into the
# cache), exports their addresses, runs the tests, and stops all of it
# whatever happens. It installs node and npm when they are missing: the
# tests in test/e2b run E2B's JavaScript SDK.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

[ -x bin/fsb ] && [ -x bin/fsb-helper ] || { echo "bin/fsb is missing: run 'make build' first" >&2; exit 1; }

now_ms() { date +%s%3N; }

# install_node installs node and npm with apt-get when they are missing, as
# rig.sh installs containerd. Debian 12's nodejs (18) is older than E2B's
# SDK supports (20.18.1): the machines carry a newer one, and test/e2b says
# so when it finds the old one.
install_node() {
	local missing=()
	command -v node >/dev/null || missing+=(nodejs)
	command -v npm >/dev/null || missing+=(npm)
	((${#missing[@]} == 0)) && return 0
	((EUID == 0)) || { echo "test.sh: ${missing[*]} missing and not root: install them" >&2; return 1; }
	echo "test.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
install_node
seconds() { awk -v ms=$(($(now_ms) - $1)) 'BEGIN { printf "%.1f", ms / 1000 }'; }

dir=$(mktemp -d /tmp/fsb-rig.XXXXXX)
# The run's shared API server lives in kube/shared; StartKube puts private
# ones beside it (FSB_KUBE_RUN_DIR), so that those a crashed test leaves are
# stopped here too.
kube_dir=$(mktemp -d /tmp/fsb-kube.XXXXXX)
kube_pid=
cleanup() {
	local d
	if [[ -n $kube_pid ]]; then
		# Cuts a build short; a start already begun is waited for.
		kill "$kube_pid" 2>/dev/null || true
		wait "$kube_pid" 2>/dev/null || true
	fi
	for d in "$kube_dir"/*/; do
		[[ -d $d ]] || continue
		scripts/kube.sh stop "$d" || echo "warning: API server teardown failed; see $d" >&2
	done
	rmdir "$kube_dir" 2>/dev/null || echo "warning: $kube_dir is not empty" >&2
	scripts/rig.sh down "$dir" || echo "warning: rig teardown failed; see $dir" >&2
}
trap cleanup EXIT

# The API server (built or reused, then started) comes up while rig.sh
# starts containerd and builds the test image.
start_kube() {
	local t0 bin
	t0=$(now_ms)
	bin=$(scripts/kube.sh build)
	echo "test.sh: kube-apiserver and kubectl ready in $(seconds "$t0") s (built or reused)" >&2
	# From here cleanup's TERM waits for the start instead of orphaning
	# it: kube.sh start, alone (installing etcd, then starting it and the
	# API server before its directory exists for cleanup to find), would
	# leave both running. A trap, not an ignored TERM, which the daemons
	# would inherit.
	trap : TERM
	t0=$(now_ms)
	FSB_KUBE_BIN=$bin scripts/kube.sh start "$kube_dir/shared"
	echo "test.sh: etcd and kube-apiserver started in $(seconds "$t0") s" >&2
}
t0=$(now_ms)
start_kube &
kube_pid=$!
scripts/rig.sh up "$dir"
if ! wait "$kube_pid"; then
	kube_pid=
	echo "test.sh: the Kubernetes API server did not start (see above)" >&2
	exit 1
fi
kube_pid=
echo "test.sh: rig up in $(seconds "$t0") s" >&2
# shellcheck source=/dev/null
source "$dir/env"
# shellcheck source=/dev/null
source "$kube_dir/shared/env"
export FSB_KUBECONFIG FSB_KUBE_BIN FSB_KUBE_RUN_DIR=$kube_dir
export FSB_BINARY="$root/bin/fsb" FSB_HELPER_BINARY="$root/bin/fsb-helper"

go test "$@"
