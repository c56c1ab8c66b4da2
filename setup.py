"""Builds eventstream's compiled backend, ``eventstream._core``, from the Cython sources in ext/.

Project metadata lives in pyproject.toml; this file only defines the extension module.

The build needs Cython >= 3.0 and a C compiler, but no librdkafka headers or library: _core
reaches the librdkafka that confluent-kafka bundles at import time (see ext/rdkafka_abi.h).
A missing Cython or compiler fails the build with a message naming it, unless
``EVENTSTREAM_NO_EXTENSIONS=1`` is set: then only the pure-Python package is built.
"""

from __future__ import annotations

import os
import shutil
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
NO_EXTENSIONS = os.environ.get("EVENTSTREAM_NO_EXTENSIONS", "") not in ("", "0")
SKIP_HINT = "Set EVENTSTREAM_NO_EXTENSIONS=1 to install the pure-Python backend only."


class BuildError(RuntimeError):
    pass


def _cythonize(extensions: list[Extension]) -> list[Extension]:
    try:
        import Cython
        from Cython.Build import cythonize
    except ImportError as exc:
        raise BuildError(
            "eventstream: building the compiled backend (eventstream._core) needs Cython >= 3.0, "
            f"which is not installed ({exc}). `pip install 'Cython>=3.0'`. {SKIP_HINT}"
        ) from exc
    major = int(Cython.__version__.split(".")[0])
    if major < 3:
        raise BuildError(
            f"eventstream: Cython {Cython.__version__} is too old; the compiled backend needs "
            f"Cython >= 3.0. {SKIP_HINT}"
        )
    return cythonize(
        extensions,
        include_path=["ext"],
        # Generated C goes to build/, not next to the sources in ext/.
        build_dir="build/cython",
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )


class BuildExt(build_ext):
    """build_ext that names a missing compiler instead of failing with a bare traceback."""

    def build_extensions(self) -> None:
        compiler_so = getattr(self.compiler, "compiler_so", None)
        if compiler_so and shutil.which(compiler_so[0]) is None:
            raise BuildError(
                f"eventstream: the C compiler {compiler_so[0]!r} was not found; building the "
                f"compiled backend (eventstream._core) needs one (e.g. gcc). {SKIP_HINT}"
            )
        try:
            super().build_extensions()
        except Exception as exc:
            raise BuildError(
                f"eventstream: compiling eventstream._core failed: {exc}. {SKIP_HINT}"
            ) from exc


def ext_modules() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    if not sys.platform.startswith("linux"):
        raise BuildError(
            f"eventstream: the compiled backend supports Linux only (this is {sys.platform}). "
            + SKIP_HINT
        )
    ext = Extension(
        "eventstream._core",
        sources=["ext/_core.pyx"],
        include_dirs=["ext"],
        depends=sorted(glob("ext/*.h") + glob("ext/*.pxd") + glob("ext/*.pxi")),
        libraries=["dl", "pthread"],
        extra_compile_args=["-O2", "-fno-strict-aliasing"],
    )
    return _cythonize([ext])


os.chdir(HERE)  # the paths above are relative to the project root
setup(
    ext_modules=ext_modules(),
    cmdclass={} if NO_EXTENSIONS else {"build_ext": BuildExt},
)
