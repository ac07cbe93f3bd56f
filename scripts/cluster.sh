#!/usr/bin/env bash
# cluster.sh starts and stops a real single-node Kubernetes cluster, and
# Fast Sandbox deployed on it, for the tests and `make cluster-up`.
#
#   scripts/cluster.sh up DIR [--overlay PATH|none] [--api-port N] [--fastpath-port N]
#       start the node in DIR, import the images, apply deploy/ through
#       the overlay (default deploy/overlays/local; none: only the node),
#       wait until Fast Sandbox serves, and write DIR/env
#   scripts/cluster.sh down DIR
#       stop everything up started and remove DIR
#
# The whole cluster lives in one network namespace of its own (its name is
# in DIR/env): a veth pair inside it gives the node 10.123.0.2/24; etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, a private CRI
# containerd (pods on the CNI bridge cni0, 10.124.0.0/16), the kubelet and
# kube-proxy (iptables, so its rules touch only that namespace) run in it,
# and ClusterIPs (10.96.0.0/16) and pod addresses exist only there. The
# host reaches the API server and the fsb-controller Service only through
# forwarders on 127.0.0.1 (socat, each connection entering the namespace).
# The daemons enter only the network namespace (nsenter --net), not a mount
# namespace of their own as `ip netns exec` would give them: the kubelet's
# volume mounts must be seen by containerd.
#
# After `up`, `source DIR/env` exports KUBECONFIG (the cluster admin, through
# the forwarder), FSB_KUBECTL, FSB_SERVER, FSB_TOKEN, FSB_CA_FILE (for
# `fsb ctl`), FSB_CLUSTER_DIR, FSB_CLUSTER_NETNS, FSB_CLUSTER_CONTAINERD and
# FSB_CLUSTER_NAMESPACE. Needs root, bin/fsb and bin/fsb-helper (make build)
# and the Kubernetes commands of `scripts/kube.sh build`. Keep DIR short:
# unix socket paths live under it. Several clusters may run at once, each in
# its own DIR.
set -euo pipefail

