"""The routers of the REST API, under /api/v1 (health and metrics at the top)."""
