"""The district centre's own config file (district.yaml), apart from any school's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from gateway.config import Id, SecretRef, SiteConfig, Strict


class NatsConfig(Strict):
    servers: list[Annotated[str, Field(pattern=r"^(nats|tls)://[A-Za-z0-9.-]+(:\d{1,5})?$")]] = Field(min_length=1)
    # The nodes' MQTT listeners (host:port): the district's acknowledgements go down to the schools through them.
    mqtt: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+:\d{1,5}$")]] = Field(default_factory=list)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None

    def password(self) -> str | None:
        return SecretRef(env=self.password_env, file=self.password_file).resolve()


class DistrictDatabase(Strict):
    url: str | None = None  # postgresql://user@host/db; or from url_env (it may hold a password)
    url_env: str | None = None

    def resolved(self) -> str:
        url = SecretRef(env=self.url_env).resolve() if self.url_env else self.url
        if not url or not url.startswith(("postgresql://", "postgresql+psycopg://")):
            from gateway.config import ConfigError

            raise ConfigError(["database: the district's records are in PostgreSQL: url postgresql://..."])
        return url.replace("postgresql://", "postgresql+psycopg://", 1)


class WorkerConfig(Strict):
    durable: Id = "district-events"  # the events' consumer every worker shares
    alarms_durable: Id = "district-alarms"  # the alarm views' consumer
    state_durable: Id = "district-state"  # devices' availability, bridge, police paths, lockdown
    reports_durable: Id = "district-reports"  # the schools' incidents and submitted reports (逐级上报)
    batch: int = Field(default=500, ge=1, le=10_000)
    fetch_timeout_s: float = Field(default=5.0, ge=5.0, le=60.0)  # shorter stalled the consumer under load
    ack_wait_s: float = Field(default=30.0, ge=5.0, le=600.0)


class DistrictConsoleConfig(Strict):
    """The district's console (`campusgw district console`): where it listens and its default language."""

    host: str = "127.0.0.1"  # behind a TLS reverse proxy for anything beyond this machine
    port: int = Field(default=8090, ge=0, le=65535)  # 8080 is the school console's
    language: Literal["zh_CN", "en"] = "zh_CN"  # the default; each user may choose
    secure_cookies: bool | None = None  # true behind a TLS proxy; unset: Secure when the request came over https


class DistrictConfig(Strict):
    district: SiteConfig  # its id, name and time zone
    nats: NatsConfig
    database: DistrictDatabase
    worker: WorkerConfig = WorkerConfig()
    console: DistrictConsoleConfig = DistrictConsoleConfig()
    retention_months: int = Field(default=36, ge=1, le=240)


def load_district_config(path: str | Path) -> DistrictConfig:
    """district.yaml, validated; a problem names the file, the key and what is wrong."""
    import yaml
    from pydantic import ValidationError

    from gateway.config import ConfigError
    from gateway.config_file import _describe, _refuse_aliases, format_path

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        _refuse_aliases(text, str(path))
        data = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: not a valid UTF-8 YAML file: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping with district, nats and database sections"])
    try:
        return DistrictConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{path}: {format_path(tuple(e['loc']))}: {_describe(e)}" for e in exc.errors()]) from None
