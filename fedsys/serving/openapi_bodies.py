"""Request bodies documented in the OpenAPI schema for routes that read their body themselves
(to bound its size, or to take binary data after a JSON header).

pydantic writes nested models as ``$ref`` into a ``$defs`` table at the schema's root; inside
an ``openapi_extra`` body that root is the OpenAPI document, where the references do not
resolve, so the definitions are inlined (the models here are not recursive).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
            return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    return inlined


def json_body(model: type[BaseModel], **more: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a required JSON body of ``model`` (and other media types)."""
    content = {"application/json": {"schema": inline_schema(model)}, **more}
    return {"requestBody": {"required": True, "content": content}}
