"""The PromQL subset the built-in evaluator runs: ``selector <op> number``.

A rule is a threshold over an exported series (see DESIGN.md), so this is all the service needs:
``metric{label="v", other!="w", x=~"re", y!~"re"} > 3600``. Without ``bool`` a comparison
filters: matching series keep their own value. Everything else PromQL can say (functions,
aggregations, arithmetic, set operators, ranges, offsets, ``bool``) is rejected with the reason,
so a rule never silently means something different here than in Prometheus.

Matching is built for one pass per cycle: :class:`SampleIndex` groups the cycle's samples by
metric name once, each comparison looks only at its metric's samples, tests the value first
(cheap, and most series are under their threshold) and then the matchers, whose regexes are
compiled once and whose results are memoised per label value.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .model import Sample

METRIC_NAME = "__name__"
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
_AGGREGATIONS = {
    "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar",
    "topk", "bottomk", "count_values", "quantile",
}  # fmt: skip
_SET_OPERATORS = {"and", "or", "unless"}
_MODIFIERS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "atan2"}
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_REGEX_MEMO_LIMIT = 10_000


class ExprError(ValueError):
    """An expression the built-in evaluator cannot run; the message is the reason."""


# ---------------------------------------------------------------------------------------------
# Lexing


@dataclass(frozen=True)
class _Token:
    kind: str  # ident, number, duration, string, op, eof
    text: str
    pos: int
    value: object = None


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<string>["'`])
  | (?P<op>==|!=|>=|<=|=~|!~|[<>=+\-*/%^(){}\[\],@])
    """,
    re.VERBOSE,
)
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        if kind == "ws":
            pos = m.end()
            continue
        if kind == "string":
            value, end = _read_string(text, pos)
            tokens.append(_Token("string", text[pos:end], pos, value))
            pos = end
            continue
        if kind == "number" and m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] == "_"):
            raise ExprError(f"bad number {text[pos : m.end() + 1]!r} at position {pos + 1}")
        tokens.append(_Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Token("eof", "", len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """A PromQL string literal ("…", '…' with Go escapes, `…` raw) -> (value, end offset)."""
    quote = text[start]
    i = start + 1
    if quote == "`":
        end = text.find("`", i)
        if end < 0:
            raise ExprError(f"unterminated raw string starting at position {start + 1}")
        return text[i:end], end + 1
    out = bytearray()
    while i < len(text):
        c = text[i]
        if c == quote:
            try:
                return out.decode("utf-8"), i + 1
            except UnicodeDecodeError:
                raise ExprError(f"string at position {start + 1} is not valid UTF-8") from None
        if c == "\n":
            break
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        i += 1
        esc = text[i] if i < len(text) else ""
        if esc in _SIMPLE_ESCAPES or esc == quote:
            out += _SIMPLE_ESCAPES.get(esc, esc).encode()
            i += 1
        elif esc in "01234567" and esc:
            digits = text[i : i + 3]
            if not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) > 255:
                raise ExprError(f"bad octal escape \\{digits} at position {i}")
            out.append(int(digits, 8))
            i += 3
        elif esc in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = text[i + 1 : i + 1 + width]
            if not re.fullmatch(rf"[0-9a-fA-F]{{{width}}}", digits):
                raise ExprError(f"bad escape \\{esc}{digits} at position {i}")
            code = int(digits, 16)
            if esc == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ExprError(f"escape \\{esc}{digits} is not a valid Unicode code point")
            else:
                out += chr(code).encode()
            i += 1 + width
        else:
            raise ExprError(f"unknown escape sequence \\{esc} at position {i}")
    raise ExprError(f"unterminated string starting at position {start + 1}")


# ---------------------------------------------------------------------------------------------
# The matchers and the comparison


class LabelMatcher:
    """``name op "value"``; a missing label matches as the empty string, like Prometheus.

    Regexes are RE2 in Prometheus and fully anchored; here they are compiled once with Python's
    ``re`` in ASCII mode (RE2's ``\\d``/``\\w`` are ASCII) after refusing the constructs RE2 lacks,
    and their results are memoised per label value (values repeat every cycle)."""

    __slots__ = ("_memo", "_regex", "name", "op", "value")

    def __init__(self, name: str, op: str, value: str) -> None:
        self.name = name
        self.op = op
        self.value = value
        self._regex = _compile_regex(value) if op in ("=~", "!~") else None
        self._memo: dict[str, bool] = {}

    def matches(self, v: str) -> bool:
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = self._memo.get(v)
        if hit is None:
            assert self._regex is not None
            hit = (self._regex.fullmatch(v) is not None) == (self.op == "=~")
            if len(self._memo) >= _REGEX_MEMO_LIMIT:
                self._memo.clear()
            self._memo[v] = hit
        return hit

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMatcher) and (self.name, self.op, self.value) == (
            other.name,
            other.op,
            other.value,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.op, self.value))

    def __repr__(self) -> str:
        return f"{self.name}{self.op}{_quote(self.value)}"


