"""Where a workflow's MCP tool server is: a program to start (stdio) or a URL (streamable HTTP).

Written in a workflow as `config.mcp: {command: [...], env: {...}}` or `config.mcp: {url: ...,
headers: {...}}`; `env` and `headers` values may hold `{{secrets.NAME}}`, filled in only when
the server is started or reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_ARGUMENTS = 50
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]


class McpServer(BaseModel):
    """One MCP server: exactly one of `command` and `url`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    command: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ARGUMENTS,
        description="a program and its arguments, started jailed like a shell command; the "
        "program must be one of the tenant's shell programs",
    )
    env: dict[EnvName, str] = Field(
        default_factory=dict,
        max_length=50,
        description="the server's whole environment (besides PATH and HOME), set once the jail "
        "has dropped its privileges; values may hold {{secrets.NAME}}",
    )
    url: str | None = Field(
        default=None,
        max_length=2_000,
        pattern=r"^https?://[^\s/]+[^\s]*$",
        description="a streamable HTTP MCP endpoint, reached under the tenant's egress policy",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=50,
        description="sent with every request to `url`; values may hold {{secrets.NAME}}",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give mcp either a command (stdio) or a url (streamable HTTP)")
        if self.command is not None and self.headers:
            raise ValueError("headers go with a url; a command's server takes env")
        if self.url is not None and self.env:
            raise ValueError("env goes with a command; a url's server takes headers")
        parts = [*(self.command or []), *self.env.values()]
        if any("\0" in part for part in parts):
            raise ValueError("a command argument or an env value holds a NUL character")
        return self

    def beside(self, location: Path) -> McpServer:
        """The server with a command's relative `.py` arguments read from beside the workflow
        file at `location`, as its `definitions` module is."""
        if self.command is None:
            return self
        resolved = [
            str((location.parent / part).resolve())
            if part.endswith(".py") and not Path(part).is_absolute()
            else part
            for part in self.command
        ]
        return self.model_copy(update={"command": resolved})


def program_refusal(command: list[str], allowed: tuple[str, ...] | list[str]) -> str | None:
    """Why a stdio server's program may not start under the tenant's shell programs, or None:
    it is named as a shell command names its program (no path), and must be one of them."""
    program = command[0] if command else ""
    if not program or "/" in program or program not in allowed:
        shown = ", ".join(allowed) or "none"
        return (
            f"{program!r} is not one of this tenant's shell programs, so it may not start an "
            f"MCP server; allowed: {shown}"
        )
    return None