readonly PACKAGES=(containerd runc containernetworking-plugins busybox-static etcd-server socat conntrack iptables iproute2 openssl util-linux)
readonly MARKER=.fsb-cluster
readonly NODE_IP=10.123.0.2
readonly POD_CIDR=10.124.0.0/16
readonly SERVICE_CIDR=10.96.0.0/16
readonly API_SERVICE_IP=10.96.0.1
readonly NODE_NAME=fsb-node
readonly FSB_NAMESPACE=fsb-system
readonly SERVICE_ISSUER=https://kubernetes.default.svc.cluster.local
readonly READY_TIMEOUT=60  # seconds a daemon gets to answer
readonly DEPLOY_TIMEOUT=180 # seconds Fast Sandbox gets to be Ready
readonly STOP_TIMEOUT=10   # seconds between SIGTERM and SIGKILL
# The kernel tunables the kubelet sets on the host when they differ
# (there is no way to keep it from it): the first cluster's up records them
# in SYSCTLS_FILE, and the last cluster's down puts them back.
readonly SYSCTLS_FILE=/run/fsb-cluster.sysctls
readonly KUBELET_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd "$script_dir/.." && pwd -P)
readonly script_dir repo_root

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
usage() {
	echo "usage:" >&2
	sed -n '/^#   scripts/,/^#$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

now_ms() { date +%s%3N; }
elapsed() { awk -v ms=$(($(now_ms) - $1)) 'BEGIN { printf "%.2f", ms / 1000 }'; }

# phase NAME logs that the phase NAME is done, with the seconds since up
# began: the phases overlap (images build while the daemons start), so a
# timeline says more than durations.
started_ms=
phase() { log "$(printf '%-24s at %6s s' "$1" "$(elapsed "$started_ms")")"; }

# The names and paths of DIR's cluster, set by set_paths.
dir=
id=
netns=
cgroup_root=
sock=
kube_bin=
kubectl=
set_paths() {
	# One short ID per DIR names the network namespace, the cgroup root and
	# the CNI network, so that clusters in other directories never meet.
	id=$(printf '%s' "$dir" | sha256sum | cut -c1-10)
	netns=fsbc-$id
	cgroup_root=/fsbc-$id
	sock=$dir/containerd/containerd.sock
}

# find_kube_bin sets kube_bin and kubectl: FSB_KUBE_BIN, else what
# `scripts/kube.sh build` built (or builds now).
find_kube_bin() {
	kube_bin=${FSB_KUBE_BIN:-}
	if [[ -z $kube_bin ]]; then
		kube_bin=$("$script_dir/kube.sh" build) || die "scripts/kube.sh build failed"
	fi
	kubectl=$kube_bin/kubectl
}

# in_ns CMD... runs CMD in the cluster's network namespace (only: the mount
# namespace stays the host's).
in_ns() { nsenter --net="/run/netns/$netns" -- "$@"; }

# k runs the pinned kubectl as the cluster admin.
k() { "$kubectl" --kubeconfig "$dir/kubeconfig" --request-timeout=10s "$@"; }

install_packages() {
	local p missing=()
	for p in "${PACKAGES[@]}"; do
		if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) != installed ]]; then
			missing+=("$p")
		fi
	done
	((${#missing[@]} == 0)) && return 0
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# alive PID succeeds while PID runs (a zombie does not count).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# pid_of NAME prints the PID in DIR/NAME.pid if that process is alive and
# its command line names DIR or a path below it (every daemon's does); else
# it fails.
pid_of() {
	local name=$1 pid
	[[ -r $dir/$name.pid ]] || return 1
	pid=$(<"$dir/$name.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	# An argument is DIR or a path below it (not /tmp/c1 for /tmp/c10).
	tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" |
		awk -v d="$dir" '$0 == d || index($0, d "/") { found = 1 } END { exit !found }' || return 1
	echo "$pid"
}

# spawn NAME CMD... starts CMD detached (setsid: its own session and
# process group) in the cluster's network namespace, with its output in
# DIR/NAME.log; DIR/NAME.pid names the daemon itself (the inner shell writes
# its PID, then becomes nsenter, which becomes CMD).
spawn() {
	local name=$1
	shift
	rm -f "$dir/$name.pid"
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid -f bash -c 'cd / && echo $$ >"$1.tmp" && mv -f "$1.tmp" "$1" && shift && exec "$@"' \
		"fsbc-$name" "$dir/$name.pid" nsenter --net="/run/netns/$netns" -- "$@" \
		>>"$dir/$name.log" 2>&1 </dev/null 9>&-
}

# wait_for NAME CHECK... waits until CHECK succeeds, failing with NAME's log
# when NAME exits or READY_TIMEOUT passes.
wait_for() {
	local name=$1 deadline=$((SECONDS + READY_TIMEOUT))
	shift
	until "$@"; do
		if ((SECONDS >= deadline)); then
			log "$name did not get ready within ${READY_TIMEOUT}s; last lines of $dir/$name.log:"
			tail -n 30 "$dir/$name.log" >&2 || true
			return 1
		fi
		if [[ -s $dir/$name.pid ]] && ! pid_of "$name" >/dev/null; then
			log "$name exited; last lines of $dir/$name.log:"
			tail -n 30 "$dir/$name.log" >&2 || true
			return 1
		fi
		sleep 0.1
	done
}

# listening PORT succeeds if something accepts connections on
# 127.0.0.1:PORT of the host.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a host loopback port nothing listens on, below the
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

setup_netns() {
	ip netns add "$netns"
	echo "$netns" >"$dir/netns"
	# Both ends of the veth pair stay in the namespace: the node's address
	# needs a link of its own (the kubelet refuses loopback), and nothing
	# may leave the namespace. The default route makes ClusterIPs routable
	# from the namespace's own processes before kube-proxy's DNAT.
	ip -n "$netns" link add fsbnode type veth peer name fsbpeer
	ip -n "$netns" addr add "$NODE_IP/24" dev fsbnode
	ip -n "$netns" link set lo up
	ip -n "$netns" link set fsbnode up
	ip -n "$netns" link set fsbpeer up
	ip -n "$netns" route add default dev fsbnode
	in_ns sysctl -qw net.ipv4.ip_forward=1
	in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
		log "warning: net.bridge.bridge-nf-call-iptables is not available: a pod may not reach a Service backed by a pod on the same bridge"
}

# cert NAME CN [O] [SANS] [SERVER] writes NAME.key and NAME.crt signed by
# the cluster's CA, a server certificate when SERVER is "server".
cert() {
	local name=$1 cn=$2 o=${3:-} sans=${4:-} usage=clientAuth subj
	[[ ${5:-} == server ]] && usage=serverAuth
	subj=/CN=$cn
	[[ -n $o ]] && subj="/O=$o$subj"
	openssl ecparam -name prime256v1 -genkey -noout -out "$name.key"
	openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
	{
		echo "extendedKeyUsage=$usage"
		echo 'keyUsage=critical,digitalSignature,keyEncipherment'
		[[ -n $sans ]] && echo "subjectAltName=$sans"
	} >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 -extfile "$name.ext" -out "$name.crt"
	rm -f "$name.csr" "$name.ext"
}

write_certs() {
	mkdir -p "$dir/certs"
	(
		umask 077
		cd "$dir/certs"
		openssl ecparam -name prime256v1 -genkey -noout -out ca.key
		openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj /CN=fsb-cluster-ca -out ca.crt
		cert apiserver kube-apiserver '' "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP" server
		cert admin fsb-admin system:masters
		cert apiserver-kubelet kube-apiserver-kubelet-client system:masters
		cert controller-manager system:kube-controller-manager
		cert scheduler system:kube-scheduler
		cert kubelet "system:node:$NODE_NAME" system:nodes
		cert proxy system:kube-proxy
		openssl ecparam -name prime256v1 -genkey -noout -out sa.key
		openssl ec -in sa.key -pubout -out sa.pub
	) 2>/dev/null || die "openssl could not write the certificates in $dir/certs"
}

# write_kubeconfig FILE SERVER CERT writes a kubeconfig for the client
# certificate CERT (a name in DIR/certs).
write_kubeconfig() {
	local file=$1 server=$2 c=$dir/certs/$3
	(
		umask 077
		cat >"$file.tmp" <<EOF
# Written by scripts/cluster.sh.
apiVersion: v1
kind: Config
clusters:
- name: fsb-cluster
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$dir/certs/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(base64 -w0 <"$c.crt")
    client-key-data: $(base64 -w0 <"$c.key")
contexts:
- name: fsb-cluster
  context:
    cluster: fsb-cluster
    user: $3
    namespace: default
current-context: fsb-cluster
EOF
	)
	mv -f "$file.tmp" "$file"
}

# start_forwarder NAME PORT TARGET listens on the host's 127.0.0.1:PORT and
# connects each connection to TARGET (host:port) from inside the cluster's
# network namespace. It fails if the port is taken.
start_forwarder() {
	local name=$1 port=$2 target=$3 wrapper=$dir/bin/$1
	if listening "$port"; then
		log "port $port of 127.0.0.1 is taken: no $name forwarder there"
		return 1
	fi
	mkdir -p "$dir/bin"
	cat >"$wrapper" <<EOF
#!/bin/sh
# Written by scripts/cluster.sh: one connection of the $name forwarder.
exec nsenter --net=/run/netns/$netns -- socat STDIO TCP:$target,connect-timeout=5
EOF
	chmod 0755 "$wrapper"
	rm -f "$dir/$name.pid"
	# Not in the namespace: it listens on the host's loopback.
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid -f bash -c 'cd / && echo $$ >"$1.tmp" && mv -f "$1.tmp" "$1" && shift && exec "$@"' \
		"fsbc-$name" "$dir/$name.pid" socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "EXEC:$wrapper" \
		>>"$dir/$name.log" 2>&1 </dev/null 9>&-
	local deadline=$((SECONDS + 5))
	# Listening, and by our socat: it exits when another program took the
	# port meanwhile.
	until listening "$port" && pid_of "$name" >/dev/null; do
		if ((SECONDS >= deadline)) || { [[ -s $dir/$name.pid ]] && ! pid_of "$name" >/dev/null; }; then
			log "the $name forwarder could not listen on 127.0.0.1:$port: $(tail -n 3 "$dir/$name.log" 2>/dev/null)"
			stop_one "$name"
			return 1
		fi
		sleep 0.05
	done
}

# forward NAME PORT TARGET starts a forwarder on PORT, or on a free port
# when PORT is empty (trying again when another program takes it first),
# and records the port in DIR/NAME.port.
forward() {
	local name=$1 port=$2 target=$3 attempt
	for attempt in 1 2 3 4 5; do
		local p=${port:-$(free_port)}
		if start_forwarder "$name" "$p" "$target"; then
			echo "$p" >"$dir/$name.port"
			return 0
		fi
		[[ -z $port ]] || return 1
	done
	return 1
}

etcd_healthy() {
	in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/2379 && printf "GET /health HTTP/1.0\r\n\r\n" >&3 && grep -q "\"health\":\"true\"" <&3' 2>/dev/null
}

start_etcd() {
	local data
	data=$(mktemp -d /dev/shm/fsbc-etcd.XXXXXX)
	echo "$data" >"$dir/etcd-data"
	# The data dir is on tmpfs (etcd 3.4 fsyncs every write); the name
	# carries DIR so that pid_of recognises the daemon.
	spawn etcd etcd --name "fsb" --data-dir "$data" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster fsb=http://127.0.0.1:2380 --initial-cluster-token "$dir" \
		--logger zap --log-level warn
}

start_apiserver() {
	local c=$dir/certs
	spawn kube-apiserver "$kube_bin/kube-apiserver" \
		--etcd-servers http://127.0.0.1:2379 \
		--bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port 6443 \
		--cert-dir "$c" --tls-cert-file "$c/apiserver.crt" --tls-private-key-file "$c/apiserver.key" \
		--client-ca-file "$c/ca.crt" \
		--authorization-mode Node,RBAC \
		--enable-admission-plugins NodeRestriction \
		--service-account-issuer "$SERVICE_ISSUER" --api-audiences "$SERVICE_ISSUER" \
		--service-account-key-file "$c/sa.pub" --service-account-signing-key-file "$c/sa.key" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--kubelet-client-certificate "$c/apiserver-kubelet.crt" --kubelet-client-key "$c/apiserver-kubelet.key" \
		--kubelet-preferred-address-types InternalIP \
		--allow-privileged=true \
		--profiling=false
}

apiserver_ready() { [[ $(k get --raw /readyz 2>/dev/null) == ok ]]; }

start_control_plane() {
	local c=$dir/certs
	spawn kube-controller-manager "$kube_bin/kube-controller-manager" \
		--kubeconfig "$dir/kubeconfigs/controller-manager" \
		--authentication-kubeconfig "$dir/kubeconfigs/controller-manager" \
		--authorization-kubeconfig "$dir/kubeconfigs/controller-manager" \
		--service-account-private-key-file "$c/sa.key" --root-ca-file "$c/ca.crt" \
		--use-service-account-credentials \
		--service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" \
		--flex-volume-plugin-dir "$dir/controller-manager/volume-plugins" \
		--leader-elect=false --bind-address 127.0.0.1 --secure-port 10257 --profiling=false
	spawn kube-scheduler "$kube_bin/kube-scheduler" \
		--kubeconfig "$dir/kubeconfigs/scheduler" \
		--authentication-kubeconfig "$dir/kubeconfigs/scheduler" \
		--authorization-kubeconfig "$dir/kubeconfigs/scheduler" \
		--leader-elect=false --bind-address 127.0.0.1 --secure-port 10259 --profiling=false
	cat >"$dir/proxy.yaml" <<EOF
# Written by scripts/cluster.sh.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
clientConnection:
  kubeconfig: $dir/kubeconfigs/proxy
iptables:
  # A pod reaching a Service backed by a pod on the same bridge gets its
  # answer back through kube-proxy's SNAT.
  masqueradeAll: true
conntrack:
  # Zero: kube-proxy leaves the conntrack sysctls alone (some are the
  # host's, not the namespace's).
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
EOF
	spawn kube-proxy "$kube_bin/kube-proxy" --config "$dir/proxy.yaml"
}

write_containerd_config() {
	local tag=$1
	mkdir -p "$dir/containerd" "$dir/cni/net.d"
	cat >"$dir/containerd/config.toml" <<EOF
# Written by scripts/cluster.sh: the node's CRI containerd.
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = "$dir/containerd/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/fsb/pause:$tag"
  # The VM lacks CAP_SYS_RESOURCE: without this every pod fails.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
	cat >"$dir/cni/net.d/10-fsb.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "fsbc-$id",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$dir/cni/ipam"
      }
    }
  ]
}
EOF
}

