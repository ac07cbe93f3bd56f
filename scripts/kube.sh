#!/usr/bin/env bash
# kube.sh builds, starts and stops the Kubernetes API server the tests and
# `make up KUBE=1` run against: Debian's etcd and a kube-apiserver built from
# the Go module proxy, on loopback, with certificates of its own.
#
#   scripts/kube.sh build
#       build kube-apiserver, kubectl, kube-controller-manager,
#       kube-scheduler, kubelet and kube-proxy at KUBE_VERSION into the cache
#       (once; later runs reuse them) and print the directory holding them
#   scripts/kube.sh start DIR [--api-port N] [--etcd-port N] [--peer-port N]
#       start etcd and the API server (free loopback ports unless given),
#       write DIR/kubeconfig (cluster admin) and DIR/env
#   scripts/kube.sh stop DIR
#       stop both and remove DIR with etcd's data
#   scripts/kube.sh stop-apiserver DIR | start-apiserver DIR
#       stop the API server only (etcd stays), or start it again on the same
#       address and data (the outage tests)
#
# The cache is ${FSB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fast-sandbox}
# /kube/KUBE_VERSION/bin, outside the repository. After `start`, `source
# DIR/env` exports FSB_KUBECONFIG and FSB_KUBE_BIN. Needs root only to install
# etcd-server when it is missing; systemd is not used.
set -euo pipefail

# KUBE_VERSION is the one place the Kubernetes version is pinned. It must
# match k8s.io/client-go in go.mod (v1.X.Y <-> v0.X.Y); build refuses a
# mismatch.
readonly KUBE_VERSION=v1.36.3

readonly MARKER=.fsb-kube
readonly READY_TIMEOUT=60 # seconds each daemon gets to answer
readonly STOP_TIMEOUT=10  # seconds between SIGTERM and SIGKILL
readonly SERVICE_ISSUER=https://kubernetes.default.svc.cluster.local

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd "$script_dir/.." && pwd -P)
cache_dir=${FSB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fast-sandbox}/kube/$KUBE_VERSION
readonly script_dir repo_root cache_dir
readonly bin_dir=$cache_dir/bin
# run_bin is where start finds the binaries: FSB_KUBE_BIN when the caller
# names them (tests), else the cache.
readonly run_bin=${FSB_KUBE_BIN:-$bin_dir}

