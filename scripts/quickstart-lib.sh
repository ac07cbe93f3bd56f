# shellcheck shell=bash disable=SC2154 # fsb_dir and fsb come from the sourcing script
# Functions scripts/up.sh and scripts/down.sh share; sourced by both, after
# they set repo_root, fsb_dir, fsb and log.

readonly STOP_TIMEOUT=10 # seconds between SIGTERM and SIGKILL

# ours NAME prints the PID in .fsb/NAME.pid if that process is alive and is
# `bin/fsb NAME` of this checkout; else it fails.
ours() {
	local name=$1 pid
	local -a argv
	[[ -r $fsb_dir/$name.pid ]] || return 1
	pid=$(<"$fsb_dir/$name.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	mapfile -d '' -t argv 2>/dev/null <"/proc/$pid/cmdline" || return 1
	((${#argv[@]} >= 2)) && [[ ${argv[0]} == "$fsb" && ${argv[1]} == "$name" ]] || return 1
	echo "$pid"
}

# stop NAME stops bin/fsb NAME of this checkout (SIGTERM, SIGKILL after
# STOP_TIMEOUT) and removes its PID file.
stop() {
	local name=$1 pid deadline
	if pid=$(ours "$name"); then
		log "stopping the $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		deadline=$((SECONDS + STOP_TIMEOUT))
		while kill -0 "$pid" 2>/dev/null; do
			if ((SECONDS >= deadline)); then
				log "the $name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing it"
				kill -KILL "$pid" 2>/dev/null || true
				# Gone before a new one starts: the agent's log-dir lock
				# is released when the process is (bounded: a zombie
				# nobody reaps answers kill -0 but holds no lock).
				deadline=$((SECONDS + 5))
				while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
				break
			fi
			sleep 0.1
		done
	fi
	rm -f "$fsb_dir/$name.pid"
}
