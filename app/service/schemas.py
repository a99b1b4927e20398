"""Request and response bodies (one family per entity: Create / Public)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$"


def _not_bool(v: Any) -> Any:
    """JSON ``true`` is not a number here (pydantic's lax mode would read it as 1)."""
    if isinstance(v, bool):
        raise ValueError("a number is needed, not true or false")
    return v


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(pattern=_EMAIL, max_length=320, examples=["user@example.com"])
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{3,64}$", examples=["musicproducer"])
    password: str = Field(min_length=12, max_length=128, examples=["SecurePass123"],
                          description="12 to 128 characters of any kind; not a common password")  # fmt: skip
    full_name: str = Field(default="", max_length=200, examples=["Music Producer"])

    @field_validator("email")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()


class UserPublic(BaseModel):
    id: str
    email: str
    username: str
    full_name: str
    tier: str
    role: str
    is_active: bool
    created_at: datetime


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320, examples=["user@example.com"])
    password: str = Field(max_length=1024, examples=["SecurePass123"])


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(max_length=200)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="access token lifetime, seconds")
    user: UserPublic


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650,
                                        description="the key stops working this many days from now; omit: never")  # fmt: skip


    _no_bool = field_validator("expires_in_days", mode="before")(lambda v: _not_bool(v))


class ApiKeyPublic(BaseModel):
    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool
    expires_at: datetime | None = None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the secret; shown once, store it now")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=2000, examples=["Create upbeat jazz music with saxophone"])
    genre: str | None = Field(default=None, max_length=64, examples=["jazz"])
    mood: str | None = Field(default=None, max_length=64, examples=["upbeat"])
    duration: float = Field(default=30, ge=1, le=600, description="seconds", examples=[60])
    style: str = Field(default="balanced", max_length=32, examples=["professional"])

    _no_bool = field_validator("duration", mode="before")(lambda v: _not_bool(v))


class JobError(BaseModel):
    code: str
    message: str


class PlanStep(BaseModel):
    slot: str = Field(description="the model-chain slot (or 'mastering')", examples=["MusicGen"])
    backend: str | None = Field(description="the backend that runs it", examples=["transformers-musicgen"])
    why: str | None = Field(description="why the orchestrator chose it")


class JobPublic(BaseModel):
    job_id: str
    kind: str
    operation: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(description="0..1")
    message: str
    error: JobError | None
    params: dict[str, Any]
    plan: list[PlanStep] | None = Field(
        description="which slot, which backend, why, step by step; null until a model job is planned "
        "(the full plan with per-step figures is report.plan)"
    )
    report: dict[str, Any] | None
    result_url: str | None
    websocket_url: str
    created_at: datetime
    updated_at: datetime


class TierChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: Literal["free", "premium", "pro"]


class UsagePublic(BaseModel):
    tier: str
    day: str
    requests_today: int
    daily_limit: int
    remaining: int
    reset_at: datetime
    burst_per_minute: int
    storage_bytes: int
    storage_limit_bytes: int


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class ProjectPublic(BaseModel):
    id: str
    name: str
    head_revision: int
    created_at: datetime
    updated_at: datetime


class ProjectDeleted(BaseModel):
    id: str
    name: str
    revisions_deleted: int
    blobs_freed: int = Field(0, description="media blobs no other project names, deleted with it")
    bytes_freed: int = 0


class RevisionPush(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_revision: int = Field(ge=0, strict=True, description="the revision this edit started from")
    project: dict[str, Any] = Field(description="project.json")
    media: dict[str, str] = Field(
        default_factory=dict, description="relative media name -> SHA-256 of its blob (uploaded first)",
        json_schema_extra={"propertyNames": {"pattern": r"^(?:media|renders)(?:/[A-Za-z0-9 _()+,-][A-Za-z0-9 _.()+,-]*)+$"},
                           "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
    )  # fmt: skip


class RevisionPublic(BaseModel):
    project_id: str
    number: int
    project: dict[str, Any]
    media: dict[str, str]
    created_at: datetime