log() { printf 'kube: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
usage() {
	echo "usage:" >&2
	sed -n '/^#   scripts/,/^#$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# elapsed START prints the seconds since START (from now_ms), like 1.23.
now_ms() { date +%s%3N; }
elapsed() { awk -v ms=$(($(now_ms) - $1)) 'BEGIN { printf "%.2f", ms / 1000 }'; }

# check_pin refuses a KUBE_VERSION that does not match go.mod's client-go.
check_pin() {
	local want=v0.${KUBE_VERSION#v1.} got
	got=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$repo_root/go.mod")
	[[ $got == "$want" ]] ||
		die "scripts/kube.sh pins Kubernetes $KUBE_VERSION, which needs k8s.io/client-go $want, but go.mod requires ${got:-no client-go}: change both together"
}

# COMMANDS are the Kubernetes commands build makes: the API server and
# kubectl for the tests and `make up KUBE=1`, the rest for the real node of
# scripts/cluster.sh.
readonly COMMANDS="kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy"

# have_bins succeeds when every command is built: a cache from before the
# node's commands were added has only two and is built again.
have_bins() {
	local c
	for c in $COMMANDS; do
		[[ -x $bin_dir/$c ]] || return 1
	done
}

cmd_build() {
	local t0 work gomod godir staging mod pkg ldflags c
	t0=$(now_ms)
	check_pin
	if have_bins; then
		log "reusing the Kubernetes $KUBE_VERSION commands from $bin_dir ($(elapsed "$t0") s)"
		echo "$bin_dir"
		return 0
	fi
	command -v go >/dev/null || die "the Go toolchain (go) is not in PATH"
	mkdir -p "$cache_dir"
	# One build at a time: parallel runs wait here and then reuse it.
	exec 8>"$cache_dir/.build.lock"
	if ! flock -n 8; then
		log "another run is building Kubernetes $KUBE_VERSION; waiting for it"
		flock 8
	fi
	if have_bins; then
		log "reusing the Kubernetes $KUBE_VERSION commands from $bin_dir, built by another run ($(elapsed "$t0") s)"
		echo "$bin_dir"
		return 0
	fi
	log "building $COMMANDS $KUBE_VERSION from the Go module proxy (cold: ~6 min on 2 cores; with the API server's packages in the Go cache: ~2 min)"
	work=$(mktemp -d "${TMPDIR:-/tmp}/fsb-kube-build.XXXXXX")
	# shellcheck disable=SC2064 # expand work now
	trap "rm -rf '$work'" EXIT

	# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with
	# ./staging paths, so `go install ...@version` cannot build it. A
	# throwaway module requires it and replaces each staging module it
	# requires (as v0.0.0) with the published v0.X.Y instead.
	gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
	[[ -r $gomod ]] || die "go mod download k8s.io/kubernetes@$KUBE_VERSION gave no go.mod"
	godir=$(awk '$1 == "go" { print $2; exit }' "$gomod")
	staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// { print $1 }' "$gomod")
	{
		echo "module fsbkubebuild"
		echo
		echo "go $godir"
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		for mod in $staging; do
			# Only what the release requires: k8s.io/sample-cli-plugin, say,
			# is not, and the proxy refuses it.
			if awk -v m="$mod" '$1 == m && $2 == "v0.0.0" { found = 1 } END { exit !found }' "$gomod"; then
				echo "replace $mod => $mod v0.${KUBE_VERSION#v1.}"
			fi
		done
	} >"$work/go.mod"
	cat >"$work/tools.go" <<'EOF'
//go:build tools

// Package tools names the commands this throwaway module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF
	(cd "$work" && GOFLAGS=-mod=mod go mod tidy) || die "go mod tidy of the throwaway module failed (in $work)"

	# Without the version stamped in, the server says v0.0.0-master and
	# kubectl warns about the skew.
	local minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	local out=$cache_dir/bin.tmp.$$
	rm -rf "$out"
	mkdir -p "$out"
	local pkgs=()
	for c in $COMMANDS; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
	(cd "$work" && go build -ldflags "$ldflags" -o "$out/" "${pkgs[@]}") ||
		{
			rm -rf "$out"
			die "building Kubernetes $KUBE_VERSION failed (module in $work)"
		}
	# Atomic: a reader sees no bin/ or a complete one.
	rm -rf "$bin_dir"
	mv "$out" "$bin_dir"
	log "built $COMMANDS $KUBE_VERSION into $bin_dir in $(elapsed "$t0") s"
	echo "$bin_dir"
}

install_etcd() {
	command -v etcd >/dev/null && return 0
	((EUID == 0)) || die "etcd is missing and not root: install Debian's etcd-server"
	log "installing etcd-server"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
	command -v etcd >/dev/null || die "etcd-server installed but etcd is not in PATH"
}

# listening PORT succeeds if something accepts connections on
# 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a loopback TCP port nothing listens on, below Linux's
# ephemeral range so that no outgoing connection holds it.
free_port() {
	local port
	for _ in {1..100}; do
		port=$((20000 + RANDOM % 12000))
		if ! listening "$port"; then
			echo "$port"
			return 0
		fi
	done
	die "found no free loopback port"
}

# ports_free PORT... fails, setting port_conflict, when one of the ports
# is taken: a daemon's health check must never reach another's server.
port_conflict=false
ports_free() {
	local port
	for port in "$@"; do
		if listening "$port"; then
			log "port $port is already in use"
			port_conflict=true
			return 1
		fi
	done
}

# alive PID succeeds while PID runs. A zombie does not count: init on these
# machines may be slow to reap the daemons it inherits.
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# pid_of NAME prints the PID in DIR/NAME.pid if that process is alive and
# was started for DIR; else it fails. The API server's arguments name DIR's
# certificates; etcd's name its data directory, which may be on /dev/shm.
pid_of() {
	local name=$1 pid mine=$dir/certs
	[[ -r $dir/$name.pid ]] || return 1
	pid=$(<"$dir/$name.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	if [[ $name == etcd ]]; then
		[[ -r $dir/etcd-data ]] || return 1
		mine=$(<"$dir/etcd-data")
	fi
	tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qxF -- "$mine" || return 1
	echo "$pid"
}

# spawn NAME CMD... starts CMD detached (setsid) with its output in
# DIR/NAME.log; the inner shell writes its own PID and then becomes CMD, so
# DIR/NAME.pid names the daemon itself.
spawn() {
	local name=$1
	shift
	rm -f "$dir/$name.pid"
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid -f bash -c 'cd / && echo $$ >"$1.tmp" && mv -f "$1.tmp" "$1" && shift && exec "$@"' \
		"fsb-kube-$name" "$dir/$name.pid" "$@" >>"$dir/$name.log" 2>&1 </dev/null 8>&- 9>&-
}

# wait_for NAME CHECK... waits until CHECK succeeds, failing with NAME's log
# when it exits or READY_TIMEOUT passes.
wait_for() {
	local name=$1 deadline=$((SECONDS + READY_TIMEOUT))
	shift
	until "$@"; do
		if ((SECONDS >= deadline)); then
			log "$name did not answer within ${READY_TIMEOUT}s; last lines of $dir/$name.log:"
			tail -n 30 "$dir/$name.log" >&2 || true
			return 1
		fi
		if [[ -s $dir/$name.pid ]] && ! alive "$(<"$dir/$name.pid")"; then
			log "$name exited; last lines of $dir/$name.log:"
			tail -n 30 "$dir/$name.log" >&2 || true
			return 1
		fi
		sleep 0.05
	done
}

# etcd_healthy succeeds if etcd answers /health with health true.
etcd_healthy() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$ETCD_PORT" || exit 1
		printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		grep -q '"health":"true"' <&3
	) 2>/dev/null
}

apiserver_ready() {
	[[ $("$run_bin/kubectl" --kubeconfig "$dir/kubeconfig" --request-timeout=2s get --raw /readyz 2>/dev/null) == ok ]]
}

# write_certs makes a CA, the API server's serving certificate, the admin's
# client certificate (group system:masters) and the service-account signing
# key pair. ECDSA keys: generating them takes milliseconds.
write_certs() {
	local c=$dir/certs
	mkdir -p "$c"
	(
		umask 077
		cd "$c"
		openssl ecparam -name prime256v1 -genkey -noout -out ca.key
		openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj /CN=fsb-kube-ca -out ca.crt
		openssl ecparam -name prime256v1 -genkey -noout -out serving.key
		openssl req -new -key serving.key -subj /CN=kube-apiserver -out serving.csr
		printf '%s\n' 'subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1' \
			'extendedKeyUsage=serverAuth' 'keyUsage=critical,digitalSignature,keyEncipherment' >serving.ext
		openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 -extfile serving.ext -out serving.crt
		openssl ecparam -name prime256v1 -genkey -noout -out admin.key
		openssl req -new -key admin.key -subj /O=system:masters/CN=fsb-admin -out admin.csr
		printf '%s\n' 'extendedKeyUsage=clientAuth' 'keyUsage=critical,digitalSignature,keyEncipherment' >admin.ext
		openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 -extfile admin.ext -out admin.crt
		openssl ecparam -name prime256v1 -genkey -noout -out sa.key
		openssl ec -in sa.key -pubout -out sa.pub
	) 2>/dev/null || die "openssl could not write the certificates in $c"
}

write_kubeconfig() {
	local tmp=$dir/kubeconfig.tmp
	(
		umask 077
		cat >"$tmp" <<EOF
# Written by scripts/kube.sh: the cluster admin (group system:masters).
apiVersion: v1
kind: Config
clusters:
- name: fsb
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$dir/certs/ca.crt")
users:
- name: fsb-admin
  user:
    client-certificate-data: $(base64 -w0 <"$dir/certs/admin.crt")
    client-key-data: $(base64 -w0 <"$dir/certs/admin.key")
contexts:
- name: fsb
  context:
    cluster: fsb
    user: fsb-admin
    namespace: default
current-context: fsb
EOF
	)
	mv -f "$tmp" "$dir/kubeconfig"
}

write_env() {
	local tmp=$dir/env.tmp
	{
		echo "# Written by scripts/kube.sh; source it to use this API server."
		printf 'export FSB_KUBECONFIG=%q\n' "$dir/kubeconfig"
		printf 'export FSB_KUBE_BIN=%q\n' "$run_bin"
	} >"$tmp"
	mv -f "$tmp" "$dir/env"
}

load_ports() {
	# shellcheck source=/dev/null
	source "$dir/ports"
}

start_etcd() {
	local pid data
	if pid=$(pid_of etcd) && etcd_healthy; then
		log "etcd already running (pid $pid)"
		return 0
	fi
	data=$(<"$dir/etcd-data")
	mkdir -p "$data"
	ports_free "$ETCD_PORT" "$PEER_PORT" || return 1
	spawn etcd etcd --name fsb --data-dir "$data" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
		--initial-cluster "fsb=http://127.0.0.1:$PEER_PORT" --logger zap --log-level warn
	wait_for etcd etcd_healthy
}

cmd_start_apiserver() {
	local pid c=$dir/certs
	load_ports
	[[ -x $run_bin/kube-apiserver && -x $run_bin/kubectl ]] || die "no kube-apiserver and kubectl in $run_bin: run '$0 build' first"
	if pid=$(pid_of kube-apiserver) && apiserver_ready; then
		log "kube-apiserver already running (pid $pid)"
		return 0
	fi
	[[ -n ${pid:-} ]] && stop_one kube-apiserver
	ports_free "$API_PORT" || return 1
	spawn kube-apiserver "$run_bin/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
		--cert-dir "$dir/certs" --tls-cert-file "$c/serving.crt" --tls-private-key-file "$c/serving.key" \
		--client-ca-file "$c/ca.crt" \
		--authorization-mode RBAC \
		--service-account-issuer "$SERVICE_ISSUER" --api-audiences "$SERVICE_ISSUER" \
		--service-account-key-file "$c/sa.pub" --service-account-signing-key-file "$c/sa.key" \
		--service-cluster-ip-range 10.0.0.0/24 \
		--disable-admission-plugins ServiceAccount \
		--endpoint-reconciler-type none \
		--allow-privileged=true \
		--profiling=false
	wait_for kube-apiserver apiserver_ready
}

cmd_start() {
	local t0 api_port='' etcd_port='' peer_port='' data
	t0=$(now_ms)
	while (($#)); do
		case $1 in
		--api-port) api_port=$2 ;;
		--etcd-port) etcd_port=$2 ;;
		--peer-port) peer_port=$2 ;;
		*) usage ;;
		esac
		shift 2 || usage
	done
	if [[ -e $dir && ! -e $dir/$MARKER ]] && [[ -n $(ls -A "$dir" 2>/dev/null) ]]; then
		die "$dir exists, is not empty and is not a kube.sh directory"
	fi
	[[ -x $run_bin/kube-apiserver && -x $run_bin/kubectl ]] || die "no kube-apiserver and kubectl in $run_bin: run '$0 build' first"
	install_etcd
	mkdir -p "$dir"
	touch "$dir/$MARKER"
	exec 9>"$dir/.lock"
	flock -w 60 9 || die "another kube.sh run holds $dir/.lock"
	if [[ ! -r $dir/etcd-data ]]; then
		# etcd's data on tmpfs when there is one: etcd 3.4 fsyncs every write.
		data=$dir/etcd
		if [[ -d /dev/shm && -w /dev/shm ]]; then
			data=$(mktemp -d /dev/shm/fsb-etcd.XXXXXX)
		fi
		echo "$data" >"$dir/etcd-data"
		write_certs
	fi
	local attempt
	for attempt in 1 2 3; do
		if [[ ! -r $dir/ports ]]; then
			{
				echo "API_PORT=${api_port:-$(free_port)}"
				echo "ETCD_PORT=${etcd_port:-$(free_port)}"
				echo "PEER_PORT=${peer_port:-$(free_port)}"
			} >"$dir/ports"
		fi
		load_ports
		write_kubeconfig
		if start_etcd && cmd_start_apiserver; then
			break
		fi
		cmd_stop_all
		# Free ports are picked before the daemons bind them: another
		# server starting at the same moment may win one. Pick again.
		if [[ -n $api_port$etcd_port$peer_port ]] || ((attempt == 3)); then
			exit 1
		fi
		if ! $port_conflict && ! grep -qs 'address already in use' "$dir/etcd.log" "$dir/kube-apiserver.log"; then
			exit 1
		fi
		port_conflict=false
		log "a port was taken meanwhile; trying other ports"
		rm -f "$dir/ports"
		: >"$dir/etcd.log"
		: >"$dir/kube-apiserver.log"
	done
	write_env
	log "etcd and kube-apiserver $KUBE_VERSION ready on https://127.0.0.1:$API_PORT in $(elapsed "$t0") s: source $dir/env"
}

