"""The subset of Go's text/template that Prometheus alert labels and annotations use.

Supported, with Prometheus 2.42's output byte for byte: literal text; ``{{ $labels.name }}``;
``{{ $value }}`` (printed like Go's ``fmt`` ``%v``); a function applied by call or pipe
(``{{ humanize $value }}``, ``{{ $labels.x | toUpper }}``, chains of pipes); ``{{- … -}}``
whitespace trimming; ``{{/* comments */}}``; and the functions humanize, humanize1024,
humanizeDuration, humanizePercentage, humanizeTimestamp, title, toUpper and toLower. ``.Labels``
and ``.Value`` are accepted as the long forms of ``$labels`` and ``$value``.

Anything else (control structures, other functions, literals, ``$externalLabels``…) is rejected
when the rule loads, with the reason. A missing label renders as "" (Prometheus executes with
``missingkey=zero``). A function that fails at run time (``humanize`` of a label that is not a
number) renders Prometheus' own ``<error expanding template: …>`` text, position included,
because that is what Prometheus would put in the annotation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Prometheus prepends these definitions to every template; error positions count them.
_DEFS = (
    "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}"
    "{{$externalURL := .ExternalURL}}{{$value := .Value}}"
)
_SPACE = " \t\r\n"
_INT64_MIN, _INT64_LIMIT = -(2**63), 2**63


class TemplateError(ValueError):
    """A template the built-in evaluator cannot render; the message is the reason."""


class _GoError(Exception):
    """A template function's error, worded like the Go function's."""


# ---------------------------------------------------------------------------------------------
# Go's number formatting and parsing


def go_float(v: float) -> str:
    """``fmt.Sprint(v)`` for a float64 (``%v``): shortest digits, exponent form below 1e-4 and
    from 1e6 up, ``+Inf``/``-Inf``/``NaN``."""
    v = float(v)
    special = _special(v)
    if special is not None:
        return special
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    if v.is_integer() and -1e6 < v < 1e6:  # the common case, fast
        return str(int(v))
    sign = "-" if v < 0 else ""
    digits, dp = _shortest_digits(abs(v))
    exp = dp - 1
    if exp < -4 or exp >= 6:  # Go's shortest %g switches to %e at exponent -4 and 6
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def _shortest_digits(v: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip ``v`` (> 0) and the decimal point position."""
    mantissa, _, exp10 = repr(v).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    dp = len(whole) + (int(exp10) if exp10 else 0)
    stripped = digits.lstrip("0")
    dp -= len(digits) - len(stripped)
    return stripped.rstrip("0"), dp


def _special(v: float) -> str | None:
    if v != v:
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return None


def _g4(v: float) -> str:
    """Go's ``%.4g``."""
    return _special(v) or f"{v:.4g}"


_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+\Z")
_INF = re.compile(r"[+-]?inf(?:inity)?\Z", re.IGNORECASE)
_NAN = re.compile(r"nan\Z", re.IGNORECASE)


def go_parse_float(s: str) -> float:
    """``strconv.ParseFloat(s, 64)``; raises :class:`_GoError` with Go's message."""
    if _INF.match(s):
        return -math.inf if s.startswith("-") else math.inf
    if _NAN.match(s):
        return math.nan
    digits = s.replace("_", "") if _underscores_ok(s) else ""
    try:
        if _DECIMAL.match(digits):
            v = float(digits)
        elif _HEX.match(digits):
            v = float.fromhex(digits)
        else:
            raise _GoError(f"strconv.ParseFloat: parsing {go_quote(s)}: invalid syntax")
    except OverflowError:
        v = math.inf
    if math.isinf(v):
        raise _GoError(f"strconv.ParseFloat: parsing {go_quote(s)}: value out of range")
    return v


def _underscores_ok(s: str) -> bool:
    """Go accepts ``_`` only between digits, or between a base prefix and a digit (1_000, 0x_1p4)."""
    if "_" not in s:
        return True
    body = s[1:] if s[:1] in ("+", "-") else s
    saw, hexadecimal = "^", False
    if len(body) >= 2 and body[0] == "0" and body[1] in "bBoOxX":
        saw, hexadecimal, body = "0", body[1] in "xX", body[2:]
    for ch in body:
        if ch.isdigit() or (hexadecimal and ch in "abcdefABCDEF"):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(s: str) -> str:
    """``strconv.Quote``: double quotes, Go escapes, printable Unicode kept as is."""
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _go_int64(v: float) -> int:
    """Go's float64 -> int64 conversion on amd64 (truncation; out of range gives MinInt64)."""
    return int(v) if -_INT64_LIMIT <= v < _INT64_LIMIT else _INT64_MIN


