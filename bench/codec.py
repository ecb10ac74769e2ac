"""Codec throughput: fastavro (the hot path) against the ``avro`` package, plus the simulator.

    python bench/codec.py [--records N]

Prints records per second for IntelligenceReport encode and decode with each library, the
framed codec (validate + encode, decode) and simulated events per second.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import avro.io
import avro.schema
from fastavro import schemaless_reader, schemaless_writer

from producers.simulate import simulate
from schemas import Decoder, InMemoryRegistry, encode, from_json, parsed_schema, schema_text, validate


def _rate(label: str, n: int, fn: Callable[[], None], repeats: int = 3) -> float:
    # Best of several runs: the first pays for warm-up and the garbage collector's moods.
    elapsed = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        elapsed = min(elapsed, time.perf_counter() - started)
    rate = n / elapsed
    print(f"{label:<48} {rate:>12,.0f} records/s  ({n:,} in {elapsed:.2f} s)")
    return rate


def _sample_records(n: int) -> list[dict[str, Any]]:
    reports = [
        from_json(name, event)
        for name, event in simulate(7, date(2024, 1, 1), 120, children=2000)
        if name == "IntelligenceReport"
    ]
    return list(itertools.islice(itertools.cycle(reports), n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    n: int = args.records
    records = _sample_records(n)
    fast_schema = parsed_schema("IntelligenceReport")
    slow_schema = avro.schema.parse(schema_text("IntelligenceReport"))
    print(f"IntelligenceReport, {n:,} records")

    fast_bodies: list[bytes] = []

    def fast_encode() -> None:
        fast_bodies.clear()
        for r in records:
            buf = io.BytesIO()
            schemaless_writer(buf, fast_schema, r)
            fast_bodies.append(buf.getvalue())

    def fast_decode() -> None:
        for body in fast_bodies:
            schemaless_reader(io.BytesIO(body), fast_schema, None)

    slow_bodies: list[bytes] = []
    writer = avro.io.DatumWriter(slow_schema)
    reader = avro.io.DatumReader(slow_schema, slow_schema)

    def slow_encode() -> None:
        slow_bodies.clear()
        for r in records:
            buf = io.BytesIO()
            writer.write(r, avro.io.BinaryEncoder(buf))
            slow_bodies.append(buf.getvalue())

    def slow_decode() -> None:
        for body in slow_bodies:
            reader.read(avro.io.BinaryDecoder(io.BytesIO(body)))

    fe = _rate("fastavro encode", n, fast_encode)
    fd = _rate("fastavro decode", n, fast_decode)
    se = _rate("avro package encode", n, slow_encode, repeats=1)
    sd = _rate("avro package decode", n, slow_decode, repeats=1)
    print(f"fastavro / avro: encode {fe / se:.1f}x, decode {fd / sd:.1f}x")
    assert fast_bodies[:100] == slow_bodies[:100], "the two libraries disagree on the bytes"

    registry = InMemoryRegistry()
    schema_id = registry.register("hubstream.intelligence.police-value", schema_text("IntelligenceReport"))
    framed: list[bytes] = []
    decoder = Decoder(registry.schema_by_id)

    def codec_validate() -> None:
        for r in records:
            validate("IntelligenceReport", r)

    def codec_encode() -> None:
        framed.clear()
        for r in records:
            framed.append(encode(schema_id, "IntelligenceReport", r))

    def codec_decode() -> None:
        for body in framed:
            decoder.decode(body)

    _rate("schemas.validate (structure + domain)", n, codec_validate)
    _rate("schemas.encode (framed)", n, codec_encode)
    _rate("schemas.Decoder.decode (framed)", n, codec_decode)

    events: int = args.events
    counted = 0

    def run_simulation() -> None:
        nonlocal counted
        counted = 0
        for _ in itertools.islice(simulate(1, date(2024, 1, 1), 365, children=80_000), events):
            counted += 1

    _rate("producers.simulate events", events, run_simulation, repeats=1)


if __name__ == "__main__":
    main()
