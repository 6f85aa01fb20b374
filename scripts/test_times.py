"""The suite's time per test file, from a pytest log run with ``--durations=0``: writes the table
of docs/test-times.md, so a change that makes the suite slower is seen.

    YOLO_OFFLINE=1 .venv/bin/python -m pytest -q --durations=0 | tee /tmp/suite.log
    .venv/bin/python scripts/test_times.py /tmp/suite.log > docs/test-times.md
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^([0-9.]+)s (call|setup|teardown)\s+(tests/[^:]+\.py)::")
TOTAL = re.compile(r"(\d+) passed.* in ([0-9.]+)s")


def main() -> None:
    text = Path(sys.argv[1]).read_text(errors="replace")
    per_file: Counter[str] = Counter()
    for line in text.splitlines():
        if m := LINE.match(line):
            per_file[m.group(3)] += float(m.group(1))
    total = TOTAL.search(text)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print("# The suite's time per test file\n")
    print(f"Measured {time.strftime('%Y-%m-%d')} on commit {commit.strip()} on the development machine (2 cores, no "
          "GPU), `YOLO_OFFLINE=1 .venv/bin/python -m pytest -q --durations=0` (a worker per core, a file at a time); "
          "regenerate with `scripts/test_times.py`.")
    if total:
        print(f"\nThe suite: {total.group(1)} tests in **{float(total.group(2)):.0f} s** (pytest's figure; the sum "
              f"below is every worker's time together, {sum(per_file.values()):.0f} s).\n")
    print("| file | seconds (setup + calls + teardown) |\n|---|---|")
    for name, seconds in per_file.most_common():
        print(f"| `{name}` | {seconds:.1f} |")


if __name__ == "__main__":
    main()
