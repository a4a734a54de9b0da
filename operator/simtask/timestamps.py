"""Timestamps as the Kubernetes API writes them (RFC 3339, seconds, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def ts(value: datetime) -> str:
    """RFC 3339 as Kubernetes writes it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: object) -> datetime | None:
    """A Kubernetes timestamp (or None)."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
