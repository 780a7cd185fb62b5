"""Answer extraction and comparison.

The student is often a small base model: it pads answers with prose, units, currency signs,
thousands separators and unicode minus signs, and it tends to keep going after the answer with a
new few-shot "Question: ..." of its own. Everything here is exact: numbers are ``Decimal`` (never
float), so "0.1 + 0.2" style errors cannot make a right answer look wrong.
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext

from teachloop.messages import ErrorCategory

# Precision for the few inexact operations (fractions like 1/3, ratios): far beyond any
# plausible answer, so comparisons at rel_tol 1e-9 are unaffected by rounding.
_PREC = 80
# Exponents beyond this are not answers to anything we ask, and would make huge strings.
_MAX_EXP = 1000

# Characters that small models (and tokenizers) emit for a minus sign or a digit-group space.
_TRANSLATE = str.maketrans(
    {
        "\u2212": "-",  # minus sign
        "\u2012": "-",  # figure dash
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\ufe63": "-",  # small hyphen-minus
        "\uff0d": "-",  # fullwidth hyphen-minus
        "\u00a0": " ",  # no-break space
        "\u2007": " ",  # figure space
        "\u2008": " ",  # punctuation space
        "\u2009": " ",  # thin space
        "\u202f": " ",  # narrow no-break space
    }
)

_NUMBER = re.compile(
    r"""
    (?<![^\W_])(?<!\.)                # not glued to a word or to another number ("_7_" is ok)
    (?P<sign>[-+])?\s?
    [$€£¥]?\s?                       # currency, before or after the sign: "-$3", "$-3"
    (?P<sign2>[-+])?
    (?P<body>
        \d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?       # 1,234,567.89
      | \d{1,3}(?:\ \d{3})+(?![\d,])(?:\.\d+)?   # 1 234 567 (also thin spaces, translated)
      | \d+(?:\.\d+)?
      | \.\d+
    )
    (?:
        \s*/\s*(?P<den>\d+)(?![\d.])             # 3/4
      | [eE](?P<exp>[-+]?\d+)                    # 1e3
      | \s*[x×*·]\s*10\s*\^\s*(?P<exp2>[-+]?\d+)  # 1.5 × 10^3
    )?
    """,
    re.VERBOSE,
)

# What may follow a number in a string that is "just a number": a unit or a percent sign.
_UNIT_TAIL = re.compile(r"\s*(?:%|[^\W\d_]\S{0,15})?\s*")

# Explicit answer markers, strongest evidence of where the answer is.
_ANSWER_MARKER = re.compile(
    r"""
    (?:\b(?:final\s+answer|answer|result)\b\**\s*
        (?:is\b|was\b|equals\b|would\s+be\b|will\s+be\b|[:=])
    | ^[ \t]*A[ \t]*:                     # Q: ... / A: ... few-shot style
    | \\boxed\{
    )
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
_EQUALS = re.compile(r"=|≈|\bequals\b|\bmakes\b", re.IGNORECASE)

# A line that starts a new question: a base model continuing its few-shot prompt.
_QUESTION_LINE = re.compile(r"^\s*(?:Q|Question|Problem|Exercise)\s*\d*\s*[:.)]", re.IGNORECASE)

_TRAILING_PUNCT = ".,;:!?"


def canonical_number(value: Decimal) -> str:
    """Plain notation, no thousands separators, no trailing fractional zeros, "-0" -> "0"."""
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    text = format(value, "f")  # exact: never rounds, never uses an exponent
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text


def _match_value(m: re.Match[str]) -> tuple[Decimal, str] | None:
    """(exact value, canonical written form) of a ``_NUMBER`` match; None for x/0."""
    negative = (m["sign"] == "-") != (m["sign2"] == "-")
    body = re.sub(r"[, ]", "", m["body"])
    if m["den"] is not None:
        den = int(m["den"])
        if den == 0:
            return None
        num = Decimal(body)
        with localcontext(prec=_PREC):
            value = num / den
        if num == 0:
            return Decimal(0), "0"
        written = f"{'-' if negative else ''}{canonical_number(num)}/{den}"
        return (value.copy_negate() if negative else value), written
    exp = m["exp"] or m["exp2"] or "0"
    if abs(int(exp)) > _MAX_EXP:
        return None
    value = Decimal(f"{'-' if negative else ''}{body}e{exp}")  # exact construction
    return value, canonical_number(value)


def parse_number(text: str) -> Decimal | None:
    """The exact value of a string that is a number, loosely written.

    Accepts what ``extract_final_answer`` returns and what a question bank holds: "1,234",
    "1 234", "-5", "−5", "$3", "12.5 km", "50%", "3/4", "1e3". Fractions are divided at 80
    significant digits (1/3 has no exact decimal). Anything else (text, two numbers) is None.
    """
    s = text.translate(_TRANSLATE).strip()
    m = _NUMBER.match(s)
    if m is None or not _UNIT_TAIL.fullmatch(s, m.end()):
        return None
    parsed = _match_value(m)
    return None if parsed is None else parsed[0]


def number_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, canonical form) of every number written in ``text``, in order. The
    translation to ASCII minus signs and spaces is one character for one, so spans index
    ``text`` itself."""
    spans = []
    for m in _NUMBER.finditer(text.translate(_TRANSLATE)):
        parsed = _match_value(m)
        if parsed is not None:
            start = m.start()
            while text[start].isspace():  # the match may take a space before a sign
                start += 1
            spans.append((start, m.end(), parsed[1]))
    return spans


def numbers_in(text: str) -> list[str]:
    """Every number written in ``text``, in canonical form, in order ("1,250 g or 1.25 kg" ->
    ["1250", "1.25"])."""
    return [canonical for _, _, canonical in number_spans(text)]


def _first_number(text: str) -> str | None:
    for m in _NUMBER.finditer(text):
        parsed = _match_value(m)
        if parsed is not None:
            return parsed[1]
    return None


def _number_after_last_equals(text: str) -> str | None:
    for eq in reversed(list(_EQUALS.finditer(text))):
        found = _number_at(text, eq.end())
        if found is not None:
            return found[0]
    return None


def _number_at(text: str, pos: int) -> tuple[str, int] | None:
    """(canonical form, end) of the number that directly follows ``pos``, markup aside."""
    rest = text[pos:]
    skipped = len(rest) - len(rest.lstrip(" \t:*_`$\\{("))
    m = _NUMBER.match(text, pos + skipped)
    if m is None:
        return None
    parsed = _match_value(m)
    return None if parsed is None else (parsed[1], m.end())


_OPERATOR_NEXT = re.compile(r"\s*[-+×x*/÷]\s*\d")


def _number_in_answer_line(line: str) -> str | None:
    """The answer in the text after a marker: "432", "432 (check: 432 - 47 = 385)",
    "47 + 385 = 432"."""
    direct = _number_at(line, 0)
    if direct is not None and not _OPERATOR_NEXT.match(line, direct[1]):
        return direct[0]
    return _number_after_last_equals(line) or _first_number(line)


def _looks_like_question(text: str) -> bool:
    # "5?" is an unsure answer, "What is 47 + 385?" an echoed question: tell them apart by words.
    return len(text.split()) >= 3


def _is_question(line: str) -> bool:
    """An echoed question: "Question: ...", "Q3.", or a sentence ending in "?"."""
    stripped = line.rstrip()
    return bool(_QUESTION_LINE.match(line)) or (
        stripped.endswith("?") and _looks_like_question(stripped)
    )


def _answer_region(text: str) -> str:
    """Drop an echoed question at the start and anything after the model starts a new one."""
    lines = text.splitlines()
    start = 0
    while start < len(lines) and (
        not lines[start].strip()
        or (
            _is_question(lines[start])
            and not _ANSWER_MARKER.search(lines[start])
            and not lines[start].rpartition("?")[2].strip()  # "Q: ...? 7" carries an answer
        )
    ):
        start += 1
    if start == len(lines):  # nothing but question lines: better than nothing
        return text
    end = start + 1
    while end < len(lines) and not _QUESTION_LINE.match(lines[end]):
        end += 1
    first, *rest = lines[start:end]
    # "What is 47 + 385? 432" on one line: the answer follows the echoed question.
    asked, mark, after = first.rpartition("?")
    if mark and after.strip() and _looks_like_question(asked) and not _ANSWER_MARKER.search(asked):
        first = after
    return "\n".join([first, *rest])


def _clean_text_answer(text: str) -> str | None:
    line = text.strip().strip("*`\"'").strip()
    line = line.rstrip(_TRAILING_PUNCT + "*`\"'}").strip().lower()
    value = parse_number(line)  # unwrapping can reveal a number: keep the result canonical
    return canonical_number(value) if value is not None else (line or None)


def extract_final_answer(text: str) -> str | None:
    """The student's final answer in canonical form, or None when it wrote nothing.

    Order of evidence: the number after the first explicit answer marker ("Answer:", "the
    answer is", "A:", ``\\boxed{``; if that line holds a calculation, its result after the last
    "="), then the number after the last "=", then the first number. Non-numeric replies give the
    text after the marker, or the first line, lowercased without trailing punctuation.
    """
    if not text or not text.strip():
        return None
    region = _answer_region(text.translate(_TRANSLATE))

    text_after_marker: str | None = None
    saw_marker = False
    for marker in _ANSWER_MARKER.finditer(region):
        saw_marker = True
        line_end = region.find("\n", marker.end())
        line = region[marker.end() : line_end if line_end >= 0 else len(region)]
        found = _number_in_answer_line(line)
        if found is None and not line.strip():
            # "Answer:\n432": the answer sits on the next non-empty line.
            nxt = region[marker.end() :].strip().split("\n", 1)[0]
            found = _number_in_answer_line(nxt)
            line = nxt
        if found is not None:
            return found
        if text_after_marker is None and line.strip():
            text_after_marker = line

    found = _number_after_last_equals(region) or _first_number(region)
    if found is not None:
        return found
    if text_after_marker is not None:
        return _clean_text_answer(text_after_marker)
    if saw_marker:  # "Answer:" and nothing after it: the marker itself is not an answer
        return None
    first_line = next(line for line in region.splitlines() if line.strip())
    return _clean_text_answer(first_line)


def _normalise_text(text: str) -> str:
    text = " ".join(text.translate(_TRANSLATE).split()).lower()
    return text.rstrip(_TRAILING_PUNCT).strip()


def canonical_answer(text: str) -> str:
    """A reference answer as stored: plain numbers canonical ("1,234.50" -> "1234.5"),
    fractions and anything with a unit or words kept as written (stripped)."""
    s = text.translate(_TRANSLATE).strip()
    m = _NUMBER.fullmatch(s)
    if m is not None and m["den"] is None:
        parsed = _match_value(m)
        if parsed is not None:
            return parsed[1]
    return text.strip()


def _close(a: Decimal, b: Decimal, rel_tol: Decimal) -> bool:
    if a == b:
        return True
    with localcontext(prec=_PREC):
        return abs(a - b) <= rel_tol * max(abs(a), abs(b))


def answers_match(expected: str, got: str | None, rel_tol: Decimal = Decimal("1e-9")) -> bool:
    """Numeric comparison (relative tolerance) when both sides are numbers, else
    case- and whitespace-insensitive equality ignoring trailing punctuation."""
    if got is None:
        return False
    e, g = parse_number(expected), parse_number(got)
    if e is not None and g is not None:
        return _close(e, g, rel_tol)
    return _normalise_text(expected) == _normalise_text(got)


def error_category(expected: str, got: str | None) -> ErrorCategory:
    """Classify an answer against the reference; the categories drive what gets re-taught."""
    if got is None:
        return ErrorCategory.no_answer
    if answers_match(expected, got):
        return ErrorCategory.none
    e, g = parse_number(expected), parse_number(got)
    if e is None or g is None:
        return ErrorCategory.wrong
    tol = Decimal("1e-9")
    if e != 0 and _close(g, e.copy_negate(), tol):
        return ErrorCategory.sign
    if e != 0 and g != 0 and (e > 0) == (g > 0):
        shift = g.adjusted() - e.adjusted()
        # adjusted() is the exponent of the leading digit; a near-miss like 99.99999999999 vs 1
        # may sit one decade off, so try the neighbours too.
        for k in (shift - 1, shift, shift + 1):
            if k != 0:
                with localcontext(prec=_PREC):
                    scaled = e.scaleb(k)
                if _close(g, scaled, tol):
                    return ErrorCategory.magnitude
    if e != 0:
        with localcontext(prec=_PREC):
            if abs(g - e) <= Decimal("0.05") * abs(e):
                return ErrorCategory.close
    return ErrorCategory.wrong
