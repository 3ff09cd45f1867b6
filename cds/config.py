"""Typed, frozen application settings.

One TOML file plus ``MPRTM_<SECTION>__<KEY>`` environment variables.  This is the only
module of the application that reads ``os.environ``.  Keys marked *secret* may come only
from the environment; a secret written in the TOML file is refused so that it never lands
in a file that is copied around or committed.

Errors (unknown key, wrong type, bad choice, missing required value) raise
:class:`ConfigError`, whose message names the key and the file; the CLI turns it into
exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cds.errors import ConfigError

ENV_PREFIX = "MPRTM_"
CONFIG_ENV = "MPRTM_CONFIG"

#: ``section.key`` names that may only be set from the environment.
SECRET_KEYS = frozenset(
    {
        "fhir.bearer_token",
        "fhir.client_secret",
        "server.secret_key",
        "batch.broker_password",
        "pacs.dicomweb_password",
        "pacs.dicomweb_token",
        "listener.orthanc_password",
    }
)
#: Keys whose value is masked when the effective configuration is printed (every other
#: key ending in ``url`` has its password and query string masked too).
MASKED_KEYS = SECRET_KEYS | {"database.url", "batch.broker_url"}
#: URL keys that may not carry ``user:password@`` in the TOML file (the environment may).
NO_USERINFO_KEYS = frozenset(
    {
        "database.url",
        "batch.broker_url",
        "pacs.dicomweb_url",
        "fhir.base_url",
        "jwks_url",
        "audit.fhir_url",
        "listener.orthanc_url",
    }
)
#: Shortest ``server.secret_key`` accepted (bytes of UTF-8).
MIN_SECRET_KEY_BYTES = 32


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///mprtm.db"
    echo: bool = False


@dataclass(frozen=True)
class FhirSettings:
    source: Literal["ndjson", "server"] = "ndjson"
    ndjson_dir: str = "demo-data/fhir"
    base_url: str = ""
    auth: Literal["none", "bearer", "smart-backend"] = "none"
    token_url: str = ""
    client_id: str = ""
    private_key_file: str = ""
    key_alg: Literal["RS384", "ES384"] = "RS384"
    key_id: str = ""
    scope: str = "system/*.rs"
    bearer_token: str = ""
    client_secret: str = ""
    timeout_s: float = 30.0
    max_concurrency: int = 4
    max_retries: int = 4
    page_size: int = 200
    retry_backoff_s: float = 0.5
    max_retry_wait_s: float = 60.0
    bulk_timeout_s: float = 3600.0
    bulk_file_origins: tuple[str, ...] = ()
    canonical_base: str = ""
    observation_window_days: int = 365
    max_notes: int = 3
    notes_window_days: int = 365
    writeback: Literal["ndjson", "server", "none"] = "ndjson"
    writeback_path: str = "out/RiskAssessment.ndjson"


@dataclass(frozen=True)
class PacsSettings:
    source: Literal["folder", "dimse", "dicomweb"] = "folder"
    folder: str = "demo-data/dicom"
    host: str = "127.0.0.1"
    port: int = 4242
    called_aet: str = "ORTHANC"
    calling_aet: str = "MPRTM"
    storage_port: int = 11112
    allowed_peers: tuple[str, ...] = ("ORTHANC",)
    dicomweb_url: str = ""
    cache_dir: str = "cache/dicom"
    assoc_timeout_s: float = 30.0
    dimse_timeout_s: float = 120.0
    network_timeout_s: float = 120.0
    max_retries: int = 3
    retry_backoff_s: float = 1.0
    storage_bind: str = "127.0.0.1"
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    dicomweb_auth: Literal["none", "basic", "bearer"] = "none"
    dicomweb_username: str = ""
    dicomweb_password: str = ""
    dicomweb_token: str = ""
    dicomweb_timeout_s: float = 60.0
    retrieve: Literal["move", "get"] = "get"
    lge_patterns: tuple[str, ...] = ("LGE", "late gad", "PSIR", "delayed enh", "MDE")
    exclude_patterns: tuple[str, ...] = ("localizer", "scout", "survey", "cine", "T1 map")
    lge_prefer_phase_sensitive: bool = True
    lge_max_age_days: int = 0
    patient_id_system: str = ""
    writeback: Literal["none", "dimse", "dicomweb"] = "none"
    writeback_outbox: str = "out/dicom-outbox"
    writeback_secondary_capture: bool = False


@dataclass(frozen=True)
class ModelSettings:
    checkpoint: str = "checkpoints/mprtm-demo.pt"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    text_encoder: str = ""
    cpu_threads: int = 0
    batch_size: int = 32
    segment_cache: bool = True
    image_min_quality: float = 0.3
    image_min_ring_fraction: float = 0.5
    image_max_entropy: float = 0.45
    image_min_flip_agreement: float = 0.6
    image_max_outside_enhancement: float = 0.35
    image_max_ood_ratio: float = 2.0
    image_wall_min_mm: float = 2.0
    image_wall_max_mm: float = 30.0
    image_lv_diameter_min_mm: float = 20.0
    image_lv_diameter_max_mm: float = 100.0
    image_flip_check: bool = True


@dataclass(frozen=True)
class RiskSettings:
    moderate: float = -1.0
    high: float = -1.0


@dataclass(frozen=True)
class AlertSettings:
    outcome: str = "death"
    on_high_tier: bool = True
    threshold: float = 0.2
    rise: float = 0.1
    fibrosis_burden: float = 0.15


@dataclass(frozen=True)
class BatchSettings:
    cohort: str = "all"
    schedule: str = "0 2 * * *"
    timezone: str = "UTC"
    executor: Literal["local", "celery"] = "local"
    chunk_size: int = 16
    broker_url: str = "redis://127.0.0.1:6379/0"
    broker_password: str = ""
    fhir_rate_limit_per_s: float = 20.0
    misfire_grace_s: int = 3600
    lock_file: str = "mprtm-batch.lock"
    incremental: bool = True
    overlap: bool = True


@dataclass(frozen=True)
class RetentionSettings:
    """How long data is kept (days; 0 keeps it for ever).  See :mod:`cds.retention`."""

    predictions_days: int = 0
    batch_runs_days: int = 0
    issued_cards_days: int = 0
    image_cache_days: int = 0
    segment_cache_days: int = 0
    dicom_cache_days: int = 0
    after_nightly: bool = False


@dataclass(frozen=True)
class RegistrySettings:
    """Minima a ``mprtm validate`` report must meet before a version may become active
    (:mod:`cds.registry`)."""

    gate_outcome: str = "death"
    min_auroc_ci_lower: float = 0.7
    max_ece: float = 0.1
    flag_rate_ratio_min: float = 0.5
    flag_rate_ratio_max: float = 2.0


@dataclass(frozen=True)
class MonitoringSettings:
    """Thresholds of ``mprtm monitor`` (:mod:`cds.monitor`); crossing one raises an admin
    alert and exits with status 4."""

    min_patients: int = 20
    psi_max: float = 0.1
    missing_change_max: float = 0.15
    modality_change_max: float = 0.15
    baseline_runs: int = 7
    mean_risk_change_max: float = 0.05
    high_tier_share_change_max: float = 0.1
    alerts_ratio_max: float = 2.0
    failed_share_max: float = 0.05
    mature_days: int = 365
    realised_auroc_min: float = 0.65
    realised_ece_max: float = 0.1
    after_nightly: bool = True


#: JWS algorithms an issuer may be configured to use (asymmetric only: never HMAC or none).
JwtAlgorithm = Literal["ES384", "RS384", "ES256", "RS256", "PS384"]


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    jwks_url: str = ""
    jwks_file: str = ""
    jku_allowed: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()
    algorithms: tuple[JwtAlgorithm, ...] = ("ES384", "RS384")


@dataclass(frozen=True)
class CdsHooksSettings:
    base_url: str = "http://127.0.0.1:8080"
    require_jwt: bool = True
    fresh_hours: float = 36.0
    time_budget_ms: int = 400
    cors_origins: tuple[str, ...] = ("*",)
    trusted_issuers: tuple[TrustedIssuer, ...] = ()
    jwt_leeway_s: int = 60
    max_token_lifetime_s: int = 3600
    jwks_cache_s: int = 300
    workers: int = 4
    torch_threads: int = 1
    allow_http_fhir_server: bool = False
    internal_fhir_servers: tuple[str, ...] = ()
    fetch_max_bytes: int = 8_388_608
    max_resources_per_key: int = 2000
    jwks_failure_cache_s: int = 30


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    secure_cookies: bool = False
    secret_key: str = ""
    demo_login: bool = False
    smart_client_id: str = ""
    smart_issuers: tuple[str, ...] = ()
    smart_scope: str = "launch openid fhirUser"
    smart_client_auth: Literal["none", "private_key_jwt"] = "none"
    smart_private_key_file: str = ""
    smart_key_alg: Literal["RS384", "ES384"] = "RS384"
    smart_key_id: str = ""
    threads: int = 8
    metrics_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class TerminologySettings:
    url: str = ""
    timeout_s: float = 30.0


@dataclass(frozen=True)
class AuditSettings:
    sink: Literal["fhir", "ndjson", "none"] = "none"
    fhir_url: str = ""
    ndjson_dir: str = "out/audit"
    spill_dir: str = "out/audit-spill"
    queue_size: int = 10000
    batch_size: int = 50
    flush_interval_s: float = 2.0
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ListenerSettings:
    mode: Literal["scp", "orthanc"] = "scp"
    port: int = 11113
    ae_title: str = "MPRTM_LISTEN"
    orthanc_url: str = "http://127.0.0.1:8042"
    orthanc_username: str = ""
    orthanc_password: str = ""
    stable_seconds: float = 30.0
    poll_interval_s: float = 2.0
    spool_dir: str = "spool/listener"
    retry_after_s: float = 60.0
    max_attempts: int = 3


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    fhir: FhirSettings = field(default_factory=FhirSettings)
    pacs: PacsSettings = field(default_factory=PacsSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    risk: RiskSettings = field(default_factory=RiskSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    cds_hooks: CdsHooksSettings = field(default_factory=CdsHooksSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    terminology: TerminologySettings = field(default_factory=TerminologySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    listener: ListenerSettings = field(default_factory=ListenerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    #: The file these settings were read from ("" for defaults only).
    source_file: str = ""

    def replace(self, **sections: Any) -> Settings:
        """A copy with whole sections or ``section__key`` values replaced (tests, CLI flags)."""
        data = as_dict(self)
        for name, value in sections.items():
            if "__" in name:
                sec, key = name.split("__", 1)
                data[sec][key] = value
            else:
                data[name] = value
        data.pop("source_file", None)
        return _build(Settings, data, "", self.source_file or "<override>", allow_secrets=True)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str, source: str, allow_secrets: bool = False) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            choices = "|".join(str(a) for a in args)
            raise ConfigError(f"{source}: key '{key}' must be one of {choices}, got {value!r}")
        return value
    if origin in (tuple,):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: key '{key}' must be a list, got {type(value).__name__}")
        item_tp = args[0]
        return tuple(
            _coerce(v, item_tp, f"{key}[{i}]", source, allow_secrets) for i, v in enumerate(value)
        )
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{source}: unsupported type for '{key}'")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: key '{key}' must be a table")
        return _build(tp, dict(value), key, source, allow_secrets=allow_secrets)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: unsupported type for '{key}'")


def _build(cls: Any, data: dict[str, Any], prefix: str, source: str, *, allow_secrets: bool) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in hints or name == "source_file":
            raise ConfigError(f"{source}: unknown key '{key}'")
        if key in SECRET_KEYS and not allow_secrets and value not in ("", None):
            env = ENV_PREFIX + key.replace(".", "__").upper()
            raise ConfigError(f"{source}: key '{key}' is a secret; set it with {env} instead")
        if not allow_secrets and isinstance(value, str) and _has_userinfo(value):
            if key in NO_USERINFO_KEYS or name in NO_USERINFO_KEYS:
                raise ConfigError(
                    f"{source}: key '{key}' carries user:password; put credentials in the "
                    "environment (see config.example.toml)"
                )
        kwargs[name] = _coerce(value, hints[name], key, source, allow_secrets)
    for f in dataclasses.fields(cls):
        if (
            f.name not in kwargs
            and f.default is dataclasses.MISSING
            and (f.default_factory is dataclasses.MISSING)
        ):
            key = f"{prefix}.{f.name}" if prefix else f.name
            raise ConfigError(f"{source}: missing required key '{key}'")
    return cls(**kwargs)


def _parse_env_value(raw: str, tp: Any) -> Any:
    if tp is str or typing.get_origin(tp) is Literal:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    applied = []
    hints = _hints(Settings)
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name[len(ENV_PREFIX) :]:
            continue
        section, key = name[len(ENV_PREFIX) :].lower().split("__", 1)
        if section not in hints or section == "source_file":
            raise ConfigError(f"environment: {name} names unknown section '{section}'")
        sec_hints = _hints(hints[section])
        if key not in sec_hints:
            raise ConfigError(f"environment: {name} names unknown key '{section}.{key}'")
        data.setdefault(section, {})[key] = _parse_env_value(raw, sec_hints[key])
        applied.append(f"{section}.{key}")
    return applied


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from ``path`` (or ``$MPRTM_CONFIG``), then environment overrides.

    Raises:
        ConfigError: naming the file and key for unknown keys, wrong types or bad values.
    """
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: configuration file not found")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    # Validate the file alone first (so secrets in the file are refused), then merge env.
    _build(Settings, {k: v for k, v in data.items()}, "", source, allow_secrets=False)
    _apply_env(data, env)
    settings: Settings = _build(Settings, data, "", source, allow_secrets=True)
    key = settings.server.secret_key
    if key and len(key.encode()) < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"environment: server.secret_key (MPRTM_SERVER__SECRET_KEY) must be at least "
            f"{MIN_SECRET_KEY_BYTES} bytes"
        )
    return dataclasses.replace(settings, source_file=str(path or ""))


