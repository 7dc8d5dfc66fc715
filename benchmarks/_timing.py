"""Timing helpers: per-call samples with perf_counter_ns, reported as median, p99 and p99.9.

These machines are 2-core and noisy: we report medians and p99 over many samples, and baselines
measured in the same run, never single means.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    n: int
    p50_us: float
    p99_us: float
    p999_us: float
    ops_per_s: float

    def row(self) -> str:
        return (f"| {self.name} | {self.n} | {self.p50_us:.1f} | {self.p99_us:.1f} | {self.p999_us:.1f} "
                f"| {self.ops_per_s:,.0f} |")


def measure(name: str, fn: Callable[[], object], *, n: int, warmup: int = 200) -> Result:
    for _ in range(warmup):
        fn()
    samples = []
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    total = time.perf_counter_ns() - start
    samples.sort()
    return Result(name, n, statistics.median(samples) / 1000, samples[int(n * 0.99) - 1] / 1000,
                  samples[int(n * 0.999) - 1] / 1000, n / (total / 1e9))


HEADER = "| benchmark | samples | p50 (µs) | p99 (µs) | p99.9 (µs) | throughput (ops/s) |\n|---|---|---|---|---|---|"
