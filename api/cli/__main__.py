"""`python -m api.cli`: the `stepline` command, as `stepline serve` starts its workers."""

from api.cli.main import main

main()
