"""Request and response models: validation for handlers and the source of the OpenAPI document.

Request models forbid unknown fields, so a mass-assignment attempt (`is_staff`, `status`,
`agent`, …) is a 400 naming the field rather than something silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


Username = Annotated[str, StringConstraints(min_length=1, max_length=150, pattern=r"^[\w.@+-]+$")]
# Long enough for passphrases, short enough that hashing stays cheap to refuse.
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$")]


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


class TokenRequest(Request):
    username: Annotated[str, StringConstraints(min_length=1, max_length=150)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class TokenResponse(Response):
    token: str


class User(Response):
    id: int
    username: str
    email: str
    is_staff: bool
    is_active: bool
    date_joined: datetime
