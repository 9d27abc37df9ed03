"""Seeded writing instructions with machine-checkable constraints: the second verifiable task.

Each problem asks for a short piece of writing (a form, such as a note or a tweet, about a topic)
and attaches 1–3 constraints that a pure function can check, in the spirit of IFEval but with our
own wording, topics and constraint set. The verifier is exact, so a round can measure
instruction following without human labels; ``reference_response`` writes a response that meets
every constraint of a problem, which is what SFT trains on.

Train/eval are split by held-out constraint *combinations*: the sorted tuples of kinds used in
eval never occur in train or sft (every single kind still does), so a policy has to compose
constraints it has seen apart, not recall combinations it has seen together.

Definitions (every checker first normalises line endings to ``\\n`` and strips surrounding
whitespace from the response):

- word: a maximal run of letters or digits, joined through internal apostrophes or hyphens
  (``don't``, ``well-known`` and ``3rd`` are one word each; ``next_step`` is two; punctuation,
  markup such as ``<<``, ``*`` or ``{`` and underscores are not words).
- word match (include/exclude/first word): case-insensitive; a given word matches where it is not
  preceded or followed by a letter or digit, so ``cat`` matches ``Cat,`` and ``cat's`` but not
  ``category``.
- sentence: the text (minus a leading ``<<title>>`` line) is cut after every run of ``.``, ``!``
  or ``?`` that is followed by whitespace or the end of the text; each piece that holds at least
  one word is a sentence, including an unterminated last piece. ``3.5`` is not cut; abbreviations
  such as ``Mr.`` are (no abbreviation list: documented, not guessed).
- bullet: a line that, after optional leading spaces or tabs, starts with ``*`` or ``-`` followed
  by at least one space or tab and then something that is not whitespace (``*item`` and ``**bold``
  are not bullets; ``1.`` items are not bullets).
- paragraph: the text is cut at blank lines (a line that is empty or holds only spaces/tabs; several
  in a row are one break); every non-empty piece is a paragraph, except a first piece that is only a
  ``<<title>>`` line.
- title line: a line of the form ``<<...>>`` (nothing else on the line, no ``<``/``>`` inside, at
  least one letter or digit inside).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

# --------------------------------------------------------------------------------------------
# Text primitives
# --------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019\-][^\W_]+)*")
_SENTENCE_CUT_RE = re.compile(r"[.!?]+(?=\s|$)")
_BULLET_RE = re.compile(r"^[ \t]*[*\-][ \t]+\S")
_TITLE_LINE_RE = re.compile(r"<<[^<>\n]*[^\W_][^<>\n]*>>")
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n")
_FENCE_RE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)\s*```", re.DOTALL | re.IGNORECASE)
_ALNUM = r"[^\W_]"


def normalize(text: str) -> str:
    """Unify line endings to ``\\n`` and strip surrounding whitespace: every checker's first step."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def words(text: str) -> list[str]:
    """The words of ``text`` by the module's definition (see the module docstring)."""
    return _WORD_RE.findall(text)


def count_words(text: str) -> int:
    """How many words ``text`` holds."""
    return len(words(text))


def _strip_title_line(text: str) -> str:
    """``text`` (normalised) without its first line when that line is a ``<<title>>`` line."""
    first, _, rest = text.partition("\n")
    if _TITLE_LINE_RE.fullmatch(first.strip()):
        return rest.strip()
    return text


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (terminators kept, stripped) by the module's definition; a leading
    title line is ignored."""
    body = _strip_title_line(normalize(text))
    pieces, start = [], 0
    for cut in _SENTENCE_CUT_RE.finditer(body):
        pieces.append(body[start:cut.end()])
        start = cut.end()
    pieces.append(body[start:])
    return [piece.strip() for piece in pieces if _WORD_RE.search(piece)]


def split_paragraphs(text: str) -> list[str]:
    """The paragraphs of ``text``: pieces between blank lines, a title-only first piece ignored."""
    pieces = [p.strip() for p in _PARAGRAPH_BREAK_RE.split(normalize(text))]
    pieces = [p for p in pieces if p]
    if pieces and _TITLE_LINE_RE.fullmatch(pieces[0]):
        pieces = pieces[1:]
    return pieces


def _contains_word(text: str, word: str) -> bool:
    pattern = rf"(?<!{_ALNUM}){re.escape(word)}(?!{_ALNUM})"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


# --------------------------------------------------------------------------------------------
# Checkers: pure functions check_<kind>(text, **params) -> bool
# --------------------------------------------------------------------------------------------


def check_word_count(text: str, min_words: int, max_words: int) -> bool:
    """The response has between ``min_words`` and ``max_words`` words, both inclusive."""
    return min_words <= count_words(normalize(text)) <= max_words


def check_include_words(text: str, words: Sequence[str]) -> bool:
    """Every given word occurs as a whole word, case-insensitively."""
    text = normalize(text)
    return all(_contains_word(text, w) for w in words)


def check_exclude_words(text: str, words: Sequence[str]) -> bool:
    """None of the given words occurs as a whole word, case-insensitively."""
    text = normalize(text)
    return not any(_contains_word(text, w) for w in words)


def check_lowercase(text: str) -> bool:
    """At least one lowercase letter and no uppercase letter anywhere."""
    text = normalize(text)
    return any(c.islower() for c in text) and not any(c.isupper() for c in text)


def check_uppercase(text: str) -> bool:
    """At least one uppercase letter and no lowercase letter anywhere."""
    text = normalize(text)
    return any(c.isupper() for c in text) and not any(c.islower() for c in text)


def check_bullet_count(text: str, n: int) -> bool:
    """Exactly ``n`` bullet lines (``* `` or ``- `` after optional indentation); other lines allowed."""
    return sum(1 for line in normalize(text).split("\n") if _BULLET_RE.match(line)) == n


def check_sentence_count(text: str, n: int) -> bool:
    """Exactly ``n`` sentences (a leading ``<<title>>`` line is not a sentence)."""
    return len(split_sentences(text)) == n


def check_first_word(text: str, word: str) -> bool:
    """The first word of the response equals ``word``, case-insensitively (leading markup skipped)."""
    found = _WORD_RE.search(normalize(text))
    return found is not None and found.group(0).casefold() == word.casefold()


def check_end_phrase(text: str, phrase: str) -> bool:
    """The response ends with ``phrase``: case-insensitive, runs of whitespace compared as one space,
    nothing after it but whitespace, and no letter or digit directly before it."""
    body = " ".join(normalize(text).split()).casefold()
    tail = " ".join(phrase.split()).casefold()
    if not tail or not body.endswith(tail):
        return False
    before = body[: len(body) - len(tail)]
    return not before or not re.match(_ALNUM, before[-1])


def check_no_commas(text: str) -> bool:
    """No comma: neither ``,`` nor the full-width ``，``."""
    return "," not in text and "\uff0c" not in text


def check_json_keys(text: str, keys: Sequence[str]) -> bool:
    """The whole response is one JSON object holding every given key (exact, case-sensitive; extra
    keys allowed), either bare or as the only thing inside a ``` or ```json fence."""
    body = normalize(text)
    fenced = _FENCE_RE.fullmatch(body)
    if fenced:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and all(k in value for k in keys)


def check_title(text: str) -> bool:
    """The first line of the response is a title line: ``<<...>>`` alone on its line."""
    first = normalize(text).split("\n", 1)[0].strip()
    return _TITLE_LINE_RE.fullmatch(first) is not None


def check_paragraph_count(text: str, n: int) -> bool:
    """Exactly ``n`` paragraphs separated by blank lines (a title-only first piece is not counted)."""
    return len(split_paragraphs(text)) == n


def check_end_question(text: str) -> bool:
    """The last non-whitespace character is ``?``."""
    return normalize(text).endswith("?")


CHECKERS: dict[str, Callable[..., bool]] = {
    "word_count": check_word_count,
    "include_words": check_include_words,
    "exclude_words": check_exclude_words,
    "lowercase": check_lowercase,
    "uppercase": check_uppercase,
    "bullet_count": check_bullet_count,
    "sentence_count": check_sentence_count,
    "first_word": check_first_word,
    "end_phrase": check_end_phrase,
    "no_commas": check_no_commas,
    "json_keys": check_json_keys,
    "title": check_title,
    "paragraph_count": check_paragraph_count,
    "end_question": check_end_question,
}
KINDS: tuple[str, ...] = tuple(CHECKERS)

# --------------------------------------------------------------------------------------------
# Constraint types
# --------------------------------------------------------------------------------------------


def _quoted_list(items: Sequence[str], last: str = "and") -> str:
    quoted = [f'"{w}"' for w in items]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + f" {last} " + quoted[-1]


@dataclass(frozen=True)
class Constraint:
    """Base of every constraint: ``kind`` names its checker, the dataclass fields are its params."""

    kind: ClassVar[str] = ""

    def params(self) -> dict[str, Any]:
        """The checker's keyword arguments, JSON-serializable (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., **params}``: the row form of the constraint."""
        return {"kind": self.kind, **self.params()}

    def describe(self) -> str:
        """The instruction sentence shown to the model."""
        raise NotImplementedError

    def check(self, text: str) -> bool:
        """Whether ``text`` meets this constraint."""
        return CHECKERS[self.kind](text, **self.params())


