"""Piccolo app registration for the hub's tables and migrations."""

import os

from piccolo.conf.apps import AppConfig

from hub.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="hub",
    migrations_folder_path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "piccolo_migrations"),
    table_classes=TABLES,
    migration_dependencies=[],
    commands=[],
)
