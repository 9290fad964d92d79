"""/openapi.json describes exactly the routes the app serves."""

from __future__ import annotations

import re

import pytest

from blanket.config.settings import Settings
from blanket.server.api.app import make_app
from blanket.server.api.openapi import openapi_document
from blanket.server.services import build_services

ISSUE_ROUTES = {
    ("get", "/task/"), ("post", "/task/"), ("get", "/task/{task_id}"),
    ("delete", "/task/{task_id}"), ("post", "/task/{task_id}/stop"),
    ("post", "/task/{task_id}/rerun"), ("post", "/worker/"),
    ("post", "/worker/{worker_id}/claim"), ("post", "/task/{task_id}/heartbeat"),
    ("post", "/task/{task_id}/started"), ("post", "/task/{task_id}/progress"),
    ("post", "/task/{task_id}/finished"), ("get", "/openapi.json"),
}


@pytest.fixture
def app(tmp_path):
    (tmp_path / "conf.d" / "types").mkdir(parents=True)
    services = build_services(Settings(config_dir=tmp_path / "conf.d",
                                       data_dir=tmp_path / "var"))
    yield make_app(services)
    services.store.close()


def operations(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in document["paths"].items() for method in ops}


def test_every_route_of_the_app_is_documented_and_nothing_else(app):
    served = {(r.method.lower(), re.sub(r"<(?:\w+:)?(\w+)(?::[^>]*)?>", r"{\1}", r.rule))
              for r in app.routes}
    assert operations(openapi_document(app)) == served


def test_the_issue_routes_are_all_there(app):
    assert operations(openapi_document(app)) >= ISSUE_ROUTES


def test_each_path_parameter_is_declared(app):
    for path, ops in openapi_document(app)["paths"].items():
        for op in ops.values():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path))


def test_operation_ids_are_unique(app):
    ids = [op["operationId"] for ops in openapi_document(app)["paths"].values()
           for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_errors_are_documented_as_the_json_error_shape(app):
    document = openapi_document(app)
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["properties"]) == {"code", "message"}
    assert document["openapi"].startswith("3.")


def test_every_route_that_reads_a_body_describes_it(app):
    document = openapi_document(app)
    bodies = {(m, p) for p, ops in document["paths"].items() for m, op in ops.items()
              if "requestBody" in op}
    assert bodies >= {("post", "/task/"), ("post", "/worker/"), ("post", "/task/{task_id}/started"),
                      ("post", "/task/{task_id}/finished"), ("post", "/task/{task_id}/progress"),
                      ("post", "/task/{task_id}/heartbeat"), ("post", "/task/{task_id}/release"),
                      ("post", "/token/"), ("post", "/login")}
    content = document["paths"]["/task/"]["post"]["requestBody"]["content"]
    one, many = content["application/json"]["schema"]["oneOf"]
    assert one["required"] == ["type"] and one["properties"]["priority"]["maximum"] == 10_000
    assert many["items"] is one and many["maxItems"] == 10_000  # a bulk submission
    assert "application/x-ndjson" in content



def test_a_query_value_out_of_range_says_the_range_it_must_be_in():
    from blanket.server.api.http import _fits

    assert _fits("-1", {"type": "integer", "minimum": 0}) == "must be 0 or more"
    assert _fits("11", {"type": "integer", "maximum": 10}) == "must be 10 or less"
    assert _fits("0.5", {"type": "number", "minimum": 1.5, "maximum": 4.0}) == \
        "must be from 1.5 to 4"
    assert _fits("5", {"type": "integer", "minimum": 0, "maximum": 10}) is None
