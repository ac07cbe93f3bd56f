#!/usr/bin/env bash
# up.sh starts Fast Sandbox on this machine, in the background (make up):
#
#   1. a project-local containerd (scripts/rig.sh up $UP_DIR) with the test
#      image localhost/fsb/busybox:latest and the image of E2B's base
#      template, localhost/fsb/e2b-base:latest, imported into namespace fsb;
#   2. three random tokens, .fsb/user-token (what users present),
#      .fsb/agent-token (what the controller presents to the agent) and
#      .fsb/janitor-token (what the janitor presents to the controller);
#   3. an agent on 127.0.0.1:5758 (log .fsb/agent.log, pid .fsb/agent.pid);
#   4. a controller on 127.0.0.1:9090, health on 127.0.0.1:8081, with the
#      embedded store in .fsb/data (log .fsb/controller.log, pid
#      .fsb/controller.pid), serving E2B's API on 127.0.0.1:9094 with an API
#      key of namespace default (.fsb/e2b-api-keys, e2b_ and 40 hex digits),
#      the template base (.fsb/e2b-templates.yaml) and the secret of the
#      sandboxes' access tokens (.fsb/e2b-token-secret);
#   5. a janitor (log .fsb/janitor.log, pid .fsb/janitor.pid, metrics and
#      probes on 127.0.0.1:9093) over namespace fsb and the agent's log dir;
#   6. the SandboxPool named default (the pool of the agent, started without
#      --pool) with two warm entries: 2 sandboxes of the test image on runc
#      and 2 of E2B's base template (so that E2B's creates are warm claims),
#      applied with `fsb ctl apply`;
#   7. CPU weights: containerd's session gets less, the agent's and the
#      controller's more (weigh, below; CPU_WEIGHTS=0 leaves them equal);
#   8. .fsb/env, which exports FSB_SERVER and FSB_TOKEN for `fsb ctl`,
#      FSB_CONTAINERD_SOCKET, FSB_JANITOR_TOKEN_FILE and FSB_LOG_DIR for
#      `fsb janitor --once`, and E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY
#      for programs written for E2B's SDK (docs/e2b.md).
#
# With KUBE=1 (make up KUBE=1) it also starts an etcd (127.0.0.1:2479, peers
# 2480) and a Kubernetes API server (https://127.0.0.1:6443) with
# scripts/kube.sh in .fsb/kube (building the pinned kube-apiserver and
# kubectl first, once), applies the CRDs from deploy/crds, makes the pool
# namespace fsb-system, and runs the controller with the kube store on it
# instead of the embedded one. .fsb/env
# then also exports KUBECONFIG (.fsb/kube/kubeconfig, the cluster admin) and
# puts the pinned kubectl first on PATH.
#
# It returns once all three answer on /readyz; they keep running until
# scripts/down.sh (make down). Running it again while they run changes
# nothing. It refuses to start when another program holds one of the ports.
# On a failure it prints the failing daemon's log and stops what it started.
#
# Needs root (containerd) and bin/fsb (make up builds it). UP_DIR (default
# /tmp/fsb-up) holds containerd, sandbox logs and agent state; keep it short,
# since unix socket paths must stay under 100 characters.
set -euo pipefail

readonly AGENT_PORT=5758 AGENT_METRICS_PORT=9092 FASTPATH_PORT=9090 HEALTH_PORT=8081 METRICS_PORT=9091 JANITOR_PORT=9093 E2B_PORT=9094
readonly KUBE_API_PORT=6443 ETCD_PORT=2479 ETCD_PEER_PORT=2480
readonly READY_TIMEOUT=30 # seconds each daemon gets to report ready
readonly IMAGE=localhost/fsb/busybox:latest
# The image of E2B's base template, and what a sandbox of it may use (the
# template and the pool's warm entry must agree, or creates are cold).
readonly E2B_IMAGE=localhost/fsb/e2b-base:latest E2B_CPU=1 E2B_MEMORY=512Mi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly repo_root
readonly fsb_dir=$repo_root/.fsb
readonly fsb=$repo_root/bin/fsb
up_dir=${UP_DIR:-/tmp/fsb-up}
up_dir=$(realpath -m -- "$up_dir")
readonly up_dir
readonly sock=$up_dir/containerd.sock
readonly kube_dir=$fsb_dir/kube
kube=false
[[ ${KUBE:-} == 1 ]] && kube=true
readonly kube
kube_bin=

