"""One contender, one measurement, one fresh process: ``python -m benchmarks.worker '<spec json>'``.

The runner starts this for every Python contender (the C contender is its own binary with the
same protocol): stderr carries ``@progress <done> <total>`` lines (and any diagnostics), stdout
carries the result as one JSON object on the last line. Only the contender's own client library
is imported.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
from typing import Any

from benchmarks import common

MODULES = {
    "compiled": "benchmarks.clients.eventstream_client",
    "compiled-metrics": "benchmarks.clients.eventstream_client",
    "compiled-otel": "benchmarks.clients.eventstream_client",
    "pure": "benchmarks.clients.eventstream_client",
    "confluent": "benchmarks.clients.confluent_client",
    "aiokafka": "benchmarks.clients.aiokafka_client",
    "kafka-python": "benchmarks.clients.kafka_python_client",
}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    module = importlib.import_module(MODULES[spec["contender"]])
    mode = spec["mode"]
    if mode == "describe":
        result: dict[str, Any] = module.describe(spec)
        return result
    progress = common.Progress(spec["count"])
    result = getattr(module, mode.replace("-", "_"))(spec, progress)
    result["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    if spec["contender"] in MODULES and MODULES[spec["contender"]].endswith("eventstream_client"):
        import eventstream

        want = spec["contender"].partition("-")[0]
        if eventstream.backend() != want:
            print(
                f"worker: wanted the {want} backend, got {eventstream.backend()}", file=sys.stderr
            )
            return 3
    result = run(spec)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
