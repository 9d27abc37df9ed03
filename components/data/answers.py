"""Read the final answer out of free text, the way a grader would.

Three graders share one number grammar (see ``_normalize`` and ``_NUMBER``):

- ``extract_answer`` / ``is_correct`` / ``states_final_answer``: the project's own reader. The LAST
  explicit answer by position wins, across all explicit spellings ("answer is N", "answer: N",
  ``\\boxed{N}``, ``#### N``); without one, the last number in the text.
- ``gsm8k_answer``: GSM8K's convention, the last ``#### N`` line, else the last number.
- ``math_equal``: symbolic comparison with HuggingFace ``math-verify`` (boxed / LaTeX answers),
  run in a helper process so that it works from any thread and still has a hard timeout.

Spelling conventions (each one is a row of tests/test_answers.py):

- Currency: ``$``, ``\\$``, ``€``, ``£`` before the digits are dropped; a minus sign may stand
  before or after the symbol (``-$3`` == ``$-3`` == -3).
- Minus: ``-`` and the Unicode minus ``−`` are signs only where no operand precedes them, so
  ``10-4`` reads as 10 minus 4, not as the numbers 10 and -4.
- Thousands separators: ``,`` followed by groups of exactly three digits (``1,250``,
  ``1,250,000``); LaTeX ``{,}`` and ``\\,``; the thin / narrow no-break / no-break spaces
  (U+2009, U+202F, U+00A0). A plain ASCII space groups digits ONLY at the start of an explicit
  answer ("The answer is 1 250." -> 1250); in running text "2 300 ml bottles" stays two numbers.
  A comma is never a decimal point ("2,5" is 2 and 5).
- Decimals: ``12.0`` == 12, ``.5`` == 0.5; a sentence-final period is not a decimal point.
- LaTeX: ``\\text{..}``/``\\mathrm{..}``/``\\textbf{..}``/``\\mbox{..}`` are unwrapped,
  ``\\frac``/``\\dfrac``/``\\tfrac`` with numeric arguments (also ``\\frac12``) become their
  decimal value, a whole number before a fraction is a mixed number (``1\\frac{1}{2}`` -> 1.5),
  ``\\times``/``\\cdot`` multiply, ``\\div`` divides, ``\\%`` is ``%``.
- Percentages: the percent sign is dropped, "25%" reads 25 (not 0.25): GSM8K-style gold answers
  to "what percent" questions are the number before the sign.
- Units and words after the number are ignored ("7 apples", "12 cm").
- Equations: inside an explicit answer (its sentence, at most 400 characters), the value is the
  right-hand side of the LAST ``=`` that is followed by a number ("The answer is 3 + 4 = 7." -> 7,
  "The answer is 25% of 80 = 20." -> 20; also "The answer is 8 since 2 * 3 = 6" -> 6, the price of
  the rule); without one, the expression right after the marker, evaluated when it is bare
  arithmetic ("The answer is 3 + 4." -> 7; + - * / ^ and brackets only, floats, 30 levels deep).
- Ranges and alternatives: an explicit answer that is a range or a choice ("between 3 and 5",
  "3 to 5", "3–5" with an en dash, "5 or 6", "5 and 6") has NO numeric value: ``extract_answer``
  returns None (it does not fall back to another number, so hedging is never rewarded) while
  ``states_final_answer`` is True. An ASCII hyphen between numbers is subtraction.
- Negation: "the answer is not 5" is not an answer statement and is skipped.
- Candidates: "The answer is 5. Wait, the answer is 6." -> 6 (last by position, whatever the
  spelling: a later ``\\boxed{}`` beats an earlier "answer is" and vice versa).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

__all__ = ["extract_answer", "states_final_answer", "is_correct", "gsm8k_answer", "math_equal",
           "close_math_worker"]

# ---------------------------------------------------------------------------------------------
# normalization shared by every grader
# ---------------------------------------------------------------------------------------------

_THIN_SPACES = "\u2009\u202f\u00a0"
_UNWRAP = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname)"
                     r"\s*\{([^{}]*)\}")
_FRAC_ARG = r"\{\s*(-?\d+(?:\.\d+)?)\s*\}"
_FRAC = re.compile(rf"\\frac\s*(?:{_FRAC_ARG}\s*{_FRAC_ARG}|(\d)\s*(\d))")
_MIXED = re.compile(r"(?<![\d.,])(\d+)\s*\\frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_GROUP_SPACE = re.compile(rf"(?<=\d)(?:\\,|\\!|\\;|\\:|\\ |[{_THIN_SPACES}])(?=\d{{3}}(?!\d))")


def _decimal(value: float) -> str:
    """A float as a literal the number grammar reads back to the same float."""
    return repr(float(value))


def _frac(match: re.Match[str]) -> str:
    num, den = (match[1], match[2]) if match[1] is not None else (match[3], match[4])
    if float(den) == 0:
        return match[0]
    return _decimal(float(num) / float(den))


def _mixed(match: re.Match[str]) -> str:
    whole, num, den = int(match[1]), int(match[2]), int(match[3])
    if den == 0 or num >= den:  # "2\frac{3}{2}" is a product, not a mixed number: leave it
        return match[0]
    return _decimal(whole + num / den)


def _normalize(text: str) -> str:
    """Rewrite the spellings of numbers into one plain form (see the module docstring)."""
    text = text.replace("\u2212", "-").replace("\ufe63", "-").replace("\uff0d", "-")
    text = text.replace("{,}", ",")
    text = _GROUP_SPACE.sub("", text)
    text = text.replace("\\$", "$").replace("\\%", "%")
    text = re.sub(r"\\(?:texteuro|euro)(?![A-Za-z])\s*", "€", text)
    text = re.sub(r"\\(?:textsterling|pounds)(?![A-Za-z])\s*", "£", text)
    for _ in range(3):  # \text{\textbf{7}}: a few levels of nesting
        text = _UNWRAP.sub(lambda m: m[1], text)
    text = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", text)
    text = _MIXED.sub(_mixed, text)
    text = _FRAC.sub(_frac, text)
    text = re.sub(r"\\(?:times|cdot)(?![A-Za-z])", "*", text)
    text = re.sub(r"\\div(?![A-Za-z])", "/", text)
    text = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", text)
    text = re.sub(r"\\[()\[\]]", " ", text)
    text = re.sub(r"\\[,;:! ]", " ", text)
    return text


# A number: optional sign (only where no operand precedes it), optional currency, digits with
# 3-digit comma groups or plain, optional decimals, optional exponent (3.5e2), optional percent.
_NUMBER = re.compile(r"""
    (?:(?<![\w)\]}.])(?P<sign>-))?
    (?:(?P<cur>[$€£])\s?(?P<sign2>-)?)?
    (?<![\d.])(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?:\.(?P<dec>\d+))?
    (?:[eE](?P<exp>[-+]?\d{1,3})(?!\w|\.\d))?
    (?P<pct>\s?%)?
