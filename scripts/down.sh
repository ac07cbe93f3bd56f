#!/usr/bin/env bash
# down.sh stops what scripts/up.sh started (make down): the janitor, the
# controller, then the agent (each by its PID file: SIGTERM, SIGKILL after 10 s), then the
# project-local containerd with every sandbox container it still holds
# (scripts/rig.sh down, which kills and deletes every task and container,
# namespace fsb included, and removes $UP_DIR). After make up KUBE=1 it
# also stops the etcd and Kubernetes API server in .fsb/kube (scripts/kube.sh
# stop), once the controller is gone.
#
# Then it removes .fsb/ entirely: tokens, the embedded store's data and the
# daemons' logs. Nothing is kept on purpose: the store would remember
# sandboxes whose containers are gone, and every make up (or make demo)
# should start from a clean slate.
#
# It touches only processes whose PID file names `bin/fsb agent|controller|janitor`
# of this checkout, and it succeeds when there is nothing to stop.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly repo_root
readonly fsb_dir=$repo_root/.fsb
readonly fsb=$repo_root/bin/fsb

log() { printf 'down: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# shellcheck source=scripts/quickstart-lib.sh
source "$repo_root/scripts/quickstart-lib.sh"

main() {
	((EUID == 0)) || die "must run as root (containerd, mounts, cgroups)"
	local up_dir=${UP_DIR:-}
	if [[ -z $up_dir && -r $fsb_dir/up-dir ]]; then
		up_dir=$(<"$fsb_dir/up-dir")
	fi
	up_dir=${up_dir:-/tmp/fsb-up}

	# The janitor first: with the controller gone it would only log that it
	# cannot ask. Then the controller, so that nothing asks the agent for
	# new sandboxes while it stops.
	stop janitor
	stop controller
	stop agent
	if [[ -d $fsb_dir/kube ]]; then
		"$repo_root/scripts/kube.sh" stop "$fsb_dir/kube"
	fi
	if [[ -d $up_dir ]]; then
		"$repo_root/scripts/rig.sh" down "$up_dir"
	fi
	# A cluster of make cluster-up holds mounts and running pods under
	# .fsb/cluster: it is taken down, never just removed.
	if [[ -d $fsb_dir/cluster ]]; then
		"$repo_root/scripts/cluster.sh" down "$fsb_dir/cluster"
	fi
	if [[ -d $fsb_dir ]]; then
		rm -rf -- "$fsb_dir"
		log "removed .fsb/"
	fi
	log "down"
}

main "$@"
