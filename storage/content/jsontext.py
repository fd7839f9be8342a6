"""Reading JSON that comes from outside, with bounded nesting and bounded numbers.

Every JSON document the registry accepts (a manifest, an ECR request body, a policy, a stored
record) is read by `loads`. Python's `json` recurses once per nesting level and, about 1,000
levels down, raises RecursionError, which no caller expects; an integer of more than 4,300
digits raises a bare ValueError. Here both are bounded well before that and every refusal is
one exception, `JsonInvalid` (a ValueError, so callers catching ValueError keep working).

The depth is measured before parsing, in time linear in the document: a document with no more
than `MAX_DEPTH` brackets cannot be deeper (the common case: one count); otherwise the strings
are cut out and the brackets counted. Nothing recursive ever sees a document deeper than
`MAX_DEPTH`, so neither does anything that later walks or re-serialises what was parsed.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# Ten times the deepest document any format we accept needs (an index's platform features:
# five levels), far below where the interpreter's recursion limit (shared with the request's
# own stack) could bite.
MAX_DEPTH = 64
# Beyond any int64 (19 digits); converting a decimal string costs quadratic time in its length.
MAX_INT_DIGITS = 100

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonInvalid(ValueError):
    """Not JSON, or JSON beyond our bounds. The message says which, for the client."""


def loads(data: bytes | str) -> Any:
    """The value of a JSON document; JsonInvalid for anything else."""
    if isinstance(data, bytes | bytearray):
        try:  # the encodings json.loads accepts, detected the same way
            text = bytes(data).decode(json.detect_encoding(data), "surrogatepass")
        except UnicodeDecodeError as exc:
            raise JsonInvalid(f"not UTF-8 text: {exc}") from None
    else:
        text = data
    if depth(text) > MAX_DEPTH:
        raise JsonInvalid(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonInvalid(str(exc)) from None


def depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (exact for JSON; for anything else, a count
    that a parser reading it left to right never exceeds before it fails)."""
    openers = text.count("[") + text.count("{")
    if openers <= MAX_DEPTH:
        return openers
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonInvalid(f"JSON integer longer than {MAX_INT_DIGITS} digits")
    return int(digits)


def _constant(name: str) -> Any:
    raise JsonInvalid(f"{name} is not JSON")


# Built once (json.loads with hooks builds a decoder per call); it holds no state.
_DECODER = json.JSONDecoder(parse_int=_integer, parse_constant=_constant)
