"""GET /api/v1/openapi.json (issue 22): a valid OpenAPI 3.1 document (openapi-spec-validator)
that lists exactly the app's /api/ routes, and whose every operation, called on the real
`sitewatch web` over a seeded database, answers a documented status with a body that matches
the documented schema (jsonschema). A new endpoint left out of the document, or a documented
one that does not exist, fails here."""

import json
import re

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from sitewatch import config
from sitewatch.web.app import create_app
from tests.conftest_web import WebServer

WRITE = "openapi-write-0123456789"
TOKENS = json.dumps({"ci": {"token": WRITE, "scope": "write"}})
METHODS = ("get", "post", "patch", "delete", "put")


@pytest.fixture(scope="module")
def server(shared_seeded, tmp_path_factory):
    dsn, ids = shared_seeded
    web = WebServer(tmp_path_factory.mktemp("openapi"), dsn, {"SITEWATCH_WEB__TOKENS": TOKENS})
    web.ids, web.dsn = ids, dsn
    web.document = web.get("/api/v1/openapi.json").json()
    yield web
    web.stop()


def operations(document) -> list[tuple[str, str]]:
    return [(path, method) for path, item in document["paths"].items() for method in METHODS if method in item]


def test_the_document_is_valid_openapi_3_1(server):
    assert server.document["openapi"].startswith("3.1")
    validate(server.document)


def test_the_document_lists_exactly_the_apps_api_routes(server):
    cfg = config.load({"SITEWATCH_WEB__TOKENS": TOKENS})
    app = create_app(cfg, server.dsn)       # no connection until a request: the pools are lazy
    try:
        served = {(re.sub(r"\{\w+\}", "{id}", route.path), method.lower())
                  for route in app.routes if route.path.startswith("/api/")
                  for method in route.methods if method != "HEAD"}
    finally:
        app.state.pool.close()
        app.state.write_pool.close()
    assert served == set(operations(server.document))


def example_calls(server, made: dict) -> dict:
    """One call per documented operation: (path, method) -> (path with IDs, request keyword arguments).
    Ordered so that what a call needs exists: a URL is added, changed, read, then removed."""
    seeded = server.ids["alpha"]
    json_body = {"headers": {"Content-Type": "application/json"}}
    return {
        ("/api/v1/urls", "post"): ("/api/v1/urls", {**json_body, "content": json.dumps(
            {"url": "https://openapi.example/", "name": "openapi"})}),
        ("/api/v1/urls/{id}", "patch"): (lambda: f"/api/v1/urls/{made['url']}", {
            **json_body, "content": json.dumps({"period": 30})}),
        ("/api/v1/summary", "get"): ("/api/v1/summary", {}),
        ("/api/v1/urls", "get"): ("/api/v1/urls", {"params": {"limit": 2}}),
        ("/api/v1/urls/{id}", "get"): (f"/api/v1/urls/{seeded}", {}),
        ("/api/v1/urls/{id}/checks", "get"): (f"/api/v1/urls/{seeded}/checks", {"params": {"limit": 3}}),
        ("/api/v1/urls/{id}/uptime", "get"): (f"/api/v1/urls/{seeded}/uptime", {}),
        ("/api/v1/urls/{id}/daily", "get"): (f"/api/v1/urls/{seeded}/daily", {"params": {"days": 3}}),
        ("/api/v1/incidents", "get"): ("/api/v1/incidents", {}),
        ("/api/v1/audit", "get"): ("/api/v1/audit", {"params": {"limit": 5}}),
        ("/api/v1/openapi.json", "get"): ("/api/v1/openapi.json", {}),
        ("/api/v1/silences", "post"): ("/api/v1/silences", {**json_body, "content": json.dumps(
            {"pattern": "openapi", "for": "1h"})}),
        ("/api/v1/silences/{id}", "delete"): (lambda: f"/api/v1/silences/{made['silence']}", {}),
        ("/api/v1/apply", "post"): ("/api/v1/apply", {"params": {"dry_run": "1"}, "headers": {
            "Content-Type": "application/yaml"}, "content": "- https://openapi-apply.example/\n"}),
        ("/api/v1/urls/{id}", "delete"): (lambda: f"/api/v1/urls/{made['url']}", {}),
    }


def check_response(document, path, method, response) -> None:
    """The status is documented for the operation, and a JSON body matches its schema."""
    documented = document["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (path, method, response.status_code, response.text)
    content = documented[str(response.status_code)].get("content", {})
    kind = response.headers.get("content-type", "").split(";")[0]
    assert kind in content, (path, method, kind)
    if kind == "application/json":
        schema = {**content[kind]["schema"], "components": document["components"]}
        Draft202012Validator(schema).validate(response.json())


def test_every_documented_operation_answers_as_documented(server):
    document, made = server.document, {}
    calls = example_calls(server, made)
    assert set(calls) == set(operations(document)), "an operation of the document has no example call here"
    auth = {"Authorization": f"Bearer {WRITE}"}
    for (path, method), (target, kwargs) in calls.items():
        target = target() if callable(target) else target
        headers = {**kwargs.get("headers", {}), **auth}
        response = server.client.request(method.upper(), target, **{**kwargs, "headers": headers})
        assert response.status_code < 300, (path, method, response.status_code, response.text)
        check_response(document, path, method, response)
        if (path, method) == ("/api/v1/urls", "post"):
            made["url"] = response.json()["id"]
        if (path, method) == ("/api/v1/silences", "post"):
            made["silence"] = response.json()["id"]
        if method != "get":     # and the refusals it documents: no token, a missing ID
            refused = server.client.request(method.upper(), target, **kwargs)
            assert refused.status_code == 401
            check_response(document, path, method, refused)


@pytest.mark.parametrize("path, method, kwargs, status", [
    ("/api/v1/urls/999999", "get", {}, 404),
    ("/api/v1/urls", "get", {"params": {"limit": "x"}}, 400),
    ("/api/v1/urls", "post", {"headers": {"Content-Type": "application/json"}, "content": '{"url": 1}'}, 400),
    ("/api/v1/urls", "post", {"headers": {"Content-Type": "text/plain"}, "content": "{}"}, 415),
    ("/api/v1/silences/999999", "delete", {}, 404),
])
def test_documented_refusals_match_their_schemas(server, path, method, kwargs, status):
    template = re.sub(r"/\d+", "/{id}", path)
    response = server.client.request(method.upper(), path, **{
        **kwargs, "headers": {**kwargs.get("headers", {}), "Authorization": f"Bearer {WRITE}"}})
    assert response.status_code == status, response.text
    check_response(server.document, template, method, response)
