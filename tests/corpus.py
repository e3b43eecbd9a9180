"""The named edge-case corpus (data/edge_items.json), for the tests that load it: through the core
(tests/core/test_edge_corpus.py) and through the real command (tests/migrate/test_bad_input.py).

A case is ``{"name", "expect", one of "item" | "items" | "raw", optional "modes"}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "data" / "edge_items.json").read_text("utf-8"))


def dump(item: Any, dumps: str) -> bytes:
    """``item`` as JSON bytes: UTF-8 as it is (``utf8``), or ASCII with \\u escapes."""
    if dumps == "utf8":
        return json.dumps(item, ensure_ascii=False).encode("utf-8")
    return json.dumps(item, ensure_ascii=True).encode("ascii")


def parts(case: dict[str, Any], dumps: str) -> list[tuple[bytes, Any]]:
    """The case's items as (the bytes sent, the item as Python sees it)."""
    if "raw" in case:
        return [(case["raw"].encode("utf-8"), json.loads(case["raw"]))]
    items = case["items"] if "items" in case else [case["item"]]
    return [(dump(item, dumps), item) for item in items]
