"""Every application key, in one place."""

from __future__ import annotations

from aiohttp import web

from config.settings import Settings
from dispatcher.actor import Dispatcher
from storage.database import Database
from web.auth import Authenticator
from web.metrics import Metrics
from web.passwords import PasswordHasher
from web.ratelimit import LoginThrottle

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
PASSWORDS = web.AppKey("passwords", PasswordHasher)
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
METRICS = web.AppKey("metrics", Metrics)
# The operations listener (metrics_port set): its runner, and on its app the app it reports on.
OPS_RUNNER = web.AppKey("ops_runner", web.AppRunner)
MAIN_APP = web.AppKey("main_app", web.Application)
