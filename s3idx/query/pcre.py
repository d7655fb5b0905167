"""A $regex pattern as MongoDB reads it, written for Python's ``regex`` engine.

MongoDB compiles every ``$regex`` with PCRE2 in UTF mode and without Unicode properties for
the generic types (``PCRE2_UTF``, no ``PCRE2_UCP``: ``src/mongo/util/pcre_util.cpp``). So, per the
PCRE2 manual, ``\\d \\s \\w`` (and ``\\b``, built on ``\\w``) and the POSIX classes match ASCII
characters only, while ``i`` folds case and ``\\p{..}`` tests properties across all of Unicode.
``regex`` gives the generic types their Unicode meaning, and reads some of PCRE's syntax
otherwise (``\\Z``, ``\\N``, ``\\v``) or not at all (``\\Q...\\E``, ``\\x{..}``, ``\\k<name>``).
``translate`` rewrites exactly those pieces, in one pass that knows where character classes
are, so that a filter selects on SQLite the documents MongoDB selects. Checked against PCRE2
itself (libpcre2-8 through ctypes, random patterns and values); the differences left are in
patterns PCRE2 refuses (a quantifier after ``^`` in ``x`` mode, a range ending in ``\\p{..}``),
two characters under ``i`` (the Kelvin sign and the long s count as ``k`` and ``s`` for
``\\w`` and the POSIX classes), and PCRE2's own handling of characters beyond U+00FF in
classes holding POSIX classes (negated, or beside ``\\D \\W \\S``).
"""

from __future__ import annotations

import re

from s3idx.errors import InvalidFilterError

Ranges = tuple[tuple[int, int], ...]
MAX_CODE_POINT = 0x10FFFF

_DIGIT: Ranges = ((0x30, 0x39),)
_WORD: Ranges = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_SPACE: Ranges = ((0x09, 0x0D), (0x20, 0x20))  # PCRE2's \s: HT LF VT FF CR and space
_HORIZONTAL: Ranges = (
    (0x09, 0x09), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x180E, 0x180E),
    (0x2000, 0x200A), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
)  # fmt: skip
_VERTICAL: Ranges = ((0x0A, 0x0D), (0x85, 0x85), (0x2028, 0x2029))
# \h and \v are Unicode-wide in PCRE2 whatever the options; \d \s \w are not, without UCP.
_TYPES: dict[str, Ranges] = {
    "d": _DIGIT, "w": _WORD, "s": _SPACE, "h": _HORIZONTAL, "v": _VERTICAL,
}  # fmt: skip
# PCRE2's POSIX classes without UCP: ASCII only.
_POSIX: dict[str, Ranges] = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": _DIGIT,
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": _SPACE,
    "upper": ((0x41, 0x5A),),
    "word": _WORD,
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_POSIX_CLASS = re.compile(r"\[:(\^?)([a-z]+):\]")
# PCRE2's options at the start of a pattern, which regex does not know: (*UCP) gives the generic
# types and POSIX classes their Unicode meaning (regex's own); the others change no answer.
_START_OPTIONS = re.compile(
    r"\(\*(UTF|UCP|NO_AUTO_POSSESS|NO_DOTSTAR_ANCHOR|NO_JIT|NO_START_OPT|NOTEMPTY"
    r"|NOTEMPTY_ATSTART|LIMIT_(?:MATCH|HEAP|DEPTH|RECURSION)=\d+)\)"
)
# An inline option setting, such as (?x), (?i-x) or (?x: (its letters on, then off).
_INLINE_OPTIONS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?[:)]")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_QUANTIFIER = re.compile(r"\{\d+(,\d*)?\}")
_PROPERTY = re.compile(r"\{[^}]*\}|.", re.DOTALL)
# What x ignores in a pattern: PCRE2's pattern white space, not all of Unicode's (which regex
# ignores, a no-break space among them).
_PATTERN_SPACE = frozenset("\t\n\x0b\x0c\r \x85\u200e\u200f\u2028\u2029")
_OCTAL = re.compile(r"[0-7]+")
_GROUP_NAME = {"<": ">", "{": "}", "'": "'"}
# PCRE2 refuses a count above this ("number too big in {} quantifier"), so MongoDB does too.
MAX_REPEAT = 65_535
# regex expands counted repetitions when it compiles: ~260 bytes for each repeated item, nested
# counts multiplied (a{99999999} took 16 GB). Above this a pattern is refused, not compiled.
MAX_REPEATED_ITEMS = 1_000_000


