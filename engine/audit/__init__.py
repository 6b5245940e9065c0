"""The log's tamper evidence: the hash chain over its rows, and its verifier."""
