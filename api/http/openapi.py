"""/openapi.json: FastAPI's document, with the schemas no route's return type names.

Every error answer refers to `Problem`, sent as application/problem+json (FastAPI would list
a response model under application/json only); the event stream's frames refer to
`ArtifactAnnouncement`. Both are published here, beside the schemas FastAPI collects.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.http.schemas import ArtifactAnnouncement, Problem

PUBLISHED: tuple[type[BaseModel], ...] = (Problem, ArtifactAnnouncement)


class SchemaClash(ValueError):
    pass


def components_of(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """The models' schemas (and those they use), named as FastAPI names its own."""
    _, top = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    definitions: dict[str, Any] = top["$defs"]
    return definitions


def publish(schemas: dict[str, Any], models: tuple[type[BaseModel], ...]) -> None:
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
