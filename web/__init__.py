"""The HTTP API: handlers parse (pydantic), call storage or the dispatcher, and serialise."""
