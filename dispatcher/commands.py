"""What callers ask the actor to do. Frozen: a command never changes once queued."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fetch:
    agent_id: int


@dataclass(frozen=True, slots=True)
class Sell:
    agent_id: int
    ticket_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DeleteTicket:
    ticket_id: int


@dataclass(frozen=True, slots=True)
class UpdateAgent:
    agent_id: int
    capacity: int | None
    is_active: bool | None


@dataclass(frozen=True, slots=True)
class ReleaseAgent:
    agent_id: int


@dataclass(frozen=True, slots=True)
class DeleteAgent:
    agent_id: int


Command = Fetch | Sell | DeleteTicket | UpdateAgent | ReleaseAgent | DeleteAgent
# What agents send, decided into batches; the rest are admin commands, applied one by one.
Trade = Fetch | Sell
