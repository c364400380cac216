"""The REST API under /api/v1, with /healthz and /readyz (see app.create_app)."""
