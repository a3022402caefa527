"""The OpenAPI schema documents every operation and its errors, validates without warnings,
and the docs page is served from Conveyor itself (no CDN)."""

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    # --validate checks it against the OpenAPI 3 meta-schema; --fail-on-warn turns any
    # warning (an undocumented type, a path parameter it cannot resolve) into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_the_schema_validates_without_warnings(schema):
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/agents/{id}/runs" in schema["paths"]


def test_every_operation_documents_its_errors_in_the_one_format(schema):
    for path, method, operation in operations(schema):
        codes = set(operation["responses"])
        assert "401" in codes, (method, path)
        if "{id}" in path:
            assert "404" in codes, (method, path)
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= codes, (method, path)
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (method, path, code)


def test_run_requests_document_the_rate_limit_and_the_idempotency_key(schema):
    run = schema["paths"]["/api/v1/agents/{id}/runs"]["post"]
    assert {"200", "202", "409", "429"} <= set(run["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in run["parameters"])


def test_every_operation_documents_the_bad_token_throttle(schema):
    # Any request with a token can be refused with 429 once its address sent too many bad ones.
    for path, method, operation in operations(schema):
        assert {"400", "401", "429"} <= set(operation["responses"]), (method, path)


def test_the_idempotency_key_rule_is_stated(schema):
    run = schema["paths"]["/api/v1/agents/{id}/runs"]["post"]
    (key,) = (p for p in run["parameters"] if p["name"] == "Idempotency-Key")
    assert "1 to 200 printable ASCII characters" in key["description"]
    assert key["schema"]["minLength"] == 1
    assert key["schema"]["maxLength"] == 200


def test_secrets_are_write_only_and_their_names_rule_is_stated(schema):
    components = schema["components"]["schemas"]
    secrets = components["AgentRequest"]["properties"]["secrets"]
    assert secrets["writeOnly"] is True
    assert "1 to 100 ASCII letters, digits, - and _" in secrets["description"]
    assert "secrets" not in components["Agent"]["properties"]


def test_lists_document_the_cursor_the_limit_and_the_next_link(schema):
    for path in ("/api/v1/agents", "/api/v1/executions", "/api/v1/executions/{id}/logs"):
        operation = schema["paths"][path]["get"]
        names = {p["name"] for p in operation["parameters"]}
        assert {"cursor", "limit"} <= names, path
        page = operation["responses"]["200"]["content"]["application/json"]["schema"]
        page = schema["components"]["schemas"][page["$ref"].rsplit("/", 1)[1]]
        assert page["properties"]["next"]["nullable"] is True, path
        assert "previous" in page["properties"]["next"]["description"], path


def test_fields_the_api_returns_as_null_are_nullable(schema):
    execution = schema["components"]["schemas"]["Execution"]["properties"]
    for name in (
        "next_attempt_at",
        "wait_until",
        "not_before",
        "started_at",
        "finished_at",
        "duration_seconds",
        "retry_of",
    ):
        assert execution[name].get("nullable") is True, name


def test_the_traceback_staff_get_is_documented_as_optional(schema):
    execution = schema["components"]["schemas"]["Execution"]
    assert "error_detail" in execution["properties"]
    assert "error_detail" not in execution["required"]


def test_the_error_schema_has_code_message_and_details(schema):
    components = schema["components"]["schemas"]
    error = components["Error"]["properties"]["error"]
    detail = components[error["$ref"].rsplit("/", 1)[1]]
    assert set(detail["properties"]) == {"code", "message", "details"}


def test_the_schema_and_docs_pages_are_served_without_a_cdn():
    client = Client()
    assert client.get("/api/v1/schema/").status_code == 200
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn" not in page.lower()
    asset = page.split('src="', 2)[1].split('"', 1)[0]
    assert Client().get(asset).status_code == 200
