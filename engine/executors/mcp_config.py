"""Where a workflow's MCP tool server is: a program to start (stdio) or a URL (streamable HTTP).

Written in a workflow as `config.mcp: {command: [...], env: {...}}` or `config.mcp: {url: ...,
headers: {...}}`; `env` and `headers` values may hold `{{secrets.NAME}}`, filled in only when
the server is started or reached.

What the model refuses, so that a workflow cannot get past the other controls through it:
- an `env` name that changes which program runs or what it loads (`DENIED_ENV`: PATH,
  LD_PRELOAD, PYTHONPATH, NODE_OPTIONS, ...); the server's program is one of the tenant's shell
  programs, and such a name would make it another (`env: {PATH: <workdir>}` runs the work
  directory's `python`);
- a URL holding a backslash or a user name (`https://allowed.example\\@evil.example/`):
  browsers and `origin_of` read such a URL's host one way and httpx, which connects, another,
  so a secret bound to one host would be sent to the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.secrets import origin_of

MAX_ARGUMENTS = 50
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]
DENIED_ENV = frozenset(
    {
        "PATH", "HOME", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "IFS", "CDPATH", "PS4",
        "GLOBIGNORE", "PERL5LIB", "PERL5OPT", "PERLLIB", "PERL5DB", "RUBYOPT", "RUBYLIB",
        "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "GLIBC_TUNABLES",
        "TCLLIBPATH", "LUA_PATH", "LUA_CPATH", "CLASSPATH", "GEM_PATH", "GEM_HOME",
    }
)  # fmt: skip
"""`env` names that choose what the server's program is, loads or runs first."""
DENIED_ENV_PREFIXES = (
    "LD_", "DYLD_", "PYTHON", "NODE_", "NPM_CONFIG_", "GIT_", "BASH_FUNC_", "PERL", "RUBY",
    "JAVA_", "JDK_", "MALLOC_",
)  # fmt: skip
DENIED_ENV_SUFFIXES = ("_OPTIONS", "_OPTS", "_PRELOAD")


def env_refusal(names: Iterable[str]) -> str | None:
    """Why a server may not be given these `env` names, or None (see `DENIED_ENV`)."""
    denied = sorted(name for name in names if _denied(name.upper()))
    if not denied:
        return None
    return (
        f"env may not set {denied}: they would choose what the server's program is, loads or "
        "runs (PATH is the sandbox's own; LD_*, PYTHON*, NODE_*, *_OPTIONS and the like load "
        "code)"
    )


def _denied(name: str) -> bool:
    return (
        name in DENIED_ENV
        or name.startswith(DENIED_ENV_PREFIXES)
        or name.endswith(DENIED_ENV_SUFFIXES)
    )


def url_refusal(url: str) -> str | None:
    """Why a server's URL is refused, or None: it must read the same to `origin_of` (which
    secrets may go there) as to httpx (where they go)."""
    if "\\" in url:
        return "the url holds a backslash, which browsers and HTTP clients read differently"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        return f"the url is not one: {error}"
    if parsed.userinfo or "@" in url.split("/", 3)[2]:
        return "the url names a user (user@host): give credentials in headers instead"
    if origin_of(url) != origin_of(str(parsed)):
        return "the url's host reads differently to browsers and to HTTP clients"
    return None


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

    @field_validator("env")
    @classmethod
    def _no_loader(cls, env: dict[str, str]) -> dict[str, str]:
        refusal = env_refusal(env)
        if refusal is not None:
            raise ValueError(refusal)
        return env

    @field_validator("url")
    @classmethod
    def _read_alike(cls, url: str | None) -> str | None:
        refusal = None if url is None else url_refusal(url)
        if refusal is not None:
            raise ValueError(refusal)
        return url

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
