"""Run a command and print its peak RSS (MiB) as JSON on the last line: what bench.py compares."""

from __future__ import annotations

import json
import os
import subprocess
import sys

proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"peak_rss_mib": usage.ru_maxrss / 1024, "exit": os.waitstatus_to_exitcode(status)}))