""", re.VERBOSE)


def _match_number(text: str, pos: int) -> tuple[float, int] | None:
    m = _NUMBER.match(text, pos)
    if not m or (m["int"] is None and m["dec"] is None):
        return None
    literal = (m["int"] or "0").replace(",", "") + (f".{m['dec']}" if m["dec"] else "")
    value = float(literal) * (10.0 ** int(m["exp"]) if m["exp"] else 1.0)  # scientific notation: 3.5e2
    if m["sign"] or m["sign2"]:
        value = -value
    return value, m.end()


def _numbers(text: str) -> list[float]:
    """Every number in already-normalized text, left to right."""
    found: list[float] = []
    pos = 0
    for m in re.finditer(r"[-$€£.\d]", text):
        if m.start() < pos:
            continue
        hit = _match_number(text, m.start())
        if hit is not None:
            found.append(hit[0])
            pos = hit[1]
    return found


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# arithmetic of an explicit answer: "3 + 4", "(2 + 3) * 4", "2^{10}"
# ---------------------------------------------------------------------------------------------

_OPEN = {"(": ")", "{": "}", "[": "]"}


class _Arithmetic:
    """Recursive descent over numbers, + - * / ^ and brackets; stops (without failing) at the
    first token that does not continue the expression, so "7 apples" reads 7 and "**7**" reads 7."""

    MAX_DEPTH = 30  # nested brackets / powers / unary minus: deeper is no answer anyone writes

    def __init__(self, text: str, pos: int):
        self.text, self.pos, self.depth = text, pos, 0

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def _peek(self) -> str:
        self._skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expression(self) -> float | None:
        left = self.term()
        if left is None:
            return None
        while self._peek() in ("+", "-"):
            saved, op = self.pos, self._peek()
            self.pos += 1
            right = self.term()
            if right is None:
                self.pos = saved
                break
            left = left + right if op == "+" else left - right
        return left

    def term(self) -> float | None:
        left = self.factor()
        if left is None:
            return None
        while self._peek() in ("*", "/", "×", "÷", "·"):
            saved, op = self.pos, self._peek()
            self.pos += 1
            right = self.factor()
            if right is None:
                self.pos = saved
                break
            if op in ("/", "÷"):
                if right == 0:
                    return None
                left = left / right
            else:
                left = left * right
        return left

    def factor(self) -> float | None:
        base = self.atom()
        if base is None:
            return None
        if self._peek() == "^" and self.depth < self.MAX_DEPTH:
            saved = self.pos
            self.pos += 1
            self.depth += 1
            try:
                exponent = self.factor()
            finally:
                self.depth -= 1
            if exponent is None:
                self.pos = saved
                return base
            try:
                return float(base ** exponent) if not (base < 0 and exponent != int(exponent)) else None
            except (OverflowError, ZeroDivisionError):
                return None
        return base

    def atom(self) -> float | None:
        if self.depth >= self.MAX_DEPTH:
            return None
        self.depth += 1
        try:
            return self._atom()
        finally:
            self.depth -= 1

    def _atom(self) -> float | None:
        char = self._peek()
        if char in _OPEN:
            saved = self.pos
            self.pos += 1
            inner = self.expression()
            if inner is not None and self._peek() == _OPEN[char]:
                self.pos += 1
                return inner
            self.pos = saved
            return None
        if char == "-" and self.text[self.pos + 1:self.pos + 2] in ("(", "{"):
            saved = self.pos
            self.pos += 1
            inner = self.atom()
            if inner is None:
                self.pos = saved
                return None
            return -inner
        hit = _match_number(self.text, self.pos)
        if hit is None:
            return None
        self.pos = hit[1]
        return hit[0]


# ---------------------------------------------------------------------------------------------
# explicit answers
# ---------------------------------------------------------------------------------------------

_ANSWER_IS = re.compile(
    r"\banswer\b[*_]*\s*(?:(?:is|was|(?:would|will|should|must)\s+be)\b[*_]*\s*:?|:|=)", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####")
# what may stand between "the answer is" and its number: words, markdown, math delimiters,
# "x =", LaTeX commands and braces
_LEAD = re.compile(r"(?:[\s*_:=${}]|\\[A-Za-z]++|[A-Za-z][A-Za-z']*+)*+")
_NEGATION = {"not", "no", "never", "neither", "nor", "isn't", "wasn't", "cannot"}
_NEGATIVE_WORDS = {"negative", "minus"}
_EQUALS = re.compile(r"(?<![=<>!])=(?!=)")
_RANGE_WORDS = {"between", "either"}
# after an answer's number: "to 5", "and 5", "or 5", "–5", "..5": a range or a choice; ",5" with no
# space: "2,5" is a European decimal or a list, never 2
_ALTERNATIVE = re.compile(r"\s*(?:to|and|or|–|—|~|\.\.)\s*(?=[-$€£(]?\s?\d)|,(?=\d)", re.IGNORECASE)
_SPACE_GROUPED = re.compile(r"(?<![\d.,])(\d{1,3})((?: \d{3})+)(?![\d.,]| \d)")
_CLAUSE_END = re.compile(r"\.(?!\d)|[;!?\n]")
# an answer's value stands right after its marker: clauses are read within this many characters,
# which also keeps a text with thousands of markers linear
_CLAUSE_WINDOW = 400


@dataclass(frozen=True)
class _Candidate:
    position: int
    value: float | None  # None: an answer was stated but it is no single number (range, "5 or 6")


def _read_value(body: str, words: set[str]) -> float | None:
    """The value at the start of ``body`` (an arithmetic expression); None for a range or a
    choice ("3 to 5", "5 or 6") or when nothing there reads as a number."""
    grouped = _SPACE_GROUPED.match(body)
    if grouped:  # "1 250": a space groups digits only at the start of an explicit answer
        body = grouped[1] + grouped[2].replace(" ", "") + body[grouped.end():]
    parser = _Arithmetic(body, 0)
    value = parser.expression()
    if value is None or words & _RANGE_WORDS or _ALTERNATIVE.match(body[parser.pos:]):
        return None
    return _finite(-value if words & _NEGATIVE_WORDS else value)


def _lead(text: str) -> tuple[int, set[str]]:
    lead = _LEAD.match(text)
    assert lead is not None  # the pattern matches the empty string
    return lead.end(), {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z']*", lead[0])}


def _starts_value(text: str) -> bool:
    return _match_number(text, 0) is not None or text[:1] in _OPEN or text[:2] in ("-(", "-{")


def _clause_value(clause: str) -> tuple[bool, float | None]:
    """(counts as an answer statement, its value) for the text that follows an answer marker:
    the right-hand side of its last ``=`` when that reads as a number ("3 + 4 = 7"), else the
    expression at its start, after any words ("the answer is Janet's 18 dollars")."""
    if not re.search(r"\d", clause):
        return False, None
    start, words = _lead(clause)
    if words & _NEGATION or not _starts_value(clause[start:]):
        return False, None  # "the answer is not 5"; "whether the answer is right, compute 3+4=7"
    for eq in reversed([m.end() for m in _EQUALS.finditer(clause)]):
        rhs_start, rhs_words = _lead(clause[eq:])
        rhs = clause[eq + rhs_start:]
        if _starts_value(rhs):
            return True, _read_value(rhs, rhs_words)
    return True, _read_value(clause[start:], words)


def _balanced(text: str, start: int) -> str:
    """The text from ``start`` up to the brace that closes the one just before it (or the end of
    the window, for an unclosed or overlong box)."""
    depth = 1
    for i in range(start, min(len(text), start + _CLAUSE_WINDOW)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:start + _CLAUSE_WINDOW]


def _candidates(normalized: str) -> list[_Candidate]:
    found: list[_Candidate] = []

    def add(position: int, clause: str) -> None:
        stated, value = _clause_value(clause)
        if stated:
            found.append(_Candidate(position, value))

    for m in _ANSWER_IS.finditer(normalized):
        rest = normalized[m.end():m.end() + _CLAUSE_WINDOW].lstrip()  # may be on the next line
        end = _CLAUSE_END.search(rest)
        add(m.start(), rest[:end.start()] if end else rest)
    for m in _BOXED.finditer(normalized):
        add(m.start(), _balanced(normalized, m.end()))
    for m in _HASHES.finditer(normalized):
        line = normalized[m.end():m.end() + _CLAUSE_WINDOW].split("\n", 1)[0].strip()
        if _starts_value(line):  # "#### 72", not a Markdown heading "#### Step 2"
            add(m.start(), line)
    return sorted(found, key=lambda c: c.position)


def extract_answer(text: str) -> float | None:
    """The final numeric answer of a completion.

    Args:
        text: a model completion or a worked solution, plain text, Markdown or LaTeX.

    Returns:
        The value of the LAST explicit answer by position ("answer is N", "answer: N",
        ``\\boxed{N}``, ``#### N``); within it, the number after its last ``=``. Without an explicit
        answer, the last number in the text. None when there is no number, or when the last
        explicit answer is a range or a choice ("between 3 and 5", "5 or 6"). Conventions for
        currency, signs, separators, percentages, fractions: see the module docstring.

    Raises:
        Nothing for any ``str``.
    """
    normalized = _normalize(text)
    candidates = _candidates(normalized)
    if candidates:
        return candidates[-1].value
    numbers = _numbers(normalized)
    return _finite(numbers[-1]) if numbers else None


def states_final_answer(text: str) -> bool:
    """Whether the text states an explicit final answer, so a step search can stop there.

    Args:
        text: a completion or one reasoning step.

    Returns:
        True when it contains "answer is/was/: <a number>", ``\\boxed{<a number>}`` or
        ``#### <number>``, not negated ("the answer is not 5" does not count). A stated
        range ("the answer is between 3 and 5") counts even though it has no numeric value. A
        bare number or equation mid-solution ("3 + 4 = 7") does not count.

    Raises:
        Nothing for any ``str``.
    """
    return bool(_candidates(_normalize(text)))


def is_correct(text: str, gold: int | float) -> bool:
    """Whether ``extract_answer(text)`` equals ``gold``.

    Args:
        text: the completion.
        gold: the reference value.

    Returns:
        True when an answer was read and it is within 1e-6 (absolute) or 1e-9 (relative) of gold;
        False otherwise, including when no answer can be read.

    Raises:
        TypeError / ValueError when ``gold`` is not convertible with ``float()``.
    """
    value = extract_answer(text)
    return value is not None and math.isclose(value, float(gold), rel_tol=1e-9, abs_tol=1e-6)


def gsm8k_answer(text: str) -> float | None:
    """GSM8K's convention: the number after the last ``#### `` marker, else the last number.

    Args:
        text: a GSM8K reference solution or a model completion.

    Returns:
        The number that opens the last ``####`` line starting with one (``#### 72``,
        ``#### $1,250``; a Markdown heading ``#### Step 2`` is no answer), with ``$`` and
        thousands separators stripped; when there is none, the last number anywhere in the text.
        None when the text has no number. Unlike ``extract_answer`` it knows nothing of
        "answer is" or ``\\boxed{}`` (a boxed number counts only as "the last number") and reads a
        range's upper end ("between 3 and 5" -> 5), as the GSM8K harnesses do. It shares the
        number grammar (signs, currency, ``{,}``, LaTeX fractions) with ``extract_answer``.

    Raises:
        Nothing for any ``str``.
    """
    normalized = _normalize(text)
    for line in reversed(re.findall(r"####([^\n]*)", normalized)):
        hit = _match_number(line.strip(), 0)  # "#### 72", not a Markdown heading "#### Step 2"
        if hit is not None:
            return _finite(hit[0])
    numbers = _numbers(normalized)
    return _finite(numbers[-1]) if numbers else None


# ---------------------------------------------------------------------------------------------
# math-verify, out of process
# ---------------------------------------------------------------------------------------------
#
# math_verify.parse(parsing_timeout=5) and math_verify.verify(timeout_seconds=5) wrap their work in
# math_verify.utils.timeout, which on POSIX installs a SIGALRM handler and calls signal.alarm().
# signal.signal() raises "ValueError: signal only works in main thread of the main interpreter"
# off the main thread, which parse/verify re-raise as ValueError: every Prefect task (they run in
# a ThreadPoolTaskRunner's worker threads) would fail. The library's only switch is
# parsing_timeout=None / timeout_seconds=None, which disables the timeout entirely (and logs a
# warning), and sympy can run for minutes on inputs like 9^{9^{9^9}}. A thread cannot be killed in
# CPython, so the timeout has to come from a process: one long-lived helper process per parent
# process runs parse/verify with the library timeouts off, answers one JSON line per request, and
# is killed (and started afresh on the next call) when a request outlives its deadline. It also
# keeps SIGALRM handlers out of the caller's process, whatever thread it calls from.

_WORKER_SOURCE = r"""
import json, logging, sys
sys.path[:0] = json.loads(sys.argv[1])
logging.getLogger("math_verify").setLevel(logging.ERROR)  # "Timeout is disabled": we time out from outside
out, sys.stdout = sys.stdout, sys.stderr                     # nothing but replies on the pipe
try:
    from math_verify import parse, verify
except Exception as error:
    out.write(json.dumps({"ready": False, "why": repr(error)}) + "\n"); out.flush(); sys.exit(1)
out.write(json.dumps({"ready": True}) + "\n"); out.flush()
for line in sys.stdin:
    request = json.loads(line)
    try:
        gold = parse(request["gold"], parsing_timeout=None)
        if not gold:
            reply = {"result": None, "why": "gold answer could not be parsed"}
        else:
            prediction = parse(request["prediction"], parsing_timeout=None)
            reply = {"result": bool(verify(gold, prediction, timeout_seconds=None))}
    except Exception as error:
        reply = {"result": None, "why": repr(error)[:300]}
    out.write(json.dumps(reply) + "\n"); out.flush()
"""

_STARTUP_TIMEOUT_S = 120.0


class _MathWorker:
    """One helper process running math-verify; requests are serialized by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._owner_pid = os.getpid()

    def _read_replies(self, proc: subprocess.Popen[str], replies: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            replies.put(line)
        replies.put(None)  # end of file: the process is gone

    def _start(self) -> None:
        if importlib.util.find_spec("math_verify") is None:
            raise ModuleNotFoundError(
                "math_equal needs the math-verify package: pip install 'math-verify[antlr4_9_3]==0.9.0'")
        self._replies = queue.Queue()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_SOURCE, json.dumps([p for p in sys.path if p])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1)
        self._owner_pid = os.getpid()
        threading.Thread(target=self._read_replies, args=(self._proc, self._replies),
                         name="math-verify-reader", daemon=True).start()
        ready = self._get(time.monotonic() + _STARTUP_TIMEOUT_S)
        if not ready or not json.loads(ready).get("ready"):
            why = json.loads(ready).get("why") if ready else "no reply"
            self.close()
            raise RuntimeError(f"the math-verify helper process did not start: {why}")

    def _get(self, deadline: float) -> str | None:
        try:
            return self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._owner_pid == os.getpid():
            proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass

    def ask(self, prediction: str, gold: str, timeout_s: float) -> bool | None:
        with self._lock:
            if self._proc is not None and self._owner_pid != os.getpid():
                self._proc = None  # inherited through fork: the process belongs to our parent
            if self._proc is None or self._proc.poll() is not None:
                self.close()
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps({"prediction": prediction, "gold": gold}) + "\n")
                self._proc.stdin.flush()
            except OSError:
                self.close()
                return None
            line = self._get(time.monotonic() + timeout_s)
            if line is None:  # deadline passed, or the process died: start afresh next time
                self.close()
                return None
            return json.loads(line)["result"]


