"""Build script: compiles the Cython core unless SHARDKIT_PURE_PYTHON=1.

With ``SHARDKIT_PURE_PYTHON=1`` no extension is built and the package runs on its
pure-Python twins, so an install works on a machine without a C compiler.
"""

import os

from setuptools import Extension, setup

NATIVE_MODULES = ("_hash", "_ids", "_merkle", "_ring")


def _extensions() -> list[Extension]:
    if os.environ.get("SHARDKIT_PURE_PYTHON") == "1":
        return []
    from Cython.Build import cythonize

    compile_args = ["-O3", "-fno-strict-aliasing"]
    exts = [
        Extension(
            f"fastcore.{name}",
            [f"fastcore/{name}.pyx"],
            extra_compile_args=compile_args,
        )
        for name in NATIVE_MODULES
    ]
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "embedsignature": True},
        quiet=True,
    )


setup(ext_modules=_extensions())
