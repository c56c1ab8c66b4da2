"""Build the C contender (native/esbench.c) into benchmarks/bin/, over confluent-kafka's librdkafka.

No system librdkafka or headers: the program declares the few functions it calls itself and links
the ``librdkafka-<hash>.so.1`` that the confluent-kafka wheel bundles (found by glob, since the
hash changes with each release), with an rpath so that it runs without LD_LIBRARY_PATH.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "native" / "esbench.c"
BIN_DIR = HERE / "bin"


class BuildError(RuntimeError):
    pass


def bundled_librdkafka() -> Path:
    """The librdkafka shared object of the installed confluent-kafka wheel."""
    import confluent_kafka

    site = Path(confluent_kafka.__file__).resolve().parent.parent
    found = sorted(glob.glob(str(site / "confluent_kafka.libs" / "librdkafka*.so*")))
    if not found:
        raise BuildError(
            f"no librdkafka*.so* in {site / 'confluent_kafka.libs'}: the C contender links the "
            "librdkafka bundled in the confluent-kafka wheel (a source build has none)"
        )
    return Path(found[0])


def build(force: bool = False) -> Path:
    """Compile (when the source, the library or the compiler flags changed); return the binary."""
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise BuildError(f"no C compiler ({cc!r}) to build the C contender")
    lib = bundled_librdkafka()
    flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"]
    link = [f"-L{lib.parent}", f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}"]
    digest = hashlib.sha256(
        SOURCE.read_bytes() + " ".join([cc, *flags, *link]).encode()
    ).hexdigest()[:12]
    out = BIN_DIR / f"esbench-{digest}"
    if out.exists() and not force:
        return out
    BIN_DIR.mkdir(exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    cmd = [cc, *flags, str(SOURCE), "-o", str(tmp), *link]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{res.stdout}{res.stderr}")
    tmp.rename(out)  # atomic: concurrent runs (other interpreters, other hashes) coexist
    return out


def compiler_version() -> str:
    cc = os.environ.get("CC", "gcc")
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
        return res.stdout.splitlines()[0] if res.stdout else "unknown"
    except OSError:
        return "unavailable"


if __name__ == "__main__":
    path = build(force="--force" in sys.argv)
    print(path)
