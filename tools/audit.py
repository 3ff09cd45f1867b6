"""Known vulnerabilities of the locked packages: ``python tools/audit.py requirements.lock``.

Runs ``pip-audit`` on the lock file (every pin and hash as written, nothing resolved again)
and reads its JSON report:

* a package with a known vulnerability: listed, exit status 1;
* packages the advisory service could not check (it cannot be reached, or it does not
  know the release): a banner ``AUDIT SKIPPED`` or ``AUDIT INCOMPLETE`` names how many and
  which, exit status 0 -- the run is recorded as skipped, loudly, never as a clean audit;
* everything checked and clean: ``audit: N packages, no known vulnerabilities``.

``--service`` picks pip-audit's advisory source (``pypi`` or ``osv``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BANNER = "!" * 78


@dataclass
class AuditSummary:
    """What one pip-audit report says."""

    audited: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (package, reason)
    vulnerable: list[tuple[str, str]] = field(default_factory=list)  # (package, advisory ids)

    @property
    def exit_status(self) -> int:
        return 1 if self.vulnerable else 0

    def lines(self, service: str) -> list[str]:
        out = [f"{pkg}: {ids}" for pkg, ids in self.vulnerable]
        total = len(self.audited) + len(self.skipped)
        if self.skipped:
            word = "SKIPPED" if not self.audited else "INCOMPLETE"
            out += [
                BANNER,
                f"AUDIT {word}: {len(self.skipped)} of {total} packages could not be checked "
                f"against the '{service}' advisory service",
                f"  e.g. {self.skipped[0][0]}: {self.skipped[0][1]}",
                "  packages: "
                + ", ".join(p for p, _ in self.skipped[:40])
                + (" ..." if len(self.skipped) > 40 else ""),
                BANNER,
            ]
        if self.vulnerable:
            out.append(f"audit: {len(self.vulnerable)} vulnerable packages of {total}")
        elif self.audited and self.skipped:
            out.append(f"audit: {len(self.audited)} of {total} packages checked, none vulnerable")
        elif self.audited:
            out.append(f"audit: {len(self.audited)} packages, no known vulnerabilities")
        return out


def summarize(report: dict[str, Any]) -> AuditSummary:
    """Sort the dependencies of a pip-audit JSON report into audited, skipped, vulnerable."""
    summary = AuditSummary()
    for dep in report.get("dependencies") or []:
        name = f"{dep.get('name')}=={dep.get('version', '?')}"
        if dep.get("skip_reason"):
            summary.skipped.append((str(dep.get("name")), str(dep["skip_reason"])[:200]))
            continue
        summary.audited.append(name)
        vulns = dep.get("vulns") or []
        if vulns:
            summary.vulnerable.append((name, ", ".join(str(v.get("id")) for v in vulns)))
    return summary


def run_pip_audit(lock: Path, service: str, timeout_s: float) -> tuple[AuditSummary, str]:
    """Run pip-audit; (summary, error text).  An unreachable service skips every package."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "pip_audit",
            "--disable-pip",
            "--require-hashes",
            "-r",
            str(lock),
            "--vulnerability-service",
            service,
            "--format",
            "json",
            "--output",
            str(out),
            "--progress-spinner",
            "off",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return _all_skipped(lock, f"pip-audit did not finish within {timeout_s:.0f}s"), ""
        if out.is_file() and out.stat().st_size:
            return summarize(json.loads(out.read_text())), ""
        reason = (proc.stderr.strip().splitlines() or ["no report"])[-1][:300]
        return _all_skipped(lock, f"advisory service unreachable: {reason}"), reason


def _all_skipped(lock: Path, reason: str) -> AuditSummary:
    pins = [
        line.split("==", 1)[0]
        for line in lock.read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#", "-"))
    ]
    return AuditSummary(skipped=[(p, reason) for p in pins])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--service", choices=["pypi", "osv"], default="pypi")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    summary, _ = run_pip_audit(args.lock, args.service, args.timeout)
    for line in summary.lines(args.service):
        sys.stdout.write(line + "\n")
    return summary.exit_status


if __name__ == "__main__":
    sys.exit(main())
