"""The bounds every JSON document from outside is held to (operations.documents)."""

from __future__ import annotations

import pytest

from operations import documents
from operations.errors import DocumentError


def nested(depth: int) -> bytes:
    return b'{"x":' + b"[" * depth + b"]" * depth + b"}"


def test_a_document_within_the_bounds_decodes_as_it_is() -> None:
    raw = b'{"a":[1,-9223372036854775808,{"b":null,"c":9223372036854775807}],"d":"e"}'
    assert documents.decode(raw) == {
        "a": [1, -(2**63), {"b": None, "c": 2**63 - 1}],
        "d": "e",
    }
    assert documents.decode(nested(documents.MAX_DEPTH - 1))["x"] is not None


@pytest.mark.parametrize("depth", [documents.MAX_DEPTH, 252, 700, 1_100, 20_000])
def test_nesting_past_the_limit_is_refused_whatever_its_depth(depth: int) -> None:
    with pytest.raises(DocumentError, match="nested more than 32 levels deep"):
        documents.decode(nested(depth))


@pytest.mark.parametrize("number", [2**63, 2**64 + 1, -(2**63) - 1, 10**40])
def test_integers_outside_64_bits_are_refused_naming_where(number: int) -> None:
    with pytest.raises(DocumentError) as raised:
        documents.decode(b'{"a":[0,{"b":%d}]}' % number)
    assert raised.value.where == ".a[1].b"
    assert raised.value.reason == "a[1].b: an integer outside the signed 64-bit range"
    assert raised.value.code == "invalid_document"


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a":}', b"\xff"])
def test_what_is_not_json_is_refused(raw: bytes) -> None:
    with pytest.raises(DocumentError, match="not valid JSON"):
        documents.decode(raw)


def test_the_check_walks_already_decoded_documents_too() -> None:
    deep: list[object] = []
    cursor = deep
    for _ in range(5_000):
        inner: list[object] = []
        cursor.append(inner)
        cursor = inner
    with pytest.raises(DocumentError):
        documents.check({"data": deep})
    documents.check({"data": [[1, 2], {"k": True}]})
