"""Automatic conversation titles: "{SMS|LINE|Email} · {peer}" (U+00B7) and "{label} conversation"."""

from __future__ import annotations

CHANNEL_LABELS = {"message": "SMS", "line": "LINE", "email": "Email"}
UNKNOWN = "Unknown"


def peer_label(conversation_type: str, target: str, known_name: str) -> str:
    """The peer part of a title. LINE ids are opaque, so only a display name ever shows."""
    if conversation_type == "line":
        return known_name or UNKNOWN
    if known_name and target:
        return f"{known_name} ({target})"
    return target or known_name or UNKNOWN


def auto_title(conversation_type: str, target: str, known_name: str) -> tuple[str, str]:
    label = CHANNEL_LABELS[conversation_type]
    return f"{label} \u00b7 {peer_label(conversation_type, target, known_name)}", f"{label} conversation"
