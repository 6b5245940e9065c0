"""Types the OpenAPI publishes once, under a name, and refers to wherever they are used: a
generated client then has one class for each (one `SessionStatus`, not one enum per field
that holds a status)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema


@dataclass(frozen=True)
class NamedEnum:
    """Marks a text field that takes one of `values`, published as the enum schema `name`.
    The values come from where the idea is defined (a domain enum, a view's statuses)."""

    name: str
    values: tuple[str, ...]

    @classmethod
    def of(cls, enum: type[Enum], name: str | None = None) -> NamedEnum:
        """The enum's values, published under its name or `name`."""
        return cls(name or enum.__name__, tuple(str(member.value) for member in enum))

    def __get_pydantic_core_schema__(
        self, _source: Any, _handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.literal_schema(list(self.values), ref=self.name)


@dataclass(frozen=True)
class Named:
    """Marks a type (a union, say) to be published as the schema `name`."""

    name: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return cast(CoreSchema, {**handler(source), "ref": self.name})
