#!/usr/bin/env bash
# Runs every fuzz target of the module (each `func Fuzz...` of a _test.go
# file) with go test -fuzz for $FUZZTIME (default 10s), one after the other,
# and prints the executions and the outcome of each, then a summary.
#
#   FUZZTIME=10m scripts/fuzz.sh        what make fuzz runs
#   FUZZ_TARGETS='PubAPI|Verify' scripts/fuzz.sh   only the targets whose names match
#   FUZZ_PARALLEL=1 scripts/fuzz.sh     one fuzzing worker (default: one per CPU)
#
# Go before 1.27 has a race in its fuzzing coordinator (go.dev/issue/75804):
# when -fuzztime runs out while a worker is mid-call, the target FAILs with a
# bare "context deadline exceeded" and no failing input (seen in CI on
# go1.26.8, FuzzParse of internal/rules, after 10 s). So the fuzzing runs on
# $FUZZ_TOOLCHAIN (go1.27.3, which has the fix; the go command fetches it
# from the module proxy, 76 MB, once per machine) when the local Go is
# older; the module itself still builds and tests on its go.mod's Go.
#
# A target that finds a failing input writes it to its package's
# testdata/fuzz/<target>/ (commit it with the fix: go test then replays it
# with the seed corpus) and makes the script exit 1 after the others ran.
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-10s}
FUZZ_TARGETS=${FUZZ_TARGETS:-.}
GO=${GO:-go}
FUZZ_TOOLCHAIN=${FUZZ_TOOLCHAIN:-go1.27.3}
local_go=$("$GO" env GOVERSION)
if [ "$(printf '%s\n' "$local_go" go1.27.0 | sort -V | head -1)" != go1.27.0 ]; then
	export GOTOOLCHAIN=$FUZZ_TOOLCHAIN
	echo "fuzz: $local_go has go.dev/issue/75804; fuzzing with $FUZZ_TOOLCHAIN"
	"$GO" version
fi
parallel=()
# go test's own -timeout (10m by default) must outlast -fuzztime: give it
# FUZZTIME plus 10 minutes for the build and the seed corpus.
timeout=0
case "$FUZZTIME" in
*[0-9]s) timeout=$((${FUZZTIME%s} + 600))s ;;
*[0-9]m) timeout=$((${FUZZTIME%m} * 60 + 600))s ;;
*[0-9]h) timeout=$((${FUZZTIME%h} * 3600 + 600))s ;;
esac
[ -n "${FUZZ_PARALLEL:-}" ] && parallel=(-parallel "$FUZZ_PARALLEL")
log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT

targets=$(git ls-files '*_test.go' | xargs grep -H '^func Fuzz[A-Za-z0-9_]*(f \*testing.F)' |
	sed -E 's#^(.*)/[^/]*_test.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#; s#^[^/ ]*_test.go:func (Fuzz[A-Za-z0-9_]*)\(.*#. \1#' |
	grep -E " [^ ]*($FUZZ_TARGETS)[^ ]*$" | sort)
if [ -z "$targets" ]; then
	echo "fuzz: no target matches FUZZ_TARGETS=$FUZZ_TARGETS" >&2
	exit 2
fi

failed=0
summary=()
while read -r dir target; do
	log="$log_dir/$target.log"
	echo "== fuzz $target (./$dir) for $FUZZTIME"
	start=$(date +%s)
	if "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -timeout "$timeout" "${parallel[@]}" "./$dir" >"$log" 2>&1; then
		outcome=ok
	else
		outcome=FAILED
		failed=1
		grep -v '^fuzz: elapsed' "$log" | tail -40
	fi
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	line=$(printf '%-28s %-22s %10s execs %6ss  %s' "$target" "./$dir" "${execs:-0}" "$(($(date +%s) - start))" "$outcome")
	echo "$line"
	summary+=("$line")
done <<<"$targets"

echo
echo "== fuzz summary (FUZZTIME=$FUZZTIME)"
printf '%s\n' "${summary[@]}"
exit $failed
