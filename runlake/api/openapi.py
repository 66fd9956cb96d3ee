"""The OpenAPI 3.1 document, built from the route table and the msgspec types.

Nothing here names a route: every path, parameter, body and response comes from
the `Route` entries, and every schema from `msgspec.json.schema_components`, so
the document cannot drift from the code.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from http import HTTPStatus
from typing import Any

import msgspec

import runlake
from runlake.api.access import KEY_HEADER
from runlake.api.params import PARAM_PATH, PATH_PARAMS
from runlake.api.responses import ErrorResponse
from runlake.api.routing import Route
from runlake.events.schema import EVENT_ID_PATTERN

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@functools.cache
def openapi_json(routes: tuple[Route, ...]) -> bytes:
    """The document as JSON bytes; built once per route table."""
    return msgspec.json.encode(build_openapi(routes))


def build_openapi(routes: tuple[Route, ...]) -> dict[str, Any]:
    types = _types(routes)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    for name, schema in components.items():
        if name.startswith("DeleteEvent"):  # …WithComponent, …InComponent too
            schema["oneOf"] = DELETE_TARGET
        _event_id_pattern(schema)
    schema = _SchemaOf(types, schemas)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, schema)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runlake",
            "version": runlake.__version__,
            "description": "Event-sourced run-history store: append events, query runs.",
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
        # Either scheme; with no keys on a loopback bind, none is needed (docs/security.md).
        "security": [{"apiKey": []}, {"bearer": []}],
    }


# A delete names exactly one of run_id and batch_id: a rule across fields, which a
# msgspec type cannot state (events/schema.py checks it at decode).
DELETE_TARGET = [{"required": [one], "properties": {one: {"type": "string"}}}
                 for one in ("run_id", "batch_id")]


def _event_id_pattern(schema: Any) -> None:
    """An event id's whole rule: msgspec shows its own `^[^@]` in place of the
    EVENT_ID_PATTERN its type declares for the document (controls are refused by
    events.schema's check_rules, not by msgspec)."""
    if isinstance(schema, dict):
        if schema.get("pattern") == "^[^@]":
            schema["pattern"] = EVENT_ID_PATTERN
        for value in schema.values():
            _event_id_pattern(value)
    elif isinstance(schema, list):
        for value in schema:
            _event_id_pattern(value)


SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": KEY_HEADER},
    "bearer": {"type": "http", "scheme": "bearer"},
}


class _SchemaOf:
    """The schema generated for each type, looked up by equality (types such as
    `Annotated[...]` are not always hashable)."""

    def __init__(self, types: list[Any], schemas: tuple[dict[str, Any], ...]) -> None:
        self._pairs = list(zip(types, schemas, strict=True))

    def __call__(self, t: Any) -> dict[str, Any]:
        return next(s for u, s in self._pairs if u == t)


def _types(routes: tuple[Route, ...]) -> list[Any]:
    types: list[Any] = [ErrorResponse]
    for route in routes:
        if route.response is not None:
            types.append(route.response)
        if route.body is not None:
            types.extend(t for _, t in route.body.media)
        types.extend(_given(f.type) for f in msgspec.structs.fields(route.query))
        types.extend(PATH_PARAMS[name][0] for name in _PATH_PARAM.findall(route.path))
    return types


def _operation(route: Route, schema: _SchemaOf) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": re.sub(r"\W+", "_", f"{route.method} {route.path}").strip("_").lower(),
        "summary": route.summary,
        "tags": [route.tag],
    }
    params = [{"name": name, "in": "path", "required": True, "description": PATH_PARAMS[name][1],
               "schema": schema(PATH_PARAMS[name][0])} for name in _PATH_PARAM.findall(route.path)]
    for f in msgspec.structs.fields(route.query):
        if f.name in getattr(route.query, "prefixed", {}).values():
            continue  # filled from prefixed names: x-query-name-patterns
        param_schema = schema(_given(f.type))
        if f.default not in (msgspec.NODEFAULT, None):
            param_schema = {**param_schema, "default": f.default}
        param = {"name": f.name, "in": "query", "required": f.required, "schema": param_schema}
        if description := _description(param["schema"]):
            param["description"] = description
        params.append(param)
    if params:
        op["parameters"] = params
    if prefixed := getattr(route.query, "prefixed", None):
        # Names no fixed parameter can list (param.<path>=value): the pattern they match.
        op["x-query-name-patterns"] = [
            {"pattern": f"^{re.escape(prefix)}{PARAM_PATH}$", "into": field,
             "description": f"{prefix}<path>=value: the run's params at a dot path of keys "
                            "equal this value as text; repeat for any of several "
                            "(docs/facets.md)"}
            for prefix, field in prefixed.items()]
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body.required,
            "description": route.body.description,
            "content": {media: {"schema": schema(t)} for media, t in route.body.media},
        }
    if route.response is not None:
        content = {route.media_type: {"schema": schema(route.response)}}
    else:
        content = {m: {"schema": {}} for m in (route.media_type, *route.other_media)}
    responses: dict[str, Any] = {}
    for status in (route.status, *route.same_body):
        description = route.response_description or HTTPStatus(status).phrase
        responses[str(status)] = {"description": description, "content": content}
    error = {"application/json": {"schema": schema(ErrorResponse)}}
    for status in route.errors:
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": error}
    responses["default"] = {"description": "Error (envelope)", "content": error}
    op["responses"] = responses
    if route.role == "open":
        op["security"] = []  # no key needed, ever
    return op


def _given(t: Any) -> Any:
    """A query parameter's type: `X | None` is X (null is leaving it out)."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if typing.get_origin(t) in (types.UnionType, typing.Union) and len(args) == 1 \
        else t


def _description(schema: dict[str, Any]) -> str | None:
    """The description msgspec put in a parameter's schema (Meta(description=...)),
    also where the type is `X | None` (anyOf)."""
    if "description" in schema:
        return str(schema["description"])
    return next((str(s["description"]) for s in schema.get("anyOf", ()) if "description" in s),
                None)
