"""The benchmark event: a generated protobuf class and events of an exact encoded size."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROTO = HERE / "bench.proto"
TYPE_NAME = "eventstream.bench.BenchEvent"

# Encoded layout (see bench.proto): 0x09 + sent_ns (8 B), 0x11 + seq (8 B), 0x1a + len + body.
SENT_NS_OFFSET = 1
SEQ_OFFSET = 10
_FIXED_PART = 18


def ensure_generated() -> None:
    """Generate bench_pb2.py from bench.proto when it is missing or older (needs grpcio-tools)."""
    out = HERE / "bench_pb2.py"
    if out.exists() and out.stat().st_mtime >= PROTO.stat().st_mtime:
        return
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise SystemExit(
            f"benchmarks: {out.name} is missing and grpcio-tools is not installed to generate it "
            "(run scripts/dev-env, or `pip install grpcio-tools`)"
        ) from exc
    args = ["protoc", f"-I{HERE}", f"--python_out={HERE}", str(PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"benchmarks: protoc failed on {PROTO}")


def module() -> ModuleType:
    ensure_generated()
    return importlib.import_module("benchmarks.bench_pb2")


def event_class() -> Any:
    """The generated ``BenchEvent`` class."""
    return module().BenchEvent


def body_length(size: int) -> int:
    """Length of ``body`` that makes the encoded event exactly ``size`` bytes."""
    for body in range(max(0, size - _FIXED_PART - 3), size):
        length_prefix = 1 if body < 128 else 2 if body < 16384 else 3
        if _FIXED_PART + 1 + length_prefix + body == size:
            return body
    raise ValueError(f"no event encodes to exactly {size} bytes (minimum {_FIXED_PART + 2})")


def make_body(size: int) -> bytes:
    # Random, so that nothing along the way (compression is off anyway) profits from repetition.
    return os.urandom(body_length(size))


def make_event(cls: Any, body: bytes, seq: int, sent_ns: int = 1) -> Any:
    return cls(sent_ns=sent_ns, seq=seq, body=body)


def template(size: int) -> bytes:
    """One encoded event of ``size`` bytes, for the C contender, which stamps sent_ns/seq."""
    cls = event_class()
    data: bytes = make_event(cls, make_body(size), seq=1).SerializeToString()
    if len(data) != size or data[0] != 0x09 or data[SEQ_OFFSET - 1] != 0x11:
        raise AssertionError(f"unexpected encoding of BenchEvent ({len(data)} bytes)")
    return data


if __name__ == "__main__":  # pragma: no cover - manual check
    sys.path.insert(0, str(ROOT))
    for n in (100, 1024):
        print(n, len(template(n)))
