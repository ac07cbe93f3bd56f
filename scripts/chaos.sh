#!/usr/bin/env bash
# chaos.sh fuzzes every Fuzz target of the module for a bounded time each
# and prints the executions per target. `make test` runs only the committed
# seed corpora; this explores beyond them. FUZZTIME (default 60s) bounds
# each target; new failing inputs land in the package's testdata/fuzz/ to
# be committed with their fix.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-60s}

# "<package dir> <target>" for every func FuzzXxx(f *testing.F).
mapfile -t targets < <(git grep -n --no-color -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' -- '*_test.go' |
	sed -E 's#^(.*)/[^/]+_test\.go:[0-9]+:func (Fuzz[A-Za-z0-9_]+)\(.*#\1 \2#; s#^[^/ ]+_test\.go:[0-9]+:func (Fuzz[A-Za-z0-9_]+)\(.*#. \1#' | sort -u)
if [ ${#targets[@]} -eq 0 ]; then
	echo "chaos: no fuzz targets found" >&2
	exit 1
fi

summary=()
rc=0
for t in "${targets[@]}"; do
	dir=${t% *} name=${t#* }
	echo "== $name (./$dir, $fuzztime)"
	out=$(mktemp)
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir" 2>&1 | tee "$out"; then
		status=ok
	else
		status=FAILED rc=1
	fi
	execs=$(grep -oE 'execs: [0-9]+' "$out" | tail -1 | grep -oE '[0-9]+' || echo 0)
	rm -f "$out"
	summary+=("$(printf '%-22s %-24s %12s execs  %s' "$name" "./$dir" "$execs" "$status")")
done
echo
echo "== chaos summary ($fuzztime per target)"
printf '%s\n' "${summary[@]}"
exit $rc
