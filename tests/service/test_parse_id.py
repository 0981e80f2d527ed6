"""parse_id: the one reading of a row id sent by a user (URL, form, query string, Akismet guid)."""

from __future__ import annotations

import pytest

from service.models import MAX_ID, parse_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", 1),
        ("42", 42),
        ("007", 7),
        (str(MAX_ID), MAX_ID),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_ascii_digit_strings_in_range_are_ids(raw: str, expected: int) -> None:
    assert parse_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "0",
        "00",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1\n",
        "\t1",
        "1_000",
        "1.0",
        "1e3",
        "0x1f",
        "١",  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
        "١٢",
        "１",  # FULLWIDTH DIGIT ONE
        "²",  # isdigit() but int() refuses it
        "٣4",
        str(2**63),
        str(MAX_ID + 1),
        "9" * 20,
        "9" * 30,
        "9" * 5000,  # past int()'s digit limit: must not raise
        "0" * 30 + "1",
        "abc",
        None,
        1,
        b"1",
        ["1"],
    ],
)
def test_anything_else_is_no_id(raw: object) -> None:
    assert parse_id(raw) is None