def _quo(a: int, b: int) -> int:
    """Go's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _rem(a: int, b: int) -> int:
    return a - b * _quo(a, b)


# ---------------------------------------------------------------------------------------------
# Prometheus' template functions (template/template.go in 2.42)


def _to_float(x: float | str) -> float:
    return go_parse_float(x) if isinstance(x, str) else x


def humanize(x: float | str) -> str:
    v = _to_float(x)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def humanize1024(x: float | str) -> str:
    v = _to_float(x)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def humanize_duration(x: float | str) -> str:
    v = _to_float(x)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = ""
        if v < 0:
            sign, v = "-", -v
        d = _go_int64(v)
        if d >= 0:
            total_minutes, seconds = divmod(d, 60)
            total_hours, minutes = divmod(total_minutes, 60)
            days, hours = divmod(total_hours, 24)
        else:  # overflowed to MinInt64: Go's truncating division and remainder
            seconds = _rem(d, 60)
            minutes = _rem(_quo(d, 60), 60)
            hours = _rem(_quo(_quo(d, 60), 60), 24)
            days = _quo(_quo(_quo(d, 60), 60), 24)
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


def humanize_percentage(x: float | str) -> str:
    return _g4(_to_float(x) * 100) + "%"


_EPOCH = datetime(1970, 1, 1)


def humanize_timestamp(x: float | str) -> str:
    v = _to_float(x)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    ns = v * 1e9
    if ns > _INT64_LIMIT or ns < _INT64_MIN:
        raise _GoError(
            f"{go_float(v)} cannot be represented as a nanoseconds timestamp since it overflows int64"
        )
    ms = _quo(_go_int64(ns), 1_000_000)  # Prometheus keeps millisecond precision
    sec, nsec = _quo(ms, 1000), _rem(ms, 1000) * 1_000_000
    if nsec < 0:
        sec, nsec = sec - 1, nsec + 1_000_000_000
    stamp = f"{_EPOCH + timedelta(seconds=sec):%Y-%m-%d %H:%M:%S}"
    if nsec:
        stamp += "." + f"{nsec:09d}".rstrip("0")
    return stamp + " +0000 UTC"


def _map_runes(s: str, convert: Callable[[str], str]) -> str:
    # Go maps rune by rune (simple case mapping): a character whose full mapping is longer
    # than one character (ß -> SS) stays as it is.
    out = []
    for ch in s:
        mapped = convert(ch)
        out.append(mapped if len(mapped) == 1 else ch)
    return "".join(out)


def to_upper(s: str) -> str:
    return s.upper() if s.isascii() else _map_runes(s, str.upper)


def to_lower(s: str) -> str:
    if s.isascii():
        return s.lower()
    return _map_runes(s.replace("\u0130", "i"), str.lower)


def _is_separator(ch: str) -> bool:
    if ch.isascii():
        return not (ch.isalnum() or ch == "_")
    if ch.isalpha() or ch.isdecimal():
        return False
    return ch.isspace()


def title(s: str) -> str:
    """``strings.Title``: upper-case the first letter of each word."""
    out, prev = [], " "
    for ch in s:
        if _is_separator(prev):
            mapped = ch.title()
            out.append(mapped if len(mapped) == 1 else ch)
        else:
            out.append(ch)
        prev = ch
    return "".join(out)


@dataclass(frozen=True)
class _Function:
    call: Callable[..., str]
    text_only: bool  # Go signature takes a string (a float64 argument fails at run time)


FUNCTIONS: dict[str, _Function] = {
    "humanize": _Function(humanize, False),
    "humanize1024": _Function(humanize1024, False),
    "humanizeDuration": _Function(humanize_duration, False),
    "humanizePercentage": _Function(humanize_percentage, False),
    "humanizeTimestamp": _Function(humanize_timestamp, False),
    "title": _Function(title, True),
    "toUpper": _Function(to_upper, True),
    "toLower": _Function(to_lower, True),
}
# Defined in Prometheus or Go templates, but not in the built-in evaluator.
_UNSUPPORTED_FUNCTIONS = {
    "query", "first", "label", "value", "strvalue", "args", "reReplaceAll", "safeHtml", "match",
    "graphLink", "tableLink", "sortByLabel", "stripPort", "stripDomain", "toTime", "pathPrefix",
    "externalURL", "parseDuration", "and", "call", "html", "index", "slice", "js", "len", "not",
    "or", "print", "printf", "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
}  # fmt: skip
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
_CONSTANTS = {"nil", "true", "false"}


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class _Operand:
    label: str | None  # the label read, or None for $value
    text: str  # as Go prints the node, e.g. "$labels.job"


@dataclass(frozen=True)
class _Call:
    name: str
    pos: int  # offset of the command in the template text
    context: str  # the command as Go prints it in errors


@dataclass(frozen=True)
class _Action:
    operand: _Operand
    calls: tuple[_Call, ...]
    label: str | None = field(init=False)  # copies for the hot path of Template.render
    functions: tuple[Callable[..., str], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", self.operand.label)
        object.__setattr__(self, "functions", tuple(FUNCTIONS[c.name].call for c in self.calls))


_ACTION_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<pipe>\|)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<literal>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`|[+-]?[0-9.][0-9A-Za-z_.]*)
  | (?P<other>:=|=|\(|\)|,|.)
    """,
    re.VERBOSE | re.DOTALL,
)