_RE2_UNSUPPORTED = (
    (re.compile(r"\(\?<?[=!]"), "lookaround assertions"),
    (re.compile(r"\\[1-9]|\(\?P="), "backreferences"),
    (re.compile(r"\(\?>"), "atomic groups"),
    (re.compile(r"\(\?\("), "conditionals"),
    (re.compile(r"[*+?}][+]"), "possessive quantifiers"),
    (re.compile(r"\[:\^?[a-z]+:\]"), "POSIX character classes"),
    (re.compile(r"\(\?[a-zA-Z]*x"), "the x (verbose) flag"),
)


def _compile_regex(pattern: str) -> re.Pattern[str]:
    for detector, what in _RE2_UNSUPPORTED:
        if detector.search(pattern):
            raise ExprError(f"regex {_quote(pattern)}: {what} are not supported (Prometheus uses RE2)")
    try:
        return re.compile(f"(?:{pattern})", re.ASCII)
    except re.error as e:
        raise ExprError(f"invalid regex {_quote(pattern)}: {e.msg}") from None


@dataclass(frozen=True)
class Comparison:
    """``selector <op> threshold``, filtering: the result keeps each matching sample as is."""

    metric: str | None  # None: the selector has no name and looks at every sample
    matchers: tuple[LabelMatcher, ...]
    op: str
    threshold: float
    text: str = field(compare=False)

    def evaluate(self, index: SampleIndex) -> list[Sample]:
        candidates = index.all if self.metric is None else index.by_name.get(self.metric, ())
        compare, threshold = COMPARISONS[self.op], self.threshold
        hits = [s for s in candidates if compare(s.value, threshold)]
        for m in self.matchers:
            name, value = m.name, m.value
            if name == METRIC_NAME:
                hits = [s for s in hits if m.matches(s.name)]
            elif m.op == "=":  # the common matchers inline: no call per sample
                hits = [s for s in hits if s.labels.get(name, "") == value]
            elif m.op == "!=":
                hits = [s for s in hits if s.labels.get(name, "") != value]
            else:
                match = m.matches
                hits = [s for s in hits if match(s.labels.get(name, ""))]
        return hits

    def __str__(self) -> str:
        return self.text


class SampleIndex:
    """One cycle's samples grouped by metric name (built once, shared by every rule)."""

    __slots__ = ("all", "by_name")

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.all = samples
        self.by_name: dict[str, list[Sample]] = {}
        for s in samples:
            bucket = self.by_name.get(s.name)
            if bucket is None:
                self.by_name[s.name] = [s]
            else:
                bucket.append(s)


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class _Selector:
    name: str | None
    matchers: tuple[LabelMatcher, ...]


@dataclass(frozen=True)
class _Number:
    value: float


@dataclass(frozen=True)
class _Paren:
    inner: object


