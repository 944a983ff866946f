"""The OpenAPI 3.0 description of the REST API (openapi.yaml beside this module, shipped as package data).

It describes the API as pgha serves it: the health checks and read endpoints of server.py, the write endpoints
of spec section 2. tests/unit/test_openapi.py keeps it in step with the routes the handlers define.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

RESOURCE = "openapi.yaml"


def spec_text() -> str:
    """The document as shipped (YAML)."""
    return resources.files(__package__).joinpath(RESOURCE).read_text(encoding="utf-8")


def load_spec() -> dict[str, Any]:
    """The document as a dict (a fresh copy on each call: callers may change it)."""
    spec = yaml.safe_load(spec_text())
    if not isinstance(spec, dict):
        raise ValueError(f"{RESOURCE} is not a mapping")
    return spec
