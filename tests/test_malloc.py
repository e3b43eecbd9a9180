"""A process told to keep freed memory reuses the pages of the buffers a transaction freed, instead
of faulting in fresh ones for every page it reads."""

from __future__ import annotations

import subprocess
import sys

# A loader's pattern: in a thread of its own, page bodies of 1 MB read and encoded into rows, the
# rows kept until the transaction commits (24 MB here), then all freed; again.
_FAULTS = """
import resource, sys, threading
from podyn_fast import malloc
if sys.argv[1] == "keep":
    assert malloc.keep_freed_memory()

def load():
    for _ in range(10):
        transaction = []
        for i in range(16):
            page = bytes([i]) * (1 << 20)
            transaction.append(page + page[: 1 << 19])
            del page
        del transaction

before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
loader = threading.Thread(target=load)
loader.start()
loader.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_buffers_are_reused_without_page_faults() -> None:
    default, kept = _page_faults("default"), _page_faults("keep")
    # 10 transactions of 16 pages, each 2.5 MB written: 10 * 16 * 640 pages of 4 kB.
    assert default > 10 * 16 * 640 / 2, default
    assert kept < default / 5, (kept, default)
