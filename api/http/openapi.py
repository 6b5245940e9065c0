"""/openapi.json: FastAPI's document, with the schemas no route's return type names.

Every error answer refers to `Problem`, sent as application/problem+json (FastAPI would list
a response model under application/json only); the event stream's frames refer to
`ArtifactAnnouncement`; a pushed workflow, read by its route as JSON or YAML, is a
`WorkflowDocument`. They are published here, beside the schemas FastAPI collects.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.models import Schema
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.http.schemas import ArtifactAnnouncement, Problem
from engine.workflows.registry import WorkflowDocument

Published = tuple[tuple[type[BaseModel], JsonSchemaMode], ...]
PUBLISHED: Published = (
    (Problem, "serialization"),
    (ArtifactAnnouncement, "serialization"),
    (WorkflowDocument, "validation"),  # a request's body
)


class SchemaClash(ValueError):
    pass


def components_of(models: Published) -> dict[str, Any]:
    """The models' schemas (and those they use), named and written as FastAPI names and writes
    its own (through its `Schema` model: a null default left out, a number a float), so a
    schema FastAPI publishes too (WorkflowConfig, used by CreateSession) is the same."""
    _, top = models_json_schema(list(models), ref_template="#/components/schemas/{model}")
    return {
        name: Schema.model_validate(schema).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        for name, schema in top["$defs"].items()
    }


def publish(schemas: dict[str, Any], models: Published) -> None:
    """Add the models' schemas to `schemas`; one name never stands for two schemas."""
    for name, schema in components_of(models).items():
        if schemas.setdefault(name, schema) != schema:
            raise SchemaClash(f"two different schemas are named {name} in the OpenAPI")


def install(app: FastAPI) -> None:
    """Serve the document with PUBLISHED's schemas (built once, on first request)."""
    document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            publish(document().setdefault("components", {}).setdefault("schemas", {}), PUBLISHED)
        return document()  # built once: FastAPI keeps it as app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
