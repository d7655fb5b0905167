"""CPU per ~2 KB document of body codecs: zlib (levels 1, 6, 9) against zstd (not a test).

    python tests/bench/bench_codec.py [--docs 5000] [--rounds 5]

Compression and decompression are timed apart (best of ``rounds``, in one process, so the
figures are comparable with each other), with the stored size. zstd needs ``zstandard``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_put import document

Codec = tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]


def codecs() -> list[Codec]:
    chosen: list[Codec] = [
        (f"zlib {level}", lambda b, lv=level: zlib.compress(b, lv), zlib.decompress)
        for level in (1, 6, 9)
    ]
    try:
        import zstandard
    except ImportError:
        print("zstandard is not installed: zlib only", file=sys.stderr)
        return chosen
    decompressor = zstandard.ZstdDecompressor()
    for level in (1, 2, 3):
        # One compressor per level, reused, as a worker would; zstd frames carry their size.
        compressor = zstandard.ZstdCompressor(level=level)
        chosen.append((f"zstd {level}", compressor.compress, decompressor.decompress))
    return chosen


def best_us(action: Callable[[bytes], bytes], items: Sequence[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            action(item)
        best = min(best, time.perf_counter() - started)
    return best / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(1)
    bodies = [orjson.dumps(document(n, rng)) for n in range(args.docs)]
    raw = sum(map(len, bodies)) / len(bodies)
    print(f"{args.docs} documents of {raw:.0f} bytes on average\n")
    heads = f"{'compress us':>12} {'decompress us':>14} {'total us':>9} {'bytes':>7} {'ratio':>6}"
    print(f"{'codec':<8} {heads}")
    for name, compress, decompress in codecs():
        packed = [compress(b) for b in bodies]
        assert all(decompress(p) == b for p, b in zip(packed, bodies, strict=True))
        c_us = best_us(compress, bodies, args.rounds)
        d_us = best_us(decompress, packed, args.rounds)
        size = sum(map(len, packed)) / len(packed)
        total = c_us + d_us
        print(
            f"{name:<8} {c_us:>12.1f} {d_us:>14.1f} {total:>9.1f} {size:>7.0f} {raw / size:>6.2f}"
        )


if __name__ == "__main__":
    main()
