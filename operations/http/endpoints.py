"""The declarative route table behind ``GET /openapi.json``: one :class:`Endpoint` per route and
method, naming the models (:mod:`operations.http.models`, :mod:`operations.sagas.models`) of its
query, body and answers. :func:`build` turns a table into an OpenAPI 3.1 document; the schemas
come from the models through ``msgspec.json.schema_components``, so a limit declared on a model
is the one both the validation and the document use."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import msgspec

from operations.http.models import Error

REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Answer:
    """One status a route answers with: ``model`` is the body's type (None: no body)."""

    description: str
    model: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)  # name: description
    media_type: str = "application/json"


@dataclass(frozen=True)
class Param:
    """A path parameter or a request header the route reads (query parameters come from the
    endpoint's ``query`` model)."""

    name: str
    where: Literal["path", "header"]
    description: str
    example: str | None = None


@dataclass(frozen=True)
class Endpoint:
    method: Literal["get", "post", "put", "patch", "delete"]
    path: str
    summary: str
    answers: Mapping[int, Answer]
    description: str | None = None
    params: tuple[Param, ...] = ()
    query: type[msgspec.Struct] | None = None
    body: Any = None  # the JSON body's model
    body_required: bool = True
    token: bool = True  # whether a bearer token is required


def problem(description: str) -> Answer:
    """An error answer: ``{"code", "reason"}``."""
    return Answer(description, Error)


# Shared by many routes.
OPERATION_ID = Param(
    "id", "path", "The operation id (the messages' correlation id); GUIDs in any format."
)
NEEDS_TOKEN = problem(
    "`unauthorized`: missing, malformed, badly signed or expired bearer token, or one whose"
    " identity provider keys cannot be fetched."
)
UNKNOWN = problem("`operation_not_found`: unknown, expired, or another user's operation.")
STORE_DOWN = problem("`store_unavailable`: Redis cannot be reached; retry later.")


def build(endpoints: Iterable[Endpoint], info: Mapping[str, Any]) -> dict[str, Any]:
    endpoints = list(endpoints)
    models = _models(endpoints)
    schemas, components = _components(models)
    schema_of = dict(zip(map(_key, models), schemas, strict=True))
    for model in models:
        extra = getattr(model, "json_schema_extra", None)
        if isinstance(model, type) and isinstance(extra, dict):
            components[model.__name__].update(extra)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {"summary": endpoint.summary}
        if endpoint.description:
            operation["description"] = endpoint.description
        parameters = [_parameter(param) for param in endpoint.params]
        if endpoint.query is not None:
            parameters.extend(query_parameters(endpoint.query))
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": endpoint.body_required,
                "content": {"application/json": {"schema": schema_of[_key(endpoint.body)]}},
            }
        operation["responses"] = {
            str(status): _response(answer, schema_of)
            for status, answer in sorted(endpoint.answers.items())
        }
        if not endpoint.token:
            operation["security"] = []
        paths.setdefault(endpoint.path, {})[endpoint.method] = operation
    return {
        "openapi": "3.1.0",
        "info": dict(info),
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": (
                        "JWT: HS256 with OPERATIONS_JWT_SECRET, or RS256/ES256 from the"
                        " OPERATIONS_JWT_JWKS_URL key set by kid; exp required"
                    ),
                }
            },
            "schemas": components,
        },
    }


def query_parameters(model: type[msgspec.Struct]) -> list[dict[str, Any]]:
    """A query model's fields as OpenAPI query parameters, each schema written out in full."""
    _, components = _components([model])
    own = components[model.__name__]
    required = set(own.get("required", []))
    parameters = []
    for name, schema in own["properties"].items():
        schema = _inline(schema, components)
        parameter = {"name": name, "in": "query", "required": name in required}
        description = schema.pop("description", None)
        if description:
            parameter["description"] = description
        parameters.append({**parameter, "schema": schema})
    return parameters


def _inline(schema: dict[str, Any], components: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter's schema without references, and without the null a query string cannot
    carry (an absent parameter is its default)."""
    schema = dict(schema)
    if "$ref" in schema:
        target = components[schema.pop("$ref").rsplit("/", 1)[-1]]
        schema = {**{k: v for k, v in target.items() if k != "title"}, **schema}
    branches = [b for b in schema.pop("anyOf", []) if b != {"type": "null"}]
    if len(branches) == 1:
        schema = {**_inline(branches[0], components), **schema}
    elif branches:
        schema["anyOf"] = [_inline(branch, components) for branch in branches]
    if schema.get("default", ...) is None:
        del schema["default"]
    return schema


def _components(models: list[Any]) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """msgspec's schemas, with each enum's values in the order the enum declares them (msgspec
    sorts them)."""
    schemas, components = msgspec.json.schema_components(models, ref_template=REF)
    for enum in _enums(msgspec.inspect.multi_type_info(models), set()):
        if enum.__name__ in components:
            components[enum.__name__]["enum"] = [member.value for member in enum]
    return schemas, components


def _enums(kinds: Iterable[msgspec.inspect.Type], seen: set[Any]) -> Iterator[type[Enum]]:
    for kind in kinds:
        if isinstance(kind, msgspec.inspect.EnumType):
            yield kind.cls
        elif isinstance(kind, msgspec.inspect.StructType) and kind.cls not in seen:
            seen.add(kind.cls)
            yield from _enums((f.type for f in kind.fields), seen)
        elif isinstance(kind, msgspec.inspect.Metadata):
            yield from _enums([kind.type], seen)
        elif isinstance(kind, msgspec.inspect.UnionType):
            yield from _enums(kind.types, seen)
        elif isinstance(kind, msgspec.inspect.ListType | msgspec.inspect.DictType):
            yield from _enums(
                [kind.item_type]
                if isinstance(kind, msgspec.inspect.ListType)
                else [kind.key_type, kind.value_type],
                seen,
            )


def _parameter(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if param.example is not None:
        schema["examples"] = [param.example]
    return {
        "name": param.name,
        "in": param.where,
        "required": param.where == "path",
        "description": param.description,
        "schema": schema,
    }


def _response(answer: Answer, schema_of: Mapping[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": answer.description}
    if answer.headers:
        response["headers"] = {
            name: {"schema": {"type": "string"}, "description": description}
            for name, description in answer.headers.items()
        }
    if answer.model is not None:
        response["content"] = {answer.media_type: {"schema": schema_of[_key(answer.model)]}}
    return response


def _models(endpoints: list[Endpoint]) -> list[Any]:
    """Every model the table names, once each, in order."""
    found: dict[str, Any] = {}
    for endpoint in endpoints:
        for model in [endpoint.body, *(a.model for a in endpoint.answers.values())]:
            if model is not None:
                found.setdefault(_key(model), model)
    return list(found.values())


def _key(model: Any) -> str:
    return repr(model)
