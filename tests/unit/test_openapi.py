"""The shipped OpenAPI document is valid OpenAPI 3 and describes every route the REST API handlers define.

Routes are read from the code: every ``do_<METHOD>_<segment>`` method on ``pgha.api.server.Handler`` and on any
subclass defined in a ``pgha.api`` module (the write endpoints), plus the generic ``do_GET``/``do_HEAD``/
``do_OPTIONS`` health checks. A route added to a handler without its description fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import tomllib
from pathlib import Path

import pytest
from openapi_spec_validator import validate

import pgha.api
from pgha.api.openapi import load_spec
from pgha.api.server import Handler

HTTP_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
ROOT = Path(__file__).resolve().parents[2]


def handler_classes() -> list[type[Handler]]:
    """Handler and every subclass of it defined in a pgha.api module (each module is imported)."""
    found: set[type[Handler]] = {Handler}
    for module in pkgutil.iter_modules(pgha.api.__path__, pgha.api.__name__ + "."):
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, Handler):
                found.add(value)
    return sorted(found, key=lambda cls: cls.__module__ + "." + cls.__qualname__)


def routes(cls: type[Handler]) -> set[tuple[str, str]]:
    """(method, path) for every do_* attribute: ``do_POST_restart`` → (post, /restart), ``do_GET`` → (get, /)."""
    out: set[tuple[str, str]] = set()
    for name in dir(cls):
        if not name.startswith("do_") or not callable(getattr(cls, name)):
            continue
        method, _, segment = name[len("do_"):].partition("_")
        assert method in HTTP_METHODS, f"{cls.__qualname__}.{name}: not an HTTP method"
        out.add((method.lower(), "/" + segment))
    return out


def test_the_document_is_valid_openapi_3():
    spec = load_spec()
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_every_routed_endpoint_is_described():
    paths = load_spec()["paths"]
    missing = [f"{cls.__module__}.{cls.__qualname__}: {method.upper()} {path}"
               for cls in handler_classes() for method, path in sorted(routes(cls))
               if method not in paths.get(path, {})]
    assert not missing, "routes without a description in openapi.yaml: " + ", ".join(missing)


def test_the_read_side_routes_are_found():
    """The route finder itself: the read endpoints server.py defines today are all seen."""
    assert {("get", "/"), ("head", "/"), ("options", "/"), ("get", "/patroni"), ("get", "/cluster"),
            ("get", "/history"), ("get", "/config"), ("get", "/failsafe"), ("get", "/metrics"),
            ("get", "/liveness"), ("get", "/readiness")} <= routes(Handler)


def test_write_endpoints_need_basic_auth_and_reads_do_not():
    spec = load_spec()
    scheme = spec["components"]["securitySchemes"]["basicAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            needs_auth = method in ("post", "put", "patch", "delete")
            assert (operation.get("security") == [{"basicAuth": []}]) == needs_auth, f"{method.upper()} {path}"


@pytest.mark.parametrize("path", ["/", "/primary", "/replica", "/read-only", "/health", "/async", "/liveness"])
def test_health_checks_answer_only_200_or_503(path):
    item = load_spec()["paths"][path]
    for method in ("get", "head", "options"):
        codes = set(item[method]["responses"])
        assert codes <= {"200", "503"} and "503" in codes, f"{method.upper()} {path}: {codes}"


def test_no_operation_documents_501():
    for path, item in load_spec()["paths"].items():
        for method, operation in item.items():
            assert "501" not in operation["responses"], f"{method.upper()} {path}"


def test_the_document_ships_as_package_data():
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert "openapi.yaml" in project["tool"]["setuptools"]["package-data"]["pgha.api"]
    assert (ROOT / "src" / "pgha" / "api" / "openapi.yaml").is_file()


def test_a_subclass_route_is_seen():
    class Writes(Handler):
        def do_POST_restart(self) -> None: ...

        def do_DELETE_switchover(self) -> None: ...

    assert {("post", "/restart"), ("delete", "/switchover")} <= routes(Writes)
