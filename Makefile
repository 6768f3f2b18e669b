# pymmapdev: every command a developer or CI needs.  `make test` is the one
# CI runs: it installs what it needs, builds, and runs the host suite and
# the sanitizer run and the VM suite (the kernel module inside QEMU).
PYTHON ?= python3
PYTEST = $(PYTHON) -m pytest

.PHONY: all deps build analyze test test-host matrix-deps test-quick dist test-asan vmtest vmtest-matrix \
	demo bench kmod clean

all: build

# Python-side dependencies; the VM runner installs its own Debian packages.
# setuptools >= 77 (PEP 639 license metadata) also for the sanitizer run's
# direct `setup.py build`.
deps:
	$(PYTHON) -m pip install -q --disable-pip-version-check 'setuptools>=77'
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[test]'

# An editable install builds pymmapdev._core in place (-Wall -Wextra -Werror).
build: deps

test: analyze test-host dist test-asan vmtest-matrix

# gcc's static analyser over the C core (~10 s; gcc 12 of Debian 12), with
# -Werror: a new finding fails `make test` as a compiler warning does.
analyze: matrix-deps
	@for f in csrc/*.c; do \
		gcc -std=gnu11 -Wall -Wextra -Werror -O2 -fanalyzer -Icsrc -Ikmod/uapi \
			-I"$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
			-c "$$f" -o /dev/null || exit 1; \
	done; echo "gcc -fanalyzer: csrc/ clean"

# The Python matrix (noxfile.py): the host suite, mypy --strict and stubtest
# on CPython 3.10-3.13 (pyenv's) and 3.14 (Debian sid's, in the cached sid
# chroot), each against the package installed from this tree's sdist.
# test_kmod_cli builds the bundled module against the installed headers.
test-host: matrix-deps
	$(PYTHON) -m nox -s tests sid

matrix-deps:
	$(PYTHON) -m pip install -q --disable-pip-version-check nox
	bash -c '. tests/debian/lib.sh && debian_host_install linux-headers-amd64 make gcc kmod'

# dist/: the sdist and a manylinux wheel for CPython 3.10-3.14 (3.14 built in
# the sid chroot), each repaired by auditwheel, installed into a fresh venv
# and smoke-tested (noxfile.py: dist, wheel, wheel_sid).
dist: matrix-deps
	$(PYTHON) -m nox -s dist wheel wheel_sid
	@ls -1 dist

# The quick loop: the host suite on $(PYTHON) only, against the in-place build.
test-quick: build
	$(PYTEST) -q tests

# The host suite with the extension built under ASan + UBSan.
test-asan: build
	tests/asan/run.sh

# The device suite in a VM: `vmtest` on the default kernel (Debian 12's),
# `vmtest-matrix` on 5.10, 6.1, 6.12 and 7.x (tests/vm/matrix.sh).
vmtest: build
	tests/vm/run.sh

vmtest-matrix: build
	tests/vm/matrix.sh

demo: build
	$(PYTHON) -m pymmapdev demo

# The competitors are installed first (one pip call each; one that fails is
# reported by the run as missing); the run itself installs nothing.
# BENCH_ARGS: e.g. --quick, --wait-quiet 600, or case names (python -m bench -h).
bench: build
	$(PYTHON) -m bench.install
	$(PYTHON) -m bench $(BENCH_ARGS)

kmod:
	$(MAKE) -C kmod

clean:
	rm -rf build dist *.egg-info pymmapdev/*.so tests/vm/out bench/results .nox
	-$(MAKE) -C kmod clean
