"""The final number of a model's answer, read robustly, and numeric equality for exact-match grading.

Small chat models end their answers in many ways ("#### 42", "The answer is $1,234.", "**42**", "= 42.5 km").
The rule: the first explicit `#### N` (or `\boxed{N}`) wins: small models often repeat "#### N" until the token
limit cuts the last copy mid-number; otherwise the number after the last "answer is"/"answer:"; otherwise the
last number in the text. Thousands separators (1,234), currency and percent signs, and trailing
periods are stripped; "3/4" is read as 0.75.
"""

from __future__ import annotations

import math
import re

_NUM = r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|-?\.\d+"
_NUMBER = re.compile(rf"(?<![\w.])\$?\s*({_NUM})")
_HASHES = re.compile(rf"####\s*\$?\s*({_NUM})")
_ANSWER_IS = re.compile(rf"answer(?:\s+is)?\s*[:=]?\s*(?:\*\*|\\boxed\{{)?\s*\$?\s*({_NUM})", re.IGNORECASE)
_BOXED = re.compile(rf"\\boxed\{{\s*\$?\s*({_NUM})")


def _to_float(text: str) -> float | None:
    text = text.replace(",", "").replace(" ", "")
    try:
        if "/" in text:
            a, b = text.split("/")
            return float(a) / float(b) if float(b) != 0 else None
        return float(text)
    except ValueError:
        return None


def extract_number(text: str, last: bool = True) -> float | None:
    """The answer number in `text` (see module doc); with `last=False`, simply the first number. None if none."""
    if not last:
        m = _NUMBER.search(text)
        return _to_float(m.group(1)) if m else None
    for pattern, pick in ((_HASHES, 0), (_BOXED, 0), (_ANSWER_IS, -1)):
        found = pattern.findall(text)
        if found:
            value = _to_float(found[pick])
            if value is not None:
                return value
    found = _NUMBER.findall(text)
    for candidate in reversed(found):
        value = _to_float(candidate)
        if value is not None:
            return value
    return None


def numbers_equal(predicted: float | None, gold: float, rel: float = 1e-6) -> bool:
    """Numeric equality, tolerant of float formatting (240 == 240.0; 0.1 + 0.2 == 0.3)."""
    if predicted is None or math.isnan(predicted):
        return False
    return math.isclose(predicted, gold, rel_tol=rel, abs_tol=1e-9)