def translate(pattern: str, options: str = "") -> str:
    """``pattern`` (PCRE2, as MongoDB compiles it) in ``regex``'s syntax, with the same meaning.

    ``options`` are $options: with ``x``, ``#`` starts a comment (copied as it is); with ``m``,
    ``^`` also matches after a newline, unless that newline ends the value.
    InvalidFilterError for a PCRE escape that is malformed.
    """
    if "\x00" in pattern:
        raise InvalidFilterError("a regular expression cannot hold a NUL character")
    ucp = False
    while start := _START_OPTIONS.match(pattern):
        ucp = ucp or start.group(1) == "UCP"
        pattern = pattern[start.end() :]
    return _Translator(pattern, options, ucp=ucp).run()


class _Translator:
    def __init__(self, pattern: str, options: str, *, ucp: bool) -> None:
        self.pattern = pattern
        self.extended = "x" in options
        self.multiline = "m" in options
        self.ucp = ucp
        self.out: list[str] = []
        self.pos = 0
        self.in_class = False
        # The last member of the class being read: None (none yet), "char", "range" (a char
        # ending a range) or "set" (\\d, [:alpha:], ...); a "-" after a "char" starts a range.
        self.last_member: str | None = None
        self.range_open = False  # a "-" starting a range was just read
        self.after_hyphen = False
        self.set_read = False
        self.size = _Size()

    def run(self) -> str:
        while self.pos < len(self.pattern):
            escaped = self.pattern[self.pos] == "\\"
            if not self.in_class:
                if escaped:
                    self.size.item()
                    self.escape()
                else:
                    self.outside()
                continue
            self.after_hyphen, self.range_open, self.set_read = self.range_open, False, False
            if escaped:
                self.escape()
            else:
                self.class_member()
            if self.in_class and not self.range_open:
                kind = "range" if self.after_hyphen else "char"
                self.last_member = "set" if self.set_read else kind
        return "".join(self.out)

    def class_set(self, body: str) -> None:
        """A set of characters (\\d, [:alpha:], ...) as a member of a class."""
        # PCRE2 refuses a set at either end of a range, which Perl only warns about.
        pattern, pos = self.pattern, self.pos
        followed = (
            pattern.startswith("-", pos) and pos + 1 < len(pattern) and pattern[pos + 1] != "]"
        )
        if self.after_hyphen or followed:
            raise InvalidFilterError("invalid range in character class")
        self.set_read = True
        self.out.append(body)

    def outside(self) -> None:
        pattern, pos = self.pattern, self.pos
        char = pattern[pos]
        if char == "[":
            self.size.item()
            self.open_class()
            return
        inline = _INLINE_OPTIONS.match(pattern, pos) if char == "(" else None
        quantifier = _QUANTIFIER.match(pattern, pos) if char == "{" else None
        if inline is not None:
            if inline.group().endswith(":"):
                self.size.open_group()
            # Taken as set to the end of the pattern: "x" decides what a "#" starts, "m"
            # what a "^" means.
            on, off = inline.group(1), inline.group(2) or ""
            self.extended = ("x" in on or self.extended) and "x" not in off
            self.multiline = ("m" in on or self.multiline) and "m" not in off
            end = inline.end()
        elif pattern.startswith("(?#", pos):  # a comment, which may hold anything but ")"
            end = pattern.find(")", pos)
            end = len(pattern) if end < 0 else end + 1
        elif char == "^" and self.multiline:
            self.out.append(r"(?:\A|^(?!\z))")  # not after a newline that ends the value
            self.pos += 1
            return
        elif char == "#" and self.extended:
            end = pattern.find("\n", pos)
            end = len(pattern) if end < 0 else end + 1
        elif self.extended and (char in _PATTERN_SPACE or char.isspace()):
            self.out.append(" " if char in _PATTERN_SPACE else _literal(ord(char)))
            self.pos += 1
            return
        elif quantifier is not None:
            self.size.repeat(quantifier.group())
            end = quantifier.end()
        else:
            self.size.char(char)
            end = pos + 1
        self.out.append(pattern[pos:end])
        self.pos = end

    def open_class(self) -> None:
        self.in_class = True
        self.out.append("[")
        self.pos += 1
        if self.pattern.startswith("^", self.pos):
            self.out.append("^")
            self.pos += 1
        if self.pattern.startswith("]", self.pos):  # first in a class, "]" is itself
            self.out.append(r"\]")
            self.pos += 1
        self.last_member = "char" if self.out[-1] == r"\]" else None

    def class_member(self) -> None:
        char = self.pattern[self.pos]
        if char == "]":
            self.in_class = False
            self.out.append(char)
            self.pos += 1
            return
        if char == "[":
            posix = _POSIX_CLASS.match(self.pattern, self.pos)
            if posix is not None and posix.group(2) in _POSIX and self.ucp:
                self.out.append(posix.group())  # regex's own, Unicode, meaning
                self.pos = posix.end()
                return
            if posix is not None and posix.group(2) not in _POSIX:
                raise InvalidFilterError(f"unknown POSIX class name {posix.group()}")
            if posix is not None:
                ranges = _POSIX[posix.group(2)]
                self.pos = posix.end()
                self.class_set(_class_body(_complement(ranges) if posix.group(1) else ranges))
                return
            self.out.append(r"\[")  # a "[" in a class is itself to PCRE
            self.pos += 1
            return
        if char == "-" and self.last_member == "char":
            self.range_open = self.pattern[self.pos + 1 : self.pos + 2] not in ("", "]")
        self.out.append(char)
        self.pos += 1

    def escape(self) -> None:
        pattern, pos = self.pattern, self.pos
        if pos + 1 >= len(pattern):
            self.out.append("\\")  # left for the engine to refuse
            self.pos += 1
            return
        letter = pattern[pos + 1]
        self.pos += 2
        if self.ucp and letter in "dDsSwWbB":
            self.out.append(pattern[pos : pos + 2])  # regex's own, Unicode, meaning
        elif letter.lower() in _TYPES:
            self.generic_type(letter)
        elif letter in "bB" and not self.in_class:
            self.out.append(_BOUNDARY if letter == "b" else _NO_BOUNDARY)
        elif letter == "Z" and not self.in_class:
            self.out.append(r"(?=\n?\z)")  # PCRE's \Z also matches before a final newline
        elif letter == "N":
            self.any_but_newline()
        elif letter in "pP" and not self.in_class:
            # Properties are not widened by "i" in PCRE2: \p{Lu} is upper case letters only.
            found = _PROPERTY.match(pattern, self.pos)
            end = found.end() if found else self.pos
            self.out.append(f"(?-i:{pattern[pos:end]})")
            self.pos = end
        elif letter == "Q":
            self.quoted()
        elif letter == "E":
            pass  # a \E that ends no \Q is ignored
        elif letter == "e":
            self.out.append(_literal(0x1B))
        elif letter == "c":
            self.control()
        elif letter == "x" and pattern.startswith("{", self.pos):
            self.out.append(_literal(self.braced(_HEX, 16, r"\x{...} needs hexadecimal digits")))
        elif letter == "o" and pattern.startswith("{", self.pos):
            self.out.append(_literal(self.braced(_OCTAL, 8, r"\o{...} needs octal digits")))
        elif letter == "k" and not self.in_class:
            self.named_reference()
        else:
            self.out.append(pattern[pos : pos + 2])

    def any_but_newline(self) -> None:
        if self.in_class:
            raise InvalidFilterError(r"\N is not allowed in a character class")
        if self.pattern.startswith("{", self.pos) and not _QUANTIFIER.match(self.pattern, self.pos):
            self.out.append(r"\N")  # \N{name}: refused by MongoDB, left to regex
            return
        self.out.append(r"[^\n]")  # {2} after it repeats it

    def generic_type(self, letter: str) -> None:
        ranges = _TYPES[letter.lower()]
        negated = letter.isupper()
        if self.in_class:
            self.class_set(_class_body(_complement(ranges) if negated else ranges))
        else:
            # Not regex's ASCII flag scoped to it, (?a:\W): with "i", regex then misses "é"
            # for x?(?a:\W). With "i", a class takes the Kelvin sign and the long s for k and
            # s, where PCRE2 takes no case variant for \w: a far smaller difference.
            self.out.append(("[^" if negated else "[") + _class_body(ranges) + "]")

    def quoted(self) -> None:
        end = self.pattern.find(r"\E", self.pos)
        end = len(self.pattern) if end < 0 else end
        self.out.extend(_literal(ord(char)) for char in self.pattern[self.pos : end])
        self.pos = min(end + 2, len(self.pattern))

    def control(self) -> None:
        if self.pos >= len(self.pattern) or not 0x20 <= ord(self.pattern[self.pos]) < 0x7F:
            raise InvalidFilterError(r"\c needs a printable ASCII character after it")
        self.out.append(_literal(ord(self.pattern[self.pos].upper()) ^ 0x40))
        self.pos += 1

    def braced(self, digits: re.Pattern[str], base: int, message: str) -> int:
        found = digits.match(self.pattern, self.pos + 1)
        end = found.end() if found else self.pos + 1
        if found is None or not self.pattern.startswith("}", end):
            raise InvalidFilterError(message)
        value = int(found.group(), base)
        if value > MAX_CODE_POINT:
            raise InvalidFilterError(f"{self.pattern[self.pos - 2 : end + 1]} is beyond Unicode")
        self.pos = end + 1
        return value

    def named_reference(self) -> None:
        opening = self.pattern[self.pos : self.pos + 1]
        closing = _GROUP_NAME.get(opening)
        end = self.pattern.find(closing, self.pos + 1) if closing else -1
        if closing is None or end < 0:
            raise InvalidFilterError(r"\k needs a group name in <>, {} or ''")
        self.out.append(f"(?P={self.pattern[self.pos + 1 : end]})")
        self.pos = end + 1


