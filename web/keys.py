"""Every application key, in one place."""

from __future__ import annotations

from aiohttp import web

from config.settings import Settings
from dispatcher.actor import Dispatcher
from storage.database import Database
from web.auth import Authenticator
from web.passwords import PasswordHasher
from web.ratelimit import LoginThrottle

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
PASSWORDS = web.AppKey("passwords", PasswordHasher)
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