def _tuple_field(obj: Constraint, name: str) -> None:
    raw = getattr(obj, name)
    if isinstance(raw, str):  # tuple("soil") would be ('s', 'o', 'i', 'l')
        raise ValueError(f"{type(obj).__name__}.{name} must be a list of words, got the string {raw!r} (write "
                         f"[{', '.join(repr(w) for w in raw.split()) or repr(raw)}])")
    if not isinstance(raw, (list, tuple)):  # a dict would pass as its keys
        raise ValueError(f"{type(obj).__name__}.{name} must be a list of words, got {type(raw).__name__} {raw!r}")
    value = tuple(raw)
    if not value or not all(isinstance(w, str) and _WORD_RE.fullmatch(w) for w in value):
        raise ValueError(f"{type(obj).__name__}.{name} must be a non-empty list of single words, got {value!r}")
    object.__setattr__(obj, name, value)


def _positive(obj: Constraint, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{type(obj).__name__}.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class WordCount(Constraint):
    """Between ``min_words`` and ``max_words`` words, inclusive."""

    min_words: int
    max_words: int
    kind: ClassVar[str] = "word_count"

    def __post_init__(self) -> None:
        _positive(self, "min_words")
        _positive(self, "max_words")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words {self.min_words} > max_words {self.max_words}")

    def describe(self) -> str:
        return f"Your response must be between {self.min_words} and {self.max_words} words long."


@dataclass(frozen=True)
class IncludeWords(Constraint):
    """Every word in ``words`` appears."""

    words: tuple[str, ...]
    kind: ClassVar[str] = "include_words"

    def __post_init__(self) -> None:
        _tuple_field(self, "words")

    def describe(self) -> str:
        noun = "word" if len(self.words) == 1 else "words"
        return f"Include the {noun} {_quoted_list(self.words)} in your response."


@dataclass(frozen=True)
class ExcludeWords(Constraint):
    """No word in ``words`` appears."""

    words: tuple[str, ...]
    kind: ClassVar[str] = "exclude_words"

    def __post_init__(self) -> None:
        _tuple_field(self, "words")

    def describe(self) -> str:
        noun = "word" if len(self.words) == 1 else "words"
        return f"Do not use the {noun} {_quoted_list(self.words, 'or')} anywhere in your response."


@dataclass(frozen=True)
class Lowercase(Constraint):
    """No capital letters."""

    kind: ClassVar[str] = "lowercase"

    def describe(self) -> str:
        return "Write your entire response in lowercase letters; no capital letters are allowed."


@dataclass(frozen=True)
class Uppercase(Constraint):
    """No lowercase letters."""

    kind: ClassVar[str] = "uppercase"

    def describe(self) -> str:
        return "Write your entire response in capital letters; no lowercase letters are allowed."


@dataclass(frozen=True)
class BulletCount(Constraint):
    """Exactly ``n`` bullet lines."""

    n: int
    kind: ClassVar[str] = "bullet_count"

    def __post_init__(self) -> None:
        _positive(self, "n")

    def describe(self) -> str:
        noun = "bullet point" if self.n == 1 else "bullet points"
        return f'Include exactly {self.n} {noun}, each on its own line starting with "* " or "- ".'


@dataclass(frozen=True)
class SentenceCount(Constraint):
    """Exactly ``n`` sentences."""

    n: int
    kind: ClassVar[str] = "sentence_count"

    def __post_init__(self) -> None:
        _positive(self, "n")

    def describe(self) -> str:
        noun = "sentence" if self.n == 1 else "sentences"
        return f"Your response must contain exactly {self.n} {noun}."


@dataclass(frozen=True)
class FirstWord(Constraint):
    """The response's first word is ``word``."""

    word: str
    kind: ClassVar[str] = "first_word"

    def __post_init__(self) -> None:
        if not _WORD_RE.fullmatch(self.word):
            raise ValueError(f"FirstWord.word must be a single word, got {self.word!r}")

    def describe(self) -> str:
        return f'The first word of your response must be "{self.word}".'


@dataclass(frozen=True)
class EndPhrase(Constraint):
    """The response ends with ``phrase``."""

    phrase: str
    kind: ClassVar[str] = "end_phrase"

    def __post_init__(self) -> None:
        if not _WORD_RE.search(self.phrase) or self.phrase != self.phrase.strip():
            raise ValueError(f"EndPhrase.phrase must hold a word and no surrounding space, got {self.phrase!r}")

    def describe(self) -> str:
        return f'End your response with the exact phrase "{self.phrase}" and nothing after it.'


@dataclass(frozen=True)
class NoCommas(Constraint):
    """No commas at all."""

    kind: ClassVar[str] = "no_commas"

    def describe(self) -> str:
        return "Do not use any commas in your response."


@dataclass(frozen=True)
class JsonKeys(Constraint):
    """The whole response is a JSON object with every key in ``keys``."""

    keys: tuple[str, ...]
    kind: ClassVar[str] = "json_keys"

    def __post_init__(self) -> None:
        _tuple_field(self, "keys")

    def describe(self) -> str:
        noun = "key" if len(self.keys) == 1 else "keys"
        return (
            f"Format your entire response as a single JSON object with the {noun} {_quoted_list(self.keys)}; "
            "you may wrap it in a ```json code block, but put no other text around it."
        )


@dataclass(frozen=True)
class Title(Constraint):
    """A ``<<title>>`` first line."""

    kind: ClassVar[str] = "title"

    def describe(self) -> str:
        return (
            "Start your response with a title wrapped in double angular brackets on its own line, "
            "such as <<A Day Outside>>."
        )


@dataclass(frozen=True)
class ParagraphCount(Constraint):
    """Exactly ``n`` paragraphs separated by blank lines."""

    n: int
    kind: ClassVar[str] = "paragraph_count"

    def __post_init__(self) -> None:
        _positive(self, "n")

    def describe(self) -> str:
        noun = "paragraph" if self.n == 1 else "paragraphs"
        return f"Your response must have exactly {self.n} {noun}, separated from each other by a blank line."


@dataclass(frozen=True)
class EndQuestion(Constraint):
    """The last character is a question mark."""

    kind: ClassVar[str] = "end_question"

    def describe(self) -> str:
        return "Finish your response with a question; the very last character must be a question mark."


CONSTRAINT_TYPES: dict[str, type[Constraint]] = {
    cls.kind: cls
    for cls in (
        WordCount, IncludeWords, ExcludeWords, Lowercase, Uppercase, BulletCount, SentenceCount,
        FirstWord, EndPhrase, NoCommas, JsonKeys, Title, ParagraphCount, EndQuestion,
    )
}


def constraint_from_dict(row: Mapping[str, Any]) -> Constraint:
    """The constraint a ``{"kind": ..., **params}`` dict describes (lists become tuples).

    Raises:
        ValueError: no or an unknown ``kind`` (the message lists the known ones), params that kind does
            not take or lacks, or a param out of range.
    """
    params = {k: v for k, v in row.items() if k != "kind"}
    kind = row.get("kind")
    cls = CONSTRAINT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown constraint kind {kind!r} in {dict(row)!r} (known kinds: "
                         f"{', '.join(sorted(CONSTRAINT_TYPES))})")
    wanted = [f.name for f in fields(cls)]
    if set(params) != set(wanted):  # a param the kind does not take, or one it needs
        raise ValueError(f"constraint {kind!r} takes {', '.join(wanted) or 'no params'}, got "
                         f"{', '.join(sorted(params)) or 'none'}")
    try:
        return cls(**params)
    except TypeError as exc:  # a param of the wrong type, met by the checks in __post_init__
        raise ValueError(f"constraint {kind!r}: a param of the wrong type in {dict(row)!r} ({exc})") from None


def parse_constraints(value: Any) -> list[Constraint]:
    """A row's ``constraints`` column (a list of ``{"kind": ..., **params}`` objects) as constraints; a key
    whose value is None counts as absent (a JSON file read through ``datasets`` gives every object every
    key seen in the column).

    Raises:
        ValueError: not a list of objects, or one that ``constraint_from_dict`` refuses.
    """
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise ValueError(f"expected a list of {{'kind': ..., **params}} objects, got {type(value).__name__}")
    return [constraint_from_dict({k: v for k, v in c.items() if v is not None}) for c in value]


def _as_constraint(item: Constraint | Mapping[str, Any]) -> Constraint:
    return item if isinstance(item, Constraint) else constraint_from_dict(item)


# --------------------------------------------------------------------------------------------
# Conflicts
# --------------------------------------------------------------------------------------------

CONFLICTS: dict[frozenset[str], str] = {
    frozenset(pair): reason
    for pair, reason in (
        (("lowercase", "uppercase"), "contradictory: a letter cannot be both"),
        (("json_keys", "no_commas"), "a JSON object with two or more members needs commas between them"),
        (("json_keys", "uppercase"), "the required keys are lowercase and JSON keys are case-sensitive"),
        (("json_keys", "bullet_count"), "the whole response is JSON: there is no place for bullet lines"),
        (("json_keys", "sentence_count"), "sentences are not defined over a JSON object"),
        (("json_keys", "paragraph_count"), "paragraphs are not defined over a JSON object"),
        (("json_keys", "title"), "nothing may stand outside the JSON object, a title line included"),
        (("json_keys", "first_word"), "a JSON response starts with { or a fence, not a chosen word"),
        (("json_keys", "end_phrase"), "a JSON response ends with } or a fence, not a phrase"),
        (("json_keys", "end_question"), "a JSON response ends with } or a fence, not a question mark"),
        (("bullet_count", "sentence_count"), "ambiguous: whether each bullet is a sentence"),
        (("bullet_count", "paragraph_count"), "ambiguous: whether a list, or each bullet, is a paragraph"),
        (("sentence_count", "paragraph_count"),
         "coupled counts (needs sentences >= paragraphs); hard to read as one instruction"),
        (("end_phrase", "end_question"), "both fix the ending, and every closing phrase ends with a period"),
        (("first_word", "title"), "the title line comes first, so the first word would be the title's"),
    )
}


def conflicting_pairs(kinds: Iterable[str]) -> list[tuple[str, str]]:
    """The sorted pairs of ``kinds`` that the conflict table forbids together."""
    unique = sorted(set(kinds))
    return [(a, b) for a, b in itertools.combinations(unique, 2) if frozenset((a, b)) in CONFLICTS]


def is_compatible(kinds: Iterable[str]) -> bool:
    """Whether the kinds are distinct, known and free of conflicts."""
    kinds = list(kinds)
    return (
        len(set(kinds)) == len(kinds)
        and all(k in CHECKERS for k in kinds)
        and not conflicting_pairs(kinds)
    )


def combination_key(constraints: Iterable[Constraint | Mapping[str, Any]]) -> tuple[str, ...]:
    """The sorted tuple of kinds: what the train/eval split holds out."""
    return tuple(sorted(c.kind if isinstance(c, Constraint) else c["kind"] for c in constraints))


def all_combinations(max_size: int = 3) -> list[tuple[str, ...]]:
    """Every compatible sorted combination of 1..``max_size`` distinct kinds, in a fixed order."""
    return [
        combo
        for size in range(1, max_size + 1)
        for combo in itertools.combinations(sorted(KINDS), size)
        if is_compatible(combo)
    ]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def score_constraints(text: str, constraints: Sequence[Constraint | Mapping[str, Any]]) -> dict[str, Any]:
    """Check ``text`` against every constraint.

    Returns ``{"fraction": met / total, "all_met": bool, "per_kind": {kind: bool}}``. With no
    constraints the fraction is 1.0 (vacuously met). A kind listed twice counts twice in the
    fraction and is ``True`` in ``per_kind`` only when both are met.
    """
    per_kind: dict[str, bool] = {}
    met = 0
    for item in constraints:
        constraint = _as_constraint(item)
        ok = bool(constraint.check(text))
        met += ok
        per_kind[constraint.kind] = per_kind.get(constraint.kind, True) and ok
    total = len(constraints)
    return {"fraction": met / total if total else 1.0, "all_met": met == total, "per_kind": per_kind}


# --------------------------------------------------------------------------------------------
# Content: topics, forms and phrase pools (no commas, no excluded-pool words; tested)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    """What the writing is about: a noun phrase, a title, keywords to require and stock sentences."""

    name: str
    phrase: str
    title: str
    keywords: tuple[str, ...]
    points: tuple[str, ...]


@dataclass(frozen=True)
class Form:
    """What kind of writing: the instruction that opens the prompt and a few opening sentences."""

    name: str
    instruction: str  # "Write a short note to a neighbor about {topic}."
    openers: tuple[str, ...]


TOPICS: tuple[Topic, ...] = (
    Topic("community-garden", "a community garden", "The Community Garden",
          ("soil", "compost", "seedlings", "volunteers", "harvest"),
          ("Volunteers meet every Saturday morning.", "Fresh compost arrives early in the spring.",
           "Each family can claim one raised bed.", "Part of the harvest goes to the food bank.",
           "Tools are kept in the shed by the gate.")),
    Topic("rainy-weekend", "a rainy weekend at home", "A Rainy Weekend",
          ("umbrella", "puzzle", "soup", "blanket", "thunder"),
          ("A pot of soup can simmer all afternoon.", "Board games fill the slow hours.",
           "The sound of rain makes reading easy.", "Wet boots belong by the back door.",
           "A short walk between showers clears the head.")),
    Topic("first-marathon", "training for a first marathon", "Training for a Marathon",
          ("mileage", "stretching", "hydration", "sneakers", "pace"),
          ("Long runs happen once a week.", "Rest days matter as much as training days.",
           "Water stops should be planned in advance.", "New shoes need a few weeks of breaking in.",
           "Most plans build up over sixteen weeks.")),
    Topic("home-coffee", "brewing coffee at home", "Coffee at Home",
          ("beans", "grinder", "kettle", "roast", "aroma"),
          ("Freshly ground beans taste brighter.", "Water slightly below boiling works well.",
           "A simple scale keeps each cup consistent.", "Light roasts often taste fruity.",
           "Clean equipment makes a clear difference.")),
    Topic("bike-lanes", "new bike lanes in the city", "Bike Lanes Downtown",
          ("cyclists", "helmets", "traffic", "commute", "safety"),
          ("Painted lanes now run along Main Street.", "Riders should signal before every turn.",
           "Parking rules near the lanes have changed.", "Morning commutes may get a bit quieter.",
           "Lights are required after dark.")),
    Topic("map-exhibit", "a museum exhibit about old maps", "Old Maps on Display",
          ("atlas", "explorers", "parchment", "coastline", "gallery"),
          ("The oldest map in the show is six centuries old.", "Visitors can zoom in on digital copies.",
           "Guided tours start every hour.", "Some coastlines were drawn from pure guesswork.",
           "The gallery stays open late on Fridays.")),
    Topic("remote-work", "working from home", "Notes on Remote Work",
          ("desk", "schedule", "meetings", "focus", "headphones"),
          ("A fixed start time helps the day begin.", "Short breaks keep energy steady.",
           "Video calls work better from a quiet room.", "A separate desk marks the end of the workday.",
           "Lunch away from the screen helps.")),
    Topic("camping-trip", "a weekend camping trip", "Camping by the Lake",
          ("tent", "campfire", "lantern", "trail", "stars"),
          ("The tent goes up before sunset.", "Dry wood is stored under a tarp.",
           "Trail maps fit easily in a pocket.", "Nights by the lake get surprisingly cold.",
           "Everyone packs out what they pack in.")),
    Topic("bake-sale", "a school bake sale", "The School Bake Sale",
          ("cookies", "muffins", "donations", "tables", "frosting"),
          ("Tables open at noon in the main hall.", "Every treat costs one or two dollars.",
           "Labels list any nuts or dairy.", "Money raised pays for new library books.",
           "Parents can drop off trays in the morning.")),
    Topic("houseplants", "caring for houseplants", "Caring for Houseplants",
          ("sunlight", "watering", "pots", "leaves", "humidity"),
          ("Most plants prefer bright indirect light.", "Too much water harms the roots.",
           "Yellow leaves often signal a problem.", "Pots need holes for drainage.",
           "Dust on leaves blocks sunlight.")),
    Topic("cleanup-day", "a neighborhood cleanup day", "Neighborhood Cleanup Day",
          ("gloves", "litter", "bags", "park", "recycling"),
          ("We meet at the park entrance at nine.", "Gloves and bags will be provided.",
           "Recyclables go in the blue bins.", "Kids are welcome with an adult.",
           "Snacks are served when the work is done.")),
    Topic("learning-guitar", "learning to play the guitar", "Learning the Guitar",
          ("chords", "strings", "practice", "rhythm", "calluses"),
          ("Ten minutes of daily practice beats one long session.", "Simple chords come first.",
           "Sore fingertips fade after a few weeks.", "A metronome builds steady rhythm.",
           "Tuning before each session saves frustration.")),
    Topic("summer-reading", "the library summer reading program", "The Summer Reading Program",
          ("books", "librarians", "stickers", "storytime", "bookmarks"),
          ("Children log the minutes they read.", "Prizes are handed out every Friday.",
           "Librarians recommend titles for every age.", "Storytime runs on Tuesday mornings.",
           "Adults can join a reading challenge too.")),
    Topic("electric-car", "switching to an electric car", "Driving Electric",
          ("charging", "battery", "range", "charger", "savings"),
          ("Charging overnight covers most daily trips.", "Range drops a little in cold weather.",
           "Fewer moving parts means simpler maintenance.", "Public chargers are easy to find on most highways.",
           "Fuel savings add up over a year.")),
)

FORMS: tuple[Form, ...] = (
    Form("note", "Write a short note to a neighbor about {topic}.",
         ("Here is a quick note about {topic}.", "I wanted to share a few words about {topic}.")),
    Form("list", "Write a list of tips about {topic}.",
         ("Here are some tips about {topic}.", "These tips cover {topic}.")),
    Form("reply", "Write a reply to a friend who asked you about {topic}.",
         ("Thanks for asking about {topic}.", "I am glad you asked about {topic}.")),
    Form("product-blurb", "Write a short product blurb for a product connected to {topic}.",
         ("This product was made with {topic} in mind.", "Meet a simple helper for {topic}.")),
    Form("email", "Write a brief email to a coworker about {topic}.",
         ("I am writing with an update on {topic}.", "I wanted to follow up about {topic}.")),
    Form("story-opening", "Write the opening of a short story that involves {topic}.",
         ("It all started with {topic}.", "Nobody expected {topic} to change everything.")),
    Form("tweet", "Write a tweet about {topic}.",
         ("A few words on {topic}.", "Thinking about {topic} today.")),
    Form("review", "Write a short review of {topic}.",
         ("Here is my honest take on {topic}.", "I spent some time with {topic} recently.")),
    Form("journal-entry", "Write a journal entry about {topic}.",
         ("Today was all about {topic}.", "I spent the evening thinking about {topic}.")),
    Form("announcement", "Write an announcement about {topic}.",
         ("We are pleased to share news about {topic}.", "Here is an update on {topic}.")),
)

TOPICS_BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}
FORMS_BY_NAME: dict[str, Form] = {f.name: f for f in FORMS}