def _right_delim(text: str, pos: int) -> tuple[int, bool] | None:
    """(end of the delimiter, trim) if a right delimiter (``}}`` or `` -}}``) starts at pos."""
    if text.startswith("}}", pos):
        return pos + 2, False
    if pos + 1 < len(text) and text[pos] in _SPACE and text.startswith("-}}", pos + 1):
        return pos + 4, True
    return None


def _operand(token: str) -> _Operand:
    parts = token.split(".")
    if token.startswith("$"):
        root, fields = parts[0], parts[1:]
        if root == "$labels":
            if len(fields) != 1:
                raise TemplateError(
                    f"{token}: use $labels.NAME (one label)"
                    if fields
                    else "printing the whole $labels map is not supported; use $labels.NAME"
                )
            return _Operand(fields[0], token)
        if root == "$value":
            if fields:
                raise TemplateError(f"{token}: $value is a number and has no fields")
            return _Operand(None, token)
        if root in ("$externalLabels", "$externalURL", "$"):
            raise TemplateError(f"{root} is not supported by the built-in evaluator")
        raise TemplateError(f"undefined variable {root!r}")
    fields = parts[1:]
    if fields == ["Labels"] or (fields and fields[0] == "Labels" and len(fields) != 2):
        raise TemplateError(f"{token}: use .Labels.NAME (one label)")
    if len(fields) == 2 and fields[0] == "Labels":
        return _Operand(fields[1], token)
    if fields == ["Value"]:
        return _Operand(None, token)
    raise TemplateError(f"{token!r} is not supported; use $labels.NAME or $value")


def _function_error(name: str) -> TemplateError:
    if name in _KEYWORDS:
        return TemplateError(f"{{{{ {name} }}}} is not supported by the built-in evaluator")
    if name in _CONSTANTS:
        return TemplateError(f"the constant {name!r} is not supported")
    supported = f"(supported: {', '.join(FUNCTIONS)})"
    if name in _UNSUPPORTED_FUNCTIONS:
        return TemplateError(f"function {name!r} is not supported by the built-in evaluator {supported}")
    return TemplateError(f"function {name!r} is not defined {supported}")


def _parse_action(text: str, start: int) -> tuple[_Action, int, bool]:
    """Parse the action whose content starts at ``start``; -> (action, end, trim right)."""
    commands: list[list[tuple[str, str, int]]] = [[]]
    pos = start
    while True:
        if pos >= len(text):
            raise TemplateError("unclosed action: missing }}")
        delim = _right_delim(text, pos)
        if delim is not None:
            end, trim = delim
            break
        m = _ACTION_TOKEN.match(text, pos)
        assert m is not None  # the last alternative matches any character
        kind, token = m.lastgroup or "", m.group()
        if kind == "pipe":
            commands.append([])
        elif kind == "other":
            what = {":=": "variable declarations", "=": "assignments", "(": "parentheses", ")": "parentheses"}
            raise TemplateError(f"{what.get(token, repr(token))} not supported inside {{{{ }}}}")
        elif kind != "space":
            commands[-1].append((kind, token, pos))
        pos = m.end()
    if not commands[0]:
        raise TemplateError("empty action {{ }}" if len(commands) == 1 else "missing value before '|'")
    operand: _Operand | None = None
    calls: list[_Call] = []
    kind_of_value = ""  # "text" or "number": what flows into the next command
    for i, command in enumerate(commands):
        if not command:
            raise TemplateError("missing command after '|'")
        kind, head, head_pos = command[0]
        args = command[1:]
        if kind == "ident" and head not in FUNCTIONS:
            raise _function_error(head)
        if any(k == "literal" for k, _, _ in command):
            raise TemplateError("literals inside {{ }} are not supported by the built-in evaluator")
        if kind != "ident":
            if i > 0:
                raise TemplateError(f"{head} cannot follow '|': only a function can")
            if args:
                raise TemplateError(f"{head} is not a function and takes no arguments")
            operand = _operand(head)
            kind_of_value = "number" if operand.label is None else "text"
            continue
        if i == 0:
            if len(args) != 1 or args[0][0] == "ident":
                usage = f"{{{{ {head} $value }}}} or {{{{ $value | {head} }}}}"
                raise TemplateError(f"{head} takes one argument: {usage}")
            operand = _operand(args[0][1])
            kind_of_value = "number" if operand.label is None else "text"
        elif args:
            raise TemplateError(f"{head} after '|' takes no other argument")
        if FUNCTIONS[head].text_only and kind_of_value == "number":
            raise TemplateError(f"{head} needs text, but $value is a number (humanize it first)")
        context = " ".join(token for _, token, _ in command)
        calls.append(_Call(head, head_pos, context))
        kind_of_value = "text"
    assert operand is not None
    return _Action(operand, tuple(calls)), end, trim


