"""The OpenAPI document stays true: every route is documented, every documented route
exists, and what the server really answers validates against the documented schemas."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import web
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from progress_server.app import create_app
from progress_server.client import ProgressInfo, TaskRecord
from progress_server.models import (
    PROGRESS_KEYS,
    TASK_RECORD_KEYS,
    TASK_RECORD_LIVE_KEYS,
    TASK_RECORD_MEDIA_KEYS,
    TASK_RECORD_OPTIONAL_KEYS,
)
from progress_server.openapi import build_document
from progress_server.settings import Settings
from tests.apiclient import Api
from tests.origins import Origin

METHODS = {"get", "post", "put", "patch", "delete"}


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD beside every GET by itself
            continue
        resource = route.resource
        assert resource is not None
        if isinstance(resource, web.StaticResource):
            path = resource.canonical + "/{filename}"
        else:
            path = resource.canonical
        found.add((path, route.method.lower()))
    return found


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, operations in document["paths"].items()
        for method in operations
        if method in METHODS
    }


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    routes = app_routes(app)
    documented = documented_routes(build_document())
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented routes the app does not have"
    assert ("/api/downloads", "post") in routes  # the comparison saw real routes


def test_every_path_parameter_is_documented() -> None:
    for path, item in build_document()["paths"].items():
        named = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            if method not in METHODS:
                continue
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            declared = {p["name"] for p in parameters if p["in"] == "path"}
            assert declared == named, (method, path)
            assert all(p["required"] for p in parameters if p["in"] == "path"), (method, path)


async def test_one_task_record_shape_in_the_server_the_document_and_the_client(
    api: Api, origin: Origin
) -> None:
    """The record's keys are declared once (models); the server's answer, the OpenAPI Task
    schema and the Python client's TaskRecord all carry exactly those."""
    required, optional = set(TASK_RECORD_KEYS), set(TASK_RECORD_OPTIONAL_KEYS)
    live = set(TASK_RECORD_LIVE_KEYS)
    media = set(TASK_RECORD_MEDIA_KEYS)
    schemas = build_document()["components"]["schemas"]
    assert set(schemas["Task"]["properties"]) == required | optional | live | media
    assert set(schemas["Task"]["required"]) == required
    assert TaskRecord.__required_keys__ == required
    assert TaskRecord.__optional_keys__ == optional | live | media

    plain = await api.submit(origin.url(size=1000))
    assert plain.keys() == required
    # The *extra* keys appear once the task has what they describe; `node` only in cluster
    # mode (tests/test_cluster_nodes.py sees it there).
    full = await api.submit(origin.url(size=1000, seed=2), sha256="0" * 64, max_speed_mbps=50)
    assert full.keys() == required | optional - {"node"}
    # (The live keys are there only while it downloads: tests/test_engine_segments_view.py.)
    assert (await api.task(full["task_id"])).keys() - live == required | optional - {"node"}

    progress = set(PROGRESS_KEYS)
    assert set(schemas["PollingProgress"]["properties"]) == progress
    assert set(schemas["PollingProgress"]["required"]) == progress
    assert ProgressInfo.__required_keys__ == progress
    assert plain["progress"].keys() == progress
    assert (await api.progress(plain["task_id"]))["progress"].keys() == progress


def test_document_is_openapi_31_with_bearer_auth_and_error_bodies() -> None:
    document = build_document()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            responses = operation["responses"]
            if path.startswith("/api/") and operation.get("security") == []:
                # Public (the document and its viewer): no key, so no 401.
                assert "401" not in responses, (method, path)
            elif path.startswith("/api/") and path != "/api/progress/ws":
                # Every other /api route needs a key, so each documents the 401 error body.
                assert responses["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }, (method, path)
                assert "security" not in operation, (method, path)
    post = document["paths"]["/api/downloads"]["post"]
    assert {"201", "200"} <= set(post["responses"])
    assert "Location" in post["responses"]["201"]["headers"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "304" in document["paths"]["/api/progress/{task_id}"]["get"]["responses"]
    schemas = document["components"]["schemas"]
    assert schemas["Event"]["properties"]["seq"]["x-extra"] is True
    assert "paused" in schemas["TaskState"]["enum"]


class Documented:
    """Validates bodies against the served document's component schemas."""

    def __init__(self, document: dict[str, Any]) -> None:
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:openapi", resource)

    def check(self, name: str, body: Any) -> None:
        schema = {"$ref": f"urn:openapi#/components/schemas/{name}"}
        jsonschema.Draft202012Validator(schema, registry=self.registry).validate(body)


async def test_served_document_needs_no_key_and_real_answers_match_it(
    api: Api, origin: Origin
) -> None:
    # Public (#11): generators and viewers pointed at its URL need no key.
    unauthenticated = await api.client.get("/api/openapi.json")
    assert unauthenticated.status == 200
    document = await unauthenticated.json()
    assert document == build_document()
    doc = Documented(document)

    done = await api.submit(origin.url(size=300_000), filename="a.bin")
    await api.wait_for(done["task_id"], "completed")
    unknown_size = await api.submit(origin.url(size=1000, no_length=1, seed=2))
    await api.wait_for(unknown_size["task_id"], "completed")
    failing = await api.submit(origin.url(status=404))
    await api.wait_for(failing["task_id"], "failed")

    doc.check("Task", done)
    for task_id in (done["task_id"], unknown_size["task_id"], failing["task_id"]):
        doc.check("Task", await api.task(task_id))
        doc.check("Polling", await api.progress(task_id))
        doc.check("EventList", await api.json("GET", f"/api/downloads/{task_id}/events"))
    doc.check("TaskList", await api.json("GET", "/api/downloads?limit=2"))
    doc.check("EventList", await api.json("GET", "/api/events"))
    ids = f"task_id={done['task_id']}&task_id={failing['task_id']}"
    doc.check("PollingBatch", await api.json("GET", f"/api/progress?{ids}"))
    bad = await api.call("POST", "/api/downloads", json={"url": "ftp://x"})
    assert bad.status == 422
    doc.check("Error", await bad.json())
    doc.check("Health", await (await api.client.get("/healthz")).json())
