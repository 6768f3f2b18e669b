#!/usr/bin/env bash
# The VM suite: boots a Debian kernel in QEMU (software emulation), loads
# kmod/mmapdev.ko built for it and runs `pytest -m device tests/device`
# inside, over the host's own root file system (read-only).
#
#   tests/vm/run.sh [--kernel SUITE]       (make vmtest; the matrix:
#                                           tests/vm/matrix.sh, make vmtest-matrix)
#
# SUITE picks the kernel: bookworm (the default: the host's own suite, its
# installed linux-image-amd64), bullseye (5.10), bookworm-backports (6.12),
# trixie (6.12), sid (7.x) or experimental.  Other suites' packages are
# downloaded through a private apt view and unpacked, never installed
# (tests/vm/kernels.sh, tests/debian/lib.sh); the module is built with the
# host's gcc when that is at least the kernel's own compiler version, else
# with the kernel's own compiler in a cached chroot of the suite
# (tests/debian/chroot.sh).  Downloads and chroots are cached under
# ~/.cache/pymmapdev (MMAPDEV_CACHE), keyed by version.
#
# The guest also gets an ivshmem-plain PCI device whose memory is a host
# file that a host process (tests/vm/ivshmem_peer.py) maps at the same time:
# the VM <-> host tests talk to it through that memory.
#
# Exits with pytest's status; non-zero as well when the module does not
# build cleanly (W=1, and checkpatch --strict: tests/vm/checkpatch.sh), the
# VM gives no verdict (crash, hang: timeout), the module does not load or
# unload, the kernel log shows an oops, BUG or WARNING, or the ivshmem
# host peer failed.  Results stay in
# tests/vm/out/SUITE/ (results/junit.xml, results/pytest.log,
# results/dmesg.txt, console.log, build.log, and summary.tsv: suite,
# kernel, compiler, build warnings, tests passed/total, seconds, verdict).
#
# Environment:
#   MMAPDEV_VM_RUNNER   initramfs (the default: plain QEMU, a busybox
#                       initramfs, the host root over 9p) or vng (virtme-ng
#                       in a private venv under tests/vm/out; bookworm only;
#                       falls back to initramfs if it cannot be installed).
#                       initramfs is the default because it is hermetic
#                       (no udev or host rules in the guest, no PyPI) and
#                       boots in seconds where virtme-ng's init takes ~1 min.
#   MMAPDEV_VM_TIMEOUT  seconds before the VM is killed (default 900)
#   MMAPDEV_BOOT_TIMEOUT  seconds for the initramfs guest to start its
#                       script before the boot counts as hung (default 300)
#   MMAPDEV_KVER        bookworm only: the installed kernel version to boot
#                       (default: the newest with both vmlinuz and headers)
#   MMAPDEV_PYTHON      interpreter to run in the guest (default: the one
#                       `python3` resolves to on the host)
#   MMAPDEV_CHECKPATCH  0 skips the checkpatch step (default 1)
#   PYTEST_ADDOPTS      passed through to pytest in the guest
#   MMAPDEV_FUZZ_OPS, MMAPDEV_FUZZ_SEED, MMAPDEV_STRESS_PROCS,
#   MMAPDEV_STRESS_SECONDS
#                       passed through: heavier or lighter kernel fuzz and
#                       stress runs
# KVM is never used: on this kind of host it aborts or hangs (see
# ../shared/notes/vm-testing.md); TCG is slower but works.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../debian/lib.sh
. "$REPO/tests/debian/lib.sh"
# shellcheck source=kernels.sh
. "$REPO/tests/vm/kernels.sh"
DEBIAN_LOG_TAG=vmtest
TIMEOUT=${MMAPDEV_VM_TIMEOUT:-900}
BOOT_TIMEOUT=${MMAPDEV_BOOT_TIMEOUT:-300}
RUNNER=${MMAPDEV_VM_RUNNER:-initramfs}
VNG_VERSION=1.42
PACKAGES=(qemu-system-x86 busybox-static cpio kmod make gcc dwarves xz-utils zstd mmdebstrap sparse)
# What the guest needs to mount the host's root; their dependencies (and
# the order to load them in) come from the modules themselves.
NINEP_MODULES=(virtio_pci 9pnet_virtio 9p)

log() { debian_log "$@"; }
die() { debian_die "$@"; }

