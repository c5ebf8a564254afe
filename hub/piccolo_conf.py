"""Piccolo configuration: the engine comes from HUB_DATABASE_URL (SQLite file by default)."""

from piccolo.conf.apps import AppRegistry

from hub.db import engine_from_url
from hub.settings import Settings

# hub.db.use_engine() replaces DB at run time so migrations and tables share one engine.
DB = engine_from_url(Settings.from_env().resolved_database_url)

APP_REGISTRY = AppRegistry(apps=["hub.piccolo_app"])
