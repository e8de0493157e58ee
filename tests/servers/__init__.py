"""Private Redis/Valkey servers started by the test suite itself (see ``redis_server``)."""
