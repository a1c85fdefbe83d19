"""faust's own ceiling on this machine: the ingest worker's app, topic and batching, with a writer
that only counts what it is handed. Run as `python -m tests.bench.faust_ceiling N OUT` with the
worker's environment; writes JSON with the rate after the first batch up to the N-th event to OUT
(a file: a faust worker sends its stdout to its log).
"""

import json
import os
import sys
import time
from pathlib import Path

import faust
from faust.types.tuples import Message

from services.ingest.app import faust_app, run_worker
from services.ingest.batches import consume_in_batches
from services.settings import Settings


def _finish(out: Path, rate: float) -> None:
    out.write_text(json.dumps({"rate": rate, "cpu_s": time.process_time()}))
    os._exit(0)  # a measurement, not a worker: no graceful shutdown needed


def main() -> None:
    n, out = int(sys.argv[1]), Path(sys.argv[2])
    settings = Settings.from_env()
    app, detections = faust_app(settings)
    seen = {"n": 0, "start": 0.0, "first": 0}

    async def count(messages: list[Message]) -> None:
        if not seen["start"]:  # the clock starts when the first batch is handed over
            seen["start"], seen["first"] = time.perf_counter(), len(messages)
        seen["n"] += len(messages)
        if seen["n"] >= n:
            _finish(out, (seen["n"] - seen["first"]) / (time.perf_counter() - seen["start"]))

    @app.agent(detections)
    async def agent(stream: faust.StreamT[bytes]) -> None:
        await consume_in_batches(
            stream, settings.ingest_batch_size, settings.ingest_batch_within_s, count, settings.ingest_writers
        )

    run_worker(settings, app)


if __name__ == "__main__":
    main()
