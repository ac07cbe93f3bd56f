#!/usr/bin/env bash
# deploy-secrets.sh writes the tokens and certificates of a Fast Sandbox
# installation into OUTDIR, from which a kustomize overlay makes the Secrets
# fsb-controller, fsb-agent and fsb-janitor (deploy/kustomization.yaml does).
#
#   scripts/deploy-secrets.sh [--force] OUTDIR [NAMESPACE]
#
# NAMESPACE (default fsb-system) is where the controller's Service lives: its
# names go into the controller's certificate. OUTDIR receives, each file 0600:
#   user-tokens      tokens users present to the controller (one, random)
#   agent-token      the token the controller presents to the agents
#   janitor-token    the token the janitor presents to the controller
#   ca.crt, ca.key   a CA (EC P-256, ten years) signing the two below
#   controller.crt/.key  the controller's serving certificate: DNS
#                    fsb-controller, fsb-controller.NS, fsb-controller.NS.svc,
#                    fsb-controller.NS.svc.cluster.local, localhost; IP 127.0.0.1
#   agent.crt/.key   the agents' serving certificate, DNS fsb-agent.NS.svc: the
#                    controller dials agents by pod IP and verifies that name
#                    (its --agent-server-name)
# A file that exists is kept (run it again safely; a running installation
# keeps its tokens); --force writes everything anew. Needs openssl.
set -euo pipefail

die() { echo "deploy-secrets.sh: $*" >&2; exit 1; }

force=false
args=()
for a in "$@"; do
	case $a in
	--force) force=true ;;
	-h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown option $a (usage: deploy-secrets.sh [--force] OUTDIR [NAMESPACE])" ;;
	*) args+=("$a") ;;
	esac
done
((${#args[@]} >= 1 && ${#args[@]} <= 2)) || die "usage: deploy-secrets.sh [--force] OUTDIR [NAMESPACE]"
out=${args[0]}
ns=${args[1]:-fsb-system}
[[ $ns =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "namespace $ns is not a DNS label"
command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"

umask 077
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d "$out/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# keep FILE: true when FILE is there and is to be kept.
keep() { [[ $force == false && -s $out/$1 ]]; }

# place NAME moves a finished file from tmp into out, 0600.
place() {
	chmod 600 "$tmp/$1"
	mv -f "$tmp/$1" "$out/$1"
}

# token FILE writes a random token (43 characters of base64url) into FILE.
token() {
	keep "$1" && return 0
	openssl rand 32 | openssl base64 -A | tr '+/' '-_' | tr -d '=' >"$tmp/$1"
	echo >>"$tmp/$1"
	place "$1"
}

# cert NAME CN SANS signs NAME.crt/.key (a server certificate) with the CA.
cert() {
	local name=$1 cn=$2 sans=$3
	keep "$name.crt" && keep "$name.key" && ! $ca_new && return 0
	openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/$name.ec" 2>/dev/null
	# PKCS#8, the form Go and every other reader accept.
	openssl pkcs8 -topk8 -nocrypt -in "$tmp/$name.ec" -out "$tmp/$name.key"
	openssl req -new -key "$tmp/$name.key" -subj "/CN=$cn" -out "$tmp/$name.csr" 2>/dev/null
	printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=serverAuth" "subjectAltName=$sans" >"$tmp/$name.ext"
	openssl x509 -req -in "$tmp/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
		-CAserial "$tmp/ca.srl" -sha256 -days 3650 -extfile "$tmp/$name.ext" -out "$tmp/$name.crt" 2>/dev/null
	place "$name.key"
	place "$name.crt"
}

token user-tokens
token agent-token
token janitor-token

# A new CA signs new certificates: old ones would no longer verify.
ca_new=false
if ! keep ca.crt || ! keep ca.key; then
	openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.ec" 2>/dev/null
	openssl pkcs8 -topk8 -nocrypt -in "$tmp/ca.ec" -out "$tmp/ca.key"
	openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days 3650 -subj "/CN=fsb-ca.$ns" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$tmp/ca.crt" 2>/dev/null
	place ca.key
	place ca.crt
	ca_new=true
fi
svc=fsb-controller
cert controller "$svc.$ns.svc" \
	"DNS:$svc,DNS:$svc.$ns,DNS:$svc.$ns.svc,DNS:$svc.$ns.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
cert agent "fsb-agent.$ns.svc" "DNS:fsb-agent.$ns.svc"

echo "deploy-secrets.sh: $out holds the tokens and certificates for namespace $ns"
