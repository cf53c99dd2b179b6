#!/usr/bin/env python3
"""Instructions per 1:1 message, function by function, from `bench.sh --instructions`.

`scripts/bench.sh --scenarios '' --instructions` leaves two callgrind dumps per gateway
in its results directory (`callgrind.<pid>.1` after a first run, `.2` after 3,000 more
messages). This prints, summed over both gateways, what each function cost per message
between the two dumps: self cost by default, or with --inclusive what it and everything
it called cost (the stage figures of docs/PERFORMANCE.md).

    scripts/callgrind-diff.py DIR [--inclusive] [--top N] [--grep TEXT]
"""
import argparse
import glob
import re
import subprocess
import sys
from collections import Counter

# "  1,234 (12.34%)  file:function [object]", as callgrind_annotate prints a function.
LINE = re.compile(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)$")


def costs(dump, inclusive):
    """Instructions per function in one dump, keyed by `function [object]`."""
    args = ["callgrind_annotate", "--threshold=100", dump]
    if inclusive:
        args.insert(1, "--inclusive=yes")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    found = Counter()
    for line in out.splitlines():
        match = LINE.match(line)
        if not match or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r"^[^:]*?:(?!:)", "", match.group(2), count=1)
        found[name] += int(match.group(1).replace(",", ""))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="a results directory of bench.sh --instructions")
    parser.add_argument("--inclusive", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--grep", default="", help="only functions whose name has this")
    parser.add_argument("--messages", type=int, default=3000,
                        help="messages between the two dumps (bench.sh: 3000)")
    opts = parser.parse_args()
    firsts = sorted(glob.glob(f"{opts.dir}/callgrind.*.1"))
    if not firsts:
        sys.exit(f"no callgrind.<pid>.1 in {opts.dir}: run bench.sh --instructions first")
    total = Counter()
    for first in firsts:
        before = costs(first, opts.inclusive)
        after = costs(first[:-1] + "2", opts.inclusive)
        for name in set(before) | set(after):
            total[name] += after[name] - before[name]
    shown = [(n, c) for n, c in total.most_common() if opts.grep in n][: opts.top]
    for name, cost in shown:
        short = re.sub(r" \[[^]]*\]$", "", name)[:150]
        print(f"{cost / opts.messages:9.0f}  {short}")


if __name__ == "__main__":
    main()
