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

from .errors import NO_NUL_PATTERN, text_problem

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


def _is_date_time(value):
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


# `format` asserts here, as JSON Schema lets a validator choose: a pattern can let 31 February
# through, the calendar cannot.
_FORMATS = {"date-time": (_is_date_time, "must be a real date and time, e.g. 2026-11-30T01:52:00Z")}


def _field(path, parts):
    """The offending field's name: `path`, then the keys and indexes from there down."""
    for key in reversed(parts):
        if isinstance(key, int):
            path = f"{path}[{key}]"
        else:
            path = f"{path}.{key}" if path else key
    return path


class _Refusal(Exception):
    """Raised by a compiled check; each enclosing object or array adds its key on the way out,
    so a valid document never builds a field name."""

    def __init__(self, message, *parts):
        super().__init__(message)
        self.message = message
        self.parts = list(parts)


# Compiled checks by schema: id -> (schema, check). The schema is kept so that its id stays its
# own. Schemas are read once: protocol.py builds them at import and never changes them.
_COMPILED = {}
_MAX_COMPILED = 1024  # tests and fuzzers validate against schemas made on the fly


def validate(schema, value, path="", text_checked=False):
    """Raise ValidationError naming the first offending field; return None when valid.

    `text_checked`: the caller knows that no string in `value` can break the text rule
    (errors.text_problem) — api.read_json does when the body has no \\u escape, since strict
    UTF-8 and JSON then leave no way to write a NUL or a lone surrogate."""
    try:
        compiled(schema)(value, not text_checked)
    except _Refusal as refusal:
        raise ValidationError(refusal.message, _field(path, refusal.parts)) from None


def compiled(schema):
    """The check of `schema`: a function of (value, check_text) that raises _Refusal. Built
    once per schema, so a request walks its document, not the schema's keywords."""
    entry = _COMPILED.get(id(schema))
    if entry is not None and entry[0] is schema:
        return entry[1]
    check = _compile(schema)
    if len(_COMPILED) >= _MAX_COMPILED:
        _COMPILED.clear()
    _COMPILED[id(schema)] = (schema, check)
    return check


def _type_check(names):
    def one(name):
        if name == "integer":  # as in JSON Schema, 3.0 is an integer; callers store int(value)
            return lambda value: (value.is_integer() if isinstance(value, float) else
                                  isinstance(value, int) and not isinstance(value, bool))
        if name == "number":
            return lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "null":
            return lambda value: value is None
        kind = _TYPE_NAMES[name]
        return lambda value: isinstance(value, kind)
    checks = [one(name) for name in names]
    if len(checks) == 1:
        return checks[0]
    return lambda value: any(check(value) for check in checks)


def _compile(schema):
    types = schema.get("type")
    names = None if types is None else (types if isinstance(types, list) else [types])
    type_ok = None if names is None else _type_check(names)
    negated = compiled(schema["not"]) if "not" in schema else None
    enum = schema.get("enum") if "enum" in schema else None
    text = _string_check(schema)
    bounds = "minimum" in schema or "maximum" in schema
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    array = _array_check(schema)
    mapping = _object_check(schema)

    def check(value, check_text):
        if type_ok is not None and not type_ok(value):
            raise _Refusal(f"must be {' or '.join(names)}, got {_describe(value)}")
        if negated is not None:
            try:
                negated(value, check_text)
            except _Refusal:
                pass
            else:
                raise _Refusal(f"must not match {schema['not']}")
        if enum is not None and value not in enum:
            raise _Refusal(f"must be one of {', '.join(map(str, enum))}")
        if isinstance(value, str):
            text(value, check_text)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if bounds:
                if minimum is not None and value < minimum:
                    raise _Refusal(f"must be at least {minimum}")
                if maximum is not None and value > maximum:
                    raise _Refusal(f"must be at most {maximum}")
        elif isinstance(value, list):
            if array is not None:
                array(value, check_text)
        elif isinstance(value, dict):
            if mapping is not None:
                mapping(value, check_text)
    return check


def _string_check(schema):
    """The checks every string meets under `schema`: the text rule, then its own keywords."""
    min_length, max_length = schema.get("minLength"), schema.get("maxLength")
    pattern = schema.get("pattern")
    # re.search: JSON Schema patterns are unanchored unless they say ^ and $ (protocol.py
    # writes them so that Python's and ECMA's readings agree).
    search = None if pattern is None else re.compile(pattern).search
    # The no-NUL pattern of every text field says what the text rule already checks: text
    # known to meet the rule meets it.
    implied = pattern == NO_NUL_PATTERN
    date_format = _FORMATS.get(schema.get("format"))

    def check(value, check_text):
        if check_text:
            problem = text_problem(value)  # the panel's one rule for text (errors.py)
            if problem:
                raise _Refusal(problem)
        if min_length is not None and len(value) < min_length:
            raise _Refusal(f"must be at least {min_length} characters")
        if max_length is not None and len(value) > max_length:
            raise _Refusal(f"must be at most {max_length} characters")
        if search is not None and (check_text or not implied) and not search(value):
            raise _Refusal(f"must match the pattern {pattern}")
        if date_format is not None:
            valid, message = date_format
            if not valid(value):
                raise _Refusal(message)
    return check


def _array_check(schema):
    if not any(key in schema for key in ("minItems", "maxItems", "items")):
        return None
    min_items, max_items = schema.get("minItems"), schema.get("maxItems")
    item = compiled(schema["items"]) if "items" in schema else None

    def check(value, check_text):
        if min_items is not None and len(value) < min_items:
            raise _Refusal(f"must have at least {min_items} items")
        if max_items is not None and len(value) > max_items:
            raise _Refusal(f"must have at most {max_items} items")
        if item is not None:
            for index, entry in enumerate(value):
                try:
                    item(entry, check_text)
                except _Refusal as refusal:
                    refusal.parts.append(index)
                    raise
    return check


_ABSENT = object()


def _object_check(schema):
    keywords = ("maxProperties", "required", "properties", "additionalProperties",
                "propertyNames")
    if not any(key in schema for key in keywords):
        return None
    max_properties = schema.get("maxProperties")
    required = tuple(schema.get("required", ()))
    properties = schema.get("properties", {})
    checks = tuple((key, compiled(subschema)) for key, subschema in properties.items())
    additional = schema.get("additionalProperties", True)
    other = compiled(additional) if isinstance(additional, dict) else None
    names = _string_check(schema["propertyNames"]) if "propertyNames" in schema else None

    def check(value, check_text):
        if max_properties is not None and len(value) > max_properties:
            raise _Refusal(f"must have at most {max_properties} fields")
        for key in required:
            if key not in value:
                raise _Refusal("is required", key)
        if additional is not True:
            for key in value:
                if key in properties:
                    continue
                if additional is False:
                    raise _Refusal("is not a known field", key)
                try:
                    other(value[key], check_text)
                except _Refusal as refusal:
                    refusal.parts.append(key)
                    raise
        if names is not None:
            for key in value:
                try:
                    names(key, check_text)
                except _Refusal as refusal:
                    refusal.parts.append(key)
                    raise
        for key, subcheck in checks:
            entry = value.get(key, _ABSENT)
            if entry is not _ABSENT:
                try:
                    subcheck(entry, check_text)
                except _Refusal as refusal:
                    refusal.parts.append(key)
                    raise
    return check


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
