#!/usr/bin/env bash
# demo.sh shows Fast Sandbox at work against what scripts/up.sh started:
# it creates a sandbox, follows its output, lists and inspects it, deletes it,
# and prints how long the create took. `make demo` runs make up, this, and
# make down (even when this fails). Each step prints the command it runs.
# After make up KUBE=1 it also shows the sandbox as a Kubernetes object with
# kubectl while it runs.
set -euo pipefail

readonly IMAGE=localhost/fsb/busybox:latest
readonly NAME=demo

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly repo_root
cd "$repo_root"

die() {
	printf 'demo: error: %s\n' "$*" >&2
	exit 1
}

[[ -r .fsb/env ]] || die "no .fsb/env: start Fast Sandbox first (make up)"
# shellcheck source=/dev/null
source .fsb/env
export FSB_NAMESPACE=default # the demo shows namespace default, whatever the shell says
# make up KUBE=1 leaves the API server's kubeconfig in .fsb/kube.
kube=false
[[ -r .fsb/kube/kubeconfig ]] && kube=true
readonly kube
# Long enough to look at the object while the sandbox runs.
sleep_seconds=1
$kube && sleep_seconds=4

# step prints a heading, in bold on a terminal.
bold='' plain=''
if [[ -t 1 ]]; then
	bold=$'\033[1m' plain=$'\033[0m'
fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }

# show prints a command as one would type it, then runs it.
show() {
	local a line='$'
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
			line+=" $a"
		else
			line+=" '${a//\'/\'\\\'\'}'"
		fi
	done
	printf '%s\n' "$line"
	"$@"
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT

step "The agents the controller schedules on, with their free slots"
show bin/fsb ctl agents

step "Create a sandbox: a busybox container that says hello (fast mode: the container starts first)"
show bin/fsb ctl run "$NAME" --image "$IMAGE" -- sh -c "echo hello from a Fast Sandbox; uname -a; sleep $sleep_seconds" | tee "$out"
latency=$(sed -n 's/.* created in \([0-9.]* ms\).*/\1/p' "$out")

if $kube; then
	step "The same sandbox as a Kubernetes object, while it runs"
	# Fast mode answers before the object has its status: wait for it.
	deadline=$((SECONDS + 30))
	until [[ $(kubectl get "sandboxes.sandbox.fast.io/$NAME" -n default -o 'jsonpath={.status.phase}' 2>/dev/null) == Running ]]; do
		((SECONDS < deadline)) || die "sandbox $NAME did not show as Running on the API server within 30s"
		sleep 0.1
	done
	show kubectl get sbx -n default
fi

step "Follow its output until it ends"
show timeout 60 bin/fsb ctl logs "$NAME" -f

step "List the sandboxes of namespace default"
show bin/fsb ctl list

step "The sandbox as JSON, for scripts"
show bin/fsb ctl get "$NAME" -o json

step "Delete it"
show bin/fsb ctl delete "$NAME"

step "Done"
echo "The sandbox was created (container running, call answered) in ${latency:-an unknown time}."
