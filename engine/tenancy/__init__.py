"""The tenant boundary: each tenant's policy, where its workflows may connect, its secrets,
and the rates it is held to."""
