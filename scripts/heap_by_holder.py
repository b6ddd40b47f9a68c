#!/usr/bin/env python3
"""Sums a heaptrack peak flamegraph by its innermost canaryd frame: who holds the heap at the peak.

    heaptrack -o hp canaryd serve ...          # or SCALE_CANARYD=<wrapper that execs heaptrack>
    heaptrack_print -f hp.*.zst -F fg.txt --flamegraph-cost-type peak
    python3 scripts/heap_by_holder.py fg.txt 60

Prints the total at the peak, then the top holders in MB (frames outside canaryd are shown by
their two innermost frames).

A build with line tables (`CARGO_PROFILE_RELEASE_DEBUG=line-tables-only`) names inlined frames
as `function (file.rs)` instead of by path: there a frame is canaryd's when its file is one of
`src/`'s (`mod.rs`, `lib.rs` and `main.rs` are too common to tell), and the holder is shown with
its caller, since `{async_block#0} (task.rs)` alone says little.
"""
import collections
import os
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
COMMON = {"mod.rs", "lib.rs", "main.rs"}


def our_files():
    names = set()
    for _, _, files in os.walk(SRC):
        names.update(f for f in files if f.endswith(".rs"))
    return names - COMMON


def ours_by_file(frames, files):
    """Indexes of frames whose `(file.rs)` is one of canaryd's."""
    out = []
    for i, fr in enumerate(frames):
        if fr.endswith(")") and "(" in fr:
            name = fr[fr.rindex("(") + 1 : -1]
            if name in files:
                out.append(i)
    return out


def main():
    holders = collections.Counter()
    total = 0
    files = our_files()
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
            by_file = ours_by_file(frames, files)
            if ours:
                key = ours[-1].split("::h")[0][:110]
            elif by_file:
                i = by_file[-1]
                outer = frames[by_file[-2]] if len(by_file) > 1 else ""
                key = (frames[i][:70] + " < " + outer[:50]).strip(" <")
            else:
                key = "(none) < " + " < ".join(fr.split("::h")[0][:60] for fr in frames[-1:-3:-1])
            holders[key] += n
    print(f"total at peak {total / 1e6:.2f} MB")
    for key, n in holders.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 40):
        print(f"{n / 1e6:8.2f}  {key}")


if __name__ == "__main__":
    main()
