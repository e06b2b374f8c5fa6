"""API errors as JSON: `{"error": "...", "field": "..."}` with the right 4xx status.

Errors are caught at the boundary only: `JsonErrorPlugin` wraps every API route, turns an
`ApiError` into its JSON answer and anything unexpected into a logged 500 that says nothing of
the internals.
"""
import json
import logging

import bottle

log = logging.getLogger("mpanel.api")


class ApiError(Exception):
    def __init__(self, status, message, field=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}


def json_response(status, body, headers=None):
    response = bottle.HTTPResponse(status=status, body=json.dumps(body),
                                   headers=headers or {})
    response.content_type = "application/json"
    return response


def error_response(status, message, field=None, headers=None):
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return json_response(status, body, headers)


class JsonErrorPlugin:
    """Turns ApiError (and any other exception) raised by an API route into a JSON answer."""

    name = "json_errors"
    api = 2

    def apply(self, callback, route):
        def wrapper(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except ApiError as err:
                return error_response(err.status, err.message, err.field, err.headers)
            except bottle.HTTPResponse:
                raise
            except Exception:
                log.exception("unhandled error path=%s", bottle.request.path)
                return error_response(500, "internal error; see the panel log")
        return wrapper
