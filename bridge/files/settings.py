"""``[storage]`` (where file contents live) and ``[files]`` (what is accepted and sent on)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MIB = 1024 * 1024


class StorageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "./data/files"
    """The local directory of the default store (one process, or processes sharing a disk)."""
    url: str | None = None
    """``s3://bucket/prefix``: an S3-compatible object store instead of ``path`` (several
    processes or hosts)."""
    endpoint_url: str | None = None
    """The S3 endpoint (MinIO, Ceph, R2, …); unset: AWS."""
    region: str = "us-east-1"
    access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    """The NAME of the environment variable holding the access key id (never the key)."""
    secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"

    @field_validator("url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("s3://"):
            raise ValueError("storage.url must look like s3://bucket/prefix")
        if value is not None and not value[len("s3://") :].split("/", 1)[0]:
            raise ValueError("storage.url names no bucket (s3://bucket/prefix)")
        return value


DEFAULT_MODEL_TYPES = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
]


class FilesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(default=20 * MIB, ge=1, le=1024 * MIB)
    """Largest file kept (never above a platform's own limit); larger ones stay metadata."""
    model_content_types: list[str] = Field(default_factory=lambda: list(DEFAULT_MODEL_TYPES))
    """What is sent on to models; other files stay attachments the agent is told about."""
    download_timeout_seconds: float = Field(default=60.0, gt=0)
    max_files_per_message: int = Field(default=10, ge=1, le=100)
    link_ttl_seconds: float = Field(default=900.0, gt=0)
    """How long a signed download link given to a webhook agent works."""
