"""The HTTP API and the dashboard `stepline serve` runs: `server` is its composition root,
one module per resource."""
