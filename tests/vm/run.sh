#!/usr/bin/env bash
# The VM suite: boots the installed Debian kernel in QEMU (software
# emulation), loads kmod/mmapdev.ko and runs `pytest -m device tests/device`
# inside, over the host's own root file system (read-only).
#
#   tests/vm/run.sh            (make vmtest)
#
# Exits with pytest's status; non-zero as well when the module does not
# build cleanly (W=1), the VM gives no verdict (crash, hang: timeout), the
# module does not load or unload, or the kernel log shows an oops, BUG or
# WARNING.  Results stay in tests/vm/out/results (junit.xml, pytest.log,
# dmesg.txt, console.log).
#
# Environment:
#   MMAPDEV_VM_RUNNER   initramfs (the default: plain QEMU, a busybox
#                       initramfs, the host root over 9p) or vng (virtme-ng
#                       in a private venv under tests/vm/out; falls back to
#                       initramfs if it cannot be installed).  Both work under
#                       TCG; initramfs is the default because it is hermetic
#                       (no udev or host rules in the guest, no PyPI) and
#                       boots in seconds where virtme-ng's init takes ~1 min.
#   MMAPDEV_VM_TIMEOUT  seconds before the VM is killed (default 900)
#   MMAPDEV_KVER        kernel version to boot (default: the newest installed
#                       with both /boot/vmlinuz-<ver> and its headers)
#   MMAPDEV_PYTHON      interpreter to run in the guest (default: the one
#                       `python3` resolves to on the host)
#   PYTEST_ADDOPTS      passed through to pytest in the guest
#   MMAPDEV_FUZZ_OPS, MMAPDEV_FUZZ_SEED, MMAPDEV_STRESS_PROCS,
#   MMAPDEV_STRESS_SECONDS
#                       passed through: heavier kernel fuzz and stress runs
# KVM is never used: on this kind of host it aborts or hangs (see
# ../shared/notes/vm-testing.md); TCG is slower but works.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$REPO/tests/vm/out
RES=$OUT/results
TIMEOUT=${MMAPDEV_VM_TIMEOUT:-900}
RUNNER=${MMAPDEV_VM_RUNNER:-initramfs}
VNG_VERSION=1.42
PACKAGES=(qemu-system-x86 linux-image-amd64 linux-headers-amd64 busybox-static cpio kmod make)
NINEP_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
	       9pnet 9pnet_virtio netfs fscache 9p)

