"""Combine `mutmut results --all true` outputs of successive runs into a per-module score.

    mutmut results --all true > run1.txt   # after each `mutmut run ...`
    python tools/mutation_summary.py run1.txt run2.txt ... > docs/mutation-results.txt

Later files win for every mutant they checked (a re-run after new tests); a mutant checked in no
run is left out. Prints the per-module table, then every mutant with its final status.
"""

from __future__ import annotations

import collections
import sys


def load(path: str) -> dict[str, str]:
    out = {}
    for line in open(path, encoding="utf-8"):
        if ": " in line:
            name, status = line.strip().rsplit(": ", 1)
            out[name] = status
    return out


def main(paths: list[str]) -> None:
    final: dict[str, str] = {}
    for path in paths:
        for name, status in load(path).items():
            if status != "not checked":
                final[name] = status
    per_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, status in final.items():
        per_module[name.split(".x")[0]][status] += 1
    print("| module | mutants checked | killed | survived | no tests | killed % |")
    print("| --- | --- | --- | --- | --- | --- |")
    total: collections.Counter = collections.Counter()
    for module in sorted(per_module):
        counts = per_module[module]
        total.update(counts)
        checked = sum(counts.values())
        print(f"| {module} | {checked} | {counts['killed']} | {counts['survived']} | {counts['no tests']} | "
              f"{counts['killed'] / checked:.1%} |")
    checked = sum(total.values())
    print(f"| all | {checked} | {total['killed']} | {total['survived']} | {total['no tests']} | "
          f"{total['killed'] / checked:.1%} |")
    print()
    for name in sorted(final):
        print(f"{final[name]}: {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
