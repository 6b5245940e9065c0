"""The red-team tests drive the API served for real, as the API tests do."""

from tests.api.conftest import api, start_api

__all__ = ["api", "start_api"]