# The host's gcc builds a kernel's module when it is at least as new as
# the compiler that built the kernel (flags of newer compilers, such as
# 6.12+deb13's -fmin-function-alignment, are unknown to older ones).
build_module() {
	local host_gcc kmajor make_args=(W=1) base chroot deb sources checked
	# A copy, so the source tree stays clean and the .ko is fresh.
	rm -rf "$OUT/kmod"
	mkdir -p "$OUT/kmod"
	cp -r "$REPO/kmod/uapi" "$REPO/kmod/Kbuild" "$REPO/kmod/Makefile" "$REPO"/kmod/*.[ch] \
		"$OUT/kmod/"
	host_gcc=$(gcc -dumpversion)
	host_gcc=${host_gcc%%.*}
	kmajor=${KCC#gcc-}
	if ((kmajor <= host_gcc)); then
		((kmajor == host_gcc)) || make_args+=("CC=gcc-$host_gcc")
		COMPILER="gcc-$host_gcc (host)"
		[[ $KCC == "gcc-$host_gcc" ]] || COMPILER+=", kernel built with $KCC"
		# sparse (C=2: every file) on the host builds: __user and
		# address-space mistakes are its warnings, failed below like
		# the compiler's.  (Not in the chroots of the 7.x kernels:
		# Debian's headers there lack scripts/checker-valid.sh, so
		# kbuild would drop C=2, and bookworm's sparse cannot parse
		# their __typeof_unqual__.)
		make_args+=(C=2 CHECK=sparse)
		make -C "$OUT/kmod" KDIR="$KHEADERS" "${make_args[@]}" >"$OUT/build.log" 2>&1 ||
			{ cat "$OUT/build.log" >&2; die "kmod/ does not build against $KVER"; }
		# kbuild skips an unusable checker with a note, not a warning
		sources=$(find "$OUT/kmod" -maxdepth 1 -name '*.c' ! -name '*.mod.c' | wc -l)
		checked=$(grep -c '^  CHECK ' "$OUT/build.log" || true)
		((checked == sources)) ||
			die "sparse checked $checked of $sources files against $KVER (see $OUT/build.log)"
		COMPILER+=", sparse"
	else
		base=$(debian_base_suite "$SUITE")
		chroot=$("$REPO/tests/debian/chroot.sh" path "$base")
		COMPILER="$KCC ($base chroot)"
		# The chroot came with its suite's headers of the day; this
		# kernel's may be newer (or experimental's): unpack them into it.
		if [[ ! -f $chroot/usr/src/linux-headers-$KVER/.config ]]; then
			for deb in "$KDEBS"/linux-headers-*.deb "$KDEBS"/linux-kbuild-*.deb; do
				dpkg-deb -x "$deb" "$chroot"
			done
		fi
		"$REPO/tests/debian/chroot.sh" run "$base" --bind "$OUT" -- sh -c "
			command -v $KCC >/dev/null ||
				{ apt-get update -q && apt-get install -y -q $KCC; } >/dev/null 2>&1
			make -C '$OUT/kmod' KDIR=/usr/src/linux-headers-$KVER W=1" \
			>"$OUT/build.log" 2>&1 ||
			{ cat "$OUT/build.log" >&2; die "kmod/ does not build against $KVER in the $base chroot"; }
	fi
	WARNINGS=$(grep -cE 'warning:|error:' "$OUT/build.log" || true)
	if ((WARNINGS)); then
		grep -E 'warning:|error:' "$OUT/build.log" >&2
		die "kmod/ builds with warnings against $KVER (make W=1 must be clean)"
	fi
	[[ -f $OUT/kmod/mmapdev.ko ]] || die "no mmapdev.ko after the build"
	if [[ ${MMAPDEV_CHECKPATCH:-1} != 0 ]]; then
		"$REPO/tests/vm/checkpatch.sh" "$REPO/kmod" || die "checkpatch --strict"
	fi
}

check_python() {
	# The guest runs this exact interpreter (pyenv shims do not resolve in
	# the guest's environment) with the repository on its path.
	PY=${MMAPDEV_PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
	PY=$(readlink -f "$PY")
	PYTHONSAFEPATH=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO" \
		"$PY" -c 'import pymmapdev._core, pytest' ||
		die "$PY cannot import pymmapdev._core and pytest (run make build first)"
}

run_vng() {
	local vng=$VM_ROOT/venv/bin/vng
	[[ $SUITE == bookworm ]] || { log "virtme-ng boots the host's kernel only"; return 2; }
	if [[ ! -x $vng ]] || ! "$vng" --version 2>/dev/null | grep -q "$VNG_VERSION"; then
		log "installing virtme-ng $VNG_VERSION into $VM_ROOT/venv"
		rm -rf "$VM_ROOT/venv"
		"$PY" -m venv "$VM_ROOT/venv" &&
			"$VM_ROOT/venv/bin/pip" install -q --disable-pip-version-check \
				"virtme-ng==$VNG_VERSION" || return 2
	fi
	# vng runs its helpers (virtme-run) by name: they live beside it.
	PATH=$VM_ROOT/venv/bin:$PATH timeout -k 20 "$TIMEOUT" "$vng" --disable-kvm --run "$VMLINUZ" \
		--cpus 2 --memory 1G --rwdir "$OUT" --cwd "$REPO" --qemu-opts="${IVSHMEM_QEMU[*]}" \
		-- "$REPO/tests/vm/guest.sh" "$PY" "$OUT/kmod/mmapdev.ko" "$RES" "$REPO" \
		"${PYTHONPATH:-}" "${PYTEST_ADDOPTS:-}" "$TEST_VARS" \
		</dev/null
}

build_initramfs() {
	local dir=$OUT/initramfs modules deps
	rm -rf "$dir"
	mkdir -p "$dir"/{bin,dev,proc,sys,host,lib/mod}
	cp /bin/busybox "$dir/bin/busybox"
	# and what mmapdev.ko itself needs (uio.ko, for uio=1)
	read -ra deps <<<"$(modinfo -F depends "$OUT/kmod/mmapdev.ko" | tr , ' ')"
	modules=$(kernel_modules_in_order "$dir/lib/mod" "${NINEP_MODULES[@]}" "${deps[@]}" |
		tr '\n' ' ')
	rm -f "$dir"/lib/mod/*.none
	log "boot modules in load order: $modules"
	cat >"$dir/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for mod in $modules; do
	insmod /lib/mod/\$mod.ko || echo "vmtest init: insmod \$mod failed"
done
if mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host; then
	mount -t proc proc /host/proc
	mount -t sysfs sysfs /host/sys
	mount -t devtmpfs devtmpfs /host/dev
	mkdir -p /host/dev/shm
	mount -t tmpfs tmpfs /host/dev/shm	# multiprocessing's semaphores
	# A writable /tmp for the tests; but the checkout (CI clones anywhere,
	# /tmp included) and PYTHONPATH entries under the host's /tmp must stay
	# visible, so bind them back from the read-only host view.
	mkdir -p /hosttmp
	mount -o bind /host/tmp /hosttmp
	mount -t tmpfs tmpfs /host/tmp
	for keep in $REPO $(echo "${PYTHONPATH:-}" | tr : ' '); do
		case \$keep in
		/tmp/*) mkdir -p /host\$keep && mount -o bind /hosttmp/\${keep#/tmp/} /host\$keep ;;
		esac
	done
	mount -t tmpfs tmpfs /host/run
	mkdir -p /host$OUT
	mount -t 9p -o trans=virtio,version=9p2000.L results /host$OUT &&
		chroot /host /bin/sh $REPO/tests/vm/guest.sh $PY $OUT/kmod/mmapdev.ko $RES $REPO $(printf '%q %q %q' "${PYTHONPATH:-}" "${PYTEST_ADDOPTS:-}" "$TEST_VARS")
	sync
fi
poweroff -f
INIT
	chmod +x "$dir/init"
	(cd "$dir" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initramfs.cpio.gz"
}

run_initramfs() {
	build_initramfs
	timeout -k 20 "$TIMEOUT" qemu-system-x86_64 -accel tcg -m 1024 -smp 2 \
		-nographic -no-reboot -pidfile "$OUT/qemu.pid" \
		-kernel "$VMLINUZ" -initrd "$OUT/initramfs.cpio.gz" \
		-append "console=ttyS0 quiet panic=-1" \
		-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
		-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
		-fsdev local,id=results,path="$OUT",security_model=none,multidevs=remap \
		-device virtio-9p-pci,fsdev=results,mount_tag=results \
		"${IVSHMEM_QEMU[@]}" \
		</dev/null
}

# run_initramfs, into $OUT/console.log; a guest script not started after
# BOOT_TIMEOUT seconds is a boot hung under TCG (as one panics now and
# then, see below; boots take under a minute): the VM is killed, and
# $OUT/boot-hung says so.
run_initramfs_watched() {
	local vm waited=0
	rm -f "$OUT/boot-hung" "$OUT/qemu.pid"
	run_initramfs >"$OUT/console.log" 2>&1 &
	vm=$!
	while kill -0 "$vm" 2>/dev/null && ! grep -q "vmtest guest:" "$OUT/console.log"; do
		if ((waited >= BOOT_TIMEOUT)); then
			touch "$OUT/boot-hung"
			kill -TERM "$(cat "$OUT/qemu.pid" 2>/dev/null)" 2>/dev/null || true
			break
		fi
		sleep 2
		waited=$((waited + 2))
	done
	wait "$vm"
}

# ivshmem: the guest's BAR 2 is this host file, which the host peer
# (ivshmem_peer.py) maps too; tests/device/test_ivshmem.py talks to it.
start_ivshmem_peer() {
	IVSHMEM_FILE=$OUT/ivshmem.shm
	rm -f "$IVSHMEM_FILE"
	truncate -s 1M "$IVSHMEM_FILE"
	IVSHMEM_QEMU=(-object "memory-backend-file,id=shm,mem-path=$IVSHMEM_FILE,size=1M,share=on"
		-device ivshmem-plain,memdev=shm)
	PYTHONSAFEPATH=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO" \
		"$PY" "$REPO/tests/vm/ivshmem_peer.py" "$IVSHMEM_FILE" >"$OUT/ivshmem_peer.log" 2>&1 &
	IVSHMEM_PEER=$!
}

# Stops the peer; says so and sets PEER_STATUS when it had failed by itself.
stop_ivshmem_peer() {
	PEER_STATUS=0
	if kill -0 "$IVSHMEM_PEER" 2>/dev/null; then
		kill -TERM "$IVSHMEM_PEER"
	fi
	wait "$IVSHMEM_PEER" || PEER_STATUS=$?
	if ((PEER_STATUS)); then
		tail -n 20 "$OUT/ivshmem_peer.log" >&2
		log "FAIL: the ivshmem host peer failed (status $PEER_STATUS, $OUT/ivshmem_peer.log)"
	fi
	rm -f "$IVSHMEM_FILE"
}

# Sets STATUS (0 = pass) and says why not.
verdict() {
	STATUS=1
	if [[ ! -s $RES/module ]]; then
		tail -n 40 "$OUT/console.log" >&2 || true
		log "FAIL: the VM gave no verdict (did not boot, crashed or timed out; see $OUT/console.log)"
		return
	fi
	[[ $(<"$RES/module") == loaded ]] || {
		tail -n 20 "$RES/dmesg.txt" >&2 || true
		log "FAIL: the module did not load in the VM"
		return
	}
	if [[ ! -s $RES/status ]]; then
		tail -n 40 "$OUT/console.log" >&2 || true
		log "FAIL: pytest gave no verdict (VM crashed or timed out; see $OUT/console.log)"
		return
	fi
	STATUS=$(<"$RES/status")
	# After the guest started (boot noise is not ours), by the rule each
	# device test's own log is judged by: the OOM report the
	# out-of-memory test provokes on purpose is not trouble.
	if ! "$PY" "$REPO/tests/device/kernel_log.py" "$RES/dmesg.txt" >&2; then
		log "FAIL: the kernel log shows trouble ($RES/dmesg.txt)"
		((STATUS)) || STATUS=1
	fi
	if [[ $(<"$RES/unload") != ok ]]; then
		log "FAIL: rmmod after the suite failed (a reference leaked)"
		((STATUS)) || STATUS=1
	fi
	grep -E '^=+ .*(passed|failed|error).* in ' "$RES/pytest.log" >&2 || true
	if ((STATUS)); then
		# CI keeps only the out directory of a fresh machine for a while:
		# what failed, and how, goes to the log that outlives it.
		sed -n '/^=* FAILURES =*$/,/^=* short test summary info =*$/p' \
			"$RES/pytest.log" | head -n 300 >&2 || true
		log "FAIL (status $STATUS): $RES/pytest.log, $RES/junit.xml, $RES/dmesg.txt"
	else
		log "OK: device suite passed in the VM (kernel $KVER, runner $RUNNER)"
	fi
}

# One line for tests/vm/matrix.sh: suite, kernel, compiler, build
# warnings, tests passed/total, seconds, verdict.
write_summary() {
	local tests=? passed=? attrs
	if [[ -s $RES/junit.xml ]]; then
		attrs=$(grep -o '<testsuite [^>]*>' "$RES/junit.xml" | head -n1)
		tests=$(sed -n 's/.* tests="\([0-9]*\)".*/\1/p' <<<"$attrs")
		passed=$((tests - $(sed -n 's/.* failures="\([0-9]*\)".*/\1/p' <<<"$attrs") \
			- $(sed -n 's/.* errors="\([0-9]*\)".*/\1/p' <<<"$attrs") \
			- $(sed -n 's/.* skipped="\([0-9]*\)".*/\1/p' <<<"$attrs")))
	fi
	printf '%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\n' "$SUITE" "${KVER:-?}" "${COMPILER:-?}" \
		"${WARNINGS:-?}" "$passed" "$tests" "$((SECONDS - START))" \
		"$( ((${1:-1})) && echo FAIL || echo ok)" >"$OUT/summary.tsv"
}

