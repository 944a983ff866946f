"""The REST API: Patroni 4.1's HTTP interface (health checks, /patroni, /cluster, /metrics, ...).

The agent builds a status each tick (``build_status``), publishes it with its DCS snapshot to a ``StatusBoard``
and serves it with ``ApiServer(cfg.restapi, board)``. health.py decides the status codes (pure), status.py
shapes the bodies (pure), server.py speaks HTTP.
"""

from pgha.api.health import health_code, liveness_code, readiness_code
from pgha.api.server import ApiServer, Handler, requires_access
from pgha.api.status import StatusBoard, StatusSource, build_status, public_status

__all__ = ["ApiServer", "Handler", "StatusBoard", "StatusSource", "build_status", "health_code", "liveness_code",
           "public_status", "readiness_code", "requires_access"]
