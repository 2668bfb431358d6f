"""What listing and statistics report about stored threads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class ThreadInfo:
    """One live thread, as :meth:`ThreadStorage.list_threads` reports it."""

    key: str
    user_id: str | None
    created_at: datetime
    accessed_at: datetime
    expires_at: datetime
    size_bytes: int
    metadata: dict[str, Any]

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ThreadInfo:
        """From the objects of thread_list()'s JSON array (ISO 8601 times)."""
        return cls(
            key=item["key"],
            user_id=item.get("user_id"),
            created_at=_time(item["created_at"]),
            accessed_at=_time(item["accessed_at"]),
            expires_at=_time(item["expires_at"]),
            size_bytes=int(item["size_bytes"]),
            metadata=item.get("metadata") or {},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "user_id": self.user_id,
            "created_at": self.created_at.isoformat(),
            "accessed_at": self.accessed_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "size_bytes": self.size_bytes,
            "metadata": self.metadata,
        }


def from_unix(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)