# Words the model is asked to avoid: filler a writer reaches for. No template text uses them.
EXCLUDE_POOL: tuple[str, ...] = (
    "very", "really", "just", "amazing", "basically", "actually", "stuff", "thing", "things",
    "nice", "awesome", "literally", "totally", "great", "good", "best", "love", "perfect",
)
# First word -> the opening sentence the reference response uses (starts with that word).
FIRST_WORD_OPENERS: dict[str, str] = {
    "Today": "Today I want to talk about {topic}.",
    "Honestly": "Honestly {topic} deserves more attention.",
    "Imagine": "Imagine what {topic} could look like.",
    "Listen": "Listen closely because {topic} matters.",
    "Yesterday": "Yesterday I kept thinking about {topic}.",
    "Remember": "Remember that {topic} takes some planning.",
    "Picture": "Picture {topic} on a calm afternoon.",
    "Welcome": "Welcome to a short piece about {topic}.",
    "Sometimes": "Sometimes {topic} surprises everyone.",
    "Finally": "Finally there is news about {topic}.",
}
END_PHRASES: tuple[str, ...] = (
    "Talk soon.", "Thanks for reading.", "Let me know what you think.", "That is all for now.",
    "See you there.", "More updates soon.", "Have a lovely day.",
)
CLOSING_QUESTIONS: tuple[str, ...] = (
    "What do you think?", "Would you give it a try?", "What would you add?", "Are you in?",
    "How does that sound?", "Who wants to join?",
)
JSON_KEY_POOL: tuple[str, ...] = ("title", "summary", "audience", "tone", "details", "highlight", "mood", "outcome")
INCLUDE_SENTENCES: tuple[str, ...] = (
    "Keep {words} in mind.", "A big part of this is {words}.", "It all comes down to {words}.",
)
INCLUDE_CLAUSE = "with {words} in mind"
FILLER_SENTENCES: tuple[str, ...] = (
    "There is always more to learn.", "Small steps add up over time.", "Plans can change so stay flexible.",
    "A little preparation goes a long way.", "Everyone brings something different to the table.",
    "It helps to start small and build from there.", "The details will become clearer soon.",
    "Patience pays off in the end.",
)
FILLER_CLAUSES: tuple[str, ...] = (
    "and that makes the plan easier to follow", "because small details add up over time",
    "so everyone can join in without worry", "which keeps the whole week on track",
    "and it rewards a little patience", "for anyone who wants to try",
)