_WORKER = _MathWorker()
atexit.register(_WORKER.close)


def close_math_worker() -> None:
    """Stop the math-verify helper process (the next ``math_equal`` starts a new one)."""
    with _WORKER._lock:
        _WORKER.close()


def _prepare_for_math_verify(text: str) -> str:
    """What math-verify 0.9.0 misreads, rewritten before it parses (each is a test row):

    - ``\\$`` and a currency ``$`` are dropped (``$9{,}500.`` is otherwise read as math mode
      holding 9), ``-$3`` becomes ``-3``. A ``$`` stays (math mode) when the number after it is
      followed by ``$``, an operator, ``=``, ``^``, ``_``, ``{`` or ``\\``.
    - ``{,}``/``\\,``/thin-space thousands separators are removed (``9\\,500`` otherwise reads 9).
    - ``\\text{7 apples}`` (a number, then words) becomes ``7`` (otherwise the symbol ``7apples``).
    - The Unicode minus becomes ``-``.
    """
    text = text.replace("\\$", "").replace("{,}", ",").replace("\u2212", "-")
    text = _GROUP_SPACE.sub("", text)
    text = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{\s*(-?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z][^{}]*\}", r"\1", text)

    def currency(m: re.Match[str]) -> str:
        math_mode = re.match(r"\s?-?\d[\d,]*(?:\.\d+)?\s*[$+\-*/=^_{\\<>]", text[m.end():])
        return m[0] if math_mode else m["sign"]

    return re.sub(r"(?P<sign>-?)\$(?=\s?-?\d)", currency, text)


