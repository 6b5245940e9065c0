"""The caller's tenant's secrets: written, listed by name, deleted; never read back.

    PUT    /v1/secrets/{name}   {"value": "...", "origins": ["https://api.example.com"]}
                                {"value": "JBSW Y3DP EHPK 3PXP", "kind": "totp"}
    GET    /v1/secrets
    DELETE /v1/secrets/{name}

A workflow uses one as `{{secrets.NAME}}`; it is filled in only for requests to its origins
(none given: the origin of the workflow's base_url); one of kind `totp` is a base32 TOTP seed,
used as `{{totp.NAME}}`, its current one-time code. No answer ever holds a value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.http.errors import problem_responses
from api.http.services import CallerDep, ServicesDep
from engine.secrets import MIN_REDACTED_LENGTH, NAME, normalized_origin, normalized_seed
from engine.tenancy.secret_store import (
    MAX_ORIGINS,
    MAX_VALUE_CHARS,
    TOTP_SEED,
    StoredSecret,
)

router = APIRouter(tags=["secrets"])

SecretName = Annotated[
    str, Path(pattern=NAME.pattern, description="letters, digits and _ (1 to 100)")
]


class SecretWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=MIN_REDACTED_LENGTH, max_length=MAX_VALUE_CHARS)
    origins: list[str] = Field(
        default_factory=list,
        max_length=MAX_ORIGINS,
        description="where it may be sent: scheme://host[:port] each, or `shell`; none: the "
        "origin of the base_url of the workflow that uses it",
    )

    kind: Literal["value", "totp"] = Field(
        default="value",
        description="`totp`: the value is a base32 TOTP seed (as shown under a site's QR code), "
        "used as {{totp.NAME}}, its current code; the seed itself is never sent",
    )

    @field_validator("origins")
    @classmethod
    def _are_origins(cls, origins: list[str]) -> list[str]:
        return list(dict.fromkeys(normalized_origin(origin) for origin in origins))

    @model_validator(mode="after")
    def _seed_is_base32(self) -> SecretWrite:
        if self.kind == TOTP_SEED:
            normalized_seed(self.value)  # its ValueError is the 422's message
        return self


class SecretView(BaseModel):
    """A stored secret, without its value."""

    name: str
    kind: str
    origins: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, stored: StoredSecret) -> SecretView:
        return cls(
            name=stored.name,
            kind=stored.kind,
            origins=list(stored.origins),
            created_at=stored.created_at,
            updated_at=stored.updated_at,
        )


class SecretList(BaseModel):
    secrets: list[SecretView]


@router.put(
    "/v1/secrets/{name}",
    operation_id="putSecret",
    response_model=SecretView,
    responses=problem_responses(400, 401, 413, 422, 503),
)
def put_secret(
    name: SecretName, body: SecretWrite, services: ServicesDep, caller: CallerDep
) -> SecretView:
    """Store (or replace) a secret of the caller's tenant; the answer never holds the value."""
    store = services.runtime.secret_store
    return SecretView.of(store.put(caller.tenant, name, body.value, body.origins, body.kind))


@router.get(
    "/v1/secrets",
    operation_id="listSecrets",
    response_model=SecretList,
    responses=problem_responses(401, 422),
)
def list_secrets(services: ServicesDep, caller: CallerDep) -> SecretList:
    """The caller's tenant's secrets: names, origins and times, never values."""
    stored = services.runtime.secret_store.listed(caller.tenant)
    return SecretList(secrets=[SecretView.of(secret) for secret in stored])


@router.delete(
    "/v1/secrets/{name}",
    operation_id="deleteSecret",
    status_code=204,
    responses=problem_responses(401, 404, 422),
)
def delete_secret(name: SecretName, services: ServicesDep, caller: CallerDep) -> Response:
    """Delete a secret of the caller's tenant (another tenant's name is not found)."""
    services.runtime.secret_store.delete(caller.tenant, name)
    return Response(status_code=204)
