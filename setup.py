"""Builds eventstream's compiled backend, ``eventstream._core``, from the Cython sources in ext/.

Project metadata lives in pyproject.toml; this file only defines the extension module and records
what the build made.

The build needs Cython >= 3.0 and a C compiler, but no librdkafka headers or library: _core
reaches the librdkafka that confluent-kafka bundles at import time (see ext/rdkafka_abi.h).

Which backend an installation gets is decided here, once, and written into the package as
``eventstream/_build_info.py`` (``COMPILED``, ``REASON``), which
``eventstream._runtime.backend`` reads:

- on Linux the compiled backend is built, and a missing Cython or compiler fails the build with a
  message naming it: an installation there never quietly lacks the extension;
- ``EVENTSTREAM_NO_EXTENSIONS=1`` builds the pure-Python package only (any platform);
- on other platforms (the extension loads librdkafka the Linux way) the pure-Python package is
  built, with a notice; at run time eventstream then uses its pure-Python backend and says so in
  one INFO log line (``EVENTSTREAM_REQUIRE_COMPILED=1`` turns that into an ImportError).
"""

from __future__ import annotations

import os
import shutil
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
NO_EXTENSIONS = os.environ.get("EVENTSTREAM_NO_EXTENSIONS", "") not in ("", "0")
ON_LINUX = sys.platform.startswith("linux")
SKIP_HINT = "Set EVENTSTREAM_NO_EXTENSIONS=1 to install the pure-Python backend only."
BUILD_INFO = os.path.join("eventstream", "_build_info.py")


class BuildError(RuntimeError):
    pass


def _why_not_compiled() -> str | None:
    """``None`` when this build makes the compiled backend, else the reason it does not."""
    if NO_EXTENSIONS:
        return "EVENTSTREAM_NO_EXTENSIONS=1 was set when this installation was built"
    if not ON_LINUX:
        return f"the compiled backend is built on Linux only, and this build ran on {sys.platform}"
    return None


WHY_NOT_COMPILED = _why_not_compiled()


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


def _without_rpath(command: list[str]) -> list[str]:
    """The link command minus run-time search paths. A Python built with an rpath to its own
    lib/ (pyenv does this) passes it on to every extension through LDSHARED, which would leave
    the build machine's paths in the wheel; _core links nothing but libc, so it needs none."""
    return [arg for arg in command if not arg.startswith(("-Wl,-rpath", "-Wl,-R", "-R"))]


class BuildExt(build_ext):
    """build_ext that names a missing compiler instead of failing with a bare traceback."""

    def build_extensions(self) -> None:
        compiler_so = getattr(self.compiler, "compiler_so", None)
        if compiler_so and shutil.which(compiler_so[0]) is None:
            raise BuildError(
                f"eventstream: the C compiler {compiler_so[0]!r} was not found; building the "
                f"compiled backend (eventstream._core) needs one (e.g. gcc). {SKIP_HINT}"
            )
        linker_so = getattr(self.compiler, "linker_so", None)
        if linker_so:
            self.compiler.linker_so = _without_rpath(linker_so)
        try:
            super().build_extensions()
        except Exception as exc:
            raise BuildError(
                f"eventstream: compiling eventstream._core failed: {exc}. {SKIP_HINT}"
            ) from exc


class BuildPy(build_py):
    """build_py that also writes eventstream/_build_info.py: whether this build made the
    compiled backend, so that the installed package knows which backend to expect."""

    def run(self) -> None:
        super().run()
        # An editable install imports the package from the source tree (as it does _core).
        root = HERE if self.editable_mode else self.build_lib
        path = os.path.join(root, BUILD_INFO)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write(
                '"""Written by setup.py when this installation was built; not in the sources."""\n'
                f"COMPILED = {WHY_NOT_COMPILED is None!r}\n"
                f"REASON = {WHY_NOT_COMPILED or ''!r}\n"
            )

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs.append(os.path.join(self.build_lib, BUILD_INFO))
        return outputs


def ext_modules() -> list[Extension]:
    if WHY_NOT_COMPILED is not None:
        if not NO_EXTENSIONS:
            print(
                f"eventstream: building the pure-Python package only: {WHY_NOT_COMPILED}. "
                "eventstream will use its pure-Python backend (over confluent-kafka's API).",
                file=sys.stderr,
            )
        return []
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
commands: dict[str, type] = {"build_py": BuildPy}
if WHY_NOT_COMPILED is None:
    commands["build_ext"] = BuildExt
setup(ext_modules=ext_modules(), cmdclass=commands)
