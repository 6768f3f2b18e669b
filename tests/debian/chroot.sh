#!/usr/bin/env bash
# Cached mmdebstrap chroots of Debian suites, shared by the kernel matrix
# (tests/vm/run.sh --kernel SUITE builds the module with the kernel's own
# compiler) and the Python matrix (sid's python3.14).
#
#   tests/debian/chroot.sh path SUITE
#       Prints the chroot's directory, creating it first if it is missing,
#       older than MMAPDEV_CHROOT_MAX_DAYS (default 7) or made for another
#       package set.  Nothing else goes to stdout.
#   tests/debian/chroot.sh run SUITE [--bind DIR]... [--] CMD [ARG]...
#       Runs CMD inside (creating the chroot as `path` does) in a private
#       mount namespace: /proc, /sys, /dev and /dev/shm, /tmp (empty tmpfs),
#       /etc/resolv.conf from the host, and each DIR bound read-write at
#       the same path.  Nothing stays mounted afterwards.  Exits with CMD's
#       status.
#   tests/debian/chroot.sh packages SUITE
#       Prints the package set (one per line).
#   tests/debian/chroot.sh refresh SUITE
#       Rebuilds the chroot, then prints its directory.
#
# SUITE: bullseye, bookworm, trixie or sid (bookworm-backports and
# experimental map to their base suites, whose compilers built them).
# Every chroot has what building an out-of-tree module needs (build-essential,
# the suite's linux-headers-amd64, which pulls that kernel's gcc and kbuild,
# and dwarves for the BTF step); sid's also has python3.14-dev and
# python3.14-venv, so a cold CI machine builds one sid chroot for both.
# Chroots live under $MMAPDEV_CACHE/chroots (tests/debian/lib.sh); creating
# one takes 1-3 minutes and a few hundred MB.  Needs root (or sudo) and
# mmdebstrap (installed from the host's own suite when missing).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
DEBIAN_LOG_TAG=chroot

# The one definition of what each chroot holds.
chroot_packages() {
	local pkgs=(build-essential linux-headers-amd64 dwarves kmod)
	[[ $1 == sid ]] && pkgs+=(python3.14-dev python3.14-venv)
	printf '%s\n' "${pkgs[@]}"
}

chroot_dir() {
	local key
	# The package set is part of the key: changing it makes a new chroot.
	key=$(chroot_packages "$1" | sha256sum | cut -c1-8)
	echo "$MMAPDEV_CACHE/chroots/$1-$key"
}

chroot_fresh() {
	local dir=$1 age
	[[ -e $dir/.complete ]] || return 1
	age=$((($(date +%s) - $(stat -c %Y "$dir/.complete")) / 86400))
	((age < ${MMAPDEV_CHROOT_MAX_DAYS:-7}))
}

chroot_create() {
	local suite=$1 dir=$2 tmp pkgs
	tmp=$dir.tmp.$$
	debian_host_install mmdebstrap
	pkgs=$(chroot_packages "$suite" | paste -sd,)
	debian_log "creating the $suite chroot ($pkgs) in $dir"
	rm -rf "$tmp"
	# The chroot keeps its package lists (apt can install a compiler a
	# newer kernel needs without a rebuild) and an apt setting that accepts
	# Release files past Valid-Until.
	if ! mmdebstrap --quiet --variant=buildd --mode=root \
		--aptopt='Acquire::Check-Valid-Until "false"' \
		--skip=cleanup/apt/lists \
		--include="$pkgs" "$suite" "$tmp" "$DEBIAN_MIRROR" >"$tmp.log" 2>&1; then
		tail -n 30 "$tmp.log" >&2
		rm -rf "$tmp"
		debian_die "mmdebstrap $suite failed (log: $tmp.log)"
	fi
	rm -f "$tmp.log"
	touch "$tmp/.complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	# Older chroots of this suite (another package set) are dead weight.
	find "$MMAPDEV_CACHE/chroots" -maxdepth 1 -name "$suite-*" ! -path "$dir" \
		-exec rm -rf {} + 2>/dev/null || true
}

# Creates or reuses SUITE's chroot and prints its directory.  A lock makes
# concurrent callers (two engineers, two make targets) build it once.
chroot_ensure() {
	local suite dir refresh=${2:-}
	suite=$(debian_base_suite "$1")
	dir=$(chroot_dir "$suite")
	mkdir -p "$MMAPDEV_CACHE/chroots"
	(
		flock 9
		if [[ -n $refresh ]] || ! chroot_fresh "$dir"; then
			chroot_create "$suite" "$dir"
		fi
	) 9>"$MMAPDEV_CACHE/chroots/.$suite.lock"
	echo "$dir"
}

chroot_run() {
	local suite=$1 dir binds=() b
	shift
	while (($#)); do
		case $1 in
		--bind) binds+=("$(cd "$2" && pwd)"); shift 2 ;;
		--) shift; break ;;
		*) break ;;
		esac
	done
	(($#)) || debian_die "run: no command given"
	dir=$(chroot_ensure "$suite")
	# In a private mount namespace every mount below disappears with it.
	# shellcheck disable=SC2016
	exec unshare --mount --propagation private -- bash -c '
		set -e
		dir=$1; nbinds=$2; shift 2
		mount -t proc proc "$dir/proc"
		mount --rbind /sys "$dir/sys"
		mount --rbind /dev "$dir/dev"
		mkdir -p "$dir/dev/shm"
		mount -t tmpfs tmpfs "$dir/dev/shm"
		mount -t tmpfs tmpfs "$dir/tmp"
		touch "$dir/etc/resolv.conf"
		mount --bind /etc/resolv.conf "$dir/etc/resolv.conf"
		while ((nbinds--)); do
			mkdir -p "$dir$1"
			mount --rbind "$1" "$dir$1"
			shift
		done
		exec chroot "$dir" "$@"
	' chroot-run "$dir" "${#binds[@]}" "${binds[@]}" "$@"
}

main() {
	local cmd=${1:-} suite=${2:-}
	[[ -n $cmd && -n $suite ]] ||
		debian_die "usage: $0 path|run|packages|refresh SUITE [...]"
	debian_check_suite "$suite"
	[[ $cmd == packages ]] || [[ $(id -u) == 0 ]] ||
		exec sudo -E "$0" "$@"
	shift 2
	case $cmd in
	path) chroot_ensure "$suite" ;;
	refresh) chroot_ensure "$suite" refresh ;;
	packages) chroot_packages "$(debian_base_suite "$suite")" ;;
	run) chroot_run "$suite" "$@" ;;
	*) debian_die "unknown command '$cmd' (path, run, packages, refresh)" ;;
	esac
}

main "$@"
