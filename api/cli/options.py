"""Options several `stepline` command groups take alike: where to look (a server or the
database), with which key, and how to print. A leaf: `main` and the groups it adds both use it."""

from __future__ import annotations

from typing import Annotated

import typer

AsJson = Annotated[bool, typer.Option("--json", help="print as JSON")]
ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="STEPLINE_API_URL",
        help="a Stepline server's URL; without it, the database (STEPLINE_DATABASE_URL)",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--key", envvar="STEPLINE_API_KEY", help="the API key for --api"),
]
