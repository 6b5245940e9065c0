"""Who drives a session: leases with fencing, the TTL sweep, and the executor state a
session taken over carries on with."""
