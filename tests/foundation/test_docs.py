"""The documents describe the product as it is: a generated model card, no work-step labels,
every document reachable from the README, and a `make test` that sets itself up."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

#: an internal work-step label: the word "stop" (any case) followed by a number
STEP_LABEL = re.compile(r"\bstops?[ -]?\d+\b", re.IGNORECASE)


def _card_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "model_card_doc", REPO / "tools/model_card_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_card_is_generated_from_the_one_metrics_file() -> None:
    tool = _card_tool()
    doc = json.loads((DOCS / "model-performance-metrics.json").read_text(encoding="utf-8"))
    assert (DOCS / "model-card.md").read_text(encoding="utf-8") == tool.render(doc)
    assert tool.main(["--check"]) == 0


def test_model_card_follows_the_metrics_file(tmp_path: Path) -> None:
    tool = _card_tool()
    doc = json.loads((DOCS / "model-performance-metrics.json").read_text(encoding="utf-8"))
    seed = doc["test"][doc["run"]["card_seed"]]
    seed["metrics"]["fusion"]["death"]["auroc"] = 0.5
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps(doc), encoding="utf-8")
    assert tool.main(["--metrics", str(metrics), "--check"]) == 1
    out = tmp_path / "card.md"
    assert tool.main(["--metrics", str(metrics), "--out", str(out)]) == 0
    assert "| death | 0.500 [" in out.read_text(encoding="utf-8")


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--", *patterns], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]


def test_no_document_or_comment_names_an_internal_work_step() -> None:
    files = _tracked(
        "*.md", "*.py", "*.sh", "*.toml", "Makefile", ".ci/*", "docs/*.json", "benchmarks/*"
    )
    assert any(p.name == "model-performance.md" for p in files)
    hits = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if STEP_LABEL.search(line)
    ]
    assert hits == []
    assert not list(DOCS.rglob("*stop[0-9]*")), "files named after work steps"


def test_readme_lists_every_document() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Documentation") :]
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"(docs/{p.name})" not in table]
    assert missing == []
    assert "(docs/decisions/README.md)" in table
    index = (DOCS / "decisions" / "README.md").read_text(encoding="utf-8")
    records = [p.name for p in sorted((DOCS / "decisions").glob("0*.md"))]
    assert records and all(f"({name})" in index for name in records)


def test_make_test_sets_itself_up() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^test: setup$", makefile, re.MULTILINE)
    assert re.search(r"^test-fast: setup$", makefile, re.MULTILINE)
    setup = (REPO / ".ci" / "setup").read_text(encoding="utf-8")
    for needed in ("apt-packages.txt", "pg_ctlcluster", "redis-server", "setup.d"):
        assert needed in setup
    assert "make setup" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