log() { printf 'up: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# What this run started, so that a failure can stop exactly that.
started_rig=false
started_kube=false
started=()

# shellcheck source=scripts/quickstart-lib.sh
source "$repo_root/scripts/quickstart-lib.sh"

# ready PORT succeeds if http://127.0.0.1:PORT/readyz answers 200. Plain bash,
# since a fresh machine may have neither curl nor wget.
ready() {
	local port=$1
	(
		exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
		printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		read -r -t 2 _ status _ <&3 || exit 1
		[[ $status == 200 ]]
	) 2>/dev/null
}

# holder PORT describes what listens on 127.0.0.1:PORT (or every address),
# or fails when nothing does.
holder() {
	local port=$1 line
	if command -v ss >/dev/null; then
		line=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 1)
		[[ -n $line ]] || return 1
		if [[ $line =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
			echo "${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]})"
		else
			echo "another program"
		fi
		return 0
	fi
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
	echo "another program"
}

# check_port NAME PORT refuses when something other than our NAME daemon
# listens on PORT.
check_port() {
	local name=$1 port=$2 who
	ours "$name" >/dev/null && return 0
	if who=$(holder "$port"); then
		die "port $port is taken by $who, not by a Fast Sandbox $name of this checkout: stop it, then run make up again"
	fi
}

# fail LOG MESSAGE prints MESSAGE and the tail of LOG, stops what this run
# started and exits.
fail() {
	local file=$1
	shift
	log "error: $*"
	if [[ -s $file ]]; then
		log "last lines of ${file#"$repo_root"/}:"
		tail -n 30 "$file" | sed 's/^/    /' >&2
	fi
	undo
	exit 1
}

undo() {
	local i
	for ((i = ${#started[@]} - 1; i >= 0; i--)); do
		log "stopping the ${started[i]} this run started"
		stop "${started[i]}"
	done
	if $started_kube; then
		log "stopping the etcd and API server this run started"
		"$repo_root/scripts/kube.sh" stop "$kube_dir" || true
	fi
	if $started_rig; then
		log "stopping the containerd this run started"
		"$repo_root/scripts/rig.sh" down "$up_dir" || true
	fi
}

start_rig() {
	if [[ ! -S $sock ]] || ! timeout 5 ctr --address "$sock" version >/dev/null 2>&1; then
		started_rig=true
	fi
	# rig.sh is idempotent: it installs what is missing, (re)starts
	# containerd when needed and writes the test image.
	"$repo_root/scripts/rig.sh" up "$up_dir" || {
		undo
		die "scripts/rig.sh could not start containerd in $up_dir"
	}
	ctr -a "$sock" -n fsb images import "$up_dir/busybox.oci.tar" >/dev/null ||
		fail "$up_dir/containerd.log" "could not import $up_dir/busybox.oci.tar into containerd namespace fsb"
	ctr -a "$sock" -n fsb images ls -q | grep -qxF "$IMAGE" ||
		fail "$up_dir/containerd.log" "$IMAGE is missing from containerd namespace fsb after the import"
	import_e2b_image
	log "containerd ready in $up_dir with $IMAGE and $E2B_IMAGE"
}

# import_e2b_image imports the image of E2B's base template. rig.sh up
# writes it beside the busybox image; a rig from before that gets it
# written here.
import_e2b_image() {
	local tar=$up_dir/e2b-base.oci.tar
	if [[ ! -s $tar ]]; then
		# Needs `mkimage -kind e2b` (helper H4's, branch h-e2b-sdktests):
		# until that is merged this line fails, and make up with it.
		(cd "$repo_root" && go run ./scripts/mkimage -kind e2b -o "$tar.tmp" && mv -f "$tar.tmp" "$tar") ||
			fail "$up_dir/containerd.log" "could not write the image of E2B's base template ($tar)"
	fi
	ctr -a "$sock" -n fsb images import "$tar" >/dev/null ||
		fail "$up_dir/containerd.log" "could not import $tar into containerd namespace fsb"
	ctr -a "$sock" -n fsb images ls -q | grep -qxF "$E2B_IMAGE" ||
		fail "$up_dir/containerd.log" "$E2B_IMAGE is missing from containerd namespace fsb after the import"
}

# kube_running succeeds when .fsb/kube holds an API server that answers.
kube_running() {
	[[ -r $kube_dir/kubeconfig && -n $kube_bin ]] &&
		"$kube_bin/kubectl" --kubeconfig "$kube_dir/kubeconfig" --request-timeout=2s get --raw /readyz >/dev/null 2>&1
}

# start_kube builds (or reuses) the pinned kube-apiserver and kubectl,
# starts etcd and the API server in .fsb/kube, and applies the CRDs.
start_kube() {
	kube_bin=$("$repo_root/scripts/kube.sh" build) || {
		undo
		die "scripts/kube.sh could not build kube-apiserver and kubectl"
	}
	if ! kube_running; then
		check_free "$KUBE_API_PORT"
		check_free "$ETCD_PORT"
		check_free "$ETCD_PEER_PORT"
		started_kube=true
	fi
	"$repo_root/scripts/kube.sh" start "$kube_dir" \
		--api-port "$KUBE_API_PORT" --etcd-port "$ETCD_PORT" --peer-port "$ETCD_PEER_PORT" || {
		undo
		die "scripts/kube.sh could not start etcd and the API server in .fsb/kube"
	}
	local kubectl=("$kube_bin/kubectl" --kubeconfig "$kube_dir/kubeconfig") crds deadline
	crds=$("${kubectl[@]}" apply --server-side --force-conflicts --field-manager fsb-up -o name -f "$repo_root/deploy/crds") ||
		fail "$kube_dir/kube-apiserver.log" "could not apply the CRDs in deploy/crds"
	# Not kubectl wait: it fails on a CRD whose status has no conditions yet.
	deadline=$((SECONDS + READY_TIMEOUT))
	# shellcheck disable=SC2086 # one name per word
	until [[ $("${kubectl[@]}" get $crds -o 'jsonpath={.items[*].status.conditions[?(@.type=="Established")].status}' 2>/dev/null) =~ ^True( True)*$ ]]; do
		((SECONDS < deadline)) || fail "$kube_dir/kube-apiserver.log" "the CRDs did not become Established within ${READY_TIMEOUT}s"
		sleep 0.1
	done
	# The controller's pool namespace, as deploy/ makes it.
	"${kubectl[@]}" get namespace fsb-system >/dev/null 2>&1 ||
		"${kubectl[@]}" create namespace fsb-system >/dev/null ||
		fail "$kube_dir/kube-apiserver.log" "could not create the namespace fsb-system"
	log "Kubernetes API server ready on https://127.0.0.1:$KUBE_API_PORT with the CRDs"
}

# weigh WHAT PID NICE gives the session of PID (what setsid started) the
# CPU weight of NICE. When the kernel groups processes by session
# (kernel.sched_autogroup_enabled, for processes in the root CPU cgroup, as
# here), each session shares the CPU equally with the others, whatever its
# threads' nice. containerd's session, which runs every create's shims,
# runc and mounts, weighed as much as the agent or the controller, so on a
# small machine a warm claim's every step waited behind that work. With
# containerd's session at 10 and the agent's and the controller's at -5,
# `fsb ctl bench --warm -c 4` on 2 cores had its warm p99 fall from a
# median of 20 ms to one of 13.3 (8-16), and cold creates lost nothing
# (docs/benchmarks.md). Nothing to do where cgroups weigh them instead
# (systemd slices, Kubernetes pods).
weigh() {
	local what=$1 pid=$2 nice=$3
	[[ ${CPU_WEIGHTS:-1} == 1 ]] || return 0
	[[ $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null) == 1 ]] || return 0
	if ! echo "$nice" >"/proc/$pid/autogroup" 2>/dev/null; then
		log "could not set the CPU weight of the $what's session (pid $pid); leaving it as it is"
	fi
}

# check_free PORT refuses when something listens on 127.0.0.1:PORT,
# stopping what this run started.
check_free() {
	local port=$1 who
	if who=$(holder "$port"); then
		undo
		die "port $port is taken by $who: stop it, then run make up KUBE=1 again"
	fi
}

# token FILE writes a random token into FILE unless it holds one already
# (a running agent and controller keep the tokens they read at start).
token() {
	local file=$1 tok
	[[ -s $file ]] && return 0
	tok=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')
	(umask 077 && printf '%s\n' "$tok" >"$file.tmp")
	mv -f "$file.tmp" "$file"
}

# e2b_files writes the E2B API's keys file, one key of namespace default
# (kept when it exists: a running controller keeps the keys it read), and
# its templates file.
e2b_files() {
	local keys=$fsb_dir/e2b-api-keys key
	if [[ ! -s $keys ]]; then
		# E2B's keys are e2b_ and 40 hex digits; programs check the form.
		key=e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
		(umask 077 && printf '# Written by scripts/up.sh: E2B API keys, `KEY NAMESPACE` a line.\n%s default\n' "$key" >"$keys.tmp")
		mv -f "$keys.tmp" "$keys"
	fi
	cat >"$fsb_dir/e2b-templates.yaml.tmp" <<EOF
# Written by scripts/up.sh: E2B's templates (--e2b-templates-file).
templates:
  base:
    image: $E2B_IMAGE
    runtime: runc
    resources: {cpu: "$E2B_CPU", memory: $E2B_MEMORY}
EOF
	mv -f "$fsb_dir/e2b-templates.yaml.tmp" "$fsb_dir/e2b-templates.yaml"
}

# e2b_key prints the E2B API key of .fsb/e2b-api-keys.
e2b_key() {
	awk '$1 ~ /^e2b_/ { print $1; exit }' "$fsb_dir/e2b-api-keys"
}

# start NAME PORT ARGS... starts `bin/fsb NAME ARGS...` detached from this
# session (setsid) with its output in .fsb/NAME.log, unless ours is already
# ready, and waits until http://127.0.0.1:PORT/readyz answers.
start() {
	local name=$1 port=$2 pid deadline
	shift 2
	if pid=$(ours "$name"); then
		if ready "$port"; then
			log "$name already running (pid $pid); make down first to restart it with a new build"
			return 0
		fi
		log "$name (pid $pid) is not ready; restarting it"
		stop "$name"
	fi
	rm -f "$fsb_dir/$name.pid"
	# The inner shell writes its own PID and then becomes bin/fsb, so the
	# PID file names the daemon itself.
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid -f bash -c 'cd / && echo $$ >"$1.tmp" && mv -f "$1.tmp" "$1" && shift && exec "$@"' \
		"fsb-$name" "$fsb_dir/$name.pid" "$fsb" "$name" "$@" \
		>>"$fsb_dir/$name.log" 2>&1 </dev/null
	started+=("$name")

	deadline=$((SECONDS + READY_TIMEOUT))
	until ready "$port"; do
		if ((SECONDS >= deadline)); then
			fail "$fsb_dir/$name.log" "the $name did not report ready on http://127.0.0.1:$port/readyz within ${READY_TIMEOUT}s"
		fi
		# Alive is enough here: until the inner shell has exec'd, the PID
		# names bash, not bin/fsb.
		if [[ -s $fsb_dir/$name.pid ]] && ! kill -0 "$(<"$fsb_dir/$name.pid")" 2>/dev/null; then
			fail "$fsb_dir/$name.log" "the $name exited"
		fi
		sleep 0.1
	done
	log "$name ready (pid $(ours "$name"))"
}

# apply_default_pool gives the default pool its warm entry. Applying it again
# (make up while up) changes nothing.
apply_default_pool() {
	local out
	if ! out=$("$fsb" ctl --server "http://127.0.0.1:$FASTPATH_PORT" --token "$(<"$fsb_dir/user-token")" \
		apply -f - 2>&1 <<EOF
apiVersion: sandbox.fast.io/v1alpha1
kind: SandboxPool
metadata:
  name: default
spec:
  warm:
  - image: $IMAGE
    runtime: runc
    count: 2
  - image: $E2B_IMAGE
    runtime: runc
    resources: {cpu: "$E2B_CPU", memory: $E2B_MEMORY}
    count: 2
EOF
	); then
		printf '%s\n' "$out" >"$fsb_dir/apply.log"
		fail "$fsb_dir/apply.log" "could not apply the default pool"
	fi
	log "$out"
}

write_env() {
	local tmp=$fsb_dir/env.tmp
	(
		umask 077
		{
			echo "# Written by scripts/up.sh; source it to talk to the local controller."
			echo "export FSB_SERVER=http://127.0.0.1:$FASTPATH_PORT"
			printf 'export FSB_TOKEN=%q\n' "$(<"$fsb_dir/user-token")"
			printf 'export FSB_CONTAINERD_SOCKET=%q\n' "$sock"
			printf 'export FSB_JANITOR_TOKEN_FILE=%q\n' "$fsb_dir/janitor-token"
			printf 'export FSB_LOG_DIR=%q\n' "$up_dir/logs"
			echo "# E2B's SDK: its REST API and every sandbox's envd on the controller."
			echo "export E2B_API_URL=http://127.0.0.1:$E2B_PORT"
			echo "export E2B_SANDBOX_URL=http://127.0.0.1:$E2B_PORT"
			printf 'export E2B_API_KEY=%q\n' "$(e2b_key)"
			if $kube; then
				printf 'export KUBECONFIG=%q\n' "$kube_dir/kubeconfig"
				printf 'export PATH=%q:"$PATH"\n' "$kube_bin"
			fi
		} >"$tmp"
	)
	mv -f "$tmp" "$fsb_dir/env"
}

main() {
	((EUID == 0)) || die "must run as root (containerd, mounts, cgroups)"
	[[ -x $fsb ]] || die "bin/fsb is missing: run make up (it builds first) or make build"
	check_port agent "$AGENT_PORT"
	check_port agent "$AGENT_METRICS_PORT"
	check_port controller "$FASTPATH_PORT"
	check_port controller "$HEALTH_PORT"
	check_port controller "$METRICS_PORT"
	check_port controller "$E2B_PORT"
	check_port janitor "$JANITOR_PORT"

	trap 'log "interrupted"; undo; exit 130' INT TERM
	mkdir -p "$fsb_dir"
	chmod 0700 "$fsb_dir"
	# down.sh reads it, so that it finds this UP_DIR without being told.
	echo "$up_dir" >"$fsb_dir/up-dir"
	start_rig
	weigh containerd "$(<"$up_dir/containerd.pid")" 10
	if $kube; then
		start_kube
	fi
	token "$fsb_dir/user-token"
	token "$fsb_dir/agent-token"
	token "$fsb_dir/janitor-token"
	token "$fsb_dir/e2b-token-secret"
	e2b_files
	mkdir -p "$up_dir/logs" "$up_dir/agent"
	local store_flags=(--store embedded --data-dir "$fsb_dir/data")
	if $kube; then
		store_flags=(--store kube --kubeconfig "$kube_dir/kubeconfig")
	fi

	start agent "$AGENT_PORT" \
		--containerd-socket "$sock" --containerd-namespace fsb \
		--token-file "$fsb_dir/agent-token" \
		--log-dir "$up_dir/logs" --state-dir "$up_dir/agent" \
		--bind-address 127.0.0.1 --http-port "$AGENT_PORT" --agent-id local \
		--metrics-bind-address "127.0.0.1:$AGENT_METRICS_PORT"
	weigh agent "$(ours agent)" -5
	start controller "$HEALTH_PORT" \
		--fastpath-bind-address "127.0.0.1:$FASTPATH_PORT" \
		--health-probe-bind-address "127.0.0.1:$HEALTH_PORT" \
		--metrics-bind-address "127.0.0.1:$METRICS_PORT" \
		--agents "127.0.0.1:$AGENT_PORT" \
		"${store_flags[@]}" \
		--user-token-file "$fsb_dir/user-token" \
		--agent-token-file "$fsb_dir/agent-token" \
		--janitor-token-file "$fsb_dir/janitor-token" \
		--e2b-bind-address "127.0.0.1:$E2B_PORT" \
		--e2b-api-keys-file "$fsb_dir/e2b-api-keys" \
		--e2b-templates-file "$fsb_dir/e2b-templates.yaml" \
		--e2b-token-secret-file "$fsb_dir/e2b-token-secret"
	weigh controller "$(ours controller)" -5
	# After the controller is ready: before, the janitor's question is
	# refused and its passes remove nothing.
	start janitor "$JANITOR_PORT" \
		--server "http://127.0.0.1:$FASTPATH_PORT" \
		--token-file "$fsb_dir/janitor-token" \
		--containerd-socket "$sock" --containerd-namespace fsb \
		--log-dir "$up_dir/logs" \
		--metrics-bind-address "127.0.0.1:$JANITOR_PORT"
	apply_default_pool
	write_env

	cat <<EOF

Fast Sandbox is up: a controller on http://127.0.0.1:$FASTPATH_PORT, an agent on 127.0.0.1:$AGENT_PORT
and a janitor. Logs: .fsb/controller.log, .fsb/agent.log, .fsb/janitor.log. Try:

  source .fsb/env
  bin/fsb ctl run hello --image $IMAGE -- sh -c 'echo hello; sleep 60'
  bin/fsb ctl logs hello -f
  bin/fsb janitor --once --dry-run    # what the janitor would remove now

E2B's SDK drives it too (docs/e2b.md): after source .fsb/env, E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY point it at http://127.0.0.1:$E2B_PORT, so that

  const sandbox = await Sandbox.create()    // the template base: $E2B_IMAGE

in a program written for E2B runs here.

make down stops it all.
EOF
	if $kube; then
		cat <<EOF

Kubernetes mode: the controller keeps sandboxes as objects on the API server
https://127.0.0.1:$KUBE_API_PORT (etcd and kube-apiserver logs in .fsb/kube). After
source .fsb/env, kubectl is the pinned one and talks to it:

  kubectl get sbx -A                  # sandboxes, by their short name
EOF
	fi
}

main "$@"
