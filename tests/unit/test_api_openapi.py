"""The checked-in OpenAPI document is the one the app generates (docs/contract.md,
"HTTP API": generated, checked in)."""

from __future__ import annotations

from services.api.openapi import PATH, render


def test_checked_in_openapi_document_is_current() -> None:
    assert PATH.read_bytes() == render(), "contracts/openapi.json is stale: run `python -m services.api.openapi`"


def test_openapi_names_every_contract_route() -> None:
    import orjson

    paths = orjson.loads(PATH.read_bytes())["paths"]
    expected = {
        ("get", "/v1/channels/{ch}/users/{userId}"), ("get", "/v1/channels/{ch}/users"),
        ("get", "/v1/channels/{ch}/users/{userId}/activities"), ("get", "/v1/channels/{ch}/users/{userId}/merges"),
        ("get", "/v1/channels/{ch}/unifications"), ("get", "/v1/channels/{ch}/commands/{eventId}"),
        ("put", "/v1/channels/{ch}/members/{memberId}"), ("delete", "/v1/channels/{ch}/members/{memberId}"),
        ("post", "/v1/channels/{ch}/leads"), ("patch", "/v1/channels/{ch}/users/{userId}"),
        ("delete", "/v1/channels/{ch}/users/{userId}"), ("post", "/v1/channels/{ch}/users/{userId}/block"),
        ("post", "/v1/channels/{ch}/users/{userId}/unblock"), ("post", "/v1/channels/{ch}/unifications"),
        ("delete", "/v1/channels/{ch}/unifications/{sourceUserId}"), ("post", "/v1/channels/{ch}/deliveries"),
        ("put", "/v1/channels/{ch}/grades/{name}"), ("delete", "/v1/channels/{ch}/grades/{name}"),
        ("post", "/v1/channels/{ch}/grades/{name}/holders"),
        ("delete", "/v1/channels/{ch}/grades/{name}/holders/{kind}/{value}"),
        ("post", "/v1/channels/{ch}/imports"), ("get", "/v1/channels/{ch}/imports/{importId}"),
        ("get", "/v1/channels/{ch}/imports/{importId}/failures.csv"), ("get", "/v1/channels/{ch}/imports"),
        ("get", "/v1/channels/{ch}/settings"), ("patch", "/v1/channels/{ch}/settings"),
    }
    present = {(method, path) for path, ops in paths.items() for method in ops}
    assert expected <= present, sorted(expected - present)
