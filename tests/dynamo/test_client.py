"""botocore's data files are read once per process: clients made afterwards, also in a process
forked after ``warm``, read none of them again."""

from __future__ import annotations

import subprocess
import sys

_OPENS = """
import os, sys
from podyn_fast.dynamo import client

opened = []

def audit(event, args):
    if event == "open" and "botocore" in str(args[0]) and "data" in str(args[0]):
        opened.append(str(args[0]))

if sys.argv[1] == "warm":
    client.warm(None)
sys.addaudithook(audit)
pid = os.fork()
if pid == 0:  # a forked worker: its own clients
    client.RawDynamo(region="us-east-1", endpoint_url="http://127.0.0.1:9")
    client.RawDynamo(region="us-west-2", endpoint_url="http://127.0.0.1:9")
    os._exit(min(len(opened), 100))
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def _data_files_read_by_a_forked_worker(mode: str) -> int:
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _OPENS, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout)


def test_a_worker_forked_after_warm_reads_no_botocore_data() -> None:
    assert _data_files_read_by_a_forked_worker("cold") >= 4  # the models and rules of both services
    assert _data_files_read_by_a_forked_worker("warm") == 0