def _has_userinfo(value: str) -> bool:
    """True when a URL carries a password (``user:password@host``); a user name alone
    (``postgresql://mprtm@db/mprtm`` with peer or certificate authentication) is no
    secret."""
    if "://" not in value:
        return False
    netloc = value.split("://", 1)[1].split("/", 1)[0]
    return "@" in netloc and ":" in netloc.rsplit("@", 1)[0]


def as_dict(settings: Any) -> dict[str, Any]:
    """Plain nested dict of a settings object (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return typing.cast(dict[str, Any], conv(settings))


def masked_dict(settings: Settings) -> dict[str, Any]:
    """Effective settings with secrets masked, and every URL without its password or query."""
    data = as_dict(settings)
    for dotted in MASKED_KEYS:
        sec, key = dotted.split(".")
        value = data.get(sec, {}).get(key)
        if value and not key.endswith("url"):
            data[sec][key] = "********"

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: _mask_url(v) if k.endswith("url") and isinstance(v, str) and v else walk(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    masked: dict[str, Any] = walk(data)
    return masked


def _mask_url(url: str) -> str:
    """Hide the password of ``scheme://user:password@host`` and any query string."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    if "?" in rest:
        rest = rest.split("?", 1)[0] + "?********"
    netloc, sep, path = rest.partition("/")
    if "@" in netloc:
        cred, host = netloc.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        netloc = f"{user}:********@{host}"
    return f"{scheme}://{netloc}{sep}{path}"
