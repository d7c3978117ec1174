"""What the dispatcher can refuse or fail with. Each docstring is the default message.

`Unavailable` and its subclasses mean nothing was decided or committed for the caller:
retrying after `retry_after_s` is safe (fetch is idempotent; a sell either happened
completely or not at all, and a repeated sell of one's own sold tickets is a no-op).
"""

from __future__ import annotations

from collections.abc import Mapping


class DispatcherError(Exception):
    """The dispatcher refused the request."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class Unavailable(DispatcherError):
    """The dispatcher cannot decide right now; retry shortly."""

    def __init__(self, message: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotLeader(Unavailable):
    """This process is a standby: another process dispatches tickets (`/readyz` says which)."""


class CommitFailed(Unavailable):
    """The batch holding this request could not be committed; nothing of it took effect."""


class AgentNotAllowed(DispatcherError):
    """Only active agents may fetch or sell tickets."""


class SellRejected(DispatcherError):
    """Some tickets are not held by the caller; nothing was sold."""

    def __init__(self, rejected: Mapping[int, str]) -> None:
        super().__init__()
        self.rejected = dict(rejected)


class TicketNotFound(DispatcherError):
    """No such ticket."""


class TicketHeld(DispatcherError):
    """The ticket is assigned or sold; only unassigned tickets can be deleted."""


class AgentNotFound(DispatcherError):
    """No such agent."""


class AgentHoldsTickets(DispatcherError):
    """The agent holds tickets; release them first."""
