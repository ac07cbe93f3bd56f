#!/usr/bin/env bash
# chaos.sh fuzzes every Fuzz target of the module for a bounded time each
# and prints the executions per target, then runs the long fault suite and
# churn test (FSB_CHAOS=1) on a rig of their own and prints their figures.
# `make test` runs only the committed seed corpora and the short suites;
# this explores beyond them. FUZZTIME (default 60s) bounds each target
# (0 skips the fuzzing); new failing inputs land in the package's
# testdata/fuzz/ to be committed with their fix.
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
[ "$fuzztime" = 0 ] && targets=()
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

# The long fault suite and churn test: the default timeouts where a run can
# afford them, more load and more cycles (see docs/development.md).
echo "== fault suite and churn (FSB_CHAOS=1)"
out=$(mktemp)
start=$SECONDS
if FSB_CHAOS=1 scripts/test.sh -race -count=1 -timeout 60m -v -run 'TestFaultSuite|TestChurn' . 2>&1 | tee "$out"; then
	e2e=ok
else
	e2e=FAILED rc=1
fi
# The tests' table lines, once each (the fault suite prints its rows as
# each fault ends and again at its end), in their order.
figures=$(grep -iE '^\s+[a-z_]+_test\.go:[0-9]+: (fault=|churn|cycle|load:|fault suite took)' "$out" |
	sed -E 's/^\s+[a-z_]+_test\.go:[0-9]+: /  /' | awk '!seen[$0]++' || true)
rm -f "$out"

echo
if [ ${#summary[@]} -gt 0 ]; then
	echo "== chaos summary ($fuzztime per target)"
	printf '%s\n' "${summary[@]}"
fi
echo "== fault suite and churn: $e2e in $((SECONDS - start))s"
[ -n "$figures" ] && printf '%s\n' "$figures"
exit $rc