@dataclass(frozen=True)
class _Binary:
    op: str
    lhs: object
    rhs: object


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _lex(text)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str, what: str) -> _Token:
        if self.tok.text != text or self.tok.kind not in ("op",):
            raise ExprError(f"expected {what} at position {self.tok.pos + 1}, found {self._found()}")
        return self.take()

    def _found(self) -> str:
        return "the end" if self.tok.kind == "eof" else repr(self.tok.text)

    def binary(self) -> object:
        lhs = self.unary()
        tok = self.tok
        if tok.kind == "op" and tok.text in COMPARISONS:
            self.take()
            if self.tok.kind == "ident" and self.tok.text.lower() == "bool":
                raise ExprError("the bool modifier is not supported: a comparison must filter series")
            if self.tok.kind == "ident" and self.tok.text.lower() in _MODIFIERS:
                raise ExprError(f"the '{self.tok.text}' modifier is not supported")
            rhs = self.unary()
            nxt = self.tok
            if nxt.kind == "op" and nxt.text in COMPARISONS:
                raise ExprError("only one comparison is supported (no chained comparisons)")
            self._reject_operator_or_modifier()
            return _Binary(tok.text, lhs, rhs)
        self._reject_operator_or_modifier()
        return lhs

    def _reject_operator_or_modifier(self) -> None:
        tok = self.tok
        if tok.kind == "op" and tok.text in ("+", "-", "*", "/", "%", "^"):
            raise ExprError(f"arithmetic ({tok.text}) is not supported; only `selector <op> number`")
        if tok.kind == "ident":
            word = tok.text.lower()
            if word in _SET_OPERATORS:
                raise ExprError(f"the set operator '{word}' is not supported; write one rule per condition")
            if word in _MODIFIERS:
                raise ExprError(f"the '{word}' modifier is not supported")

    def unary(self) -> object:
        tok = self.tok
        if tok.kind == "op" and tok.text in ("-", "+"):
            self.take()
            inner = _strip_parens(self.unary())
            if not isinstance(inner, _Number):
                raise ExprError(f"unary {tok.text} is only supported on a number")
            return _Number(-inner.value if tok.text == "-" else inner.value)
        if tok.kind == "op" and tok.text == "(":
            self.take()
            inner = self.binary()
            self.expect(")", "')'")
            return _Paren(inner)
        if tok.kind == "number":
            self.take()
            return _Number(float(int(tok.text, 16)) if tok.text[:2] in ("0x", "0X") else float(tok.text))
        if tok.kind == "duration":
            raise ExprError(f"durations ({tok.text}) belong to range selectors and offsets (not supported)")
        if tok.kind == "string":
            raise ExprError("string literals are not supported; compare a selector with a number")
        if tok.kind == "ident":
            word = tok.text.lower()
            if word in ("inf", "nan"):
                self.take()
                return _Number(math.inf if word == "inf" else math.nan)
            if word in _AGGREGATIONS:
                raise ExprError(f"aggregations ({tok.text}) are not supported")
            if self.tokens[self.i + 1].text == "(":
                raise ExprError(f"function calls ({tok.text}) are not supported")
            if word in _SET_OPERATORS or word in _MODIFIERS:
                raise ExprError(f"unexpected '{tok.text}' at position {tok.pos + 1}")
            return self.selector()
        if tok.kind == "op" and tok.text == "{":
            return self.selector()
        raise ExprError(f"unexpected {self._found()} at position {tok.pos + 1}")

    def selector(self) -> _Selector:
        name = self.take().text if self.tok.kind == "ident" else None
        matchers: list[LabelMatcher] = []
        if self.tok.text == "{" and self.tok.kind == "op":
            self.take()
            while not (self.tok.kind == "op" and self.tok.text == "}"):
                matchers.append(self.matcher())
                if self.tok.kind == "op" and self.tok.text == ",":
                    self.take()
                elif not (self.tok.kind == "op" and self.tok.text == "}"):
                    where = self.tok.pos + 1
                    raise ExprError(f"expected ',' or '}}' at position {where}, found {self._found()}")
            self.take()
        if self.tok.kind == "op" and self.tok.text == "[":
            raise ExprError("range selectors ([…]) are not supported")
        if self.tok.kind == "op" and self.tok.text == "@":
            raise ExprError("the @ modifier is not supported")
        if self.tok.kind == "ident" and self.tok.text.lower() == "offset":
            raise ExprError("offset modifiers are not supported")
        names = [m for m in matchers if m.name == METRIC_NAME]
        if name is not None and names:
            raise ExprError(f"metric name {name!r} must not be set twice")
        if name is None:
            if not any(not m.matches("") for m in matchers):
                raise ExprError("a selector without a metric name needs a matcher that does not match ''")
            eq = next((m for m in names if m.op == "="), None)
            if eq is not None:  # {__name__="x"} is just x: use the by-name index
                name = eq.value
                matchers.remove(eq)
        return _Selector(name, tuple(matchers))

    def matcher(self) -> LabelMatcher:
        tok = self.take()
        if tok.kind != "ident" or not _LABEL_NAME.match(tok.text):
            raise ExprError(f"expected a label name at position {tok.pos + 1}, found {tok.text!r}")
        op = self.take()
        if op.kind != "op" or op.text not in ("=", "!=", "=~", "!~"):
            raise ExprError(f"expected one of = != =~ !~ after {tok.text!r} at position {op.pos + 1}")
        value = self.take()
        if value.kind != "string":
            raise ExprError(f"expected a quoted string after {tok.text}{op.text} at position {value.pos + 1}")
        assert isinstance(value.value, str)
        return LabelMatcher(tok.text, op.text, value.value)


