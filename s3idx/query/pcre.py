"""A $regex pattern as MongoDB reads it, written for Python's ``regex`` engine.

MongoDB compiles every ``$regex`` with PCRE2 in UTF mode and without Unicode properties for
the generic types (``PCRE2_UTF``, no ``PCRE2_UCP``: ``src/mongo/util/pcre_util.cpp``). So, per the
PCRE2 manual, ``\\d \\s \\w`` (and ``\\b``, built on ``\\w``) and the POSIX classes match ASCII
characters only, while ``i`` folds case and ``\\p{..}`` tests properties across all of Unicode.
``regex`` gives the generic types their Unicode meaning, and reads some of PCRE's syntax
otherwise (``\\Z``, ``\\N``, ``\\v``) or not at all (``\\Q...\\E``, ``\\x{..}``, ``\\k<name>``).
``translate`` rewrites exactly those pieces, in one pass that knows where character classes
are, so that a filter selects on SQLite the documents MongoDB selects.

Under ``i`` (the option, or inline ``(?i)``, ``(?i:...)``, which last to the end of their group,
and ``(?-i)``), ``regex``'s IGNORECASE is never used: it folds by other equivalences (U+0130
for i) and folds a whole class, ``\\W`` and the POSIX classes included (so ``[^\\W_]`` lost k
and s to the Kelvin sign and the long s). Instead each literal and range is written out with
its PCRE2 caseless set (``s3idx.query.caseless``), while the generic types, POSIX classes and
``\\p{..}`` are left as they are, as PCRE2 leaves them; ``[:upper:]`` and ``[:lower:]`` become
``[:alpha:]``, as PCRE2 makes them under ``i``.

Checked against PCRE2 itself (libpcre2-8 through ctypes, random patterns and values, and each
character with a case); the differences left are in patterns PCRE2 refuses (a quantifier
after ``^`` in ``x`` mode), in backreferences under ``i``, which ``regex`` compares with its own
folding (``(i)\\1`` takes U+0130 for the second i, ``(I)\\1`` U+0131; and U+0390/U+1FD3,
U+03B0/U+1FE3, U+FB05/U+FB06 count as equal), and PCRE2's own handling of characters beyond
U+00FF in classes holding POSIX classes (negated, or beside ``\\D \\W \\S``) or, negated,
``\\p{..}`` beside ``\\D \\W \\S`` (``[^\\p{Lu}\\S]`` matches U+03C3 in PCRE2 10.42).
"""

from __future__ import annotations

import re