containerd_answers() { [[ -S $sock ]] && timeout 5 ctr --address "$sock" version >/dev/null 2>&1; }

# build_images writes the fsb, pause and busybox images as OCI tars into
# DIR/images.
build_images() {
	local tag=$1 fsb=${FSB_BINARY:-$repo_root/bin/fsb} helper=${FSB_HELPER_BINARY:-$repo_root/bin/fsb-helper}
	mkdir -p "$dir/images"
	(cd "$repo_root" && go build -o "$dir/bin/mkimage" ./scripts/mkimage) || return 1
	"$dir/bin/mkimage" -kind fsb -o "$dir/images/fsb.tar" -ref "localhost/fsb/fsb:$tag" -fsb "$fsb" -helper "$helper" &
	local p1=$!
	"$dir/bin/mkimage" -kind pause -o "$dir/images/pause.tar" -ref "localhost/fsb/pause:$tag" -helper "$helper" || return 1
	"$dir/bin/mkimage" -o "$dir/images/busybox.tar" || return 1
	wait "$p1"
}

import_images() {
	local f
	for f in pause busybox fsb; do
		ctr --address "$sock" -n k8s.io images import --snapshotter overlayfs "$dir/images/$f.tar" >/dev/null ||
			die "ctr could not import $dir/images/$f.tar into the node's containerd"
	done
}