main() {
	local rc
	SUITE=bookworm
	while (($#)); do
		case $1 in
		--kernel) SUITE=${2:?--kernel needs a suite}; shift 2 ;;
		--kernel=*) SUITE=${1#--kernel=}; shift ;;
		*) die "unknown argument '$1' (usage: $0 [--kernel SUITE])" ;;
		esac
	done
	debian_check_suite "$SUITE"
	START=$SECONDS
	VM_ROOT=$REPO/tests/vm/out
	OUT=$VM_ROOT/$SUITE
	RES=$OUT/results
	mkdir -p "$OUT"
	rm -f "$OUT/summary.tsv"
	trap 'write_summary 1; [[ -z ${IVSHMEM_PEER:-} ]] || kill "$IVSHMEM_PEER" 2>/dev/null' EXIT
	# Integer knobs of the fuzz and stress tests, for the guest.
	TEST_VARS=$(env | grep -E '^MMAPDEV_(FUZZ|STRESS)_[A-Z]+=[0-9.]+$' | tr '\n' ' ' || true)
	debian_host_install "${PACKAGES[@]}"
	kernel_fetch "$SUITE"
	log "$SUITE: kernel $KVER ($KCC), runner $RUNNER"
	build_module
	log "built with $COMPILER after $((SECONDS - START)) s"
	check_python
	rm -rf "$RES"
	mkdir -p "$RES"
	start_ivshmem_peer
	set +e
	case $RUNNER in
	vng)
		run_vng 2>&1 | tee "$OUT/console.log"
		rc=${PIPESTATUS[0]}
		if ((rc == 2)) && [[ ! -e $RES/module ]]; then
			log "virtme-ng unavailable; falling back to the initramfs runner"
			RUNNER=initramfs
			run_initramfs 2>&1 | tee "$OUT/console.log"
			rc=${PIPESTATUS[0]}
		fi
		;;
	initramfs)
		run_initramfs_watched
		rc=$?
		# A kernel that panicked or hung while booting, before the guest
		# script ran, has not seen our module (7.2.13 and 7.3 under TCG,
		# now and then: an int3 oops in sched_clock_cpu as the boot
		# patched its text; a hang with 3 VMs on 2 host cores): boot it
		# again, twice at most.  A panic of ours comes after "vmtest
		# guest:" and is never retried.
		for boot in 2 3; do
			[[ ! -e $RES/module ]] && ! grep -q "vmtest guest:" "$OUT/console.log" &&
				{ grep -q "Kernel panic" "$OUT/console.log" || [[ -e $OUT/boot-hung ]]; } ||
				break
			mv "$OUT/console.log" "$OUT/console-boot-panic-$((boot - 1)).log"
			log "the kernel panicked or hung while booting, before the guest ran: boot $boot of 3" \
				"(the last console: $OUT/console-boot-panic-$((boot - 1)).log)"
			run_initramfs_watched
			rc=$?
		done
		;;
	*) die "MMAPDEV_VM_RUNNER=$RUNNER: use vng or initramfs" ;;
	esac
	set -e
	((rc != 124 && rc != 137)) || log "the VM was killed after ${TIMEOUT}s"
	log "VM finished after $((SECONDS - START)) s"
	stop_ivshmem_peer
	verdict
	((STATUS || !PEER_STATUS)) || STATUS=1
	trap - EXIT
	write_summary "$STATUS"
	exit "$STATUS"
}

main "$@"
