#!/usr/bin/env python3
"""Sums a heaptrack peak flamegraph by its innermost canaryd frame: who holds the heap at the peak.

    heaptrack -o hp canaryd serve ...          # or SCALE_CANARYD=<wrapper that execs heaptrack>
    heaptrack_print -f hp.*.zst -F fg.txt --flamegraph-cost-type peak
    python3 scripts/heap_by_holder.py fg.txt 60

Prints the total at the peak, then the top holders in MB (frames outside canaryd are shown by
their two innermost frames).
"""
import collections
import sys


def main():
    holders = collections.Counter()
    total = 0
    with open(sys.argv[1], errors="replace") as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            try:
                n = int(n)
            except ValueError:
                continue
            frames = [fr for fr in stack.split(";") if fr]
            total += n
            ours = [fr for fr in frames if "canaryd::" in fr]
            if ours:
                key = ours[-1].split("::h")[0][:110]
            else:
                key = "(none) < " + " < ".join(fr.split("::h")[0][:60] for fr in frames[-1:-3:-1])
            holders[key] += n
    print(f"total at peak {total / 1e6:.2f} MB")
    for key, n in holders.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 40):
        print(f"{n / 1e6:8.2f}  {key}")


if __name__ == "__main__":
    main()
