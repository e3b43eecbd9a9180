"""`podyn-fast demo`, the README's first command: end to end, and stopped by Ctrl-C leaving nothing behind."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time

from podyn_fast.demo.run import changes, sample_tables

DEMO = [sys.executable, "-m", "podyn_fast", "demo"]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_sample_tables_are_the_developer_guides() -> None:
    tables = {t["create"]["TableName"]: t for t in sample_tables()}
    assert set(tables) == {"Forum", "Thread", "Reply", "ProductCatalog"}
    keys = {n: [(k["AttributeName"], k["KeyType"]) for k in t["create"]["KeySchema"]] for n, t in tables.items()}
    assert keys["Reply"] == [("Id", "HASH"), ("ReplyDateTime", "RANGE")]
    assert keys["Thread"] == [("ForumName", "HASH"), ("Subject", "RANGE")]
    for name, table in tables.items():
        assert table["items"], name
        for item in table["items"]:
            assert all(k in item for k, _ in keys[name]), (name, item)


def test_demo_runs_end_to_end() -> None:
    done = subprocess.run([*DEMO, "--no-wait"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stderr
    # Each change was seen in PostgreSQL (the demo fails when one does not arrive in time), and the
    # tables matched DynamoDB's item counts at the end (it fails otherwise).
    arrived = re.findall(r"(INSERT|MODIFY|REMOVE)\s+.*in PostgreSQL after [\d.]+ s", out)
    assert arrived == [c.kind for c in changes()], out
    assert "rows in PostgreSQL" in out
    assert re.search(r"psql\S* 'postgresql://postgres@127\.0\.0\.1:\d+/postgres'", out), out
    assert "Traceback" not in out


def test_demo_waits_and_ctrl_c_stops_everything() -> None:
    proc = subprocess.Popen([*DEMO, "--wait"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "Ctrl-C stops the demo" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(300), "".join(lines)
        text = "".join(lines)
        pg_port = int(re.search(r"postgresql://postgres@127\.0\.0\.1:(\d+)/", text).group(1))  # type: ignore[union-attr]
        dynamo_port = int(re.search(r"at http://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        # Still serving while it waits: the user can connect.
        time.sleep(1)
        assert proc.poll() is None, text
        assert _listening(pg_port) and _listening(dynamo_port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    assert proc.stderr is not None
    proc.stderr.close()
    assert not _listening(pg_port), "the embedded PostgreSQL outlived the demo"
    assert not _listening(dynamo_port), "the emulator outlived the demo"
    assert "Traceback" not in "".join(lines)