# Parameter ranges the generator draws from.
BULLET_RANGE = (2, 5)
SENTENCE_RANGE = (2, 5)
PARAGRAPH_RANGE = (2, 4)
INCLUDE_RANGE = (1, 2)
EXCLUDE_RANGE = (1, 3)
JSON_KEYS_RANGE = (2, 3)
WORD_RANGE_WIDTHS = (20, 30, 40)


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConstraintProblem:
    """One instruction: the prompt shown to the model and the constraints its response must meet."""

    id: str
    prompt: str
    constraints: list[dict[str, Any]]
    topic: str
    form: str

    @property
    def kinds(self) -> tuple[str, ...]:
        """The combination key: sorted kinds of this problem's constraints."""
        return combination_key(self.constraints)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of the row."""
        return {"id": self.id, "prompt": self.prompt, "constraints": [dict(c) for c in self.constraints],
                "topic": self.topic, "form": self.form}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> ConstraintProblem:
        """Inverse of ``to_dict``."""
        return cls(id=row["id"], prompt=row["prompt"], constraints=[dict(c) for c in row["constraints"]],
                   topic=row["topic"], form=row["form"])

    def score(self, text: str) -> dict[str, Any]:
        """``score_constraints(text, self.constraints)``."""
        return score_constraints(text, self.constraints)


# --------------------------------------------------------------------------------------------
# Reference responses
# --------------------------------------------------------------------------------------------


@dataclass
class _Unit:
    """A sentence, bullet or JSON value: ``core`` + padding clauses + ``end`` (its terminator)."""

    core: str
    end: str = "."
    role: str = "body"  # "body" (padded first), "opener" (padded only when no body), "fixed" (never)
    clauses: list[str] = field(default_factory=list)

    @classmethod
    def sentence(cls, text: str, role: str = "body") -> _Unit:
        return cls(text[:-1], text[-1], role) if text[-1] in ".!?" else cls(text, "", role)

    def render(self) -> str:
        return " ".join([self.core, *self.clauses]) + self.end


@dataclass
class _Draft:
    """A response under construction: an optional title, then blocks separated by blank lines.

    A block is a list of (style, unit): consecutive "sentence" units share a line; "line" and
    "bullet" units stand on their own lines. A JSON draft has ``json_units`` instead of blocks.
    """

    title: str | None = None
    blocks: list[list[tuple[str, _Unit]]] = field(default_factory=list)
    json_units: dict[str, _Unit] | None = None
    fence: bool = False
    grow_by_sentences: bool = False  # padding may add whole sentences (no sentence count fixed, not JSON)
    spare: list[str] = field(default_factory=list)  # sentences padding adds, in order

    def units(self) -> list[_Unit]:
        if self.json_units is not None:
            return list(self.json_units.values())
        return [u for block in self.blocks for _, u in block]

    def render(self) -> str:
        if self.json_units is not None:
            body = json.dumps({k: u.render() for k, u in self.json_units.items()}, indent=2)
            return f"```json\n{body}\n```" if self.fence else body
        parts = [f"<<{self.title}>>"] if self.title else []
        for block in self.blocks:
            lines: list[str] = []
            sentences: list[str] = []
            for style, unit in block:
                if style == "sentence":
                    sentences.append(unit.render())
                    continue
                if sentences:
                    lines.append(" ".join(sentences))
                    sentences = []
                lines.append(("* " if style == "bullet" else "") + unit.render())
            if sentences:
                lines.append(" ".join(sentences))
            parts.append("\n".join(lines))
        return "\n\n".join(parts)


def _join_words(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else " ".join(items[:-1]) + " and " + items[-1]


def _reference_rng(topic: Topic, form: Form, constraints: Sequence[Constraint]) -> random.Random:
    """Seeded by everything but the word range, so adding a range only ever adds padding."""
    key = json.dumps([topic.name, form.name, sorted(
        (c.to_dict() for c in constraints if c.kind != "word_count"), key=lambda d: json.dumps(d, sort_keys=True)
    )], sort_keys=True)
    return random.Random(int(hashlib.sha1(key.encode()).hexdigest()[:12], 16))


def _draft(topic: Topic, form: Form, by_kind: Mapping[str, Any], rng: random.Random) -> _Draft:
    """The unpadded reference: satisfies every constraint in ``by_kind`` except a word range."""
    points = list(topic.points)
    rng.shuffle(points)
    body = [_Unit.sentence(p) for p in points]
    include = by_kind.get("include_words")
    include_words = _join_words(include.words) if include else None

    if "json_keys" in by_kind:
        keys = by_kind["json_keys"].keys
        values: dict[str, _Unit] = {}
        for key in keys:
            if key == "title":
                values[key] = _Unit(topic.title, "", "fixed")
            elif key == "summary":
                values[key] = _Unit.sentence(rng.choice(form.openers).format(topic=topic.phrase))
            elif key == "audience":
                values[key] = _Unit.sentence(f"Anyone curious about {topic.phrase}.")
            elif key == "tone":
                values[key] = _Unit.sentence("Warm and practical.")
            elif key == "mood":
                values[key] = _Unit.sentence("Calm and hopeful.")
            else:
                values[key] = body.pop(0) if body else _Unit.sentence(rng.choice(FILLER_SENTENCES))
        if include_words:
            target = next((u for u in values.values() if u.role != "fixed"), values[keys[0]])
            target.clauses.append(INCLUDE_CLAUSE.format(words=include_words))
        return _Draft(json_units=values, fence=rng.random() < 0.5)

    first = by_kind.get("first_word")
    opener_text = (
        FIRST_WORD_OPENERS[first.word] if first else rng.choice(form.openers)
    ).format(topic=topic.phrase)
    opener = _Unit.sentence(opener_text, "opener")
    include_unit = _Unit.sentence(rng.choice(INCLUDE_SENTENCES).format(words=include_words)) if include_words else None
    closing: _Unit | None = None
    if "end_phrase" in by_kind:
        closing = _Unit(by_kind["end_phrase"].phrase, "", "fixed")
    elif "end_question" in by_kind:
        closing = _Unit.sentence(rng.choice(CLOSING_QUESTIONS), "fixed")
    draft = _Draft(title=topic.title if "title" in by_kind else None)

    def fill(k: int) -> list[_Unit]:
        extra = [_Unit.sentence(s) for s in FILLER_SENTENCES]
        rng.shuffle(extra)
        pool = body + extra
        # past the pool, repeat its sentences as fresh units (padding must not lengthen two at once)
        return [pool[i] if i < len(pool) else _Unit.sentence(pool[i % len(pool)].render()) for i in range(k)]

    if "bullet_count" in by_kind:
        block: list[tuple[str, _Unit]] = [("sentence", opener)]
        if include_unit:
            block.append(("sentence", include_unit))
        block += [("bullet", u) for u in fill(by_kind["bullet_count"].n)]
        if closing:
            block.append(("line", closing))
        draft.blocks = [block]
        draft.grow_by_sentences = True
    elif "paragraph_count" in by_kind:
        n = by_kind["paragraph_count"].n
        paragraphs: list[list[_Unit]] = [[opener] + ([include_unit] if include_unit else [])]
        paragraphs += [[u] for u in fill(n - 1)]
        if closing:
            paragraphs[-1].append(closing)
        draft.blocks = [[("sentence", u) for u in p] for p in paragraphs]
        draft.grow_by_sentences = True
    elif "sentence_count" in by_kind:
        n = by_kind["sentence_count"].n
        fixed = 1 + (include_unit is not None) + (closing is not None)
        if include_unit is not None and fixed > n:
            opener.clauses.append(INCLUDE_CLAUSE.format(words=include_words))
            include_unit, fixed = None, fixed - 1
        units = [opener] + ([include_unit] if include_unit else []) + fill(max(n - fixed, 0))
        units += [closing] if closing else []
        draft.blocks = [[("sentence", u) for u in units]]
    else:
        units = [opener] + ([include_unit] if include_unit else []) + fill(rng.randint(1, 2))
        units += [closing] if closing else []
        draft.blocks = [[("sentence", u) for u in units]]
        draft.grow_by_sentences = True
    used = draft.render()
    draft.spare = [p for p in points if p not in used] + [f for f in FILLER_SENTENCES if f not in used]
    return draft


def _pad(draft: _Draft, min_words: int, rng: random.Random) -> None:
    """Grow ``draft`` until it has at least ``min_words`` words.

    Where no sentence count is fixed, whole sentences go in (unused topic points first, then
    generic ones): before a block's bullets, else before its closing, else at its end. Otherwise,
    or once those run out, clauses lengthen body units (the opener only when there is no body), so
    no sentence cut, bullet, paragraph or text after the closing is ever added.
    """
    spare = list(draft.spare)
    turn = 0
    while count_words(draft.render()) < min_words:
        if draft.grow_by_sentences and spare:
            block = draft.blocks[turn % len(draft.blocks)]
            styles = [style for style, _ in block]
            if "bullet" in styles:
                at = styles.index("bullet")
            elif block and block[-1][1].role == "fixed":
                at = len(block) - 1
            else:
                at = len(block)
            block.insert(at, ("sentence", _Unit.sentence(spare.pop(0))))
        else:
            units = draft.units()
            candidates = [u for u in units if u.role == "body"] or [u for u in units if u.role == "opener"] or units
            unit = candidates[turn % len(candidates)]
            unused = [c for c in FILLER_CLAUSES if c not in unit.clauses] or list(FILLER_CLAUSES)
            unit.clauses.append(unused[rng.randrange(len(unused))])
        turn += 1


def _render_reference(topic: Topic, form: Form, constraints: Sequence[Constraint]) -> str:
    rng = _reference_rng(topic, form, constraints)
    by_kind: dict[str, Any] = {c.kind: c for c in constraints}
    draft = _draft(topic, form, by_kind, rng)
    if "word_count" in by_kind:
        _pad(draft, by_kind["word_count"].min_words, rng)
    text = draft.render()
    if "lowercase" in by_kind:
        text = text.lower()
    elif "uppercase" in by_kind:
        text = text.upper()
    return text


def reference_response(problem: ConstraintProblem) -> str:
    """A template-built response meeting every constraint of ``problem``: the SFT target.

    Deterministic for the problem. Holds for every problem the generator makes (tested); a
    hand-made problem outside the generator's parameter ranges (say one sentence plus a closing
    phrase) may not be satisfiable this way.
    """
    constraints = [constraint_from_dict(c) for c in problem.constraints]
    return _render_reference(TOPICS_BY_NAME[problem.topic], FORMS_BY_NAME[problem.form], constraints)


# --------------------------------------------------------------------------------------------
# Generation and splits
# --------------------------------------------------------------------------------------------


def _draw_constraint(kind: str, rng: random.Random, topic: Topic) -> Constraint:
    """A constraint of ``kind`` with parameters drawn from the module's pools (not a word range)."""
    if kind == "include_words":
        return IncludeWords(tuple(rng.sample(topic.keywords, rng.randint(*INCLUDE_RANGE))))
    if kind == "exclude_words":
        return ExcludeWords(tuple(rng.sample(EXCLUDE_POOL, rng.randint(*EXCLUDE_RANGE))))
    if kind == "bullet_count":
        return BulletCount(rng.randint(*BULLET_RANGE))
    if kind == "sentence_count":
        return SentenceCount(rng.randint(*SENTENCE_RANGE))
    if kind == "paragraph_count":
        return ParagraphCount(rng.randint(*PARAGRAPH_RANGE))
    if kind == "first_word":
        return FirstWord(rng.choice(sorted(FIRST_WORD_OPENERS)))
    if kind == "end_phrase":
        return EndPhrase(rng.choice(END_PHRASES))
    if kind == "json_keys":
        return JsonKeys(tuple(rng.sample(JSON_KEY_POOL, rng.randint(*JSON_KEYS_RANGE))))
    if kind in ("lowercase", "uppercase", "no_commas", "title", "end_question"):
        return CONSTRAINT_TYPES[kind]()
    raise ValueError(f"no parameter draw for kind {kind!r}")


