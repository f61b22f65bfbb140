"""Shell-style globs for site names, matched in O(len(pattern) * len(name)).

Site patterns come from requests, so the matcher must not be a way to burn CPU or memory:
`fnmatch` translates every pattern to a regular expression (quadratic in the pattern when a
`[` is never closed: "*[" * 20000 takes seconds) and keeps each distinct pattern in a
cache. Here a pattern is parsed once into tokens in one left-to-right pass and matched
with the star-backtracking algorithm (Russ Cox, "Glob Matching Can Be Simple And Fast
Too"): only the last `*` is ever retried, so no input is exponential or worse than
pattern length times name length. Nothing is cached.

The syntax is `fnmatch.fnmatchcase`'s: `*` any run of characters (dots included), `?` one
character, `[abc]` / `[a-z]` / `[!abc]` one character in (or not in) a class, where a `]`
right after `[` or `[!` is a member and a `-` first or last is literal. Everything else,
a lone `]` included, is literal. One difference on purpose: a `[` that is never closed is
an error here, where fnmatch silently treats it as a literal `[`.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_PATTERN_LENGTH = 256  # site names are tens of characters; a longer pattern is a mistake or an attack


@dataclass(frozen=True)
class _Class:
    """`[...]`: literal members and inclusive ranges, maybe negated."""

    members: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    negated: bool

    def matches(self, char: str) -> bool:
        inside = char in self.members or any(low <= char <= high for low, high in self.ranges)
        return inside != self.negated


class _Star:
    """`*`: any run of characters."""


class _AnyOne:
    """`?`: exactly one character."""


STAR, ANY_ONE = _Star(), _AnyOne()
_Token = str | _Class | _Star | _AnyOne


@dataclass(frozen=True)
class Glob:
    pattern: str
    tokens: tuple[_Token, ...]

    def matches(self, name: str) -> bool:
        tokens, n_tokens, n_chars = self.tokens, len(self.tokens), len(name)
        t = c = 0
        retry_t = retry_c = -1  # after a mismatch: resume just past the last `*`, which eats one more char
        while t < n_tokens or c < n_chars:
            if t < n_tokens:
                token = tokens[t]
                if token is STAR:
                    retry_t, retry_c = t, c + 1
                    t += 1
                    continue
                if c < n_chars and _matches_one(token, name[c]):
                    t += 1
                    c += 1
                    continue
            if 0 < retry_c <= n_chars:
                t, c = retry_t, retry_c
                continue
            return False
        return True


def _matches_one(token: _Token, char: str) -> bool:
    if token is ANY_ONE:
        return True
    if isinstance(token, _Class):
        return token.matches(char)
    return token == char


def compile_glob(pattern: str) -> Glob:
    """Parse `pattern`; a ValueError says what is wrong (too long, an unclosed `[`)."""
    if not isinstance(pattern, str):
        raise ValueError(f"a site pattern must be a string, got {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"site pattern is {len(pattern)} characters long; at most {MAX_PATTERN_LENGTH} are allowed")
    tokens: list[_Token] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if not tokens or tokens[-1] is not STAR:  # `**` means the same as `*`
                tokens.append(STAR)
            i += 1
        elif char == "?":
            tokens.append(ANY_ONE)
            i += 1
        elif char == "[":
            token, i = _parse_class(pattern, i)
            tokens.append(token)
        else:
            tokens.append(char)
            i += 1
    return Glob(pattern, tuple(tokens))


def _parse_class(pattern: str, start: int) -> tuple[_Class, int]:
    """The class opening at `pattern[start] == "["`, and the index just past its `]`."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] == "!"
    if negated:
        i += 1
    body_start = i
    if i < len(pattern) and pattern[i] == "]":  # a `]` first is a member, not the end
        i += 1
    end = pattern.find("]", i)
    if end < 0:
        raise ValueError(
            f"site pattern {pattern[:80]!r}: the '[' at position {start} has no closing ']' "
            "(to match a literal '[', write '[[]')"
        )
    body = pattern[body_start:end]
    members: set[str] = set()
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":  # `a-z`; a `-` first or last is literal
            if body[k] <= body[k + 2]:  # `z-a` is empty, as in fnmatch
                ranges.append((body[k], body[k + 2]))
            k += 3
        else:
            members.add(body[k])
            k += 1
    return _Class(frozenset(members), tuple(ranges), negated), end + 1
