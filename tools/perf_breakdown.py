#!/usr/bin/env python3
"""Where a pushed record's CPU goes, from a `perf` profile with call stacks.

Usage:
    perf record -F 1999 --call-graph dwarf -p PID -- sleep 4
    perf script | python3 tools/perf_breakdown.py --records N

Each sample is charged to the innermost frame that belongs to a named part of the push path
(`PARTS` below); frames of `core`, `alloc`, `std`, the allocator and libc go to their caller.
`--records` is how many records the process handled while it was sampled; with it, the table
gives CPU microseconds per record (each running thread is sampled `--frequency` times per
CPU-second). This is how the "after" tables in docs/benchmarks.md ("Where a pushed record's
time goes") were made.
"""

import argparse
import re
import sys
from collections import Counter

# (part, pattern on the demangled symbol), first match wins, innermost frame first.
PARTS = [
    ("store: SQLite and its driver", r"sqlite3|libsqlite3_sys|sqlx_sqlite|sqlx_core|sqlx_postgres"),
    ("store: gateway side", r"gateway_store::"),
    ("validation: JSON Schema", r"jsonschema::|fancy_regex::|regex_automata::|regex::"),
    ("validation: SHA-256", r"sha2::|Sha256Digest"),
    ("validation: canonical form (JCS)", r"gateway_core::canonical::(write_|canonical_|push_json)"),
    ("validation: JSON parse", r"serde_json::|gateway_core::canonical::|RawValue"),
    ("validation: domain rules", r"gateway_core::(rules|ident|quality|date|calendar|sla|lifecycle)::"),
    ("validation: the rest", r"gateway_core::|credit_gateway::ingest"),
    ("HTTP and runtime", r"hyper::|axum::|tokio::|h2::|tower|reqwest::|http::|bytes::"),
    ("rayon", r"rayon"),
]
# Frames that are charged to their caller.
PASS_THROUGH = re.compile(r"^(core::|alloc::|std::|<core::|<alloc::|<std::|memchr::|mi_|_mi_|__memcpy|__memmove|memcpy|memmove|malloc|free|__libc|_int_|\[unknown\])")


def samples(lines):
    """Yields each sample's frames (symbols, innermost first)."""
    frames = []
    in_sample = False
    for line in lines:
        if not line.strip():
            if in_sample:
                yield frames
            frames, in_sample = [], False
            continue
        if not line.startswith((" ", "\t")):
            in_sample, frames = True, []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            symbol = re.sub(r" \(.*\)$", "", parts[1])
            frames.append(symbol)
    if in_sample:
        yield frames


def part_of(frames):
    for symbol in frames:
        if PASS_THROUGH.match(symbol):
            continue
        for part, pattern in PARTS:
            if re.search(pattern, symbol):
                return part
        # A named frame outside the parts (the kernel, another crate) ends the search.
        if "::" in symbol or symbol.startswith("[k"):
            return "other"
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=float, help="records handled while sampled")
    ap.add_argument("--frequency", type=float, default=1999.0)
    ap.add_argument("--within", help="only samples with this in a frame (e.g. validate_all)")
    args = ap.parse_args()
    counts = Counter(
        part_of(f) for f in samples(sys.stdin) if not args.within or any(args.within in s for s in f)
    )
    total = sum(counts.values())
    print(f"{total} samples")
    print("| where | share of CPU | µs per record |")
    print("|---|---:|---:|")
    for part, n in counts.most_common():
        us = ""
        if args.records:
            us = f"{n / args.frequency / args.records * 1e6:.1f}"
        print(f"| {part} | {100 * n / total:.1f} % | {us} |")


if __name__ == "__main__":
    main()