def _draw_word_range(rng: random.Random, unpadded_words: int) -> WordCount:
    """A range whose top clears the unpadded reference, so padding up to the bottom always fits."""
    hi = 10 * math.ceil((unpadded_words + rng.randint(5, 30)) / 10)
    return WordCount(max(1, hi - rng.choice(WORD_RANGE_WIDTHS)), hi)


def make_constraint_problem(
    rng: random.Random, combo: Sequence[str], index: int, split: str,
    topic: Topic | None = None, form: Form | None = None,
) -> ConstraintProblem:
    """One problem for the kind combination ``combo``; topic and form drawn unless given."""
    if not is_compatible(combo):
        raise ValueError(f"incompatible kinds {tuple(combo)}: {conflicting_pairs(combo)}")
    topic = topic or rng.choice(TOPICS)
    form = form or rng.choice(FORMS)
    constraints = [_draw_constraint(kind, rng, topic) for kind in combo if kind != "word_count"]
    if "word_count" in combo:
        constraints.append(_draw_word_range(rng, count_words(_render_reference(topic, form, constraints))))
    rng.shuffle(constraints)
    prompt = " ".join([form.instruction.format(topic=topic.phrase)] + [c.describe() for c in constraints])
    digest = hashlib.sha1(f"{split}:{index}:{prompt}".encode()).hexdigest()[:10]
    return ConstraintProblem(
        id=f"{split}-{index:05d}-{digest}",
        prompt=prompt,
        constraints=[c.to_dict() for c in constraints],
        topic=topic.name,
        form=form.name,
    )


