"""The red-team suite (`make redteam`): attacks on the tenant boundary, each on real parts.
It uses the API and task-loop fixtures of the other suites."""

from tests.api.conftest import api, start_api
from tests.integration.conftest import make_loop, projector

__all__ = ["api", "make_loop", "projector", "start_api"]
