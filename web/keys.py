"""Every application key, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from config.settings import Settings
from storage.database import Database
from web.auth import Authenticator
from web.passwords import PasswordHasher
from web.ratelimit import LoginThrottle

if TYPE_CHECKING:
    pass

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
PASSWORDS = web.AppKey("passwords", PasswordHasher)
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
DISPATCHER = web.AppKey("dispatcher", "DispatcherService")