def split_combinations(
    seed: int, eval_fraction: float = 0.2, max_constraints: int = 3
) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(train combos, held-out eval combos), deterministic for the seed.

    Only combinations of two or more kinds are held out (``eval_fraction`` of each size, at least
    one), so every single kind is still trained on; the two lists are disjoint.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    rng = random.Random(seed * 1_000_003 + int(hashlib.sha1(b"combos").hexdigest()[:8], 16))
    combos = all_combinations(max_constraints)
    held: set[tuple[str, ...]] = set()
    for size in range(2, max_constraints + 1):
        of_size = [c for c in combos if len(c) == size]
        rng.shuffle(of_size)
        held.update(of_size[: max(1, round(len(of_size) * eval_fraction))])
    return [c for c in combos if c not in held], [c for c in combos if c in held]


SIZE_WEIGHTS: dict[int, float] = {1: 0.2, 2: 0.4, 3: 0.4}


def generate_constraints_split(
    n: int, seed: int, combos: Sequence[tuple[str, ...]], split: str,
    size_weights: Mapping[int, float] = SIZE_WEIGHTS,
) -> list[ConstraintProblem]:
    """``n`` problems whose kind combinations come from ``combos``: a size is drawn by
    ``size_weights`` (among sizes present), then a combination of that size uniformly.
    Deterministic for (n, seed, combos, split, size_weights)."""
    by_size: dict[int, list[tuple[str, ...]]] = {}
    for combo in sorted(combos):
        by_size.setdefault(len(combo), []).append(combo)
    sizes = [s for s in sorted(by_size) if size_weights.get(s, 0) > 0]
    if not sizes:
        raise ValueError("no combination of a size with positive weight")
    split_salt = int(hashlib.sha1(split.encode()).hexdigest()[:8], 16)
    rng = random.Random(seed * 1_000_003 + split_salt)
    rows = []
    for i in range(n):
        size = rng.choices(sizes, weights=[size_weights[s] for s in sizes])[0]
        rows.append(make_constraint_problem(rng, rng.choice(by_size[size]), i, split))
    return rows


