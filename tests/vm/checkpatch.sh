#!/usr/bin/env bash
# checkpatch.pl --strict over kmod/, with the checkpatch of the newest
# kernel Debian ships (sid's linux-source-*): only the script and its data
# files are taken out of the source tarball, and cached by version under
# $MMAPDEV_CACHE/checkpatch/.  Exits non-zero on any error, warning or check.
#
#   tests/vm/checkpatch.sh [KMOD_DIR]        (default: the repository's kmod/)
#
# Three kinds of report are turned off in compat.h alone, because that file
# exists to do what they warn about: LINUX_VERSION_CODE and
# CONSTANT_COMPARISON (an out-of-tree module tests the kernel version) and
# EMBEDDED_FILENAME (it includes <linux/compat.h>).  BIT_MACRO is off for
# the uapi header: user space has no BIT().
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../debian/lib.sh
. "$HERE/../debian/lib.sh"
DEBIAN_LOG_TAG=checkpatch
KMOD=${1:-$HERE/../../kmod}

checkpatch_fetch() {
	local meta src ver dir deb members
	debian_apt_update sid
	# linux-source depends on exactly one linux-source-X.Y.
	meta=$(debian_version_in sid linux-source)
	src=$(debian_apt_cache sid show "linux-source=$meta" |
		sed -n 's/^Depends:.*\(linux-source-[0-9.]*\).*/\1/p' | head -n1)
	[[ -n $src ]] || debian_die "cannot resolve linux-source in sid"
	ver=$(debian_version_in sid "$src")
	dir=$MMAPDEV_CACHE/checkpatch/$src-$ver
	CHECKPATCH=$dir/scripts/checkpatch.pl
	[[ -x $CHECKPATCH ]] && return
	debian_log "extracting checkpatch.pl from $src $ver"
	rm -rf "$dir" "$dir.tmp"
	mkdir -p "$dir.tmp"
	(cd "$dir.tmp" && debian_apt_get sid download "$src=$ver" >/dev/null) ||
		debian_die "cannot download $src=$ver"
	deb=$(echo "$dir.tmp"/*.deb)
	members=("$src/scripts/checkpatch.pl" "$src/scripts/spelling.txt"
		 "$src/scripts/const_structs.checkpatch")
	# --occurrence: tar stops once it has the three files, so the rest of
	# the tarball is never decompressed (the pipe breaks: expected).
	dpkg-deb --fsys-tarfile "$deb" 2>/dev/null |
		tar -xO "./usr/src/$src.tar.xz" 2>/dev/null | xz -dc 2>/dev/null |
		tar -x -C "$dir.tmp" --occurrence=1 "${members[@]}" 2>/dev/null || true
	[[ -f $dir.tmp/$src/scripts/checkpatch.pl ]] ||
		debian_die "no scripts/checkpatch.pl in $src"
	mkdir -p "$dir"
	mv "$dir.tmp/$src/scripts" "$dir/scripts"
	rm -rf "$dir.tmp"
	chmod +x "$CHECKPATCH"
}

# Prints only what it found (not the per-file totals).
checkpatch() {
	local out rc=0
	out=$(perl "$CHECKPATCH" --strict --no-tree --terse --show-types "$@") || rc=$?
	grep -v '^total: 0 errors, 0 warnings, 0 checks' <<<"$out" | grep . || true
	return "$rc"
}

main() {
	local rc=0 files=()
	checkpatch_fetch
	cd "$KMOD"
	for f in *.c *.h; do
		[[ $f == compat.h ]] || files+=("$f")
	done
	checkpatch -f "${files[@]}" || rc=1
	checkpatch --ignore LINUX_VERSION_CODE,CONSTANT_COMPARISON,EMBEDDED_FILENAME \
		-f compat.h || rc=1
	checkpatch --ignore BIT_MACRO -f uapi/*.h || rc=1
	if ((rc)); then
		debian_log "FAIL: kmod/ is not checkpatch --strict clean"
	else
		debian_log "kmod/ is checkpatch --strict clean ($(basename "$(dirname "$(dirname "$CHECKPATCH")")"))"
	fi
	return "$rc"
}

main "$@"
