"""The committed OpenAPI documents (shared/openapi/<function>.json) are what the
resolvers generate now, and say what the clients need: every route, its models, the
bearer JWT and the error envelope."""

import json

import pytest

from devkit import openapi


@pytest.mark.parametrize("function", openapi.CLIENT_FUNCTIONS)
def test_committed_document_is_current(function):
    committed = openapi.path_for(function)
    assert committed.exists(), f"missing {committed}: run scripts/openapi"
    assert json.loads(committed.read_text()) == openapi.document(function), (
        f"{committed} is stale: run scripts/openapi and commit it")


def test_documents_cover_every_route_with_auth_and_the_error_envelope():
    routes = set()
    for function in openapi.CLIENT_FUNCTIONS:
        doc = openapi.document(function)
        assert doc["openapi"].startswith("3.1") and doc["security"] == [{"bearerAuth": []}]
        assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                routes.add(f"{function} {method.upper()} {path}")
                error = operation["responses"]["default"]["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/ErrorEnvelope"}
                assert any(code.startswith("2") for code in operation["responses"])
                assert "content" not in operation["responses"].get("204", {}), "a 204 has no body"
        assert "HTTPValidationError" not in json.dumps(doc)
    assert routes == {
        "process-image GET /tools", "process-image POST /uploads", "process-image POST /generations",
        "process-image GET /generations/{generation_id}", "process-image GET /generations",
        "account GET /me", "account DELETE /me", "account POST /me/exports",
        "account GET /me/exports/{export_id}", "account POST /pairs/invites", "account GET /pairs/invites",
        "account DELETE /pairs/invites/{invite_id}", "account POST /pairs/join", "account GET /pairs/current",
        "account DELETE /pairs/current", "account GET /pairs/audit",
        "analyze-entry POST /entries", "analyze-entry POST /entries/{entry_id}/analyze",
        "analyze-entry GET /entries/{entry_id}", "analyze-entry DELETE /entries/{entry_id}",
        "analyze-entry POST /entries/{entry_id}/attachments",
        "analyze-entry DELETE /entries/{entry_id}/attachments/{attachment_id}",
        "checkout GET /products", "checkout POST /paymob", "checkout POST /stripe",
        "checkout POST /revenuecat/sync",
    }


def test_documents_load_in_schemathesis():
    import schemathesis

    for function in openapi.CLIENT_FUNCTIONS:
        schema = schemathesis.openapi.from_dict(openapi.document(function))
        assert len(list(schema.get_all_operations())) >= 3