def generate_constraints_dataset(
    seed: int, n_sft: int, n_train_prompts: int, n_eval: int,
    eval_fraction: float = 0.2, max_constraints: int = 3,
    size_weights: Mapping[int, float] = SIZE_WEIGHTS,
) -> dict[str, list[ConstraintProblem]]:
    """SFT, on-policy training prompts and eval, split by held-out kind combinations.

    Every eval problem's combination (sorted tuple of kinds) is one of those ``split_combinations``
    holds out for the seed; no sft or train problem uses one of them. Deterministic for the args.
    SFT rows are trained on ``reference_response(problem)``.
    """
    train_combos, eval_combos = split_combinations(seed, eval_fraction, max_constraints)
    return {
        "sft": generate_constraints_split(n_sft, seed, train_combos, "sft", size_weights),
        "train": generate_constraints_split(n_train_prompts, seed, train_combos, "train", size_weights),
        "eval": generate_constraints_split(n_eval, seed, eval_combos, "eval", size_weights),
    }


# --------------------------------------------------------------------------------------------
# The data source ``builtin:constraints``
# --------------------------------------------------------------------------------------------

ROLE_SPLITS: dict[str, str] = {"sft": "sft", "prompts": "train", "eval": "eval"}
CONSTRAINTS_COLUMN = "constraints"  # the row column the ``constraints`` scorer reads


