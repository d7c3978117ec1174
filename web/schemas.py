"""Request and response models: validation for handlers and the source of the OpenAPI document.

Request models forbid unknown fields, so a mass-assignment attempt (`is_staff`, `status`,
`agent`, …) is a 400 naming the field rather than something silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# PostgreSQL text cannot hold NUL: refuse it in validation, and say so in the schema (a
# pattern, not a custom validator, so the OpenAPI document tells clients and fuzzers).
NO_NUL = r"^[^\x00]*$"

# Explicit ASCII classes, not \w or \s: Rust's (pydantic's) and JavaScript's (the schema
# readers') regex engines disagree on what those match outside ASCII.
Username = Annotated[
    str, StringConstraints(min_length=1, max_length=150, pattern=r"^[A-Za-z0-9_.@+-]+$")
]
# Long enough for passphrases, short enough that hashing stays cheap to refuse.
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
Email = Annotated[
    str,
    StringConstraints(
        max_length=254,
        pattern=r"^$|^[^@ \t\n\r\f\v\x00]+@[^@ \t\n\r\f\v\x00]+\.[^@ \t\n\r\f\v\x00]+$",
    ),
]


class ErrorBody(Response):
    error: str
    detail: Any = None


class Page(Response, Generic[T]):
    count: int
    next: str | None
    previous: str | None
    results: list[T]


class PageQuery(Request):
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=10**12)
    # Walk by id instead: the rows after this id, so a list that changes meanwhile skips and
    # repeats nothing (an offset counts rows, and rows that left shift every later page).
    after: int | None = Field(default=None, ge=0, le=2**63 - 1)


# A password as typed to prove who one is: any text up to a password's length (one set
# before a rule changed must still be accepted).
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class TokenRequest(Request):
    # Any text a user might type (a login answers for unknown names as for wrong passwords),
    # but the query must be able to carry it.
    username: Annotated[str, StringConstraints(min_length=1, max_length=150, pattern=NO_NUL)]
    password: LoginPassword


class TokenResponse(Response):
    token: str


class User(Response):
    id: int
    username: str
    email: str
    is_staff: bool
    is_active: bool
    date_joined: datetime


TicketStatus = Literal["unassigned", "assigned", "sold"]


class Ticket(Response):
    id: int
    title: str
    description: str
    status: TicketStatus
    agent: int | None
    created_at: datetime
    assigned_at: datetime | None
    sold_at: datetime | None


# ---------------------------------------------------------------- users, agents and tickets


class StrictRequest(Request):
    """A write body: JSON types are taken as they are (no `"15"` for 15, no `"yes"` for true),
    and a field that is sent may not be null: `{"email": null}` is a 400, never "leave it"."""

    model_config = ConfigDict(strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null")
        return value


def _omittable_schema(schema: dict[str, Any]) -> None:
    # Document the field as its type alone: no null branch, no null default.
    schema.pop("default", None)
    branches = [branch for branch in schema.pop("anyOf", []) if branch != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches


def omittable() -> Any:
    """A field that may be left out but, when sent, may not be null (StrictRequest refuses
    it): typed `X | None` for clean validation errors, documented as plain `X`, so clients
    and fuzzers are never told that null is allowed."""
    return Field(default=None, json_schema_extra=_omittable_schema)


Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
# Keep in sync with the CHECK constraints in storage/migrations/0001_initial.sql, so the
# database never has to refuse what validation let through.
Title = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
Capacity = Annotated[int, Field(ge=0, le=1000)]


class UserCreate(StrictRequest):
    username: Username
    password: Password
    email: Email = ""
    is_staff: bool = False


class UserReplace(StrictRequest):
    """PUT: every writable field; the password is optional, as it is never shown."""

    username: Username
    email: Email
    is_staff: bool
    is_active: bool
    password: Password | None = omittable()
    # Required with a new password of the caller's own, ignored otherwise (web/handlers/users.py).
    current_password: LoginPassword | None = omittable()


class UserUpdate(StrictRequest):
    """PATCH: only the fields sent change."""

    username: Username | None = omittable()
    email: Email | None = omittable()
    is_staff: bool | None = omittable()
    is_active: bool | None = omittable()
    password: Password | None = omittable()
    current_password: LoginPassword | None = omittable()


class AgentCreate(StrictRequest):
    user: Id
    # The contract's default: what an agent works through in a typical shift.
    capacity: Capacity = 15


class AgentReplace(StrictRequest):
    """PUT: every writable field."""

    capacity: Capacity
    is_active: bool


class AgentUpdate(StrictRequest):
    """PATCH: only the fields sent change."""

    capacity: Capacity | None = omittable()
    is_active: bool | None = omittable()


class Agent(Response):
    id: int
    user: int
    capacity: int
    is_active: bool
    # Tickets it holds now (status 'assigned'), counted in the database.
    held: int


class TicketCreate(StrictRequest):
    title: Title
    description: Description = ""


# POST /api/tickets/ also takes an array; one statement inserts it, all or nothing.
TicketBatch = Annotated[list[TicketCreate], Field(min_length=1, max_length=1000)]


class TicketReplace(StrictRequest):
    """PUT: every writable field. `status` and `agent` belong to the dispatcher."""

    title: Title
    description: Description


class TicketUpdate(StrictRequest):
    """PATCH: only the fields sent change. `status` and `agent` belong to the dispatcher."""

    title: Title | None = omittable()
    description: Description | None = omittable()


class TicketQuery(PageQuery):
    status: TicketStatus | None = None


# ---------------------------------------------------------------- the dispatcher


class FetchResponse(Response):
    tickets: list[Ticket]


class SellRequest(StrictRequest):
    # Strict like every write body: `true` or `"7"` is no ticket id, and a sale is the one
    # write an agent makes, so a lax guess would sell a ticket nobody named.
    ticket_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)]


class SellResponse(Response):
    sold: list[int]


class SellRejectedBody(ErrorBody):
    rejected: dict[str, str]


class ReleaseResponse(Response):
    released: list[int]
