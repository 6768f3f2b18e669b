"""Build the C extension pymmapdev._core; metadata lives in pyproject.toml."""
from glob import glob

from setuptools import Extension, setup

core = Extension(
    "pymmapdev._core",
    sources=sorted(glob("csrc/*.c")),
    depends=sorted(glob("csrc/*.h")) + ["kmod/uapi/mmapdev.h"],
    # kmod/uapi holds the one ABI header shared with the kernel module.
    include_dirs=["csrc", "kmod/uapi"],
    extra_compile_args=["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2", "-fvisibility=hidden", "-flto=auto"],
    extra_link_args=["-flto=auto", "-O2"],
)

setup(ext_modules=[core])
