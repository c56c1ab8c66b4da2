"""Generate ``*_pb2.py`` modules and typed ``*_pb2.pyi`` stubs next to every ``.proto`` here.

Generated code is not committed (protoc marks it "NO CHECKED-IN PROTOBUF GENCODE": it must match
the installed protobuf runtime); the build, the test command and the examples run this first.
Needs grpcio-tools. Only regenerates what is missing or older than its ``.proto``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("eventstream", "tests", "examples", "benchmarks")


def protos(root: Path = ROOT) -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (root / folder).rglob("*.proto"))


def generate(root: Path = ROOT, *, force: bool = False) -> list[Path]:
    """Generate stale modules; returns the ``.proto`` files it compiled."""
    from grpc_tools import protoc

    compiled = []
    for proto in protos(root):
        out = proto.with_name(proto.stem + "_pb2.py")
        if not force and out.exists() and out.stat().st_mtime >= proto.stat().st_mtime:
            continue
        args = [
            "protoc",
            f"-I{proto.parent}",
            f"--python_out={proto.parent}",
            f"--pyi_out={proto.parent}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
        compiled.append(proto)
    return compiled


if __name__ == "__main__":
    done = generate(force="--force" in sys.argv)
    print(f"generated {len(done)} protobuf module(s)")
