"""The final-number extractor on hand cases, and numeric equality."""

from __future__ import annotations

import pytest

from fusechat.evaluate.numbers import extract_number, numbers_equal


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#### 240", 240),
        ("8 * 30 = 240 pizzas.\n#### 240", 240),
        ("First 12 + 3 = 15.\n#### 15\nHope that helps, 7 more?", 15),  # the `####` line wins over later numbers
        ("The answer is 3164.\n#### 3164\nThe answer is 3164.\n#### 316", 3164),  # cut by the token limit
        ("The answer is $1,234.", 1234),
        ("So the answer is: **42**.", 42),
        ("The final answer is \\boxed{17}.", 17),
        ("Answer: 12. Check: 12 - 5 = 7", 12),  # an explicit "answer" phrase wins over the last number
        ("It costs $5. So 5 + 3 = 8.", 8),  # otherwise the last number
        ("total = 42.5 km.", 42.5),
        ("She has 3/4 of the pie left", 0.75),
        ("The difference is -7 degrees", -7),
        ("5-3 = 2", 2),
        ("In 2023 there were 1,000,000 people.", 1_000_000),
        ("A tenth is .5 of a fifth", 0.5),
        ("She ate 2 apples, 3 pears, and 10 plums", 10),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_number(text, expected):
    got = extract_number(text)
    assert (got is None and expected is None) or got == pytest.approx(expected)


def test_first_number_for_asdiv_answers():
    assert extract_number("9 apples", last=False) == 9
    assert extract_number("1,500 dollars then 3", last=False) == 1500


def test_numbers_equal():
    assert numbers_equal(240.0, 240)
    assert numbers_equal(0.1 + 0.2, 0.3)
    assert not numbers_equal(241.0, 240)
    assert not numbers_equal(None, 0)
    assert not numbers_equal(float("nan"), 0)
