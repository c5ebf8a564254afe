"""Inputs and results of activities: plain dataclasses, safe to import from workflow code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeliverInput:
    message_id: str = ""


@dataclass
class DeliverResult:
    status: str = ""
    reason: str = ""
    provider_message_id: str = ""


@dataclass
class FailInput:
    message_id: str = ""
    reason: str = ""
