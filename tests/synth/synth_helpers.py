"""Helpers shared by the synthetic-cohort tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

SEED = 11
N = 20
SIZE = 64


def read_ndjson(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def tree_digest(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
