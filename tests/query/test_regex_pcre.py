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
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest

from s3idx.errors import ExitStatus, InvalidFilterError
from s3idx.query import caseless
from s3idx.query.filter import Regex, parse_filter
from s3idx.query.pcre import MAX_CODE_POINT


def regex_matches(pattern: str, value: str, options: str = "") -> bool:
    condition: dict[str, Any] = {"$regex": pattern}
    if options:
        condition["$options"] = options
    return parse_filter({"a": condition}).matches({"a": value})


# (pattern, value, $options, whether MongoDB matches): each checked against PCRE2 itself too.
MATCH_CASES = [
    # A character written as an escape stays one character after what precedes it: a digit
    # neither extends a backreference nor completes a quantifier.
    (r"(a)\1\x32", "aa2", "", True),
    (r"(a)\1\x32", "AA2", "i", True),
    (r"a{\x32}", "a{2}", "", True),
    (r"a{\x32}", "aa", "", False),
    (r"(a)\1\x62", "aAB", "i", True),
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
    # Caseless (i) matching as PCRE2's: literals and ranges take the members of their Unicode
    # simple case folding sets (k K and the Kelvin sign; s S and the long s; the three sigmas),
    # while the generic types, the POSIX classes and \p{..} take no case variants.
    (r"^[^\W_]+$", "Kiss", "i", True),
    (r"^[^\W_]+$", "Suki", "i", True),
    (r"^[^\W_]+$", "jose", "i", True),
    (r"^[^\W]+$", "jose", "i", True),
    (r"^[^\D]+$", "12", "i", True),
    (r"^[^\S]+$", " ", "i", True),
    (r"^[^[:^alpha:]]+$", "Kiss", "i", True),
    (r"^istanbul$", "İstanbul", "i", False),  # U+0130 has no other case in simple folding
    (r"^ISPANAK$", "\u0131spanak", "i", False),  # nor U+0131
    (r"^[i]$", "İ", "i", False),
    (r"^[^I]$", "\u0131", "i", True),
    (r"^\w+$", "İ", "i", False),
    (r"^\w+$", "\u0131", "i", False),
    (r"^\w+$", "\u017f", "i", False),
    (r"^\w+$", "\u212a", "i", False),
    (r"^[[:alpha:]]+$", "\u212a", "i", False),
    (r"^[[:word:]]+$", "\u017f", "i", False),
    (r"^[[:alnum:]]$", "İ", "i", False),
    (r"^\W$", "\u212a", "i", True),
    (r"^\W$", "\u017f", "i", True),
    (r"^[\W]$", "\u0131", "i", True),
    (r"^[[:^word:]]$", "\u212a", "i", True),
    (r"\b", "\u212a", "i", False),
    (r"^k$", "\u212a", "i", True),
    (r"^\x{212a}$", "k", "i", True),
    (r"^s+$", "Ss\u017f", "i", True),
    (r"^\x{3c3}+$", "\u03a3\u03c3\u03c2", "i", True),
    (r"^[^\x{3c3}]$", "\u03c2", "i", False),
    (r"^µ$", "\u039c", "i", True),
    (r"^θ$", "ϑ", "i", True),
    (r"^ǆ$", "ǅ", "i", True),
    (r"^[a-z]+$", "\u212a\u017f", "i", True),
    (r"^[^a-z]$", "\u212a", "i", False),
    (r"^[\x{100}-\x{10FFFF}]$", "k", "i", True),
    (r"^[\x{212a}-\x{212b}]+$", "kKÅå", "i", True),
    (r"^[\x6b]$", "\u212a", "i", True),
    (r"^[\153]$", "\u212a", "i", True),
    (r"^\Qk\E$", "\u212a", "i", True),
    (r"^\é$", "É", "i", True),
    # [:upper:] and [:lower:] are [:alpha:] under i, as PCRE2 has it; \p{..} is not widened.
    (r"^[[:upper:]]$", "k", "i", True),
    (r"^[[:lower:]]$", "K", "i", True),
    (r"^[[:upper:]]$", "\u212a", "i", False),
    (r"^[[:^lower:]]$", "a", "i", False),
    (r"^[\p{Lu}]$", "k", "i", False),
    (r"^[^\p{Lu}]$", "k", "i", True),
    (r"^\p{Ll}$", "K", "i", False),
    # Backreferences compare caselessly; group names are names, not letters to fold.
    (r"^(k)\1$", "k\u212a", "i", True),
    (r"^(a)\1$", "aA", "i", True),
    (r"^(?<kk>a)\k<kk>$", "aA", "i", True),
    (r"^(?P<kk>a)(?P=kk)$", "aA", "i", True),
    (r"^(a)\1$", "aA", "", False),
    # Inline (?i) lasts to the end of its group, (?i:...) to the end of that group, and
    # (?-i) turns it off.
    (r"^(?i)k(?-i)k$", "\u212ak", "", True),
    (r"^(?i)k(?-i)k$", "kK", "", False),
    (r"^(?i:k)k$", "Kk", "", True),
    (r"^(?i:k)k$", "KK", "", False),
    (r"^(?:(?i)a)b$", "AB", "", False),
    (r"^(?:(?i)a)b$", "Ab", "", True),
    (r"^(a(?i)b|c)$", "C", "", True),
    (r"^(?-i:a)b$", "aB", "i", True),
    (r"^(?-i:a)b$", "AB", "i", False),
    (r"^(?i)[^\W_]+$", "Kiss", "", True),
]


