"""Statuses beyond http.HTTPStatus that the access log, the metrics and the errors share."""

# nginx's "client closed request": the client hung up before it was answered. Never sent
# (nobody is left to read it); it keeps such requests apart from the server's own failures.
CLIENT_CLOSED_REQUEST = 499
