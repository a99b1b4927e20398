"""Service settings: the only place in app/service that reads environment variables."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Daily request quota per tier (requests to cloud-work endpoints per UTC day).
TIER_DAILY_REQUESTS: dict[str, int] = {"free": 100, "premium": 1000, "pro": 10000}
#: Cloud-sync storage per tier, bytes.
TIER_STORAGE_BYTES: dict[str, int] = {
    "free": 1 << 30,
    "premium": 10 << 30,
    "pro": 100 << 30,
}
TIERS = tuple(TIER_DAILY_REQUESTS)

#: Values that must never be used as a signing key in remote mode.
_DEFAULT_SECRETS = {"", "your-secret-key", "changeme", "change-me", "secret", "dev", "development"}
MIN_SECRET_KEY_CHARS = 32


class SettingsError(RuntimeError):
    """The environment does not describe a service that may start."""


def _bool(v: str) -> bool:
    return v.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to start; build with :meth:`from_env` or directly in tests."""

    mode: str = "embedded"  # embedded | remote
    database_url: str = ""
    secret_key: str = ""
    redis_url: str = ""
    storage_provider: str = "local"  # local | s3
    storage_dir: Path = Path()
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_session_token: str = ""
    s3_region: str = ""
    app_name: str = "AI Music Mastering API"
    debug: bool = False
    log_level: str = "INFO"
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    max_upload_bytes: int = 200 * 1024 * 1024
    # What an uploaded file may decode to, read from its header before anything is decoded.
    max_audio_seconds: float = 60 * 60.0  # MAX_AUDIO_MINUTES
    max_audio_channels: int = 8
    max_sample_rate: int = 192_000
    # A job's budget: scratch bytes under its temp folder, and wall-clock seconds.
    job_scratch_bytes: int = 4 << 30  # JOB_SCRATCH_MB
    job_time_limit_s: float = 1800.0
    job_lease_s: float = 60.0  # JOB_LEASE_S: a running job's lease, renewed by its runner's heartbeat
    cors_origins: tuple[str, ...] = ()
    burst_per_minute: int = 60
    job_backend: str = "local"  # local (thread pool in this process) | celery (remote workers)
    job_workers: int = 1
    web_workers: int = 1  # uvicorn processes serving the API (WEB_CONCURRENCY); remote + Celery only
    db_threads: int = 4  # threads for each request's token check and quota count (DB_THREADS)
    job_files_days: float = 30.0  # finished jobs' stored input/result kept this long; 0: forever
    model_device: str = ""  # the model worker's device (AMC_DEVICE); empty: CUDA > MPS > CPU
    celery_visibility_timeout_s: int = 3600
    register_per_client_per_hour: int = 20  # REGISTER_PER_CLIENT_PER_HOUR (remote mode); 0: no limit
    metrics_token: str = ""  # METRICS_TOKEN: /metrics needs it as a bearer token; unset: loopback only
    login_max_failures: int = 5
    login_lockout_s: int = 900
    auto_migrate: bool = True
    tier_daily_requests: Mapping[str, int] = field(default_factory=lambda: dict(TIER_DAILY_REQUESTS))
    tier_storage_bytes: Mapping[str, int] = field(default_factory=lambda: dict(TIER_STORAGE_BYTES))

    def __post_init__(self) -> None:
        if self.mode not in ("embedded", "remote"):
            raise SettingsError(f"MODE must be 'embedded' or 'remote', got {self.mode!r}")
        if self.storage_provider not in ("local", "s3"):
            raise SettingsError(f"STORAGE_PROVIDER must be 'local' or 's3', got {self.storage_provider!r}")
        if self.job_backend not in ("local", "celery"):
            raise SettingsError(f"JOB_BACKEND must be 'local' or 'celery', got {self.job_backend!r}")
        if not self.database_url:
            raise SettingsError("DATABASE_URL is required")
        if self.storage_provider == "s3" and not self.s3_bucket:
            raise SettingsError("STORAGE_PROVIDER=s3 needs AWS_S3_BUCKET")
        s3_keys = (self.s3_access_key_id, self.s3_secret_access_key)
        if self.storage_provider == "s3" and any(s3_keys) and not all(s3_keys):
            raise SettingsError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        if self.web_workers < 1:
            raise SettingsError(f"WEB_CONCURRENCY must be at least 1, got {self.web_workers}")
        if self.web_workers > 1 and (self.mode != "remote" or self.job_backend != "celery" or self.is_sqlite):
            # Each process would run (and recover) the same local jobs, and SQLite's write
            # queue is per process: several API processes need PostgreSQL and Celery.
            raise SettingsError("WEB_CONCURRENCY > 1 needs MODE=remote, JOB_BACKEND=celery and PostgreSQL")
        if self.job_files_days < 0:
            raise SettingsError(f"JOB_FILES_RETENTION_DAYS must be 0 (keep) or more, got {self.job_files_days:g}")
        if min(self.max_audio_seconds, self.max_audio_channels, self.max_sample_rate) <= 0:
            raise SettingsError("MAX_AUDIO_MINUTES, MAX_AUDIO_CHANNELS and MAX_SAMPLE_RATE must be positive")
        if self.job_scratch_bytes <= 0 or self.job_time_limit_s <= 0 or self.job_lease_s <= 0:
            raise SettingsError("JOB_SCRATCH_MB, JOB_TIME_LIMIT_S and JOB_LEASE_S must be positive")
        if self.db_threads < 1:
            raise SettingsError(f"DB_THREADS must be at least 1, got {self.db_threads}")
        if self.job_backend == "celery" and not self.redis_url:
            raise SettingsError("JOB_BACKEND=celery needs REDIS_URL")
        key = self.secret_key
        if key.strip().lower() in _DEFAULT_SECRETS or len(key) < MIN_SECRET_KEY_CHARS:
            raise SettingsError(
                "SECRET_KEY is missing, a placeholder or shorter than "
                f"{MIN_SECRET_KEY_CHARS} characters; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment. Remote mode refuses a missing/default SECRET_KEY;
        embedded mode creates a random key once and keeps it in the user data dir."""
        env = os.environ if environ is None else environ
        mode = env.get("MODE", "embedded").strip().lower()
        home: Path | None = None
        if mode == "embedded":
            from app import config

            home = config.service_dir()
        secret = env.get("SECRET_KEY", "")
        if mode == "embedded" and not secret:
            secret = embedded_secret_key(home)  # type: ignore[arg-type]
        db = env.get("DATABASE_URL", "")
        if not db and home is not None:
            db = f"sqlite:///{home / 'service.db'}"
        storage_dir = env.get("STORAGE_DIR", "")
        if not storage_dir:
            storage_dir = str(home / "storage") if home is not None else "/var/lib/amc/storage"
        cors = tuple(o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            mode=mode,
            database_url=db,
            secret_key=secret,
            redis_url=env.get("REDIS_URL", ""),
            storage_provider=env.get("STORAGE_PROVIDER", "local").strip().lower(),
            storage_dir=Path(storage_dir),
            s3_bucket=env.get("AWS_S3_BUCKET", ""),
            s3_endpoint_url=env.get("S3_ENDPOINT_URL", ""),
            s3_access_key_id=env.get("AWS_ACCESS_KEY_ID", ""),
            s3_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
            s3_session_token=env.get("AWS_SESSION_TOKEN", ""),
            s3_region=env.get("AWS_REGION", ""),
            app_name=env.get("APP_NAME", "AI Music Mastering API"),
            debug=_bool(env.get("DEBUG", "false")),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            access_token_ttl_s=int(env.get("ACCESS_TOKEN_TTL_S", "900")),
            refresh_token_ttl_s=int(env.get("REFRESH_TOKEN_TTL_S", str(30 * 24 * 3600))),
            max_upload_bytes=int(float(env.get("MAX_UPLOAD_MB", "200")) * 1024 * 1024),
            max_audio_seconds=float(env.get("MAX_AUDIO_MINUTES", "60")) * 60.0,
            max_audio_channels=int(env.get("MAX_AUDIO_CHANNELS", "8")),
            max_sample_rate=int(env.get("MAX_SAMPLE_RATE", "192000")),
            job_scratch_bytes=int(float(env.get("JOB_SCRATCH_MB", "4096")) * 1024 * 1024),
            job_time_limit_s=float(env.get("JOB_TIME_LIMIT_S", "1800")),
            job_lease_s=float(env.get("JOB_LEASE_S", "60")),
            cors_origins=cors,
            burst_per_minute=int(env.get("RATE_BURST_PER_MINUTE", "60")),
            job_backend=env.get("JOB_BACKEND", "local").strip().lower(),
            job_workers=int(env.get("JOB_WORKERS", "1")),
            web_workers=int(env.get("WEB_CONCURRENCY", "1")),
            db_threads=int(env.get("DB_THREADS", "4")),
            job_files_days=float(env.get("JOB_FILES_RETENTION_DAYS", "30")),
            model_device=env.get("AMC_DEVICE", "").strip(),
            celery_visibility_timeout_s=int(env.get("CELERY_VISIBILITY_TIMEOUT_S", "3600")),
            register_per_client_per_hour=int(env.get("REGISTER_PER_CLIENT_PER_HOUR", "20")),
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
            login_max_failures=int(env.get("LOGIN_MAX_FAILURES", "5")),
            login_lockout_s=int(env.get("LOGIN_LOCKOUT_S", "900")),
            auto_migrate=_bool(env.get("AUTO_MIGRATE", "true" if mode == "embedded" else "false")),
            tier_storage_bytes={
                t: int(float(env[f"STORAGE_QUOTA_MB_{t.upper()}"]) * 1024 * 1024)
                if env.get(f"STORAGE_QUOTA_MB_{t.upper()}") else b
                for t, b in TIER_STORAGE_BYTES.items()
            },
        )


def embedded_secret_key(folder: Path) -> str:
    """The embedded service's signing key: random, created once, readable by the user only."""
    path = folder / "secret_key"
    if path.exists():
        key = path.read_text().strip()
        if len(key) >= MIN_SECRET_KEY_CHARS:
            return key
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key
