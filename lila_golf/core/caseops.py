"""CaseOps: a lossless case transform for case-folding tokenizers (the 1.0611 record's sp8192).

    encoded = caseops_encode("The NASA iPhone")   # "\ue001the \ue002nasa i\ue003phone"
    caseops_decode(encoded) == "The NASA iPhone"
    caseops_byte_counts(encoded)                   # original UTF-8 bytes per encoded character

Only ASCII letters change case: a word (maximal run of ASCII letters) that is Titlecase (one capital
then lowercase, including a lone capital) becomes TITLE + lowercase, an all-capitals word of two or
more letters ALLCAPS + lowercase, and any other capital becomes CAPNEXT + its lowercase letter. A
literal operator character in the text is written ESC + itself. Nothing else changes, so a character
whose case mapping changes its UTF-8 length (e.g. "İ") passes through untouched and the byte
accounting stays exact. The operators are the private-use characters U+E001..U+E004, pieces 4..7 of
the record's tokenizer (lila_golf.core.data.CASEOPS_OPERATORS).
"""
from __future__ import annotations

from .data import CASEOPS_OPERATORS

CASEOPS_TITLE, CASEOPS_ALLCAPS, CASEOPS_CAPNEXT, CASEOPS_ESC = CASEOPS_OPERATORS


class CaseOpsError(ValueError):
    """Text that is not a valid CaseOps encoding."""


def _ascii_letter(ch: str) -> bool:
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def _encode_word(word: str) -> str:
    """One maximal run of ASCII letters."""
    if word.islower():
        return word
    if word[0].isupper() and (len(word) == 1 or word[1:].islower()):
        return CASEOPS_TITLE + word.lower()
    if len(word) > 1 and word.isupper():
        return CASEOPS_ALLCAPS + word.lower()
    return "".join(CASEOPS_CAPNEXT + c.lower() if c.isupper() else c for c in word)


def caseops_encode(text: str) -> str:
    """Lowercase the text losslessly, writing its case as operator characters."""
    out, i, n = [], 0, len(text)
    while i < n:
        if not _ascii_letter(text[i]):
            out.append(CASEOPS_ESC + text[i] if text[i] in CASEOPS_OPERATORS else text[i])
            i += 1
            continue
        j = i
        while j < n and _ascii_letter(text[j]):
            j += 1
        out.append(_encode_word(text[i:j]))
        i = j
    return "".join(out)


def _decode_word(encoded: str, i: int, mode: str, out: list) -> int:
    """Decode the lowercase word starting at i under TITLE/ALLCAPS; return the index after it."""
    j = i
    while j < len(encoded) and "a" <= encoded[j] <= "z":
        j += 1
    if j == i:
        raise CaseOpsError(f"case operator at {i - 1} is not followed by a lowercase ASCII letter")
    word = encoded[i:j]
    out.append(word.upper() if mode == CASEOPS_ALLCAPS else word[0].upper() + word[1:])
    return j


def caseops_decode(encoded: str) -> str:
    """Inverse of caseops_encode; a malformed encoding raises CaseOpsError."""
    out, i, n = [], 0, len(encoded)
    while i < n:
        ch = encoded[i]
        if ch == CASEOPS_ESC:
            if i + 1 >= n or encoded[i + 1] not in CASEOPS_OPERATORS:
                raise CaseOpsError(f"ESC at {i} does not escape an operator character")
            out.append(encoded[i + 1])
            i += 2
        elif ch in (CASEOPS_TITLE, CASEOPS_ALLCAPS):
            i = _decode_word(encoded, i + 1, ch, out)
        elif ch == CASEOPS_CAPNEXT:
            if i + 1 >= n or not "a" <= encoded[i + 1] <= "z":
                raise CaseOpsError(f"CAPNEXT at {i} is not followed by a lowercase ASCII letter")
            out.append(encoded[i + 1].upper())
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def caseops_byte_counts(encoded: str) -> list[int]:
    """For each character of an encoded text, the UTF-8 bytes of the original text it stands for:
    operators 0, an escaped operator its own 3, anything else its UTF-8 length (a lowercased ASCII
    letter stands for its 1-byte original). Sums to len(caseops_decode(encoded).encode())."""
    counts, escaped = [], False
    for ch in encoded:
        if escaped:
            counts.append(len(ch.encode("utf-8")))
            escaped = False
        elif ch in CASEOPS_OPERATORS:
            counts.append(0)
            escaped = ch == CASEOPS_ESC
        else:
            counts.append(len(ch.encode("utf-8")))
    return counts