def task_row(problem: ConstraintProblem) -> dict[str, Any]:
    """A problem as a data-source row (prompt/completion, standard format): the instruction is the
    prompt, ``reference_response`` the completion (the SFT target; ignored for prompts and eval), and
    the constraints (``{"kind", **params}`` dicts, what the ``constraints`` scorer checks), topic, form,
    their number and sorted kinds (``eval.group_by`` may name ``n_constraints``) stay as columns."""
    return {"prompt": problem.prompt, "completion": reference_response(problem),
            CONSTRAINTS_COLUMN: [dict(c) for c in problem.constraints], "problem_id": problem.id,
            "topic": problem.topic, "form": problem.form, "n_constraints": len(problem.constraints),
            "combination": "+".join(problem.kinds)}


def constraints_source(role: str, seed: int, n_sft: int, n_train_prompts: int, n_eval: int,
                       heldout_combinations: float = 0.2, max_constraints: int = 3) -> list[dict[str, Any]]:
    """``builtin:constraints`` for one role: that role's split of ``generate_constraints_dataset`` as
    ``task_row``s. Eval rows use only the held-out kind combinations (``heldout_combinations`` of the
    combinations of each size ≥ 2), so no eval combination occurs in sft or prompts.

    Raises:
        ValueError: the role has no split here (``preferences``), or a parameter is out of range.
    """
    if role not in ROLE_SPLITS:
        raise ValueError(f"builtin:constraints has no rows for the '{role}' role (it has {', '.join(ROLE_SPLITS)})")
    if not 2 <= max_constraints <= 3:
        raise ValueError(f"builtin:constraints: max_constraints must be 2 or 3 (eval holds out combinations of "
                         f"two or more kinds), got {max_constraints}")
    splits = generate_constraints_dataset(seed, n_sft if role == "sft" else 0,
                                          n_train_prompts if role == "prompts" else 0,
                                          n_eval if role == "eval" else 0, heldout_combinations, max_constraints)
    return [task_row(p) for p in splits[ROLE_SPLITS[role]]]
