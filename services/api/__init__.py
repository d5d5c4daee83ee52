"""The HTTP API (docs/contract.md, "HTTP API"): FastAPI routers per resource, reads
from PostgreSQL, commands published to `identity.commands` (never state written behind
the log's back). `create_app(settings)` builds it; `serve` runs it on uvicorn."""