@pytest.mark.parametrize(("pattern", "value", "options", "expected"), MATCH_CASES)
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
        (r"[\p{L}-z]", r"invalid $regex '[\\p{L}-z]': invalid range in character class"),
        (r"[a-\pL]", r"invalid $regex '[a-\\pL]': invalid range in character class"),
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
        lib.pcre2_get_ovector_pointer_8.restype = ctypes.POINTER(ctypes.c_size_t)
        lib.pcre2_get_ovector_pointer_8.argtypes = [ctypes.c_void_p]
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

    def find_all(self, pattern: str, subject: str, options: str) -> list[str]:
        """Every match of ``pattern`` in ``subject``, left to right (not one may be empty)."""
        flags = self.UTF
        for option in options:
            flags |= self.options[option]
        raw, encoded = pattern.encode(), subject.encode()
        error, offset = ctypes.c_int(), ctypes.c_size_t()
        code = self.lib.pcre2_compile_8(
            raw, len(raw), flags, ctypes.byref(error), ctypes.byref(offset), None
        )
        assert code, f"PCRE2 refuses {pattern!r}"
        data = self.lib.pcre2_match_data_create_from_pattern_8(code, None)
        found, start = [], 0
        while self.lib.pcre2_match_8(code, encoded, len(encoded), start, 0, data, None) >= 0:
            vector = self.lib.pcre2_get_ovector_pointer_8(data)
            assert vector[1] > vector[0]
            found.append(encoded[vector[0] : vector[1]].decode())
            start = vector[1]
        self.lib.pcre2_match_data_free_8(data)
        self.lib.pcre2_code_free_8(code)
        return found


@pytest.fixture(scope="module")
def pcre2() -> Pcre2:
    path = ctypes.util.find_library("pcre2-8")
    if path is None:
        pytest.skip("libpcre2-8 is not installed: no PCRE2 to compare with")
    return Pcre2(path)


def simple_case_sets() -> list[list[int]]:
    """Unicode's simple case folding as sets of the characters that fold to one: how
    s3idx.query.caseless._SETS was written (by a Python whose Unicode is 14.0.0)."""
    folded: dict[int, list[int]] = {}
    for code_point in range(MAX_CODE_POINT + 1):
        char = chr(code_point)
        # Python has full folding only; where a character folds to several, its simple
        # folding is its simple lower case (U+1E9E to U+00DF), or none (U+0130).
        simple = next((m for m in (char.casefold(), char.lower()) if len(m) == 1), char)
        folded.setdefault(ord(simple), []).append(code_point)
    return sorted((members for members in folded.values() if len(members) > 1), key=min)


@pytest.mark.skipif(unicodedata.unidata_version != "14.0.0", reason="PCRE2 10.42's Unicode")
def test_the_caseless_table_is_unicode_simple_case_folding() -> None:
    table = "".join(caseless._SETS).split()
    assert table == [",".join(f"{m:X}" for m in members) for members in simple_case_sets()]


def cased_characters() -> str:
    """Every character with a case mapping or a cased category, each character its mappings
    lead to, and every 997th other character (surrogates aside)."""
    found: set[int] = set(range(0, MAX_CODE_POINT + 1, 997))
    for code_point in range(MAX_CODE_POINT + 1):
        char = chr(code_point)
        mappings = (char.lower(), char.upper(), char.casefold(), char.title())
        if any(m != char for m in mappings) or unicodedata.category(char) in ("Lu", "Ll", "Lt"):
            found.add(code_point)
            found.update(ord(m) for mapping in mappings for m in mapping)
    return "".join(chr(c) for c in sorted(found) if not 0xD800 <= c <= 0xDFFF)


def test_caseless_sets_are_pcre2s_for_every_character_with_a_case(pcre2: Pcre2) -> None:
    """Each character, alone and in a class, matches under i what PCRE2 matches: exactly the
    members of its set in the table, through the translation."""
    subject = cased_characters()
    differences = []
    for char in subject:
        expected = sorted(chr(m) for m in caseless.case_set(ord(char)))
        for pattern in (rf"\x{{{ord(char):x}}}", rf"[\x{{{ord(char):x}}}]"):
            found = Regex(pattern, "i").compiled.findall(subject)
            pcre2_found = pcre2.find_all(pattern, subject, "i")
            if not pcre2_found == found == expected:
                differences.append((pattern, pcre2_found, found, expected))
    assert differences == []


