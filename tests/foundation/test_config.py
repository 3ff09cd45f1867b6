"""Settings: the example file, environment overrides, and errors that name key and file."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from cds.config import Settings, TrustedIssuer, load_settings, masked_dict
from cds.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_file_loads() -> None:
    s = load_settings(EXAMPLE, environ={})
    assert s.database.url == "sqlite:///mprtm.db"
    assert s.fhir.source == "ndjson"
    assert s.cds_hooks.trusted_issuers == (
        TrustedIssuer(
            iss="https://ehr.example.org",
            jwks_url="https://ehr.example.org/.well-known/jwks.json",
            fhir_servers=("https://ehr.example.org",),
        ),
    )


def test_every_key_is_documented_in_the_example() -> None:
    """Each settings key appears in config.example.toml with a comment above it."""
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = text.splitlines()
    missing = []
    for sec in fields(Settings):
        if sec.name == "source_file":
            continue
        sec_type = sec.type if is_dataclass(sec.type) else type(getattr(Settings(), sec.name))
        for f in fields(sec_type):
            if f.name == "trusted_issuers":
                assert "[[cds_hooks.trusted_issuers]]" in text
                continue
            pattern = re.compile(rf"^#?\s*{f.name}\s*=")
            idx = [i for i, line in enumerate(lines) if pattern.match(line)]
            if not idx:
                missing.append(f"{sec.name}.{f.name}")
                continue
            # a comment must precede the key (directly or above a run of keys)
            j = idx[0] - 1
            while j >= 0 and re.match(r"^\w+\s*=", lines[j]):
                j -= 1
            if j < 0 or not lines[j].lstrip().startswith("#"):
                missing.append(f"{sec.name}.{f.name} (no comment)")
    assert not missing, f"undocumented keys: {missing}"


def test_env_overrides_file_and_parses_types(tmp_path: Path) -> None:
    p = _write(tmp_path, "[server]\nport = 9000\n")
    env = {
        "MPRTM_SERVER__PORT": "9100",
        "MPRTM_CDS_HOOKS__REQUIRE_JWT": "false",
        "MPRTM_DATABASE__URL": "postgresql+psycopg://u:pw@db/x",
    }
    s = load_settings(p, environ=env)
    assert s.server.port == 9100
    assert s.cds_hooks.require_jwt is False
    assert masked_dict(s)["database"]["url"] == "postgresql+psycopg://u:********@db/x"


def test_config_chosen_by_env_var(tmp_path: Path) -> None:
    p = _write(tmp_path, "[server]\nport = 9001\n")
    assert load_settings(environ={"MPRTM_CONFIG": str(p)}).server.port == 9001


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[fhir]\nsourc = 'ndjson'\n", "unknown key 'fhir.sourc'"),
        ("[nosuch]\nx = 1\n", "unknown key 'nosuch'"),
        ("[server]\nport = 'eighty'\n", "key 'server.port' must be an integer"),
        ("[fhir]\nsource = 'ftp'\n", "key 'fhir.source' must be one of ndjson|server"),
        ("[cds_hooks]\nrequire_jwt = 1\n", "key 'cds_hooks.require_jwt' must be true or false"),
        (
            "[[cds_hooks.trusted_issuers]]\njwks_url = 'x'\n",
            "missing required key 'cds_hooks.trusted_issuers[0].iss'",
        ),
        ("[server]\nsecret_key = 'abc'\n", "MPRTM_SERVER__SECRET_KEY"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_files_name_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(p, environ={})
    assert needle in str(err.value)
    assert str(p) in str(err.value)


def test_unknown_env_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="MPRTM_FHIR__NOPE"):
        load_settings(environ={"MPRTM_FHIR__NOPE": "1"})


def test_settings_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(AttributeError):
        s.server.port = 1  # type: ignore[misc]


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MPRTM_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "cds.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_cli_config_check_ok_and_masks_secrets() -> None:
    r = _cli(
        "--config",
        str(EXAMPLE),
        "config",
        "check",
        env_extra={"MPRTM_SERVER__SECRET_KEY": "s3cr3t-value-of-at-least-32-bytes!"},
    )
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    assert "s3cr3t-value" not in r.stdout
    assert '"secret_key": "********"' in r.stdout


def test_cli_config_check_bad_file_exits_2(tmp_path: Path) -> None:
    p = _write(tmp_path, "[pacs]\nport = 'x'\n")
    r = _cli("--config", str(p), "config", "check")
    assert r.returncode == 2
    assert "pacs.port" in r.stderr and str(p) in r.stderr
    p2 = _write(tmp_path, "[pacs]\nprot = 1\n")
    r2 = _cli("--config", str(p2), "config", "check")
    assert r2.returncode == 2 and "pacs.prot" in r2.stderr


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[database]\nurl = 'postgresql+psycopg://u:pw@db/x'\n", "database.url"),
        ("[batch]\nbroker_url = 'redis://:pw@127.0.0.1:6379/0'\n", "batch.broker_url"),
        ("[pacs]\ndicomweb_url = 'https://u:pw@pacs.example/dicom-web'\n", "pacs.dicomweb_url"),
        (
            "[[cds_hooks.trusted_issuers]]\niss = 'https://e.example'\n"
            "jwks_url = 'https://u:pw@e.example/jwks.json'\n",
            "cds_hooks.trusted_issuers[0].jwks_url",
        ),
    ],
)
def test_credentials_in_url_keys_are_refused_in_the_file(
    tmp_path: Path, text: str, key: str
) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"key '{key}' carries user:password")):
        load_settings(p, environ={})


def test_a_user_name_without_password_is_no_secret(tmp_path: Path) -> None:
    p = _write(tmp_path, "[database]\nurl = 'postgresql+psycopg://mprtm@db.example/mprtm'\n")
    assert load_settings(p, environ={}).database.url.endswith("mprtm@db.example/mprtm")


def test_a_short_secret_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_settings(environ={"MPRTM_SERVER__SECRET_KEY": "short"})
    ok = load_settings(environ={"MPRTM_SERVER__SECRET_KEY": "k" * 32})
    assert ok.server.secret_key == "k" * 32


def test_every_url_is_masked(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "[[cds_hooks.trusted_issuers]]\niss = 'https://e.example'\n"
        "jwks_url = 'https://e.example/jwks.json?api_key=abc123'\n",
    )
    env = {"MPRTM_PACS__DICOMWEB_URL": "https://u:pacs-pw@pacs.example/dicom-web"}
    shown = str(masked_dict(load_settings(p, environ=env)))
    assert "pacs-pw" not in shown and "abc123" not in shown
    assert "https://u:********@pacs.example/dicom-web" in shown
