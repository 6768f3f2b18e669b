"""Build the C extension pymmapdev._core; metadata lives in pyproject.toml."""
import os
import tempfile
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

LTO = ["-flto=auto"]


class BuildExt(build_ext):
    """Link-time optimisation where this compiler and linker can do it: the
    hot paths call across files (gate, fault guard, argument conversion).
    A compiler without it (or a clang without its linker plugin) still
    builds the extension, only without LTO."""

    def build_extensions(self):
        if self._can_link_with(LTO):
            for ext in self.extensions:
                ext.extra_compile_args += LTO
                ext.extra_link_args += LTO + ["-O2"]
        super().build_extensions()

    def _can_link_with(self, flags):
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "probe.c")
            with open(source, "w") as f:
                f.write("int probe(void) { return 0; }\n")
            try:
                objects = self.compiler.compile([source], output_dir=tmp, extra_postargs=flags)
                self.compiler.link_shared_object(objects, os.path.join(tmp, "probe.so"),
                                                 extra_postargs=flags)
            except Exception:            # CompileError, LinkError: no LTO here
                return False
        return True


core = Extension(
    "pymmapdev._core",
    sources=sorted(glob("csrc/*.c")),
    depends=sorted(glob("csrc/*.h")) + ["kmod/uapi/mmapdev.h"],
    # kmod/uapi holds the one ABI header shared with the kernel module.
    include_dirs=["csrc", "kmod/uapi"],
    # hidden: only PyInit__core is exported, calls between our files skip the PLT
    extra_compile_args=["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2", "-fvisibility=hidden"],
)

setup(ext_modules=[core], cmdclass={"build_ext": BuildExt})
