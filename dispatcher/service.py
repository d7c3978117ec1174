"""The dispatcher as the rest of the service sees it: the HTTP API, health/metrics and the CLI.

Every call that changes who holds what goes through here, into the single actor, so the
actor's memory and the database never disagree. See dispatcher/actor.py for how.
"""

from __future__ import annotations

from typing import Any, Protocol


class DispatcherService(Protocol):
    async def fetch(self, agent_id: int) -> list[dict[str, Any]]:
        """Every ticket the agent holds after a top-up to its capacity, oldest first.

        Ticket dicts have the keys of the API's ticket. Raises AgentNotAllowed, Unavailable.
        Safe to retry: a repeated fetch returns the same tickets (plus any top-up).
        """
        ...

    async def sell(self, agent_id: int, ticket_ids: list[int]) -> list[int]:
        """Sell all of ticket_ids (all or nothing); returns them sorted.

        Raises SellRejected (nothing sold), AgentNotAllowed, Unavailable.
        """
        ...

    async def delete_ticket(self, ticket_id: int) -> None:
        """Delete an unassigned ticket. Raises TicketNotFound, TicketHeld, Unavailable."""
        ...

    async def update_agent(
        self, agent_id: int, *, capacity: int | None = None, is_active: bool | None = None
    ) -> list[int]:
        """Change capacity and/or activity; returns tickets released by the change
        (all of them on deactivation, the newest excess when capacity drops below holdings).
        Raises AgentNotFound, Unavailable."""
        ...

    async def release_agent(self, agent_id: int) -> list[int]:
        """Return the agent's held tickets to the queue at their creation-order place."""
        ...

    async def delete_agent(self, agent_id: int) -> None:
        """Delete an agent that holds nothing. Raises AgentNotFound, AgentHoldsTickets,
        storage Conflict (it has sold tickets: deactivate it instead), Unavailable."""
        ...
