"""$regex means what it means to MongoDB: PCRE2 in UTF mode, without Unicode properties (UCP).

MongoDB compiles every $regex with ``PCRE2_UTF`` and nothing else by default
(``src/mongo/util/pcre_util.cpp``, ``flagsToOptions``), so, per the PCRE2 manual (pcre2pattern,
"Generic character types" and "Posix character classes"): ``\\d \\s \\w`` and the POSIX classes
match ASCII characters only, ``\\b`` is a boundary of ASCII word characters, while case-folding
with ``i`` and ``\\p{..}`` cover all of Unicode. PCRE's own syntax (``\\Z`` before a final
newline, ``\\N``, ``\\h``/``\\v``, ``\\Q...\\E``, ``\\x{..}``, ``\\e``, ``\\cX``, ``\\o{..}``,
``\\k<name>``) means what PCRE says; MongoDB also accepts the ``u`` option (a no-op). Python's
regex engine reads all of these otherwise, so a filter would select other documents on SQLite
than on MongoDB: for ``delete --filter``, other documents deleted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import random
from collections.abc import Callable
from typing import Any

import pytest

from s3idx.errors import ExitStatus, InvalidFilterError
from s3idx.query.filter import parse_filter


def regex_matches(pattern: str, value: str, options: str = "") -> bool:
    condition: dict[str, Any] = {"$regex": pattern}
    if options:
        condition["$options"] = options
    return parse_filter({"a": condition}).matches({"a": value})


@pytest.mark.parametrize(
    ("pattern", "value", "options", "expected"),
    [
        # Generic types: ASCII only without UCP.
        (r"^\w+$", "José", "", False),
        (r"^\w+$", "Jose_1", "", True),
        (r"^\W$", "é", "", True),
        (r"\d", "\u0663", "", False),  # ARABIC-INDIC DIGIT THREE
        (r"\d", "\uff11", "", False),  # FULLWIDTH DIGIT ONE
        (r"^\D$", "\u0663", "", True),
        (r"\s", "\u00a0", "", False),  # NO-BREAK SPACE
        (r"\s", "\x0b", "", True),  # PCRE2's \s includes VT
        (r"^\S$", "\u2003", "", True),
        (r"\bé", " é", "", False),  # é is no word character: no boundary between two non-words
        (r"e\b", "eé", "", True),
        (r"\Bé", " é", "", True),
        # ... inside character classes too, negated or not.
        (r"^[\w-]+$", "José", "", False),
        (r"^[\w-]+$", "a-b_c", "", True),
        (r"^[^\w]$", "é", "", True),
        (r"^[\W]$", "é", "", True),
        (r"^[\W]$", "a", "", False),
        (r"^[\d.]+$", "١٢", "", False),
        (r"^[\D]$", "٣", "", True),
        (r"^[\s]$", "\u00a0", "", False),
        (r"^[\S]$", "\u00a0", "", True),
        (r"^[^\S]$", "\t", "", True),
        # POSIX classes: ASCII only.
        (r"^[[:alpha:]]+$", "José", "", False),
        (r"^[[:alpha:]]+$", "Jose", "", True),
        (r"^[[:^alpha:]]$", "é", "", True),
        (r"^[[:digit:]]$", "٣", "", False),
        (r"^[[:upper:]]$", "É", "", False),
        (r"^[[:punct:]]$", "¿", "", False),
        (r"^[[:punct:]]+$", "!~[]", "", True),
        (r"^[[:space:][:digit:]]+$", "1 2", "", True),
        (r"^[[:xdigit:]]+$", "c0FFee", "", True),
        (r"^[[:word:]]+$", "a_1", "", True),
        # Case-folding and Unicode properties do cover Unicode.
        (r"^josé$", "JOSÉ", "i", True),
        (r"^\p{L}+$", "José", "", True),
        (r"^\w+$", "JOSE", "i", True),
        # regex itself misses "é" for x?(?a:\W) with i: the translation uses no scoped flags.
        (r"x?\W", "é", "i", True),
        (r"a?\w", "é", "i", False),
        (r"x?\bé", " é", "i", False),
        (r"x?\Bé", " é", "i", True),
        # PCRE's anchors and escapes.
        (r"abc\Z", "abc\n", "", True),
        (r"abc\Z", "abc\n\n", "", False),
        (r"abc\z", "abc\n", "", False),
        (r"abc$", "abc\n", "", True),
        # With m, ^ matches after a newline inside the value, not after one that ends it.
        ("^$", "a\n", "m", False),
        ("^$", "a\n\nb", "m", True),
        ("^$", "", "m", True),
        ("^$", "\n", "m", True),
        ("^b", "a\nb", "m", True),
        ("(?m)^$", "a\n", "", False),
        ("(?m)^b", "a\nb", "", True),
        ("(?-m)^b", "a\nb", "m", False),
        ("^$", "a\n", "", False),
        (r"^\N+$", "ab", "", True),
        (r"^a\Nb$", "a\nb", "", False),
        (r"^N$", "N", "", True),
        (r"^\h$", "\u00a0", "", True),
        (r"^\H$", "a", "", True),
        (r"^\H$", "\t", "", False),
        (r"^\v$", "\n", "", True),
        (r"^\v$", "\u2028", "", True),
        (r"^\V$", "\n", "", False),
        (r"^[\v]$", "\r", "", True),
        (r"^\Qa.b*\E$", "a.b*", "", True),
        (r"^\Qa.b*\E$", "axbb", "", False),
        (r"^\Qa.b", "a.b", "", True),  # \Q without \E quotes to the end
        (r"^[\Q]\E]$", "]", "", True),
        (r"^a\Eb$", "ab", "", True),  # a lone \E is ignored
        (r"^\x{e9}$", "é", "", True),
        (r"^\x{1F600}$", "😀", "", True),
        (r"^\x41$", "A", "", True),
        (r"^\e$", "\x1b", "", True),
        (r"^\cA$", "\x01", "", True),
        (r"^\o{101}$", "A", "", True),
        (r"^(?<x>a)\k<x>$", "aa", "", True),
        (r"^(?<x>a)\k{x}$", "aa", "", True),
        (r"^(?<x>a)\k'x'$", "aa", "", True),
        (r"^(?<x>a)\k<x>$", "ab", "", False),
        # The translation keeps everything else as it was.
        (r"^\[\w\]$", "[a]", "", True),
        (r"^[]a]+$", "]a", "", True),
        (r"^[\w-]+$", "a-b", "", True),
        (r"^[-\d]+$", "-1", "", True),
        (r"^[\d\-a]+$", "1-a", "", True),
        (r"^[a\-\d]+$", "a-1", "", True),
        (r"^[0-9-\h]+$", "1- ", "", True),  # a "-" right after a range is itself
        (r"^[a-c-e]+$", "-e", "", True),
        (r"^[a-c-e]+$", "d", "", False),
        (r"^[\x{e9}-\x{ea}]$", "\u00ea", "", True),
        (r"^[\Q-\E\d]+$", "-1", "", True),
        (r"^[^]a]$", "b", "", True),
        (r"^[a[]$", "[", "", True),
        (r"(?#[)^a$", "a", "", True),
        (r"^a\\d$", "a\\d", "", True),
        (r"^\d # digits", "1", "x", True),
        (r"^a # \Q ignored in a comment", "a", "x", True),
        (r"^\d \d$", "12", "x", True),
        (r"^a\.b$", "a.b", "", True),
        (r"^\w+$", "abc", "u", True),  # MongoDB accepts u, and ignores it
        # Options set inside the pattern: (?x) makes "#" start a comment; leading (*...) items
        # set PCRE2 options, (*UCP) the Unicode meaning of the generic types and POSIX classes.
        (r"(?x) ^a # [", "a", "", True),
        (r"(?ix)^A # \Q", "a", "", True),
        (r"(?-x)^a # [b]", "a # b", "x", True),
        ("(?x)^a # [ comment\n\\d$", "a1", "", True),
        ("(?x)^a # [ comment\n\\d$", "a", "", False),
        (r"(*UCP)^\w+$", "José", "", True),
        (r"(*UCP)^[[:alpha:]]+$", "José", "", True),
        (r"(*UCP)\d", "\u0663", "", True),
        (r"(*UTF)(*UCP)\bé", " é", "", True),
        (r"(*UTF)^\w+$", "José", "", False),
        (r"(*LIMIT_MATCH=1000)(*NO_JIT)^a$", "a", "", True),
        # Found against PCRE2 itself (libpcre2-8 through ctypes, random patterns and values):
        # x ignores only PCRE's pattern white space, not a no-break space; \N{2} is \N twice;
        # \p{Lu} is not widened by i.
        ("\u00a0", "a", "x", False),
        ("^a\u00a0b$", "a\u00a0b", "x", True),
        ("^a\u200eb$", "ab", "x", True),
        (r"^\N{2}$", "ab", "", True),
        (r"^\N{1,2}$", "abc", "", False),
        (r"^\p{Lu}$", "k", "i", False),
        (r"^\pL$", "k", "i", True),
        (r"^\P{Lu}$", "K", "i", False),
        (r"^\w+$", "José", "iu", False),
    ],
)
def test_regex_matches_as_mongodb_does(
    pattern: str, value: str, options: str, expected: bool
) -> None:
    assert regex_matches(pattern, value, options) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a\x00b", "invalid $regex 'a\\x00b': a regular expression cannot hold a NUL character"),
        (r"\x{zz}", r"invalid $regex '\\x{zz}': \x{...} needs hexadecimal digits"),
        (r"\x{110000}", r"invalid $regex '\\x{110000}': \x{110000} is beyond Unicode"),
        (r"\o{9}", r"invalid $regex '\\o{9}': \o{...} needs octal digits"),
        (r"\c", r"invalid $regex '\\c': \c needs a printable ASCII character after it"),
        (r"\k<x", r"invalid $regex '\\k<x': \k needs a group name in <>, {} or ''"),
        (r"[\N]", r"invalid $regex '[\\N]': \N is not allowed in a character class"),
        (r"[\d-z]", r"invalid $regex '[\\d-z]': invalid range in character class"),
        (r"[a-\d]", r"invalid $regex '[a-\\d]': invalid range in character class"),
        (r"[[:alpha:]-z]", r"invalid $regex '[[:alpha:]-z]': invalid range in character class"),
        (r"[^\S-\d]", r"invalid $regex '[^\\S-\\d]': invalid range in character class"),
        # Where the translation changed the pattern, a position would not be the user's.
        (r"\d(", r"invalid $regex '\\d(': missing )"),
    ],
)
def test_regex_errors_name_the_pattern(pattern: str, message: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        parse_filter({"a": {"$regex": pattern}})
    assert str(caught.value) == message


# --- through the CLI: query and delete --filter select the same, MongoDB's, documents ---------

NAMES = {"k1": "Jose", "k2": "José", "k3": "٣", "k4": "12", "k5": "Straße"}


@pytest.fixture
def named(run: Callable[..., Any]) -> Callable[..., Any]:
    lines = "".join(f'{{"fs_id": "{key}", "name": "{name}"}}\n' for key, name in NAMES.items())
    result = run("put", "--field", "name", input=lines)
    assert result.exit_code == 0, result.stderr
    return run


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"^\\w+$", ["k1", "k4"]),
        (r"^[[:alpha:]]+$", ["k1"]),
        (r"\\d", ["k4"]),
        (r"^\\D+$", ["k1", "k2", "k3", "k5"]),
    ],
)
def test_query_and_delete_select_what_mongodb_selects(
    named: Callable[..., Any], pattern: str, expected: list[str]
) -> None:
    flt = f'{{"name": {{"$regex": "{pattern}"}}}}'
    found = named("query", flt, "--fields", "fs_id", "--json")
    assert found.exit_code == 0, found.stderr
    assert [line for line in found.stdout.splitlines()] == [
        f'{{"fs_id":"{key}"}}' for key in expected
    ]
    dry = named("delete", "--filter", flt, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.split() == expected


def test_the_u_option_is_accepted_as_mongodb_accepts_it(named: Callable[..., Any]) -> None:
    result = named("query", '{"name": {"$regex": "^j", "$options": "iu"}}', "--count")
    assert result.exit_code == ExitStatus.OK, result.stderr
    assert result.stdout.strip() == "2"


# --- against PCRE2 itself ----------------------------------------------------------------------


class Pcre2:
    """libpcre2-8 through ctypes, compiling as MongoDB does (PCRE2_UTF and the $options)."""

    UTF = 0x80000

    def __init__(self, path: str) -> None:
        self.options = {"i": 0x8, "m": 0x400, "s": 0x20, "x": 0x80}
        lib = ctypes.CDLL(path)
        lib.pcre2_compile_8.restype = ctypes.c_void_p
        lib.pcre2_compile_8.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
        ]  # fmt: skip
        lib.pcre2_match_data_create_from_pattern_8.restype = ctypes.c_void_p
        lib.pcre2_match_data_create_from_pattern_8.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pcre2_match_8.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_uint32,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.pcre2_match_data_free_8.argtypes = [ctypes.c_void_p]
        lib.pcre2_code_free_8.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def matches(self, pattern: str, value: str, options: str) -> bool | None:
        """Whether ``pattern`` finds a match in ``value``; None if PCRE2 refuses the pattern."""
        flags = self.UTF
        for option in options:
            flags |= self.options[option]
        raw = pattern.encode()
        error, offset = ctypes.c_int(), ctypes.c_size_t()
        code = self.lib.pcre2_compile_8(
            raw, len(raw), flags, ctypes.byref(error), ctypes.byref(offset), None
        )
        if not code:
            return None
        data = self.lib.pcre2_match_data_create_from_pattern_8(code, None)
        subject = value.encode()
        found = self.lib.pcre2_match_8(code, subject, len(subject), 0, 0, data, None)
        self.lib.pcre2_match_data_free_8(data)
        self.lib.pcre2_code_free_8(code)
        return found >= 0


@pytest.fixture(scope="module")
def pcre2() -> Pcre2:
    path = ctypes.util.find_library("pcre2-8")
    if path is None:
        pytest.skip("libpcre2-8 is not installed: no PCRE2 to compare with")
    return Pcre2(path)


# Pieces of patterns and values; left out are the corners the module docstring of
# s3idx.query.pcre names (Kelvin sign and long s; classes holding POSIX classes beside \D \W \S
# or negated, which PCRE2 matches against characters beyond U+00FF its own way; white space
# where x mode would make a quantifier follow nothing).
ATOMS = [
    "a", "b", "é", "É", "k", "K", "ß", "\u0663", "1", "\u00a0", r"\n", r"\t", ".", r"\w", r"\W",
    r"\d", r"\D", r"\s", r"\S", r"\b", r"\B", r"\h", r"\H", r"\v", r"\V", r"\N", r"\Z", r"\z",
    "$", "^", r"\A", r"\Qa.\E", r"\x{e9}", r"\p{L}", r"\P{L}", r"\p{Lu}", r"\x41", r"\.", r"\e",
    r"\cJ", "#", "_", "-",
]  # fmt: skip
TYPE_MEMBERS = ["a-z", "A-Z", r"\w", r"\W", r"\d", r"\D", r"\s", r"\S", "é", r"\]", "_", "ß"]
POSIX_MEMBERS = ["[:alpha:]", "[:punct:]", "[:digit:]", "[:upper:]", "[:space:]", "a-c", "é"]
VALUE_CHARS = [
    "a", "b", "é", "É", "k", "K", "ß", "SS", "\u0663", "1", " ", "\u00a0", "\n", "\t", ".", "_",
    "-", "A", "#", "\x1b", "[", "]", "\u2028", "\r",
]  # fmt: skip


def random_class(rng: random.Random) -> str:
    members = TYPE_MEMBERS if rng.random() < 0.6 else POSIX_MEMBERS
    negated = "^" if rng.random() < 0.3 else ""
    return "[" + negated + "".join(rng.choice(members) for _ in range(rng.randint(1, 3))) + "]"


def random_sequence(rng: random.Random, depth: int = 0) -> str:
    out = ""
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.15:
            atom = random_class(rng)
        elif roll < 0.22 and depth < 2:
            atom = "(" + "|".join(random_sequence(rng, depth + 1) for _ in range(2)) + ")"
        else:
            atom = rng.choice(ATOMS)
        if atom not in ("^", "$", r"\b", r"\B", r"\Z", r"\z", r"\A") and rng.random() < 0.3:
            atom += rng.choice(["*", "+", "?", "{1,2}", "+?"])
        out += atom
    return out


@pytest.mark.parametrize("seed", range(4))
def test_random_patterns_match_as_pcre2_matches(pcre2: Pcre2, seed: int) -> None:
    rng = random.Random(seed)
    differences = []
    for _ in range(1500):
        pattern = ("^" if rng.random() < 0.3 else "") + random_sequence(rng)
        options = "".join(option for option in "ims" if rng.random() < 0.25)
        value = "".join(rng.choice(VALUE_CHARS) for _ in range(rng.randint(0, 5)))
        expected = pcre2.matches(pattern, value, options)
        try:
            found: bool | None = regex_matches(pattern, value, options)
        except InvalidFilterError:
            found = None
        if found is not expected:
            differences.append((pattern, value, options, expected, found))
    assert differences == []
