"""Dev mode: a server with no API keys, on loopback only, where every request acts for one
tenant. A leaf module, so the command line can name the tenant without loading the model."""

DEV_TENANT = "default"
"""The tenant every request acts for in dev mode; `stepline run` and `sessions` default to it."""

DEV_ACTOR = "dev"
"""The actor recorded on what a dev-mode request causes."""
