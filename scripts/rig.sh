#!/usr/bin/env bash
# rig.sh starts and stops the project-local containerd the tests run against.
#
#   scripts/rig.sh up DIR     install what is missing, start containerd under DIR,
#                             build the test images, write DIR/env
#   scripts/rig.sh down DIR   stop everything started under DIR and remove DIR
#
# Keep DIR short (for example from `mktemp -d /tmp/fsb-rig.XXXX`): unix socket
# paths must stay under 100 characters. After `up`, `source DIR/env` exports
# FSB_RIG_DIR, FSB_CONTAINERD_SOCKET, FSB_TEST_IMAGE_TAR (the busybox test
# image), FSB_E2B_IMAGE_TAR (the template image of E2B's `base` template) and
# FSB_RUNSC_WRAPPER.
# Both commands are idempotent. Needs root and a Debian-like system; systemd is
# not used.
set -euo pipefail

readonly PACKAGES=(containerd runc crun runsc criu containernetworking-plugins busybox-static bash-static iproute2 gcc)
readonly MARKER=.fsb-rig
readonly START_TIMEOUT=20 # seconds to wait for containerd to answer
readonly STOP_TIMEOUT=10  # seconds between SIGTERM and SIGKILL

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd "$script_dir/.." && pwd -P)
readonly script_dir repo_root

