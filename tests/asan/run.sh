#!/usr/bin/env bash
# make test-asan: build pymmapdev._core with AddressSanitizer + UBSan and run
# the host suite under it (python itself is not instrumented, so libasan is
# LD_PRELOADed).  Every report goes to a log file; the run fails on any
# ASan/UBSan error, and on any leak whose allocation stack passes through
# our extension (the interpreter's own exit-time leaks are not ours).
# The instrumented build lives in a private directory put first on
# PYTHONPATH (tests hand the same path to their child processes); the
# normal in-place build is not touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
CC=${CC:-gcc}
work=$(mktemp -d /tmp/pymmapdev-asan.XXXXXX)
logs=$work/logs
mkdir -p "$logs"
chmod 755 "$work"   # tests run children as nobody; they must import from here

# PYMMAPDEV_NO_FIXUPS: the single-word accesses and read-modify-writes run
# as C bodies under fault_run() (fault.c), the build every architecture but
# x86-64 gets; the sanitizers can see into those, not into the x86-64 fixup
# instructions (inline asm), which the normal host suite runs.
CFLAGS="-DPYMMAPDEV_NO_FIXUPS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1" \
LDFLAGS="-fsanitize=address,undefined" \
	$PYTHON setup.py -q build --build-lib "$work/lib" --build-temp "$work/tmp" --force \
	2>&1 | grep -v -i -e warn -e "no previously-included" || true
grep -q __asan_init "$work"/lib/pymmapdev/_core*.so ||
	{ echo "test-asan: extension is not instrumented" >&2; exit 1; }
grep -q pymmapdev_fixups "$work"/lib/pymmapdev/_core*.so &&
	{ echo "test-asan: the build still has the x86-64 fixup table" >&2; exit 1; }
export PYTHONPATH="$work/lib${PYTHONPATH:+:$PYTHONPATH}"
# tests/conftest.py fails the run if pymmapdev comes from anywhere else.
export PYMMAPDEV_UNDER_TEST="$work/lib"
# Without this, `python -m` puts the cwd (this checkout, with its in-place
# build) ahead of PYTHONPATH.
export PYTHONSAFEPATH=1

# handle_sigbus=0: SIGBUS belongs to our guard (and its tests expect the
# default action for faults outside it).  exitcode=0: judge by the logs, so
# the interpreter's own leaks at exit do not fail every subprocess.
# fast_unwind_on_malloc=0: python has no frame pointers, so the fast unwinder
# stops inside the interpreter before reaching our frames; 8 frames reach
# them (malloc <- _PyLong_New <- PyLong_From* <- our function).
export LD_PRELOAD="$($CC -print-file-name=libasan.so) $($CC -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:malloc_context_size=8:handle_sigbus=0:allow_user_segv_handler=1:exitcode=0:log_path=$logs/asan"
export LSAN_OPTIONS="exitcode=0:log_path=$logs/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"
export PYTHONMALLOC=malloc   # Python objects through malloc: ASan sees them
# Everything runs ~10x slower here; volume tests run a tenth of their
# iterations (the normal host suite runs them in full).
export PYMMAPDEV_TEST_SCALE=${PYMMAPDEV_TEST_SCALE:-0.1}
# test_leaks counts pymalloc blocks, which PYTHONMALLOC=malloc turns off;
# LeakSanitizer does that job here.
# The kmod CLI tests that build the module run make and gcc over a kernel
# tree: no code of ours runs there that the other tests do not run, and
# every compiler process would start under the preloaded sanitizers (4-6
# minutes of this run).  Every host session of the matrix runs them.
compiles=(tests/test_kmod_cli.py::test_build_and_rebuild
	tests/test_kmod_cli.py::test_install_into_a_staging_root
	tests/test_kmod_cli.py::test_install_builds_in_a_private_directory)
echo "test-asan: not run here (they build the kernel module; the host matrix runs them): ${compiles[*]}"
set +e
$PYTHON -m pytest -q -p no:cacheprovider --ignore=tests/test_leaks.py \
	"${compiles[@]/#/--deselect=}" tests "$@"
status=$?
set -e
unset LD_PRELOAD

bad=0
if grep -l -E "ERROR: AddressSanitizer|runtime error:" "$logs"/* 2>/dev/null; then
	echo "test-asan: sanitizer errors (logs in $logs):" >&2
	grep -h -A30 -E "ERROR: AddressSanitizer|runtime error:" "$logs"/* | head -120 >&2
	bad=1
fi
# A leak report is a blank-line separated block; keep those that name our code.
ours=$(awk -v RS= '/(Direct|Indirect) leak/ && /_core\.cpython|csrc\//' "$logs"/* 2>/dev/null || true)
if [ -n "$ours" ]; then
	echo "test-asan: leaks allocated through pymmapdev._core:" >&2
	printf '%s\n' "$ours" | head -120 >&2
	bad=1
fi
echo "test-asan: pytest exit $status, sanitizer verdict $([ $bad = 0 ] && echo clean || echo FAILED) (logs: $logs)"
[ $status = 0 ] && [ $bad = 0 ]