_WORD_CLASS = "[0-9A-Za-z_]"


class _Size:
    """How many items a pattern's counted repetitions expand to, counted as it is read: each
    group's items summed, a count multiplying the item or group it follows. Alternatives are
    summed too, an upper bound. InvalidFilterError past ``MAX_REPEAT`` or
    ``MAX_REPEATED_ITEMS``, before regex tries to compile it."""

    def __init__(self) -> None:
        self.groups: list[int] = [0]  # the items of each open group, the pattern's first
        self.last = 0  # the size of the item a count would repeat (0: none)

    def item(self, size: int = 1) -> None:
        self.groups[-1] += size
        self.last = size

    def char(self, char: str) -> None:
        if char == "(":
            self.open_group()
        elif char == ")" and len(self.groups) > 1:  # an unmatched one is regex's to refuse
            self.item(max(self.groups.pop(), 1))
        elif char in "*+?|^$":
            self.last = 0  # unbounded or optional repeats are not expanded
        else:
            self.item()

    def open_group(self) -> None:
        self.groups.append(0)
        self.last = 0

    def repeat(self, quantifier: str) -> None:
        counts = [int(n) for n in quantifier[1:-1].split(",") if n]
        if max(counts) > MAX_REPEAT:
            raise InvalidFilterError(f"number too big in {{}} quantifier (at most {MAX_REPEAT})")
        self.groups[-1] += self.last * (max(counts) - 1)
        self.last = 0
        if sum(self.groups) > MAX_REPEATED_ITEMS:
            raise InvalidFilterError(
                f"its nested repetitions come to more than {MAX_REPEATED_ITEMS:,} items; "
                "use smaller counts, or a + or * instead of a count"
            )


_BOUNDARY = f"(?:(?<={_WORD_CLASS})(?!{_WORD_CLASS})|(?<!{_WORD_CLASS})(?={_WORD_CLASS}))"
_NO_BOUNDARY = f"(?:(?<={_WORD_CLASS})(?={_WORD_CLASS})|(?<!{_WORD_CLASS})(?!{_WORD_CLASS}))"


def _literal(code_point: int) -> str:
    # One escape form for any character, in or out of a class, and whatever the options.
    return f"\\U{code_point:08x}"


def _class_body(ranges: Ranges) -> str:
    return "".join(
        _literal(low) if low == high else f"{_literal(low)}-{_literal(high)}"
        for low, high in ranges
    )


def _complement(ranges: Ranges) -> Ranges:
    gaps = []
    start = 0
    for low, high in ranges:
        if low > start:
            gaps.append((start, low - 1))
        start = high + 1
    if start <= MAX_CODE_POINT:
        gaps.append((start, MAX_CODE_POINT))
    return tuple(gaps)
