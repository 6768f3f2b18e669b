#!/usr/bin/env bash
# The kernel matrix: the device suite on several Debian kernels, one after
# another (each VM takes both cores), then a summary table.
#
#   tests/vm/matrix.sh [SUITE...]          (make vmtest-matrix)
#
# Default suites: bookworm (6.1, the host's), bullseye (5.10),
# bookworm-backports (6.12), sid (7.x), and experimental when it carries a
# newer kernel series than sid.  The default kernel (bookworm) runs the
# full fuzz and stress volume; the others run the whole suite with a
# lighter stress test (MMAPDEV_MATRIX_STRESS_SECONDS, default 8 s instead
# of 30 s), which keeps a cold matrix within its CI budget: each kernel
# must still pass every test.  Exits non-zero if any kernel fails, after
# running them all.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../debian/lib.sh
. "$REPO/tests/debian/lib.sh"
DEBIAN_LOG_TAG=vmtest-matrix
DEFAULT_SUITE=bookworm

# X.Y of a Debian kernel version (7.3~rc7-1~exp1 -> 7.3).
series() { sed -E 's/^([0-9]+\.[0-9]+).*/\1/' <<<"$1"; }

default_suites() {
	local sid exp
	echo bookworm bullseye bookworm-backports sid
	debian_apt_update sid
	debian_apt_update experimental
	sid=$(series "$(debian_version_in sid linux-image-amd64)")
	exp=$(series "$(debian_version_in experimental linux-image-amd64)")
	if [[ -n $exp && $(printf '%s\n%s\n' "$sid" "$exp" | sort -V | tail -n1) != "$sid" ]]; then
		echo experimental
	else
		debian_log "experimental ($exp) is not newer than sid ($sid): skipped"
	fi
}

main() {
	local suites failed=() suite start=$SECONDS light
	if (($#)); then
		suites=("$@")
	else
		read -ra suites <<<"$(default_suites | tr '\n' ' ')"
	fi
	light=${MMAPDEV_MATRIX_STRESS_SECONDS:-8}
	for suite in "${suites[@]}"; do
		debian_log "=== $suite"
		if [[ $suite == "$DEFAULT_SUITE" ]]; then
			"$REPO/tests/vm/run.sh" --kernel "$suite"
		else
			MMAPDEV_STRESS_SECONDS=${MMAPDEV_STRESS_SECONDS:-$light} \
				"$REPO/tests/vm/run.sh" --kernel "$suite"
		fi || failed+=("$suite")
	done
	{
		printf 'suite\tkernel\tcompiler\twarnings\ttests passed\tseconds\tverdict\n'
		for suite in "${suites[@]}"; do
			cat "$REPO/tests/vm/out/$suite/summary.tsv" 2>/dev/null ||
				printf '%s\t?\t?\t?\t?\t?\tFAIL\n' "$suite"
		done
	} | awk -F'\t' '{ for (i = 1; i <= NF; i++) { cell[NR, i] = $i
			if (length($i) > w[i]) w[i] = length($i) } n = NF }
		END { for (r = 1; r <= NR; r++) { line = ""
			for (i = 1; i <= n; i++) line = line sprintf("%-*s  ", w[i], cell[r, i])
			sub(/ +$/, "", line); print line } }' | tee "$REPO/tests/vm/out/matrix.txt"
	debian_log "kernel matrix: $((SECONDS - start)) s"
	if ((${#failed[@]})); then
		# Last, so that a log cut to its tail still names the failing tests.
		for suite in "${failed[@]}"; do
			grep -E '^(FAILED|ERROR) ' "$REPO/tests/vm/out/$suite/results/pytest.log" 2>/dev/null |
				sed "s/^/$suite: /" | cut -c1-300 || true
		done
		debian_log "FAIL: ${failed[*]}"
		exit 1
	fi
}

main "$@"
