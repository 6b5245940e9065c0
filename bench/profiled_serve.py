"""`stepline serve` under yappi (wall time, every thread), for `python -m bench.api --profile`.

    python -m bench.profiled_serve OUT.pstat serve --port 8080

The profile is saved in pstats format when the server stops: SIGTERM shuts uvicorn down
cleanly, then uvicorn raises the signal again for the handler it found, which here exits
through `finally` instead of killing the process.
"""

from __future__ import annotations

import signal
import sys

import yappi

from api.cli.main import main


def serve_profiled(out: str, arguments: list[str]) -> None:
    sys.argv = ["stepline", *arguments]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    yappi.set_clock_type("wall")
    yappi.start()
    try:
        main()
    except SystemExit:
        pass
    finally:
        yappi.stop()
        yappi.get_func_stats().save(out, type="pstat")


if __name__ == "__main__":
    serve_profiled(sys.argv[1], sys.argv[2:])