@pytest.mark.parametrize(("pattern", "value", "options", "expected"), MATCH_CASES)
def test_the_cases_are_what_pcre2_answers(
    pcre2: Pcre2, pattern: str, value: str, options: str, expected: bool
) -> None:
    assert pcre2.matches(pattern, value, options.replace("u", "")) is expected


# Pieces of patterns and values; left out are the corners the module docstring of
# s3idx.query.pcre names (classes holding POSIX classes beside \D \W \S or negated, which PCRE2
# matches against characters beyond U+00FF its own way; white space where x mode would make a
# quantifier follow nothing). Caseless matching has its own pieces below.
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


# Pieces of caseless patterns: characters with case sets of one, two, three and four members,
# ranges holding some, and the sets i must leave alone, mixed in classes. A class holds POSIX
# classes and properties, or \D \W \S, or one negated POSIX class, with the literals: PCRE2
# matches characters beyond U+00FF against other mixes its own way, with or without i (see
# s3idx.query.pcre).
CASELESS_ATOMS = [
    "k", "K", "s", "i", "I", "é", r"\x{212a}", r"\x{17f}", r"\x{130}", r"\x{131}", r"\x{3c3}",
    r"\x{3b8}", "µ", r"\w", r"\W", r"\b", r"\B", r"\d", r"\S", r"\p{Lu}", r"\p{Ll}", r"\P{Lu}",
    r"\Qk\E", r"\x6b", "(?i)", "(?-i)", "(?i:k)", "(?-i:s)", ".",
]  # fmt: skip
CASELESS_LITERALS = [
    "a-z", "A-Z", "j-t", "k", "K", "s", "i", "I", r"\x{212a}", r"\x{17f}", r"\x{130}", r"\x{131}",
    r"\x{3c3}", "µ", r"\x{100}-\x{17f}", r"\x{3c0}-\x{3d0}", r"\x{2100}-\x{2130}", "_",
]  # fmt: skip
CASELESS_TYPES = [r"\w", r"\W", r"\d", r"\D", r"\s", r"\S"]
CASELESS_POSIX = [
    "[:alpha:]", "[:upper:]", "[:lower:]", "[:word:]", "[:punct:]", r"\p{Lu}", r"\P{Ll}", r"\w",
    r"\d", r"\s",
]  # fmt: skip
CASELESS_NEGATED_POSIX = ["[:^alpha:]", "[:^lower:]", "[:^upper:]", "[:^word:]"]
CASELESS_VALUE_CHARS = [
    "k", "K", "\u212a", "s", "S", "\u017f", "i", "I", "\u0130", "\u0131", "\u03c3", "\u03c2",
    "\u03a3", "\u03b8", "\u03d1", "\u03f4", "µ", "\u039c", "\u03bc", "é", "É", "\u01c5", "\u212b",
    "å", "1", "_", " ", "-", "a", "Z",
]  # fmt: skip


def random_caseless_sequence(rng: random.Random, depth: int = 0) -> str:
    out = ""
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.4:
            negated = "^" if rng.random() < 0.4 else ""
            sets = rng.choice([CASELESS_TYPES, CASELESS_POSIX, CASELESS_NEGATED_POSIX])
            members = [rng.choice(CASELESS_LITERALS * 2 + sets) for _ in range(rng.randint(1, 3))]
            if sets is CASELESS_NEGATED_POSIX:
                members = [m for m in members if m not in sets] + [rng.choice(sets)]
            atom = "[" + negated + "".join(members) + "]"
        elif roll < 0.5 and depth < 2:
            atom = "(" + "|".join(random_caseless_sequence(rng, depth + 1) for _ in range(2)) + ")"
        elif roll < 0.55 and depth == 0 and ")" in out:  # a backreference to a closed group
            atom = r"\1"
        else:
            atom = rng.choice(CASELESS_ATOMS)
        if not atom.startswith(("(?", "\\b", "\\B")) and rng.random() < 0.3:
            atom += rng.choice(["*", "+", "?", "{1,2}"])
        out += atom
    return out


@pytest.mark.parametrize("seed", range(4))
def test_random_caseless_patterns_match_as_pcre2_matches(pcre2: Pcre2, seed: int) -> None:
    """Under i (the option or inline): literals, ranges, classes mixing them with generic
    types, POSIX classes and properties, backreferences."""
    rng = random.Random(seed)
    differences = []
    for _ in range(1500):
        pattern = ("^" if rng.random() < 0.5 else "") + random_caseless_sequence(rng)
        options = "i" if rng.random() < 0.8 else ""
        value = "".join(rng.choice(CASELESS_VALUE_CHARS) for _ in range(rng.randint(0, 5)))
        expected = pcre2.matches(pattern, value, options)
        try:
            found: bool | None = regex_matches(pattern, value, options)
        except InvalidFilterError:
            found = None
        if found is not expected:
            differences.append((pattern, value, options, expected, found))
    assert differences == []
