"""Domain of the conversation hub: tables, queries, room matching, titles, permissions."""

import os

# Piccolo finds its engine through this module; the CLI and migrations rely on it.
os.environ.setdefault("PICCOLO_CONF", "hub.piccolo_conf")