def _strip_parens(node: object) -> object:
    while isinstance(node, _Paren):
        node = node.inner
    return node


def parse_expr(text: str) -> Comparison:
    """Parse ``selector <op> number``; raises :class:`ExprError` with the reason otherwise."""
    if not text.strip():
        raise ExprError("the expression is empty")
    parser = _Parser(text)
    node = _strip_parens(parser.binary())
    if parser.tok.kind != "eof":
        raise ExprError(f"unexpected {parser._found()} at position {parser.tok.pos + 1}")
    if not isinstance(node, _Binary):
        what = "a selector" if isinstance(node, _Selector) else "a number"
        raise ExprError(f"the expression is just {what}; write `selector <op> number` (e.g. `up == 0`)")
    lhs, rhs = _strip_parens(node.lhs), _strip_parens(node.rhs)
    if isinstance(lhs, _Number) and isinstance(rhs, _Selector):
        raise ExprError(
            f"put the selector on the left: `selector {_FLIPPED[node.op]} {_fmt_number(lhs.value)}` "
            f"instead of `{_fmt_number(lhs.value)} {node.op} selector`"
        )
    if isinstance(rhs, _Selector):
        raise ExprError("comparing two selectors is not supported; the right-hand side must be a number")
    if not isinstance(lhs, _Selector):
        raise ExprError("the left-hand side must be a selector")
    assert isinstance(rhs, _Number)
    return Comparison(lhs.name, lhs.matchers, node.op, rhs.value, text.strip())


def parse_metric(text: str) -> tuple[str, dict[str, str]]:
    """A series in the notation ``name{label="value", …}`` (promtool's ``input_series``)."""
    parser = _Parser(text)
    sel = parser.selector() if parser.tok.kind in ("ident", "op") else None
    if sel is None or parser.tok.kind != "eof":
        raise ExprError(f'{text!r} is not a series such as name{{label="value"}}')
    labels: dict[str, str] = {}
    for m in sel.matchers:
        if m.op != "=":
            raise ExprError(f'{text!r}: a series can only have label="value" pairs')
        if m.name in labels:
            raise ExprError(f"{text!r}: label {m.name} given twice")
        labels[m.name] = m.value
    if sel.name is None:
        raise ExprError(f"{text!r}: a series needs a metric name")
    return sel.name, labels


def _fmt_number(v: float) -> str:
    return repr(v).removesuffix(".0")


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