log() { printf 'vmtest: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

install_packages() {
	local missing=() pkg sudo=()
	for pkg in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q ' installed$' ||
			missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	[[ $(id -u) == 0 ]] || sudo=(sudo)
	log "installing ${missing[*]}"
	"${sudo[@]}" apt-get update -q
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q \
		--no-install-recommends "${missing[@]}"
}

pick_kernel() {
	local ver
	if [[ -n ${MMAPDEV_KVER:-} ]]; then
		echo "$MMAPDEV_KVER"
		return
	fi
	# Never `uname -r`: the host's own kernel may have no modules at all.
	for ver in $(ls /lib/modules | sort -rV); do
		if [[ -e /boot/vmlinuz-$ver && -d /lib/modules/$ver/build ]]; then
			echo "$ver"
			return
		fi
	done
	die "no kernel with both /boot/vmlinuz-<ver> and /lib/modules/<ver>/build"
}

build_module() {
	# A copy, so the source tree stays clean and the .ko is fresh.
	rm -rf "$OUT/kmod"
	mkdir -p "$OUT/kmod"
	cp -r "$REPO/kmod/uapi" "$REPO/kmod/Kbuild" "$REPO/kmod/Makefile" "$REPO"/kmod/*.[ch] \
		"$OUT/kmod/"
	if ! make -C "$OUT/kmod" KDIR="/lib/modules/$KVER/build" W=1 >"$OUT/build.log" 2>&1; then
		cat "$OUT/build.log" >&2
		die "kmod/ does not build against $KVER"
	fi
	if grep -E 'warning:|error:' "$OUT/build.log" >&2; then
		die "kmod/ builds with warnings (make W=1 must be clean)"
	fi
	[[ -f $OUT/kmod/mmapdev.ko ]] || die "no mmapdev.ko after the build"
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
	local vng=$OUT/venv/bin/vng
	if [[ ! -x $vng ]] || ! "$vng" --version 2>/dev/null | grep -q "$VNG_VERSION"; then
		log "installing virtme-ng $VNG_VERSION into $OUT/venv"
		rm -rf "$OUT/venv"
		"$PY" -m venv "$OUT/venv" &&
			"$OUT/venv/bin/pip" install -q --disable-pip-version-check \
				"virtme-ng==$VNG_VERSION" || return 2
	fi
	timeout -k 20 "$TIMEOUT" "$vng" --disable-kvm --run "/boot/vmlinuz-$KVER" \
		--cpus 2 --memory 1G --rwdir "$OUT" --cwd "$REPO" \
		-- "$REPO/tests/vm/guest.sh" "$PY" "$OUT/kmod/mmapdev.ko" "$RES" "$REPO" \
		"${PYTHONPATH:-}" "${PYTEST_ADDOPTS:-}" "$TEST_VARS" \
		</dev/null
}

build_initramfs() {
	local dir=$OUT/initramfs mod src
	rm -rf "$dir"
	mkdir -p "$dir"/{bin,dev,proc,sys,host,lib/mod}
	cp /bin/busybox "$dir/bin/busybox"
	for mod in "${NINEP_MODULES[@]}"; do
		src=$(find "/lib/modules/$KVER/kernel" -name "$mod.ko*" | head -n1)
		case $src in
		"") continue ;;		# built in, or not needed by this kernel
		*.ko) cp "$src" "$dir/lib/mod/$mod.ko" ;;
		*.ko.xz) xz -dc "$src" >"$dir/lib/mod/$mod.ko" ;;
		*.ko.zst) zstd -qdc "$src" >"$dir/lib/mod/$mod.ko" ;;
		*.ko.gz) gzip -dc "$src" >"$dir/lib/mod/$mod.ko" ;;
		esac
	done
	cat >"$dir/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for mod in ${NINEP_MODULES[*]}; do
	[ -f /lib/mod/\$mod.ko ] && insmod /lib/mod/\$mod.ko
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
		-nographic -no-reboot \
		-kernel "/boot/vmlinuz-$KVER" -initrd "$OUT/initramfs.cpio.gz" \
		-append "console=ttyS0 quiet panic=-1" \
		-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
		-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
		-fsdev local,id=results,path="$OUT",security_model=none,multidevs=remap \
		-device virtio-9p-pci,fsdev=results,mount_tag=results \
		</dev/null
}

verdict() {
	local status dmesg_after
	[[ -s $RES/module ]] || die "the VM gave no verdict (did not boot, crashed or timed out; see $OUT/console.log)"
	[[ $(<"$RES/module") == loaded ]] || {
		tail -n 20 "$RES/dmesg.txt" >&2 || true
		die "the module did not load in the VM"
	}
	[[ -s $RES/status ]] || die "pytest gave no verdict (VM crashed or timed out; see $OUT/console.log)"
	status=$(<"$RES/status")
	# Only what happened after the guest started: boot noise is not ours.
	dmesg_after=$(sed -n '/mmapdev-vmtest: start/,$p' "$RES/dmesg.txt")
	if grep -E 'Oops|BUG|WARNING|Call Trace|KASAN|UBSAN|general protection' <<<"$dmesg_after" >&2; then
		log "FAIL: the kernel log shows trouble ($RES/dmesg.txt)"
		((status)) || status=1
	fi
	if [[ $(<"$RES/unload") != ok ]]; then
		log "FAIL: rmmod after the suite failed (a reference leaked)"
		((status)) || status=1
	fi
	grep -E '^=+ .*(passed|failed|error).* in ' "$RES/pytest.log" >&2 || true
	if ((status)); then
		log "FAIL (status $status): $RES/pytest.log, $RES/junit.xml, $RES/dmesg.txt"
	else
		log "OK: device suite passed in the VM (kernel $KVER, runner $RUNNER)"
	fi
	exit "$status"
}

main() {
	local rc start=$SECONDS
	# Integer knobs of the fuzz and stress tests, for the guest.
	TEST_VARS=$(env | grep -E '^MMAPDEV_(FUZZ|STRESS)_[A-Z]+=[0-9.]+$' | tr '\n' ' ' || true)
	install_packages
	KVER=$(pick_kernel)
	log "kernel $KVER, runner $RUNNER"
	mkdir -p "$OUT"
	build_module
	check_python
	rm -rf "$RES"
	mkdir -p "$RES"
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
		run_initramfs 2>&1 | tee "$OUT/console.log"
		rc=${PIPESTATUS[0]}
		;;
	*) die "MMAPDEV_VM_RUNNER=$RUNNER: use vng or initramfs" ;;
	esac
	set -e
	((rc != 124 && rc != 137)) || log "the VM was killed after ${TIMEOUT}s"
	log "VM finished after $((SECONDS - start)) s"
	verdict
}

main "$@"
