"""HTTP edge of the hub: Litestar app, controllers, DTOs, auth, provider hooks, CLI."""
