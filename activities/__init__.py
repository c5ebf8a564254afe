"""Temporal activities: database writes, provider sends, webhook posts."""