log() { printf 'rig: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
usage() {
	echo "usage: $0 up|down DIR" >&2
	exit 2
}

# pid_of_daemon prints the PID recorded in DIR/containerd.pid if that process
# is alive and is the containerd started with DIR's config; else it fails.
pid_of_daemon() {
	local pid args
	[[ -r $dir/containerd.pid ]] || return 1
	pid=$(<"$dir/containerd.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	args=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	grep -qxF -- "$dir/containerd.toml" <<<"$args" || return 1
	echo "$pid"
}

# answers succeeds if something serves containerd's API on DIR's socket.
answers() {
	[[ -S $sock ]] && timeout 5 ctr --address "$sock" version >/dev/null 2>&1
}

install_packages() {
	local p missing=()
	for p in "${PACKAGES[@]}"; do
		if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) != installed ]]; then
			missing+=("$p")
		fi
	done
	((${#missing[@]} == 0)) && return 0
	((EUID == 0)) || die "missing packages ${missing[*]} and not root: install them or run as root"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# mount_hugetlb mounts the hugetlb cgroup v1 hierarchy that crun insists on
# when the host has a v1 or hybrid cgroup layout.
mount_hugetlb() {
	[[ -d /sys/fs/cgroup ]] || return 0
	[[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]] && return 0
	if awk '$3 == "cgroup" && ("," $4 ",") ~ /,hugetlb,/ { found = 1 } END { exit !found }' /proc/mounts; then
		return 0
	fi
	if ! awk '$1 == "hugetlb" && $4 == 1 { found = 1 } END { exit !found }' /proc/cgroups; then
		log "warning: the kernel has no hugetlb cgroup controller; crun will not work"
		return 0
	fi
	if ! { mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb; }; then
		log "warning: could not mount the hugetlb cgroup hierarchy; crun will not work"
	fi
}

# lock serializes rig.sh runs on one DIR (fd 9 stays open until exit).
lock() {
	exec 9>"$dir/.rig.lock"
	flock -w 60 9 || die "another rig.sh run holds $dir/.rig.lock"
}

write_config() {
	local tmp=$dir/containerd.toml.tmp
	cat >"$tmp" <<EOF
# Written by scripts/rig.sh: a containerd private to this directory.
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[debug]
  address = "$dir/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"

# Clients default to the overlayfs snapshotter; pkg/rig also labels every test
# namespace with it.
EOF
	mv -f "$tmp" "$dir/containerd.toml"
}

start_containerd() {
	local pid
	if pid=$(pid_of_daemon); then
		if answers; then
			log "containerd already running (pid $pid)"
			return 0
		fi
		log "containerd (pid $pid) does not answer; restarting it"
		stop_containerd
	elif answers; then
		die "something already serves $sock but $dir/containerd.pid does not name it; run '$0 down $dir' first"
	fi
	command -v containerd >/dev/null || die "containerd not found in PATH"
	rm -f "$dir/containerd.pid" "$sock" "$sock.ttrpc" "$dir/debug.sock"
	mkdir -p "$dir/root" "$dir/state" "$dir/opt"
	# The inner shell records its own PID and then becomes containerd, so the
	# PID file names the daemon itself; setsid detaches it from our session.
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid -f bash -c 'cd / && echo $$ >"$1.tmp" && mv -f "$1.tmp" "$1" && exec containerd --config "$2"' \
		rig-containerd "$dir/containerd.pid" "$dir/containerd.toml" \
		>>"$dir/containerd.log" 2>&1 </dev/null 9>&-

	local deadline=$((SECONDS + START_TIMEOUT))
	until answers; do
		if ((SECONDS >= deadline)); then
			log "containerd did not answer on $sock within ${START_TIMEOUT}s; last log lines:"
			tail -n 30 "$dir/containerd.log" >&2 || true
			exit 1
		fi
		if [[ -s $dir/containerd.pid ]] && ! pid_of_daemon >/dev/null; then
			log "containerd exited; last log lines:"
			tail -n 30 "$dir/containerd.log" >&2 || true
			exit 1
		fi
		sleep 0.1
	done
	pid=$(pid_of_daemon) || die "containerd answers but $dir/containerd.pid does not name it"
	log "containerd started (pid $pid)"
}

write_runsc_wrapper() {
	local runsc platforms platform=ptrace tmp=$dir/bin/runsc-fsb.tmp
	runsc=$(command -v runsc) || die "runsc not found in PATH"
	# systrap is faster where this runsc has it; KVM hangs on these machines.
	platforms=$("$runsc" help platforms 2>/dev/null) || true
	if grep -qx systrap <<<"$platforms"; then
		platform=systrap
	fi
	mkdir -p "$dir/bin"
	cat >"$tmp" <<EOF
#!/bin/sh
# Written by scripts/rig.sh: gVisor behind the runc shim (BinaryName).
exec $runsc --network=host --host-uds=open --platform=$platform "\$@"
EOF
	chmod 0755 "$tmp"
	mv -f "$tmp" "$dir/bin/runsc-fsb"
}

# build_images writes the busybox test image and E2B's base template image
# beside it; one build of mkimage (cached by go) writes both at once.
build_images() {
	command -v go >/dev/null || die "the Go toolchain (go) is not in PATH"
	mkdir -p "$dir/bin"
	(cd "$repo_root" && go build -o "$dir/bin/mkimage" ./scripts/mkimage)
	"$dir/bin/mkimage" -o "$dir/busybox.oci.tar" &
	local bb=$!
	"$dir/bin/mkimage" -kind e2b -o "$dir/e2b-base.oci.tar" || {
		wait "$bb" || true
		die "could not write the E2B template image"
	}
	wait "$bb" || die "could not write the busybox test image"
}

write_env() {
	local tmp=$dir/env.tmp
	{
		echo "# Written by scripts/rig.sh; source it to use this rig."
		printf 'export FSB_RIG_DIR=%q\n' "$dir"
		printf 'export FSB_CONTAINERD_SOCKET=%q\n' "$sock"
		printf 'export FSB_TEST_IMAGE_TAR=%q\n' "$dir/busybox.oci.tar"
		printf 'export FSB_E2B_IMAGE_TAR=%q\n' "$dir/e2b-base.oci.tar"
		printf 'export FSB_RUNSC_WRAPPER=%q\n' "$dir/bin/runsc-fsb"
	} >"$tmp"
	mv -f "$tmp" "$dir/env"
}

cmd_up() {
	((EUID == 0)) || die "must run as root (containerd, mounts, cgroups)"
	if [[ -e $dir && ! -e $dir/$MARKER ]] && [[ -n $(ls -A "$dir" 2>/dev/null) ]]; then
		die "$dir exists, is not empty and is not a rig directory"
	fi
	mkdir -p "$dir"
	touch "$dir/$MARKER"
	lock
	install_packages
	mount_hugetlb
	write_config
	start_containerd
	write_runsc_wrapper
	build_images
	write_env
	log "ready: source $dir/env"
}

# delete_tasks kills and deletes every task and container in every namespace
# of DIR's containerd, when it answers.
delete_tasks() {
	answers || return 0
	local ns id ids
	for ns in $(ctr -a "$sock" namespaces ls -q 2>/dev/null); do
		ids=$(ctr -a "$sock" -n "$ns" tasks ls -q 2>/dev/null) || true
		for id in $ids; do
			ctr -a "$sock" -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		for id in $ids; do
			# A plain delete works once the task exited; -f covers the rest
			# (gVisor refuses -f on a sandbox that is gone).
			for _ in {1..10}; do
				ctr -a "$sock" -n "$ns" tasks delete "$id" >/dev/null 2>&1 && break
				ctr -a "$sock" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 && break
				sleep 0.2
			done
		done
		ids=$(ctr -a "$sock" -n "$ns" containers ls -q 2>/dev/null) || true
		for id in $ids; do
			ctr -a "$sock" -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
		done
		remove_ns_leftovers "$ns"
	done
}

# remove_ns_leftovers removes the empty runtime state and cgroup directories
# the runc shim leaves for a test namespace. Only fsbtest-* namespaces (made
# by pkg/rig, unique by a random suffix) are touched: other names may be
# shared with another containerd on the host.
remove_ns_leftovers() {
	local ns=$1 d
	[[ $ns == fsbtest-* ]] || return 0
	rmdir "/run/containerd/runc/$ns" 2>/dev/null || true
	for d in /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns"; do
		if [[ -d $d ]]; then
			find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
		fi
	done
}

# reap_bundles stops containers whose task bundle survived (daemon gone or
# delete failed), using the runtime binary and root recorded in the bundle.
# With "final" (once the daemon and all its shims are dead) it also removes
# the shim sockets the bundles name: a killed shim leaves its socket behind.
reap_bundles() {
	local final=${1:-} bundle ns id bin root opts addr
	for bundle in "$dir"/state/io.containerd.runtime.v2.task/*/*; do
		[[ -d $bundle ]] || continue
		id=${bundle##*/}
		ns=${bundle%/*}
		ns=${ns##*/}
		bin=runc
		root=/run/containerd/runc
		opts=$bundle/options.json
		if [[ -r $opts ]]; then
			bin=$(sed -n 's/.*"binary_name":"\([^"]*\)".*/\1/p' "$opts")
			root=$(sed -n 's/.*"root":"\([^"]*\)".*/\1/p' "$opts")
			bin=${bin:-runc}
			root=${root:-/run/containerd/runc}
		fi
		if command -v "$bin" >/dev/null; then
			"$bin" --root "$root/$ns" kill "$id" KILL >/dev/null 2>&1 || true
			"$bin" --root "$root/$ns" delete --force "$id" >/dev/null 2>&1 || true
		fi
		remove_ns_leftovers "$ns"
		if [[ $final == final && -r $bundle/address ]]; then
			addr=$(<"$bundle/address")
			addr=${addr#unix://}
			if [[ $addr == /* && -S $addr ]]; then
				rm -f -- "$addr"
			fi
		fi
	done
}

stop_containerd() {
	local pid deadline
	pid=$(pid_of_daemon) || return 0
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + STOP_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "containerd (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	rm -f "$dir/containerd.pid"
}

# kill_shims kills the shims started by DIR's containerd: they outlive it.
kill_shims() {
	local cmdline pid
	# Cheap pre-filter, then an exact match on the argument list: the shim is
	# started as "containerd-shim-runc-v2 ... -address SOCK ...".
	while IFS= read -r cmdline; do
		pid=${cmdline#/proc/}
		pid=${pid%/cmdline}
		[[ $pid != "$$" ]] || continue
		if tr '\0' '\n' 2>/dev/null <"$cmdline" | awk -v sock="$sock" '
			NR == 1 && $0 !~ /containerd-shim/ { exit 1 }
			prev == "-address" && $0 == sock { found = 1 }
			{ prev = $0 }
			END { exit !found }'; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done < <(grep -laF -- "$sock" /proc/[0-9]*/cmdline 2>/dev/null || true)
}

# unmount_all unmounts everything mounted at or under DIR, deepest first.
unmount_all() {
	local target targets
	for _ in {1..5}; do
		targets=$(awk -v dir="$dir" '
			{ t = $5; gsub(/\\040/, " ", t) }
			t == dir || index(t, dir "/") == 1 { print length(t) "\t" t }' /proc/self/mountinfo |
			sort -rn | cut -f2-)
		[[ -n $targets ]] || return 0
		while IFS= read -r target; do
			umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
		done <<<"$targets"
	done
	log "warning: mounts remain under $dir"
}

cmd_down() {
	if [[ ! -d $dir ]]; then
		kill_shims
		return 0
	fi
	[[ -e $dir/$MARKER ]] || die "$dir is not a rig directory (no $MARKER); not touching it"
	((EUID == 0)) || die "must run as root"
	lock
	delete_tasks
	reap_bundles
	stop_containerd
	kill_shims
	reap_bundles final
	unmount_all
	rm -rf "$dir"
	log "down: $dir removed"
}

main() {
	(($# == 2)) || usage
	local cmd=$1
	[[ -n $2 ]] || usage
	dir=$(realpath -m -- "$2")
	[[ $dir != / ]] || die "refusing to use / as the rig directory"
	sock=$dir/containerd.sock
	if ((${#sock} + 6 >= 100)); then # longest: containerd.sock.ttrpc
		die "$dir is too long: socket paths must stay under 100 characters"
	fi
	case $cmd in
	up) cmd_up ;;
	down) cmd_down ;;
	*) usage ;;
	esac
}

dir=
sock=
main "$@"
