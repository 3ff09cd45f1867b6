"""Prometheus metrics of the service, read from the application database at scrape time
(so that runs of the scheduler or of workers in other processes are counted too), beside
the audit counters of :mod:`cds.audit` on the same ``GET /metrics``.

Every metric is named ``mprtm_*``.  ``/metrics`` answers loopback clients and the networks
listed in ``[server] metrics_allow``; anyone else gets 403.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cds.db.models import Alert, BatchRun, ModelVersion, MonitorResult


def client_allowed(remote_addr: str | None, allow: Sequence[str]) -> bool:
    """Loopback, or inside one of the ``allow`` networks (CIDR)."""
    if not remote_addr:
        return False
    try:
        addr = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    if addr.is_loopback:
        return True
    return any(addr in ipaddress.ip_network(net, strict=False) for net in allow)


class DatabaseCollector(Collector):
    """Batch runs, alerts, registry versions and the latest drift scores.

    Args:
        engine: the application database.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        with Session(self.engine) as s:
            runs = CounterMetricFamily(
                "mprtm_batch_runs", "Batch runs by status", labels=["status"]
            )
            for status, n in s.execute(
                select(BatchRun.status, func.count(BatchRun.id)).group_by(BatchRun.status)
            ):
                runs.add_metric([status], n)
            yield runs
            last = s.scalar(
                select(BatchRun)
                .where(BatchRun.finished_at.is_not(None))
                .order_by(BatchRun.finished_at.desc())
                .limit(1)
            )
            patients = GaugeMetricFamily(
                "mprtm_batch_last_run_patients", "Patients of the latest run", labels=["status"]
            )
            duration = GaugeMetricFamily(
                "mprtm_batch_last_run_duration_seconds", "Duration of the latest run"
            )
            if last is not None:
                patients.add_metric(["done"], last.n_done)
                patients.add_metric(["failed"], last.n_failed)
                total = (last.timings or {}).get("total")
                if isinstance(total, int | float):
                    duration.add_metric([], float(total))
            yield patients
            yield duration
            alerts = CounterMetricFamily("mprtm_alerts_raised", "Clinical alerts raised")
            alerts.add_metric([], s.scalar(select(func.count(Alert.id))) or 0)
            yield alerts
            info = InfoMetricFamily(
                "mprtm_model_version", "Active and shadow model versions", labels=["state"]
            )
            drift = GaugeMetricFamily(
                "mprtm_drift_score",
                "Latest monitor figures (input and output drift)",
                labels=["model_version", "signal"],
            )
            for mv in s.scalars(
                select(ModelVersion).where(ModelVersion.state.in_(("active", "shadow")))
            ):
                info.add_metric(
                    [mv.state],
                    {"id": str(mv.id), "version": mv.version, "sha256": mv.checkpoint_sha256},
                )
                latest = s.scalar(
                    select(MonitorResult)
                    .where(MonitorResult.model_version_id == mv.id)
                    .order_by(MonitorResult.created_at.desc(), MonitorResult.id.desc())
                    .limit(1)
                )
                for sig in latest.signals if latest is not None else []:
                    if sig.get("kind") in ("input", "output") and sig.get("value") is not None:
                        drift.add_metric([str(mv.id), sig["name"]], float(sig["value"]))
            yield info
            yield drift


def registry_for(engine: Engine) -> CollectorRegistry:
    """A registry holding the database collector of ``engine``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector(engine))
    return reg
