"""Timestamps as the Kubernetes API writes them (RFC 3339, seconds, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def ts(value: datetime) -> str:
    """RFC 3339 as Kubernetes writes it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: object) -> datetime | None:
    """A datetime for an API timestamp ("2024-05-01T10:00:00Z"); None when absent or malformed."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
