"""A small, strict validator for the subset of JSON Schema the wire protocol uses.

The schemas in `protocol.py` are plain JSON Schema dicts: this module enforces them on every
request and `/api/openapi.json` publishes the very same dicts, so the document cannot drift from
what the code accepts. A test checks our verdicts against the `jsonschema` package.

Supported keywords: type, properties, required, additionalProperties (bool or schema),
propertyNames, not, items, minItems, maxItems, minLength, maxLength, pattern, format
(date-time), minimum, maximum, maxProperties, enum. Every string must also be valid UTF-8
without NUL characters, because PostgreSQL text cannot store either. The published document
says so too: a `pattern` on every text field for NUL (this check only words the refusal
better), its description for lone surrogates (I-JSON, RFC 7493).
"""
import datetime
import re

from .errors import text_problem

_TYPE_NAMES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


class ValidationError(Exception):
    def __init__(self, message, field):
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


def _is_type(value, name):
    if name == "integer":  # as in JSON Schema, 3.0 is an integer; callers store int(value)
        if isinstance(value, float):
            return value.is_integer()
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "null":
        return value is None
    return isinstance(value, _TYPE_NAMES[name])


def _is_date_time(value):
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


# `format` asserts here, as JSON Schema lets a validator choose: a pattern can let 31 February
# through, the calendar cannot.
_FORMATS = {"date-time": (_is_date_time, "must be a real date and time, e.g. 2026-11-30T01:52:00Z")}


def _join(path, key):
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def validate(schema, value, path=""):
    """Raise ValidationError naming the first offending field; return None when valid."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_is_type(value, name) for name in names):
            raise ValidationError(f"must be {' or '.join(names)}, got {_describe(value)}", path)

    if "not" in schema:
        try:
            validate(schema["not"], value, path)
        except ValidationError:
            pass
        else:
            raise ValidationError(f"must not match {schema['not']}", path)

    if "enum" in schema and value not in schema["enum"]:
        raise ValidationError(f"must be one of {', '.join(map(str, schema['enum']))}", path)

    if isinstance(value, str):
        _check_string(schema, value, path)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValidationError(f"must be at least {schema['minimum']}", path)
        if "maximum" in schema and value > schema["maximum"]:
            raise ValidationError(f"must be at most {schema['maximum']}", path)
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise ValidationError(f"must have at least {schema['minItems']} items", path)
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ValidationError(f"must have at most {schema['maxItems']} items", path)
        if "items" in schema:
            for index, item in enumerate(value):
                validate(schema["items"], item, _join(path, index))
    elif isinstance(value, dict):
        _check_object(schema, value, path)


def _check_string(schema, value, path):
    problem = text_problem(value)  # the panel's one rule for text (errors.py)
    if problem:
        raise ValidationError(problem, path)
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise ValidationError(f"must be at least {schema['minLength']} characters", path)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise ValidationError(f"must be at most {schema['maxLength']} characters", path)
    # re.search: JSON Schema patterns are unanchored unless they say ^ and $ (protocol.py
    # writes them so that Python's and ECMA's readings agree).
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise ValidationError(f"must match the pattern {schema['pattern']}", path)
    if schema.get("format") in _FORMATS:
        check, message = _FORMATS[schema["format"]]
        if not check(value):
            raise ValidationError(message, path)


def _check_object(schema, value, path):
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise ValidationError(f"must have at most {schema['maxProperties']} fields", path)
    for key in schema.get("required", ()):
        if key not in value:
            raise ValidationError("is required", _join(path, key))
    properties = schema.get("properties", {})
    additional = schema.get("additionalProperties", True)
    if additional is not True:
        for key in value:
            if key in properties:
                continue
            if additional is False:
                raise ValidationError("is not a known field", _join(path, key))
            validate(additional, value[key], _join(path, key))
    if "propertyNames" in schema:
        for key in value:
            _check_string(schema["propertyNames"], key, _join(path, key))
    for key, subschema in properties.items():
        if key in value:
            validate(subschema, value[key], _join(path, key))


def _describe(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
