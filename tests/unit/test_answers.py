"""Answer spellings, one table shared by the three graders (``extract_answer``, ``gsm8k_answer``,
``math_equal``), and ``math_equal`` off the main thread with a real timeout."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import pytest

from alignflow.components.data import answers

SAME = object()  # gsm8k_answer reads the same value as extract_answer
SKIP = object()  # no math_equal expectation for this row


@dataclass(frozen=True)
class Spelling:
    text: str
    answer: float | None          # extract_answer
    gsm8k: object = SAME          # gsm8k_answer
    math: object = SKIP           # (gold, expected math_equal) or SKIP
    why: str = ""


SPELLINGS: list[Spelling] = [
    # currency, before or after the sign
    Spelling("The answer is $18.", 18, math=(18, True)),
    Spelling("The answer is \\$7.", 7, math=(7, True)),
    Spelling("The answer is €5.", 5, math=(5, True)),
    Spelling("The answer is £1,250.50", 1250.5, math=("1250.5", True)),
    Spelling("The answer is -$3.", -3, math=(-3, True), why="sign before the currency"),
    Spelling("The answer is $-3.", -3, math=(-3, True), why="sign after the currency"),
    Spelling("The answer is −3", -3, math=(-3, True), why="Unicode minus U+2212"),
    Spelling("The answer is -3.", -3, math=(-3, True)),
    Spelling("The answer is negative 4.", -4, gsm8k=4),
    Spelling("She had 10 and gave away 10-4", 4, why="a hyphen after an operand is subtraction, not a sign"),
    # scientific notation (an exponent needs digits right after the e)
    Spelling("The answer is 3.5e2.", 350, why="scientific notation"),
    Spelling("The answer is 1e-3", 0.001, why="a negative exponent"),
    Spelling("The answer is 7e2x", 7, gsm8k=2, why="an exponent must end the number (gsm8k: the last number)"),
    # thousands separators
    Spelling("so the answer is: 1,250 coins", 1250, math=(1250, True)),
    Spelling("The answer is 1,250,000.", 1250000, math=(1250000, True)),
    Spelling("\\boxed{9{,}500}", 9500, math=(9500, True)),
    Spelling("The answer is $9{,}500.", 9500, math=(9500, True)),
    Spelling("The answer is 9\\,500", 9500, math=(9500, True)),
    Spelling("The answer is 9\u202f500.", 9500, why="narrow no-break space"),
    Spelling("The answer is 1 250.", 1250, gsm8k=250, math=(1250, True),
             why="an ASCII space groups digits only at the start of an explicit answer"),
    Spelling("I have 2 300 ml bottles", 300, why="in running text a space separates two numbers"),
    Spelling("The answer is 2,5", None, gsm8k=5, why="a comma is never a decimal point: ambiguous"),
    # decimals and the sentence-final period
    Spelling("The answer is 12.0", 12, math=(12, True)),
    Spelling("The answer is 2.5", 2.5, math=("2.5", True)),
    Spelling("The answer is .5", 0.5),
    Spelling("The answer is 7.", 7, math=(7, True)),
    Spelling("The answer is 7.5.", 7.5, math=("7.5", True)),
    # LaTeX
    Spelling("\\boxed{42}", 42, math=(42, True)),
    Spelling("The answer is $7$.", 7, math=(7, True)),
    Spelling("The answer is $\\boxed{7}$.", 7, math=(7, True)),
    Spelling("The answer is \\text{7 apples}", 7, math=(7, True)),
    Spelling("\\boxed{\\text{7 apples}}", 7, math=(7, True)),
    Spelling("\\boxed{\\frac{1}{2}}", 0.5, math=("0.5", True)),
    Spelling("\\boxed{0.5}", 0.5, math=("\\frac{1}{2}", True)),
    Spelling("The answer is $\\dfrac{3}{4}$.", 0.75, math=("\\frac{3}{4}", True)),
    Spelling("\\boxed{\\tfrac12}", 0.5, math=(0.5, True)),
    Spelling("The answer is $-\\frac{1}{2}$", -0.5, math=("-0.5", True)),
    Spelling("The answer is 1\\frac{1}{2} cups", 1.5, why="a mixed number"),
    Spelling("\\boxed{2^{10}}", 1024, gsm8k=10, math=(1024, True)),
    Spelling("The answer is $3 \\times 4 = 12$", 12, math=(12, True)),
    # equations: the result of the trailing "= N"
    Spelling("The answer is 3 + 4 = 7.", 7, math=(7, True)),
    Spelling("The answer is 3 + 4.", 7, gsm8k=4, math=(7, True), why="bare arithmetic is evaluated"),
    Spelling("The answer is (2 + 3) * 4.", 20, gsm8k=4),
    Spelling("The answer is x = 5.", 5, math=(5, True)),
    Spelling("The answer is 25% of 80 = 20.", 20, math=(20, True)),
    Spelling("Start with 4.\n4 + 3 = 7.\nThe answer is 7.", 7, math=(7, True)),
    # units
    Spelling("The answer is 7 apples.", 7, math=(7, True)),
    Spelling("The answer is 12 cm.", 12, math=(12, True)),
    Spelling("12 cm", 12),
    # percentages: the sign is dropped, 25% reads 25
    Spelling("The answer is 25%.", 25, math=(25, True)),
    Spelling("The answer is 25\\%.", 25, math=(25, True)),
    # ranges and choices: stated, but no single number
    Spelling("The answer is between 3 and 5.", None, gsm8k=5, math=(3, True),
             why="math-verify reads the first number of a range: documented divergence"),
    Spelling("The answer is 3 to 5.", None, gsm8k=5),
    Spelling("The answer is 3–5.", None, gsm8k=5, why="en dash"),
    Spelling("The answer is 5 or 6.", None, gsm8k=6),
    # several candidates: the last by position, whatever the spelling
    Spelling("The answer is 3. Wait, the answer is 5.", 5, math=(5, True)),
    Spelling("The answer is 5. Wait, the answer is 6.", 6, math=(6, True)),
    Spelling("The answer is 3. Final: \\boxed{4}", 4, math=(4, True)),
    Spelling("\\boxed{4}. Hmm, actually the answer is 3.", 3),
    Spelling("\\boxed{5} No wait: \\boxed{6}", 6, math=(6, True)),
    Spelling("The answer is \\boxed{5}. Wait, the answer is \\boxed{6}.", 6, math=(6, False),
             why="math-verify reads these two boxes as the set {5, 6}: documented divergence"),
    Spelling("#### 5\n#### 6", 6, math=(6, True)),
    Spelling("The answer is not 5, it is 6.", 6, why="a negated statement is no answer; last number"),
    # markdown
    Spelling("**Answer:** 42", 42, math=(42, True)),
    Spelling("The answer is **7**.", 7, math=(7, True)),
    # GSM8K's own format
    Spelling("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
             "clips altogether in April and May.\n#### 72", 72, math=(72, True)),
    Spelling("#### -8", -8, math=(-8, True)),
    Spelling("#### $1,250", 1250),
    Spelling("#### Step 1\nAdd them: 3 + 4 = 7\n#### Step 2\nSo 7 * 2 = 14", 14,
             why="a Markdown heading is not GSM8K's '#### N'"),
    Spelling("I think 12 apples and then 15", 15, math=(15, True)),
    # nothing to read
    Spelling("no digits at all", None, math=(7, False)),
    Spelling("\\boxed{8}", 8, math=(7, False)),
]


def _id(row: Spelling) -> str:
    return row.text[:40]


@pytest.mark.parametrize("row", SPELLINGS, ids=_id)
def test_extract_answer(row: Spelling) -> None:
    assert answers.extract_answer(row.text) == row.answer, row.why


@pytest.mark.parametrize("row", SPELLINGS, ids=_id)
def test_gsm8k_answer(row: Spelling) -> None:
    expected = row.answer if row.gsm8k is SAME else row.gsm8k
    assert answers.gsm8k_answer(row.text) == expected, row.why


MATH_ROWS = [row for row in SPELLINGS if row.math is not SKIP]


@pytest.fixture(scope="module")
def math_verify_installed() -> None:
    pytest.importorskip("math_verify")


@pytest.mark.parametrize("row", MATH_ROWS, ids=_id)
def test_math_equal(row: Spelling, math_verify_installed: None) -> None:
    assert isinstance(row.math, tuple)
    gold, expected = row.math
    assert answers.math_equal(row.text, gold) is expected, row.why


def test_is_correct() -> None:
    assert answers.is_correct("The answer is 10.", 10)
    assert not answers.is_correct("The answer is 11.", 10)
    assert not answers.is_correct("nothing", 10)
    assert answers.is_correct("The answer is $9{,}500.", 9500)
    assert answers.is_correct("\\boxed{\\frac{1}{3}}", 1 / 3)
    assert not answers.is_correct("The answer is between 9 and 11.", 10)  # hedging earns nothing


@pytest.mark.parametrize("text,stated", [
    ("So the answer is 7.", True),
    ("3 + 4 = 7", False),
    ("\\boxed{7}", True),
    ("#### 7", True),
    ("The answer is between 3 and 5.", True),
    ("To check whether the answer is right, compute 3+4=7", False),
    ("The answer is not 5", False),
    ("The answer is", False),
    ("Answer: 12", True),
    ("#### Step 2", False),
])
def test_states_final_answer(text: str, stated: bool) -> None:
    assert answers.states_final_answer(text) is stated


def test_pathological_input_is_fast() -> None:
    start = time.perf_counter()
    for text in ["answer is " + "a " * 20000 + "7", "1," * 20000, "((((" * 5000 + "1", "9^" * 3000 + "9",
                 "\\boxed{" * 5000 + "1", "answer is " * 5000, "#### " * 10000, "answer: 1 = " * 5000,
                 "The answer is " + "(" * 390 + "1", "The answer is " + "-(" * 190 + "1", " " * 50000 + "1"]:
        answers.extract_answer(text)
        answers.gsm8k_answer(text)
    assert time.perf_counter() - start < 5


# --- math_equal from threads, with a real timeout ----------------------------------------------

SLOW = ("$10^{10^{10}}$", "$9^{9^{9^{9}}}$")  # sympy grinds on this for minutes without a timeout


def test_math_verify_itself_refuses_worker_threads(math_verify_installed: None) -> None:
    """Why math_equal runs math-verify in a helper process: its signal.alarm() timeout raises in any
    thread but the main one (Prefect runs tasks in worker threads). If this starts passing through,
    math-verify changed and the helper process may be unnecessary."""
    from math_verify import parse

    errors: list[BaseException] = []

    def run() -> None:
        try:
            parse("\\boxed{7}")
        except ValueError as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors and "signal" in str(errors[0])


def test_math_equal_works_in_a_worker_thread(math_verify_installed: None) -> None:
    results: dict[str, object] = {}

    def run() -> None:
        results["half"] = answers.math_equal("\\boxed{\\frac{1}{2}}", "0.5")
        results["wrong"] = answers.math_equal("\\boxed{7}", 8)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    assert results == {"half": True, "wrong": False}


def test_math_equal_times_out_in_a_worker_thread_and_recovers(math_verify_installed: None) -> None:
    answers.math_equal("\\boxed{1}", 1)  # helper started: its start-up is not part of the timeout
    results: dict[str, object] = {}

    def run() -> None:
        start = time.monotonic()
        results["slow"] = answers.math_equal(*SLOW, timeout_s=1.0)
        results["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert results["slow"] is None
    assert isinstance(results["elapsed"], float) and results["elapsed"] < 10
    assert answers.math_equal("\\boxed{7}", 7) is True  # a fresh helper takes over


def test_math_equal_serves_concurrent_threads(math_verify_installed: None) -> None:
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, answers.math_equal(f"\\boxed{{{n}}}", n)))
               for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {n: True for n in range(6)}


def test_math_equal_leaves_the_callers_sigalrm_alone(math_verify_installed: None) -> None:
    before = signal.getsignal(signal.SIGALRM)
    assert answers.math_equal("\\boxed{7}", "7") is True
    assert signal.getsignal(signal.SIGALRM) is before


@pytest.mark.parametrize("gold", [True, None, float("nan")])
def test_math_equal_rejects_bad_gold(gold: object, math_verify_installed: None) -> None:
    with pytest.raises((TypeError, ValueError)):
        answers.math_equal("\\boxed{1}", gold)  # type: ignore[arg-type]


def test_math_equal_unparseable_gold_is_undecided(math_verify_installed: None) -> None:
    assert answers.math_equal("\\boxed{7}", "") is None