def _gold_text(gold: str | int | float) -> str:
    if isinstance(gold, bool):
        raise TypeError("gold must be a str, int or float, not bool")
    if isinstance(gold, int):
        return f"${gold}$"
    if isinstance(gold, float):
        if not math.isfinite(gold):
            raise ValueError(f"gold must be finite, got {gold!r}")
        return f"${int(gold)}$" if gold.is_integer() else f"${gold!r}$"
    if not isinstance(gold, str):
        raise TypeError(f"gold must be a str, int or float, not {type(gold).__name__}")
    if re.search(r"\$|\\\(|\\\[|\\boxed", gold):
        return gold
    return f"\\boxed{{{gold}}}"  # a bare "\frac{1}{2}" or "9{,}500": LaTeX, boxed so it is found


def math_equal(prediction_text: str, gold: str | int | float, *, timeout_s: float = 5.0) -> bool | None:
    """Whether a completion's final answer equals ``gold`` symbolically, by ``math-verify``.

    Args:
        prediction_text: the completion; math-verify finds its answer (last ``\\boxed{}``, then
            "answer is", then the last expression) after ``_prepare_for_math_verify``
            rewrites money and thousands separators.
        gold: the reference, as LaTeX/plain text (``"\\frac{1}{2}"``, ``"0.5"``, ``"$7$"``) or a
            number. A string without ``$``/``\\(``/``\\[``/``\\boxed`` is wrapped in ``\\boxed{}``.
        timeout_s: wall-clock limit for this one comparison, counted from when the request reaches
            the helper process (not while waiting for another thread's request, nor the helper's
            one-off start-up of about a second).

    Returns:
        True / False as math-verify decides (``\\frac{1}{2}`` == 0.5, ``\\boxed{7}`` == 7; a
        completion with no readable answer is False). None when no decision was made: the gold
        answer cannot be parsed, the comparison raised, or it ran past ``timeout_s`` (the helper
        process is then killed and restarted on the next call).

    Raises:
        ModuleNotFoundError: math-verify is not installed.
        RuntimeError: the helper process could not start.
        TypeError / ValueError: ``gold`` is not a str, int or finite float.

    Works from any thread (the timeout is not signal-based here); calls are serialized, one
    helper process per Python process (a forked child starts its own).
    """
    return _WORKER.ask(_prepare_for_math_verify(prediction_text), _gold_text(gold), timeout_s)

