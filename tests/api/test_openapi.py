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


async def test_every_operation_declares_what_the_layers_around_it_answer(client: httpx.AsyncClient) -> None:
    """app/core/openapi.py: statuses that middleware and error handlers give any route are declared."""
    spec = (await client.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where, codes = f"{method.upper()} {path}", set(operation["responses"])
            assert {"400", "429", "503"} <= codes, where
            if "requestBody" in operation:
                assert {"413", "422"} <= codes, where
            if method in {"post", "put", "delete"}:
                assert "409" in codes, where
            json_read = "application/json" in operation["responses"].get("200", {}).get("content", {})
            assert ("304" in codes) == (method == "get" and json_read and path != "/api/v1/user"), where
    assert spec["paths"]["/api/v1/articles"]["get"]["security"][-1] == {}  # anonymous readers welcome
    assert {} not in spec["paths"]["/api/v1/articles/feed"]["get"]["security"]
    links = spec["paths"]["/api/v1/articles"]["post"]["responses"]["201"]["links"]
    assert links["DeleteArticle"] == {
        "operationRef": "#/paths/~1api~1v1~1articles~1{slug}/delete",
        "parameters": {"slug": "$response.body#/article/slug"},
    }


async def test_a_declared_304_is_what_a_current_etag_gets(client: httpx.AsyncClient) -> None:
    first = await client.get("/tags")
    again = await client.get("/tags", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


async def test_method_not_allowed_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    # GET and PUT /user are two routes; Starlette's own 405 named only the first one's methods.
    response = await client.request("PATCH", "/user")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, PUT"
    assert response.headers["Content-Type"] == "application/problem+json"
    favorite = await client.request("OPTIONS", "/articles/some-slug/favorite")
    assert favorite.headers["Allow"] == "DELETE, POST"
    # The feed, not an article called "feed" (no article gets that slug): what the document says.
    assert (await client.request("OPTIONS", "/articles/feed")).headers["Allow"] == "GET"
