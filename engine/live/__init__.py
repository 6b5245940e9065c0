"""The read side, live: the projector and its one leader per deployment, the process's
LISTEN connection, and the event feed streams read from."""
