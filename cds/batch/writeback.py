"""Where RiskAssessments go: an NDJSON file (embedded default), the FHIR server, or nowhere.

Both writers are idempotent by identifier: writing the same RiskAssessment identifier twice
leaves one resource.  The NDJSON writer appends during a run (so a killed run loses
nothing already written) and :meth:`NdjsonWriter.compact` rewrites the file atomically with
one line per identifier (last write wins) at the end of every run.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Protocol

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.riskassessment import RiskAssessment

from cds.errors import MprtmError


class WritebackError(MprtmError):
    """A RiskAssessment or Device could not be written; names the identifier."""


class Writer(Protocol):
    def ensure_device(self, device: Device) -> str:
        """Create the Device once (by identifier); return its reference ``Device/<id>``."""
        ...

    def write(self, ra: RiskAssessment) -> str:
        """Create or update by identifier; return the resource's logical id."""
        ...

    def finish(self) -> None:
        """End of a run (compaction for files)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _identifier(resource: Any) -> tuple[str, str]:
    """(system, value) of the business identifier the service gave ``resource``."""
    for ident in resource.identifier or []:
        if ident.system and ident.value:
            return str(ident.system), str(ident.value)
    raise WritebackError(f"{resource.__resource_type__} has no identifier with a system")


def _stable_id(identifier: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, identifier))


class NdjsonWriter:
    """RiskAssessment.ndjson (+ Device.ndjson beside it), ids derived from identifiers."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.device_path = self.path.with_name("Device.ndjson")
        self._lock = threading.Lock()

    def ensure_device(self, device: Device) -> str:
        system, ident = _identifier(device)
        device.id = _stable_id(f"{system}|{ident}")
        with self._lock:
            existing = _read_lines(self.device_path)
            if not any(r.get("id") == device.id for r in existing):
                with self.device_path.open("a", encoding="utf-8") as fh:
                    fh.write(device.model_dump_json(exclude_none=True) + "\n")
        return f"Device/{device.id}"

    def write(self, ra: RiskAssessment) -> str:
        system, ident = _identifier(ra)
        ra.id = _stable_id(f"{system}|{ident}")
        line = ra.model_dump_json(exclude_none=True)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return str(ra.id)

    def finish(self) -> None:
        self.compact()

    def close(self) -> None:
        return None

    def compact(self) -> int:
        """Keep the last line per id; atomic replace. Returns the number of resources."""
        with self._lock:
            rows = _read_lines(self.path)
            latest: dict[str, dict[str, Any]] = {}
            for r in rows:
                latest[str(r.get("id"))] = r
            tmp = self.path.with_suffix(".ndjson.tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                for r in latest.values():
                    fh.write(json.dumps(r, separators=(",", ":")) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            return len(latest)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run; its RA is rewritten on resume
    return out


class NullWriter:
    """``writeback = "none"``: predictions are kept in the database only."""

    def ensure_device(self, device: Device) -> str:
        system, ident = _identifier(device)
        return f"Device/{_stable_id(f'{system}|{ident}')}"

    def write(self, ra: RiskAssessment) -> str:
        system, ident = _identifier(ra)
        return _stable_id(f"{system}|{ident}")

    def finish(self) -> None:
        return None

    def close(self) -> None:
        return None