def _parse(text: str) -> list[str | _Action]:
    parts: list[str | _Action] = []
    pos = 0
    trim_next = False
    while True:
        open_at = text.find("{{", pos)
        literal = text[pos:] if open_at < 0 else text[pos:open_at]
        if trim_next:
            literal = literal.lstrip(_SPACE)
        # "{{- " trims the text before; the space matters ("{{-3}}" is the number -3 in Go).
        marker = text[open_at + 2 : open_at + 4] if open_at >= 0 else ""
        left_trim = len(marker) == 2 and marker[0] == "-" and marker[1] in _SPACE
        if left_trim:
            literal = literal.rstrip(_SPACE)
        if literal:
            parts.append(literal)
        if open_at < 0:
            return parts
        start = open_at + (4 if left_trim else 2)
        if text.startswith("/*", start):
            close = text.find("*/", start + 2)
            delim = None if close < 0 else _right_delim(text, close + 2)
            if delim is None:
                raise TemplateError("unclosed comment: /* must be closed by */ right before }}")
            pos, trim_next = delim
            continue
        action, pos, trim_next = _parse_action(text, start)
        parts.append(action)


# ---------------------------------------------------------------------------------------------
# Rendering


class Template:
    """A parsed template; :meth:`render` never raises (run-time errors render like Prometheus)."""

    __slots__ = ("_name", "_parts", "constant", "text", "uses_value")

    def __init__(self, text: str, alertname: str) -> None:
        self.text = text
        self._name = alertname
        self._parts = _parse(text)
        self.uses_value = any(isinstance(p, _Action) and p.operand.label is None for p in self._parts)
        self.constant: str | None = (
            "".join(p for p in self._parts if isinstance(p, str))
            if all(isinstance(p, str) for p in self._parts)
            else None
        )

    def render(self, labels: Mapping[str, str], value: float) -> str:
        """Expand with ``$labels`` (the series' labels, ``__name__`` included) and ``$value``."""
        if self.constant is not None:
            return self.constant
        out: list[str] = []
        for part in self._parts:
            if part.__class__ is str:
                out.append(part)  # type: ignore[arg-type]
                continue
            assert isinstance(part, _Action)
            label = part.label
            result: float | str = value if label is None else labels.get(label, "")
            try:
                for function in part.functions:
                    result = function(result)
            except _GoError:
                return self._error(part, labels, value)
            out.append(result if result.__class__ is str else go_float(result))  # type: ignore[arg-type]
        return "".join(out)

    def _error(self, action: _Action, labels: Mapping[str, str], value: float) -> str:
        """Prometheus' text for a function that failed (found again step by step: rare path)."""
        result: float | str = value if action.label is None else labels.get(action.label, "")
        for call, function in zip(action.calls, action.functions, strict=True):
            try:
                result = function(result)
            except _GoError as e:
                return self._error_text(call, str(e))
        raise AssertionError("the template function failed once but not again")

    def _error_text(self, call: _Call, message: str) -> str:
        name = "__alert_" + self._name
        before = self.text[: call.pos]
        line = before.count("\n") + 1
        col = len((_DEFS + before).encode()) if line == 1 else len(before[before.rfind("\n") + 1 :].encode())
        return (
            f"<error expanding template: error executing template {name}: template: {name}:{line}:{col}: "
            f"executing {go_quote(name)} at <{call.context}>: error calling {call.name}: {message}>"
        )

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def parse_template(text: str, alertname: str) -> Template:
    """Parse a label or annotation template of alert ``alertname``; raises :class:`TemplateError`."""
    return Template(text, alertname)
