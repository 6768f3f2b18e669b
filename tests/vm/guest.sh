#!/bin/sh
# Runs inside the VM, as root, in the host's root file system (read-only
# except the results directory): loads the module, runs the device suite
# and leaves the verdict for tests/vm/run.sh in $RES:
#   module      "loaded" or "failed"
#   status      pytest's exit status (absent: no verdict)
#   unload      "ok" or "failed" (the final rmmod after the suite)
#   junit.xml, pytest.log, dmesg.txt
# Usage: guest.sh PYTHON KO RESULTS_DIR REPO [PYTHONPATH [PYTEST_ADDOPTS [VARS]]]
# (the host's PYTHONPATH, PYTEST_ADDOPTS and MMAPDEV_FUZZ_*/MMAPDEV_STRESS_*
# settings, as "NAME=value ...", come as arguments: the VM does not inherit
# the caller's environment)
PY=$1 KO=$2 RES=$3 REPO=$4 HOST_PYTHONPATH=${5:-}
[ -n "${6:-}" ] && export PYTEST_ADDOPTS="$6"
for var in ${7:-}; do
	export "$var"
done

echo "mmapdev-vmtest: start" > /dev/kmsg
echo "vmtest guest: kernel $(uname -r), python $PY"

# What the module needs (uio.ko): loaded at boot by the initramfs runner,
# by modprobe under virtme-ng (the host's own kernel and modules).
for dep in $(modinfo -F depends "$KO" | tr , ' '); do
	[ -d "/sys/module/$dep" ] || modprobe "$dep"
done
if insmod "$KO"; then
	echo loaded > "$RES/module"
else
	echo failed > "$RES/module"
	dmesg > "$RES/dmesg.txt"
	sync
	exit 1
fi

cd "$REPO" || exit 1
# PYTHONSAFEPATH: the working directory is not put first on sys.path, so
# a PYTHONPATH given by the caller wins over the checkout's own package.
export MMAPDEV_KO="$KO" PYTHONDONTWRITEBYTECODE=1 PYTHONSAFEPATH=1
export PYTHONPATH="${HOST_PYTHONPATH:+$HOST_PYTHONPATH:}$REPO"
# Interpreter starts dominate under TCG: plugins the device suite does not
# use are not loaded (hypothesis alone costs tens of seconds to import).
{
	"$PY" -m pytest -m device tests/device -p no:cacheprovider \
		-p no:hypothesispytest -p no:benchmark -v -rfE --durations=10 \
		--junitxml="$RES/junit.xml"
	echo $? > "$RES/status"
} 2>&1 | tee "$RES/pytest.log"

# Everything the suite opened or mapped is gone: the module must unload.
if rmmod mmapdev; then
	echo ok > "$RES/unload"
else
	echo failed > "$RES/unload"
fi
echo "mmapdev-vmtest: end" > /dev/kmsg
dmesg > "$RES/dmesg.txt"
sync