# make_cgroup_root makes the cgroup the kubelet puts every pod under, in
# every v1 hierarchy (and the v2 one): one per cluster, so that two
# clusters' kubelets never share a kubepods cgroup.
make_cgroup_root() {
	local h
	if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
		mkdir -p "/sys/fs/cgroup$cgroup_root"
		return
	fi
	for h in /sys/fs/cgroup/*/; do
		[[ -L ${h%/} ]] && continue
		[[ $(stat -fc %T "$h") == cgroupfs || $(stat -fc %T "$h") == cgroup2fs ]] || continue
		mkdir -p "${h%/}$cgroup_root"
	done
}

start_kubelet() {
	mkdir -p "$dir/kubelet/root" "$dir/kubelet/pod-logs" "$dir/kubelet/volume-plugins"
	echo "# Written by scripts/cluster.sh: pods resolve no names outside the cluster." >"$dir/kubelet/resolv.conf"
	cat >"$dir/kubelet/config.yaml" <<EOF
# Written by scripts/cluster.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1; kubelet >= 1.35 refuses it otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
containerRuntimeEndpoint: unix://$sock
failSwapOn: false
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $dir/certs/ca.crt
authorization:
  mode: Webhook
# Free disk on these machines has been seen very low: no eviction ("0%"
# turns a signal off) and no image garbage collection short of a full disk.
evictionHard:
  memory.available: "0%"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: $dir/kubelet/resolv.conf
# No cluster DNS runs (Fast Sandbox needs none: pods reach the API server
# and the controller by the Service environment variables). The node's
# address answers port 53 with a refusal, so a lookup fails at once, and
# the kubelet does not warn of a missing cluster DNS on every pod sync.
clusterDNS:
- $NODE_IP
podLogsDir: $dir/kubelet/pod-logs
volumePluginDir: $dir/kubelet/volume-plugins
clusterDomain: cluster.local
EOF
	spawn kubelet "$kube_bin/kubelet" --config "$dir/kubelet/config.yaml" \
		--kubeconfig "$dir/kubeconfigs/kubelet" --root-dir "$dir/kubelet/root" --cert-dir "$dir/kubelet/pki" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1
}

node_ready() {
	[[ $(k get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

default_sa() { k -n default get serviceaccount default >/dev/null 2>&1; }

save_sysctls() {
	# The first cluster records the host's own values; one started while
	# another runs would only see the kubelet's. noclobber: of two starting
	# at once, one writes.
	local s
	for s in "${KUBELET_SYSCTLS[@]}"; do
		echo "$s=$(cat "/proc/sys/$s")"
	done | (set -C && cat >"$SYSCTLS_FILE") 2>/dev/null || true
}

# first_token prints the first token of a token file (one a line).
first_token() { grep -v '^[[:space:]]*\(#\|$\)' "$1" | head -n 1 | tr -d '[:space:]'; }

# rewrite_host_paths rewrites the base's host paths into this run's
# directory, wherever they appear (hostPath, mountPath, flags): the agent
# sees them at identical paths, and clusters on one machine never share
# them. containerd's root is among them: the containerd client in the
# agent mounts snapshots (to read an image's users, say) by the paths the
# daemon gives.
rewrite_host_paths() {
	local h=$dir/host b='\(^\|[^A-Za-z0-9_./-]\)' e='\([^A-Za-z0-9_.-]\|$\)'
	sed -e "s#$b/run/containerd/containerd\.sock$e#\1$sock\2#g" \
		-e "s#$b/var/lib/containerd$e#\1$dir/containerd/root\2#g" \
		-e "s#$b/var/log/fsb$e#\1$h/log\2#g" \
		-e "s#$b/var/log/fsb-pools$e#\1$h/log-pools\2#g" \
		-e "s#$b/run/fsb$e#\1$h/run\2#g" \
		-e "s#$b/var/lib/fsb/bin$e#\1$h/bin\2#g"
}

# render_deploy writes the Secrets (scripts/deploy-secrets.sh) and the
# run's kustomization over the overlay (the image tag, the Secrets), and
# renders it with this run's host paths into DIR/manifests.yaml. It needs
# no API server, so it runs while the daemons start.
render_deploy() {
	local overlay=$1 tag=$2 rel
	# What it writes holds the tokens and keys (the rendered Secrets). It
	# runs in a subshell of its own (up starts it in the background).
	umask 077
	[[ -x $repo_root/scripts/deploy-secrets.sh ]] || die "scripts/deploy-secrets.sh is missing: it writes the Secrets the overlay needs"
	"$repo_root/scripts/deploy-secrets.sh" "$dir/secrets" "$FSB_NAMESPACE" >"$dir/deploy-secrets.log" 2>&1 ||
		{ cat "$dir/deploy-secrets.log" >&2; die "scripts/deploy-secrets.sh failed"; }
	mkdir -p "$dir/overlay" "$dir/host/log" "$dir/host/run/link" "$dir/host/bin"
	rel=$(realpath --relative-to="$dir/overlay" "$overlay")
	cat >"$dir/overlay/kustomization.yaml" <<EOF
# Written by scripts/cluster.sh: $overlay with this run's images and Secrets.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $rel
images:
- name: localhost/fsb/fsb
  newTag: "$tag"
generatorOptions:
  disableNameSuffixHash: true
secretGenerator:
- name: fsb-controller
  namespace: $FSB_NAMESPACE
  files:
  - user-tokens=../secrets/user-tokens
  - agent-token=../secrets/agent-token
  - janitor-token=../secrets/janitor-token
  - tls.crt=../secrets/controller.crt
  - tls.key=../secrets/controller.key
  - ca.crt=../secrets/ca.crt
- name: fsb-agent
  namespace: $FSB_NAMESPACE
  files:
  - token=../secrets/agent-token
  - tls.crt=../secrets/agent.crt
  - tls.key=../secrets/agent.key
- name: fsb-janitor
  namespace: $FSB_NAMESPACE
  files:
  - token=../secrets/janitor-token
  - ca.crt=../secrets/ca.crt
EOF
	# kustomize cannot rewrite a string wherever it appears, so the host
	# paths are rewritten in its output, which is what gets applied. The
	# Secrets' files are beside the overlay, not below it: hence no load
	# restrictions.
	"$kubectl" kustomize --load-restrictor LoadRestrictionsNone "$dir/overlay" >"$dir/overlay/rendered.yaml" || die "kubectl kustomize $dir/overlay failed"
	rewrite_host_paths <"$dir/overlay/rendered.yaml" >"$dir/manifests.yaml"
}

# deploy applies what render_deploy wrote and waits until the controller's
# replicas, the agent and the janitor are Ready and a leader serves.
deploy() {
	local fastpath_port=$1 s
	# The CRDs must be Established before objects of their kinds apply: a
	# second pass takes what the first could not.
	if ! k apply --server-side --force-conflicts -f "$dir/manifests.yaml" >"$dir/apply.log" 2>&1; then
		k wait --for condition=Established --timeout 30s crd --all >/dev/null 2>&1 || true
		k apply --server-side --force-conflicts -f "$dir/manifests.yaml" >>"$dir/apply.log" 2>&1 ||
			{ tail -n 20 "$dir/apply.log" >&2; die "kubectl apply of $dir/manifests.yaml failed"; }
	fi
	phase "deploy/ applied"
	local deadline=$((SECONDS + DEPLOY_TIMEOUT))
	until fsb_ready; do
		if ((SECONDS >= deadline)); then
			log "Fast Sandbox was not Ready within ${DEPLOY_TIMEOUT}s:"
			k -n "$FSB_NAMESPACE" get pods -o wide >&2 || true
			k -n "$FSB_NAMESPACE" get events --sort-by .lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
			pod_logs
			return 1
		fi
		sleep 0.5
	done
	phase "fsb pods ready"
	local ip
	ip=$(k -n "$FSB_NAMESPACE" get service fsb-controller -o 'jsonpath={.spec.clusterIP}') ||
		die "no fsb-controller Service in $FSB_NAMESPACE"
	forward fastpath "$fastpath_port" "$ip:9090" || die "could not start the fast-path forwarder"
	s=https://127.0.0.1:$(<"$dir/fastpath.port")
	# A leader serves once its pod carries the label the Service selects
	# and answers there.
	deadline=$((SECONDS + DEPLOY_TIMEOUT))
	until FSB_SERVER=$s FSB_TOKEN=$(first_token "$dir/secrets/user-tokens") FSB_CA_FILE=$dir/secrets/ca.crt \
		timeout 10 "${FSB_BINARY:-$repo_root/bin/fsb}" ctl list >/dev/null 2>"$dir/ctl.log"; do
		if ((SECONDS >= deadline)); then
			log "no leader served on $s within ${DEPLOY_TIMEOUT}s: $(tail -n 3 "$dir/ctl.log")"
			return 1
		fi
		sleep 0.5
	done
	phase "a leader serves"
}

# pod_logs prints the last lines of every container of the pods that are
# not Ready, and of their previous run when they restarted.
pod_logs() {
	local pod
	for pod in $(k -n "$FSB_NAMESPACE" get pods -o 'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | awk '$2 != "True" { print $1 }'); do
		log "last lines of pod $pod:"
		k -n "$FSB_NAMESPACE" logs "$pod" --all-containers --tail 15 >&2 2>&1 || true
		k -n "$FSB_NAMESPACE" logs "$pod" --all-containers --tail 15 --previous >&2 2>/dev/null || true
	done
}

# fsb_ready succeeds when both controller replicas, the agent DaemonSet and
# the janitor DaemonSet report every pod Ready.
fsb_ready() {
	local out
	out=$(k -n "$FSB_NAMESPACE" get deployment/fsb-controller daemonset/fsb-agent daemonset/fsb-janitor \
		-o 'jsonpath={.items[0].status.readyReplicas}/{.items[0].spec.replicas} {.items[1].status.numberReady}/{.items[1].status.desiredNumberScheduled} {.items[2].status.numberReady}/{.items[2].status.desiredNumberScheduled}' 2>/dev/null) || return 1
	[[ $out =~ ^([0-9]+)/([0-9]+)\ ([0-9]+)/([0-9]+)\ ([0-9]+)/([0-9]+)$ ]] || return 1
	((BASH_REMATCH[1] == BASH_REMATCH[2] && BASH_REMATCH[2] >= 2 &&
		BASH_REMATCH[3] == BASH_REMATCH[4] && BASH_REMATCH[4] >= 1 &&
		BASH_REMATCH[5] == BASH_REMATCH[6] && BASH_REMATCH[6] >= 1))
}

write_env() {
	local deployed=$1 tmp=$dir/env.tmp
	# It holds a user token.
	rm -f "$tmp"
	(umask 077 && : >"$tmp")
	{
		echo "# Written by scripts/cluster.sh; source it to use this cluster."
		printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
		printf 'export FSB_KUBECTL=%q\n' "$kubectl"
		if $deployed; then
			printf 'export FSB_SERVER=%q\n' "https://127.0.0.1:$(<"$dir/fastpath.port")"
			printf 'export FSB_TOKEN=%q\n' "$(first_token "$dir/secrets/user-tokens")"
			printf 'export FSB_CA_FILE=%q\n' "$dir/secrets/ca.crt"
		fi
		printf 'export FSB_CLUSTER_DIR=%q\n' "$dir"
		printf 'export FSB_CLUSTER_NETNS=%q\n' "$netns"
		printf 'export FSB_CLUSTER_CONTAINERD=%q\n' "$sock"
		printf 'export FSB_CLUSTER_NAMESPACE=%q\n' "$FSB_NAMESPACE"
	} >"$tmp"
	mv -f "$tmp" "$dir/env"
}

# up_failed removes what a failed up left, unless FSB_CLUSTER_KEEP=1 asks
# to keep it for a look.
up_failed() {
	# The image build and the rendering may still run in the background:
	# they write into DIR, and would outlive up and put files back into
	# DIR after down removed it.
	wait || true
	if [[ ${FSB_CLUSTER_KEEP:-} == 1 ]]; then
		log "up failed; kept $dir for a look (FSB_CLUSTER_KEEP=1): '$0 down $dir' removes it"
		return
	fi
	log "up failed; removing $dir (FSB_CLUSTER_KEEP=1 keeps it)"
	cmd_down >&2 || true
}

cmd_up() {
	local overlay=$repo_root/deploy/overlays/local api_port='' fastpath_port='' tag deployed=true
	while (($#)); do
		case $1 in
		--overlay) overlay=$2 ;;
		--api-port) api_port=$2 ;;
		--fastpath-port) fastpath_port=$2 ;;
		*) usage ;;
		esac
		shift 2 || usage
	done
	if [[ $overlay == none ]]; then
		deployed=false
	else
		overlay=$(realpath -e -- "$overlay") || die "no overlay $overlay"
	fi
	((EUID == 0)) || die "must run as root (network namespace, containerd, kubelet)"
	if [[ -e $dir ]] && [[ -n $(ls -A "$dir" 2>/dev/null) ]]; then
		die "$dir exists and is not empty: run '$0 down $dir' first, or name a new directory"
	fi
	started_ms=$(now_ms)
	install_packages
	set_paths
	find_kube_bin
	for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
		[[ -x $kube_bin/$c ]] || die "no $c in ${kube_bin:-the cache}: run 'scripts/kube.sh build'"
	done
	[[ -x ${FSB_BINARY:-$repo_root/bin/fsb} && -x ${FSB_HELPER_BINARY:-$repo_root/bin/fsb-helper} ]] ||
		die "bin/fsb or bin/fsb-helper is missing: run 'make build'"
	tag=$(cd "$repo_root" && git describe --tags --always --dirty 2>/dev/null || echo dev)
	# DIR holds the cluster's keys and the Secrets it renders: root's
	# only, also when up makes it (make cluster-up's .fsb/cluster).
	mkdir -p "$dir"
	chmod 0700 "$dir"
	mkdir -p "$dir/bin" "$dir/kubeconfigs"
	touch "$dir/$MARKER"
	# From here a failure stops and removes what was started; its logs are
	# printed first.
	trap 'rc=$?; ((rc == 0)) || up_failed' EXIT
	ip netns list | grep -qw "^$netns" && die "network namespace $netns of $dir already exists: run '$0 down $dir' first"
	save_sysctls
	setup_netns
	write_certs
	forward apiserver "$api_port" "$NODE_IP:6443" || die "could not start the API server forwarder"
	write_kubeconfig "$dir/kubeconfig" "https://127.0.0.1:$(<"$dir/apiserver.port")" admin
	for c in controller-manager scheduler kubelet proxy; do
		write_kubeconfig "$dir/kubeconfigs/$c" "https://$NODE_IP:6443" "$c"
	done
	write_containerd_config "$tag"
	make_cgroup_root
	phase "netns, certificates"

	build_images "$tag" >"$dir/images.log" 2>&1 &
	local images_pid=$! render_pid=
	if $deployed; then
		render_deploy "$overlay" "$tag" >"$dir/render.log" 2>&1 &
		render_pid=$!
	fi
	start_etcd
	start_apiserver
	spawn containerd containerd --config "$dir/containerd/config.toml"
	wait_for containerd containerd_answers || exit 1
	start_kubelet
	wait_for etcd etcd_healthy || exit 1
	wait_for kube-apiserver apiserver_ready || exit 1
	phase "API server ready"
	start_control_plane
	if ! wait "$images_pid"; then
		cat "$dir/images.log" >&2
		die "building the images failed"
	fi
	import_images
	phase "images imported"
	wait_for kubelet node_ready || exit 1
	phase "node Ready"
	if $deployed; then
		# No wait for the controller-manager here: the pods' readiness
		# below waits for what they need of it (their tokens' CA).
		if ! wait "$render_pid"; then
			cat "$dir/render.log" >&2
			die "rendering the overlay $overlay failed"
		fi
		deploy "$fastpath_port" || exit 1
	else
		wait_for kube-controller-manager default_sa || exit 1
		phase "controller-manager ready"
	fi
	write_env "$deployed"
	trap - EXIT
	log "$(printf '%-24s at %6s s' "up" "$(elapsed "$started_ms")"): source $dir/env"
}

# stop_one NAME stops DIR's NAME daemon and its process group (SIGTERM,
# SIGKILL after STOP_TIMEOUT) and waits until it is gone.
stop_one() {
	local name=$1 pid deadline
	pid=$(pid_of "$name") || {
		rm -f "$dir/$name.pid"
		return 0
	}
	# The group: a forwarder's connections are its forked children.
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + STOP_TIMEOUT))
	while alive "$pid"; do
		if ((SECONDS >= deadline)); then
			log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing it"
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + 5))
			while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
			break
		fi
		sleep 0.05
	done
	rm -f "$dir/$name.pid"
}

# pod_netns prints the pod network namespaces (names in /run/netns) the
# node's containerd made: the sandbox containers' specs name them.
pod_netns() {
	containerd_answers || return 0
	local c
	for c in $(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null); do
		ctr --address "$sock" -n k8s.io containers info "$c" 2>/dev/null |
			grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' || true
	done | sort -u | xargs -r -n1 basename
}

# delete_tasks kills and deletes every task and container of every
# namespace of the node's containerd: the pods' and the sandboxes the
# agent made. Shims outlive their daemon otherwise. Kills are sent to all
# first and the deletes wait until the tasks stopped: a delete of a task
# still running fails, and retrying one by one costs seconds each.
delete_tasks() {
	containerd_answers || return 0
	local ns id ids running deadline
	for ns in $(ctr -a "$sock" namespaces ls -q 2>/dev/null); do
		ids=$(ctr -a "$sock" -n "$ns" tasks ls -q 2>/dev/null) || true
		for id in $ids; do
			ctr -a "$sock" -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 &
		done
		wait
		deadline=$((SECONDS + STOP_TIMEOUT))
		while running=$(ctr -a "$sock" -n "$ns" tasks ls 2>/dev/null | awk 'NR > 1 && $3 != "STOPPED"' | wc -l) &&
			((running > 0 && SECONDS < deadline)); do
			sleep 0.1
		done
		for id in $ids; do
			ctr -a "$sock" -n "$ns" tasks delete "$id" >/dev/null 2>&1 ||
				ctr -a "$sock" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
		done
		ids=$(ctr -a "$sock" -n "$ns" containers ls -q 2>/dev/null) || true
		# shellcheck disable=SC2086 # one word per ID
		[[ -z $ids ]] || ctr -a "$sock" -n "$ns" containers delete $ids >/dev/null 2>&1 || true
	done
}

# unmount_dir unmounts everything mounted under DIR, deepest first: the
# kubelet's volumes, containerd's rootfs and shm mounts.
unmount_dir() {
	local m
	for _ in 1 2 3; do
		m=$(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
		[[ -n $m ]] || return 0
		while read -r p; do
			p=$(printf '%b' "$p") # mountinfo escapes spaces as \040
			umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || true
		done <<<"$m"
	done
	log "warning: mounts remain under $dir"
}

# remove_cgroups removes the cgroup root of the cluster, deepest first, in
# every hierarchy.
remove_cgroups() {
	[[ -n $cgroup_root ]] || return 0
	local h
	for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
		[[ -d $h$cgroup_root ]] || continue
		find "$h$cgroup_root" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[[ -d $h$cgroup_root ]] && log "warning: could not remove the cgroup $h$cgroup_root"
	done
	return 0
}

# other_clusters succeeds when a cluster of another directory runs.
other_clusters() {
	ip netns list 2>/dev/null | awk '{ print $1 }' | grep -v -x "$netns" | grep -q '^fsbc-'
}

# restore_host puts back the kernel tunables up found and removes the one
# directory every kubelet makes on the host whatever its flags (its device
# plugin socket), unless another cluster runs: its kubelet uses both.
restore_host() {
	other_clusters && return 0
	rm -f /var/lib/kubelet/device-plugins/kubelet.sock
	rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
	[[ -r $SYSCTLS_FILE ]] || return 0
	local s v
	while IFS='=' read -r s v; do
		[[ -n $s && -w /proc/sys/$s ]] || continue
		[[ $(<"/proc/sys/$s") == "$v" ]] || echo "$v" >"/proc/sys/$s" 2>/dev/null || true
	done <"$SYSCTLS_FILE"
	rm -f "$SYSCTLS_FILE"
}

cmd_down() {
	[[ -d $dir ]] || return 0
	# An empty directory is what a start that failed at once leaves.
	rmdir -- "$dir" 2>/dev/null && return 0
	[[ -e $dir/$MARKER ]] || die "$dir is not a cluster.sh directory (no $MARKER); not touching it"
	local t0 pods containers n data
	t0=$(now_ms)
	set_paths
	stop_one fastpath
	stop_one apiserver
	# The kubelet first: it would restart what delete_tasks kills.
	stop_one kubelet
	stop_one kube-proxy
	stop_one kube-scheduler
	stop_one kube-controller-manager
	pods=$(pod_netns)
	containerd_answers && containers=$(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null) || containers=
	delete_tasks
	stop_one containerd
	stop_one kube-apiserver
	stop_one etcd
	for n in $pods; do
		ip netns delete "$n" 2>/dev/null || true
	done
	# The CNI cache of this cluster's network (its name carries the ID)
	# and of the loopback network containerd gives every pod.
	rm -f /var/lib/cni/results/"fsbc-$id"-* 2>/dev/null || true
	for n in $containers; do
		rm -f "/var/lib/cni/results/cni-loopback-$n-lo"
	done
	# The kubelet links every container's log into /var/log/containers.
	find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete 2>/dev/null || true
	unmount_dir
	remove_cgroups
	ip netns delete "$netns" 2>/dev/null || true
	restore_host
	if [[ -r $dir/etcd-data ]]; then
		data=$(<"$dir/etcd-data")
		[[ $data == /dev/shm/fsbc-etcd.* ]] && rm -rf -- "$data"
	fi
	rm -rf -- "$dir"
	log "$(printf '%-24s in %6s s' "down" "$(elapsed "$t0")"): $dir removed"
}

main() {
	(($# >= 2)) && [[ -n $2 ]] || usage
	local cmd=$1
	dir=$(realpath -m -- "$2")
	shift 2
	[[ $dir != / ]] || die "refusing to use / as the cluster directory"
	case $cmd in
	up) cmd_up "$@" ;;
	down) (($# == 0)) || usage && cmd_down ;;
	*) usage ;;
	esac
}

main "$@"
