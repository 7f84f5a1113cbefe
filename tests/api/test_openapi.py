"""The OpenAPI document is complete enough for /docs to be useful as is."""

from __future__ import annotations

import httpx


async def test_every_operation_is_documented(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) >= 19  # the RealWorld operations, and ours beside them
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation.get("summary") and operation.get("description") and operation.get("tags"), where
        success = next(code for code in operation["responses"] if code.startswith("2"))
        content = operation["responses"][success].get("content", {})
        if success not in ("202", "204") and "application/zip" not in content:  # no JSON body
            schema = content["application/json"]["schema"]
            assert "$ref" in schema, where
        errors = [code for code in operation["responses"] if code[0] in "45"]
        assert errors, where
        for code in errors:
            assert "application/problem+json" in operation["responses"][code]["content"], where
        body = operation.get("requestBody")
        if body and "multipart/form-data" in body["content"]:  # uploads: the file field, described inline
            properties = body["content"]["multipart/form-data"]["schema"]["properties"]
            assert properties["file"] == {**properties["file"], "type": "string", "format": "binary"}, where
            assert properties["file"]["description"], where
        elif body:
            (content,) = body["content"].values()
            schema = content["schema"]
            # An optional body is "anyOf: [model, null]".
            ref = next(s["$ref"] for s in [schema, *schema.get("anyOf", [])] if "$ref" in s).rsplit("/", 1)[1]
            assert spec["components"]["schemas"][ref].get("examples"), where


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("http://test/docs")
    assert response.status_code == 200
    assert "/api/v1/openapi.json" in response.text
