"""String forms of 63-bit IDs: fixed-width forms that sort like the numbers, and a
JSON-safe form for JavaScript clients (numbers above 2**53 lose precision there)."""

from __future__ import annotations

from fastcore import ArgumentTypeError, InvalidArgumentError

__all__ = ("ID_STYLES", "format_id", "parse_id")

# Crockford's base32: ascending in ASCII, so fixed-width strings sort like the IDs.
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_B32_VALUE = {c: i for i, c in enumerate(_B32)}
_B32_VALUE.update({c.lower(): i for i, c in enumerate(_B32)})
_B32_VALUE.update({"O": 0, "o": 0, "I": 1, "i": 1, "L": 1, "l": 1})  # Crockford's aliases
_B32_WIDTH = 13  # 13 x 5 = 65 bits >= 63
_DEC_WIDTH = 19  # len(str(2**63 - 1))
_HEX_WIDTH = 16  # after the "0x" prefix

#: The styles :func:`format_id` accepts.
ID_STYLES = ("int", "decimal", "base32", "hex", "json")


def _check_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"an ID must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << 63:
        raise InvalidArgumentError(f"an ID must be in [0, 2**63), got {value}")
    return value


def format_id(value: int, style: str = "base32") -> str:
    """Render an ID as text.

    Args:
        value: the ID, an int in ``[0, 2**63)``.
        style: ``"base32"`` (13 Crockford base32 characters), ``"decimal"`` (19 digits,
            zero-padded), ``"hex"`` (``0x`` and 16 lowercase digits): fixed width, so they
            sort as the IDs do; ``"int"`` (plain decimal); ``"json"`` (a JSON string literal of
            the decimal, safe for JavaScript clients).

    Returns:
        The text form.

    Raises:
        InvalidArgumentError: an unknown style or an ID out of range.
    """
    value = _check_id(value)
    if style == "base32":
        chars = []
        for _ in range(_B32_WIDTH):
            chars.append(_B32[value & 31])
            value >>= 5
        return "".join(reversed(chars))
    if style == "decimal":
        return f"{value:0{_DEC_WIDTH}d}"
    if style == "hex":
        return f"0x{value:0{_HEX_WIDTH}x}"
    if style == "int":
        return str(value)
    if style == "json":
        return f'"{value}"'
    raise InvalidArgumentError(f"style must be one of {ID_STYLES}, got {style!r}")


def parse_id(text: str, style: str = "auto") -> int:
    """Read an ID back from a form :func:`format_id` writes.

    Args:
        text: the text.
        style: one of :data:`ID_STYLES` or ``"auto"``: ``0x`` + hex digits is hex, digits
            only are decimal, 13 base32 characters with a letter are base32, and a JSON
            string literal is unquoted first. A base32 form made only of digits (IDs
            below 32**12) must be read with ``style="base32"``.

    Returns:
        The ID.

    Raises:
        InvalidArgumentError: the text is not an ID in that form.
    """
    if not isinstance(text, str):
        raise ArgumentTypeError(f"text must be str, not {type(text).__name__}")
    if style not in (*ID_STYLES, "auto"):
        raise InvalidArgumentError(f"style must be 'auto' or one of {ID_STYLES}, got {style!r}")
    raw = text.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = raw[1:-1]
    if style == "auto":
        if raw[:2] in ("0x", "0X"):
            style = "hex"
        elif raw.isascii() and raw.isdigit():
            style = "int"
        else:
            style = "base32"
    value = -1
    if style == "hex" and raw[:2] in ("0x", "0X"):
        digits = raw[2:]
        if digits and all(c in "0123456789abcdefABCDEF" for c in digits):
            value = int(digits, 16)
    elif style in ("int", "decimal", "json") and raw.isascii() and raw.isdigit():
        value = int(raw)
    elif style == "base32" and len(raw) == _B32_WIDTH and all(c in _B32_VALUE for c in raw):
        value = 0
        for c in raw:
            value = value * 32 + _B32_VALUE[c]
    if value < 0:
        raise InvalidArgumentError(
            f"{text!r} is not an ID in the {style} form (expected digits, 0x and hex "
            "digits, or 13 base32 characters)"
        )
    if value >= 1 << 63:
        raise InvalidArgumentError(f"{text!r} is out of the 63-bit ID range")
    return value
