"""The account service: users, tiers, quotas, jobs, cloud sync, the REST + WebSocket API.

Embedded (the desktop starts it on 127.0.0.1 with SQLite) or remote (PostgreSQL, Redis,
S3-compatible storage, several replicas). No Qt here; heavy audio work goes through
:mod:`app.service.jobs` to the engine (and, later, to the model worker).
"""

API_PREFIX = "/api/v1"
SERVICE_VERSION = "0.1.0"
