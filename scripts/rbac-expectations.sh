#!/usr/bin/env bash
# rbac-expectations.sh says what each Fast Sandbox ServiceAccount may do on
# an API server, as `kubectl auth can-i --list` prints it, and keeps that in
# deploy/rbac/expected/<role>.txt (controller, agent, janitor).
#
#   scripts/rbac-expectations.sh write KUBECONFIG
#       apply deploy/base's namespace, ServiceAccounts and RBAC to the API
#       server of KUBECONFIG (a scratch one: scripts/kube.sh start DIR) and
#       write the expectation files from what it answers
#   scripts/rbac-expectations.sh check KUBECONFIG
#       compare what the API server of KUBECONFIG (where deploy/ is
#       installed) answers with the files; exit 1 with a diff on any change
#
# kubectl is $FSB_KUBECTL, else the pinned one of scripts/kube.sh build.
# The lists hold the API server's own grants to every authenticated user
# too, so they are tied to the pinned Kubernetes version.
set -euo pipefail

die() { echo "rbac-expectations.sh: $*" >&2; exit 1; }

(($# == 2)) || die "usage: rbac-expectations.sh write|check KUBECONFIG"
mode=$1 kubeconfig=$2
[[ -r $kubeconfig ]] || die "cannot read kubeconfig $kubeconfig"
repo=$(cd "$(dirname "$0")/.." && pwd)
expected=$repo/deploy/rbac/expected
namespace=fsb-system
kubectl=${FSB_KUBECTL:-}
if [[ -z $kubectl ]]; then
	kubectl=$("$repo/scripts/kube.sh" build | tail -1)/kubectl
fi
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

# list ROLE prints what ROLE's ServiceAccount may do in the namespace.
list() {
	k auth can-i --list -n "$namespace" --as="system:serviceaccount:$namespace:fsb-$1"
}

case $mode in
write)
	k apply --server-side --field-manager fsb-rbac-expectations \
		-f "$repo/deploy/base/namespace.yaml" -f "$repo/deploy/base/serviceaccounts.yaml" >/dev/null
	k apply --server-side --field-manager fsb-rbac-expectations -k "$repo/deploy/rbac" >/dev/null
	mkdir -p "$expected"
	for role in controller agent janitor; do
		list "$role" >"$expected/$role.txt"
		echo "wrote $expected/$role.txt"
	done
	;;
check)
	failed=0
	for role in controller agent janitor; do
		# As sets of lines: kubectl's order of rules is not a promise.
		if ! diff -u <(sort "$expected/$role.txt") <(list "$role" | sort) >&2; then
			echo "rbac-expectations.sh: fsb-$role may do other things than $expected/$role.txt says (above: - expected, + granted)" >&2
			failed=1
		fi
	done
	exit "$failed"
	;;
*) die "unknown mode $mode: want write or check" ;;
esac