from s3idx.errors import InvalidFilterError
from s3idx.query.caseless import case_set, close_ranges

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
_SHORT_HEX = re.compile(r"[0-9A-Fa-f]{0,2}")  # \xhh: at most two digits, maybe none (NUL)
_SHORT_OCTAL = re.compile(r"[0-7]{1,3}")  # \ddd in a class, \0dd outside one
_REFERENCE_NUMBER = re.compile(r"[1-9][0-9]*")  # \1, \12: a backreference outside a class
# What follows \g: a group's number or name, braced, angled, quoted or bare.
_G_REFERENCE = re.compile(r"\{[^}]*\}|<[^>]*>|'[^']*'|[+-]?[0-9]+")
# The start of a group or item that holds names or numbers, not letters to match: copied as
# it is. Named groups and conditions open a group; the others are complete items.
_NAMED_GROUP = re.compile(r"\(\?(?:P?<(?![=!])[^>]*>|'[^']*'|\([^)]*\))")
_BACKREFERENCE_ITEM = re.compile(r"\(\?P=[^)]*\)")
_CALL_ITEM = re.compile(r"\(\?(?:R|[+-]?[0-9]+|&[^)]*|P>[^)]*|C[^)]*)\)|\(\*[^)]*\)")
# Escapes standing for one control character.
_CONTROL_ESCAPES = {"a": 0x07, "e": 0x1B, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09}
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
        # regex never folds case here (its equivalences are not PCRE2's, and it would widen \w
        # and the POSIX classes): under i, literals and ranges are written out as their
        # caseless sets. i lasts to the end of the group where it is set, as in PCRE2.
        self.caseless = "i" in options
        self.outer_caseless: list[bool] = []  # for each open group, i as it was before it
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
        # The class's characters and ranges, whose caseless sets i adds when it closes.
        self.class_literals: list[tuple[int, int]] = []
        self.range_start: int | None = None  # the character a "-" would start a range from
        self.literal_read = False
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
            self.literal_read = False
            if escaped:
                self.escape()
            else:
                self.class_member()
            if not self.literal_read and not self.range_open:
                self.range_start = None
            if self.in_class and not self.range_open:
                kind = "range" if self.after_hyphen else "char"
                self.last_member = "set" if self.set_read else kind
        return "".join(self.out)

    def class_set(self, body: str) -> None:
        """A set of characters (\\d, [:alpha:], \\p{L}, ...) as a member of a class."""
        # PCRE2 refuses a set at either end of a range, which Perl only warns about.
        pattern, pos = self.pattern, self.pos
        followed = (
            pattern.startswith("-", pos) and pos + 1 < len(pattern) and pattern[pos + 1] != "]"
        )
        if self.after_hyphen or followed:
            raise InvalidFilterError("invalid range in character class")
        self.set_read = True
        self.out.append(body)

    def literal(self, code_point: int) -> None:
        """One character, from the pattern or an escape: under i, its caseless set."""
        if not self.in_class:
            self.out.append(
                _caseless_literal(code_point) if self.caseless else _literal(code_point)
            )
            return
        self.out.append(_literal(code_point))
        self.literal_read = True
        if self.after_hyphen and self.range_start is not None:
            self.class_literals.append((self.range_start, code_point))
            self.range_start = None
        else:
            self.class_literals.append((code_point, code_point))
            self.range_start = code_point

    def reference(self, text: str) -> str:
        """A backreference: PCRE2 compares it caselessly where i is set at it."""
        return f"(?i:{text})" if self.caseless else text

    def outside(self) -> None:
        pattern, pos = self.pattern, self.pos
        char = pattern[pos]
        if char == "[":
            self.size.item()
            self.open_class()
            return
        if char == "(" and self.group_item():
            return
        inline = _INLINE_OPTIONS.match(pattern, pos) if char == "(" else None
        quantifier = _QUANTIFIER.match(pattern, pos) if char == "{" else None
        text = None
        if inline is not None:
            text = self.inline_options(inline)
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
            self.group_edge(char)
            if self.caseless and len(case_set(ord(char))) > 1:
                text = _caseless_literal(ord(char))
            end = pos + 1
        self.out.append(pattern[pos:end] if text is None else text)
        self.pos = end

    def group_item(self) -> bool:
        """A named group or condition, or an item naming or numbering one: copied as it is
        (a name is no letters to fold). False if the "(" here starts none of these."""
        pattern, pos = self.pattern, self.pos
        if found := _NAMED_GROUP.match(pattern, pos):
            self.size.open_group()
            self.outer_caseless.append(self.caseless)
            text = found.group()
        elif found := _BACKREFERENCE_ITEM.match(pattern, pos):
            self.size.item()
            text = self.reference(found.group())
        elif found := _CALL_ITEM.match(pattern, pos):
            self.size.item()
            text = found.group()
        else:
            return False
        self.out.append(text)
        self.pos = found.end()
        return True

    def group_edge(self, char: str) -> None:
        """i as set inside a group ends with it."""
        if char == "(":
            self.outer_caseless.append(self.caseless)
        elif char == ")" and self.outer_caseless:
            self.caseless = self.outer_caseless.pop()

    def inline_options(self, inline: re.Match[str]) -> str:
        """An inline option setting, such as (?x), (?i-x) or (?x:, without its i, which is
        this translation's to apply, not regex's."""
        if inline.group().endswith(":"):
            self.size.open_group()
            self.outer_caseless.append(self.caseless)
        # Taken as set to the end of the pattern: "x" decides what a "#" starts, "m" what a
        # "^" means. i, to the end of the group.
        on, off = inline.group(1), inline.group(2) or ""
        self.extended = ("x" in on or self.extended) and "x" not in off
        self.multiline = ("m" in on or self.multiline) and "m" not in off
        self.caseless = ("i" in on or self.caseless) and "i" not in off
        on, off = on.replace("i", ""), off.replace("i", "")
        letters = on + ("-" + off if off else "")
        if inline.group().endswith(":"):
            return f"(?{letters}:"
        return f"(?{letters})" if letters else ""

    def open_class(self) -> None:
        self.in_class = True
        self.class_literals = []
        self.range_start = None
        self.after_hyphen = False
        self.out.append("[")
        self.pos += 1
        if self.pattern.startswith("^", self.pos):
            self.out.append("^")
            self.pos += 1
        self.last_member = None
        if self.pattern.startswith("]", self.pos):  # first in a class, "]" is itself
            self.literal(ord("]"))
            self.pos += 1
            self.last_member = "char"

    def close_class(self) -> None:
        if self.caseless and self.class_literals:
            # Listed again with their caseless sets; [^...] then leaves out all of those.
            self.out.append(_class_body(close_ranges(tuple(self.class_literals))))
        self.in_class = False
        self.out.append("]")
        self.pos += 1

    def class_member(self) -> None:
        char = self.pattern[self.pos]
        if char == "]":
            self.close_class()
            return
        if char == "[":
            posix = _POSIX_CLASS.match(self.pattern, self.pos)
            if posix is not None:
                self.posix_class(posix)
                return
        if char == "-" and self.last_member == "char":
            self.range_open = self.pattern[self.pos + 1 : self.pos + 2] not in ("", "]")
        if self.range_open:
            self.out.append(char)
        else:
            self.literal(ord(char))
        self.pos += 1

    def posix_class(self, posix: re.Match[str]) -> None:
        negated, name = posix.group(1), posix.group(2)
        if name not in _POSIX:
            raise InvalidFilterError(f"unknown POSIX class name {posix.group()}")
        if self.caseless and name in ("upper", "lower"):
            name = "alpha"  # PCRE2 takes them for [:alpha:] under i: letters of either case
        self.pos = posix.end()
        if self.ucp:
            self.out.append(f"[:{negated}{name}:]")  # regex's own, Unicode, meaning
            return
        ranges = _POSIX[name]
        self.class_set(_class_body(_complement(ranges) if negated else ranges))

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
        elif letter in "pP":
            self.property(pos)
        elif letter == "Q":
            self.quoted()
        elif letter == "E":
            pass  # a \E that ends no \Q is ignored
        elif letter == "c":
            self.control()
        elif letter == "x" and pattern.startswith("{", self.pos):
            self.literal(self.braced(_HEX, 16, r"\x{...} needs hexadecimal digits"))
        elif letter == "o" and pattern.startswith("{", self.pos):
            self.literal(self.braced(_OCTAL, 8, r"\o{...} needs octal digits"))
        elif letter == "x":
            self.short_number(_SHORT_HEX, 16, self.pos)
        elif letter == "k" and not self.in_class:
            self.named_reference()
        elif letter == "g" and not self.in_class:
            self.g_reference(pos)
        elif letter in "0123456789":
            self.digits(letter, pos)
        elif letter in _CONTROL_ESCAPES or (letter == "b" and self.in_class):
            self.literal(_CONTROL_ESCAPES.get(letter, 0x08))  # \b in a class: backspace
        elif not (letter.isascii() and letter.isalnum()):
            self.literal(ord(letter))  # an escaped non-alphanumeric is itself
        else:
            self.out.append(pattern[pos : pos + 2])

    def property(self, pos: int) -> None:
        # Properties are not widened by i in PCRE2: \p{Lu} is upper case letters only.
        found = _PROPERTY.match(self.pattern, self.pos)
        self.pos = found.end() if found else self.pos
        if self.in_class:
            self.class_set(self.pattern[pos : self.pos])
        else:
            self.out.append(self.pattern[pos : self.pos])

    def short_number(self, digits: re.Pattern[str], base: int, start: int) -> None:
        found = digits.match(self.pattern, start)
        text = found.group() if found else ""
        self.pos = start + len(text)
        self.literal(int(text, base) if text else 0)

    def digits(self, letter: str, pos: int) -> None:
        """\\0 octal; inside a class, \\ddd octal and \\8 \\9 themselves; outside one, \\1 and
        on a backreference (as regex reads it)."""
        if self.in_class and letter in "89":
            self.literal(ord(letter))
        elif self.in_class or letter == "0":
            self.short_number(_SHORT_OCTAL, 8, pos + 1)
        else:
            found = _REFERENCE_NUMBER.match(self.pattern, pos + 1)
            end = found.end() if found else self.pos
            self.out.append(self.reference(self.pattern[pos:end]))
            self.pos = end

    def g_reference(self, pos: int) -> None:
        # Its group's number or name, copied as it is (not letters to fold).
        found = _G_REFERENCE.match(self.pattern, self.pos)
        self.pos = found.end() if found else self.pos
        self.out.append(self.pattern[pos : self.pos])

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
            # Not regex's ASCII flag scoped to it, (?a:\W): regex then misses "é" for
            # x?(?a:\W) under its IGNORECASE. Written out, the class means the same to any
            # flags, and i does not widen it in PCRE2 either.
            self.out.append(("[^" if negated else "[") + _class_body(ranges) + "]")

    def quoted(self) -> None:
        end = self.pattern.find(r"\E", self.pos)
        end = len(self.pattern) if end < 0 else end
        for index, char in enumerate(self.pattern[self.pos : end]):
            if index:  # only the first quoted character can end a range
                self.after_hyphen = False
            self.literal(ord(char))
        self.pos = min(end + 2, len(self.pattern))

    def control(self) -> None:
        if self.pos >= len(self.pattern) or not 0x20 <= ord(self.pattern[self.pos]) < 0x7F:
            raise InvalidFilterError(r"\c needs a printable ASCII character after it")
        code_point = ord(self.pattern[self.pos].upper()) ^ 0x40
        self.pos += 1
        self.literal(code_point)

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
        self.out.append(self.reference(f"(?P={self.pattern[self.pos + 1 : end]})"))
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
    # One escape form for any character, in or out of a class, and whatever the options; an
    # ASCII letter as itself, which means the same there and is a fifth as long (a caseless
    # pattern of 900 letters: 3,600 characters, compiled in 67 ms against 93). Not a digit,
    # which would extend a backreference (\1) or make a quantifier ({2}) of what precedes it.
    char = chr(code_point)
    return char if char.isascii() and char.isalpha() else f"\\U{code_point:08x}"


def _caseless_literal(code_point: int) -> str:
    """A character outside a class under i: a class of its caseless set, if it has one."""
    members = case_set(code_point)
    if len(members) == 1:
        return _literal(code_point)
    return "[" + "".join(_literal(member) for member in members) + "]"


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
