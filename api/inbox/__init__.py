"""The agent inbox: pages served by the API app, its browser session, templates and script."""