# stop_one NAME stops DIR's NAME daemon (SIGTERM, SIGKILL after
# STOP_TIMEOUT) and waits until it is gone.
stop_one() {
	local name=$1 pid deadline
	pid=$(pid_of "$name") || {
		rm -f "$dir/$name.pid"
		return 0
	}
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + STOP_TIMEOUT))
	while alive "$pid"; do
		if ((SECONDS >= deadline)); then
			log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + 5))
			while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
			break
		fi
		sleep 0.05
	done
	rm -f "$dir/$name.pid"
}

cmd_stop_all() {
	stop_one kube-apiserver
	stop_one etcd
	local data
	if [[ -r $dir/etcd-data ]]; then
		data=$(<"$dir/etcd-data")
		# Only what start made: DIR/etcd or /dev/shm/fsb-etcd.*.
		if [[ $data == "$dir/etcd" || $data == /dev/shm/fsb-etcd.* ]]; then
			rm -rf -- "$data"
		fi
	fi
}

cmd_stop() {
	[[ -d $dir ]] || return 0
	[[ -e $dir/$MARKER ]] || die "$dir is not a kube.sh directory (no $MARKER); not touching it"
	exec 9>"$dir/.lock"
	flock -w 60 9 || die "another kube.sh run holds $dir/.lock"
	cmd_stop_all
	rm -rf -- "$dir"
	log "stopped; $dir removed"
}

main() {
	(($# >= 1)) || usage
	local cmd=$1
	shift
	if [[ $cmd == build ]]; then
		(($# == 0)) || usage
		cmd_build
		return
	fi
	(($# >= 1)) && [[ -n $1 ]] || usage
	dir=$(realpath -m -- "$1")
	shift
	[[ $dir != / ]] || die "refusing to use / as the kube directory"
	case $cmd in
	start) cmd_start "$@" ;;
	stop) (($# == 0)) || usage && cmd_stop ;;
	stop-apiserver)
		(($# == 0)) || usage
		[[ -e $dir/$MARKER ]] || die "$dir is not a kube.sh directory"
		stop_one kube-apiserver
		;;
	start-apiserver)
		(($# == 0)) || usage
		[[ -e $dir/$MARKER && -r $dir/ports ]] || die "$dir is not a started kube.sh directory"
		cmd_start_apiserver
		;;
	*) usage ;;
	esac
}

dir=
main "$@"
