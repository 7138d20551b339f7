"""Unit tests for operations.amqp.catalogue.Catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from operations.amqp.catalogue import Catalogue, Subscription
from operations.errors import CatalogueError, OperationsError
from operations.settings import DEFAULT_MESSAGES_FILE
from operations.states import MessageKind

ROOT = Path(__file__).resolve().parent.parent
PACCO = Catalogue.load(DEFAULT_MESSAGES_FILE)
PACCO_EXCHANGES = [
    "availability",
    "customers",
    "deliveries",
    "identity",
    "ordermaker",
    "orders",
    "parcels",
    "vehicles",
]


def refused(document: object) -> CatalogueError:
    with pytest.raises(CatalogueError) as caught:
        Catalogue.from_document(document, source="test.json")
    assert caught.value.code == "invalid_catalogue"
    assert isinstance(caught.value, OperationsError)
    assert "test.json" in str(caught.value)
    return caught.value


# --- the Pacco catalogue -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "message", "kind"),
    [
        ("orders", "create_order", MessageKind.COMMAND),
        ("orders", "order_created", MessageKind.EVENT),
        ("orders", "create_order_rejected", MessageKind.REJECTED_EVENT),
        ("orders", "order_for_delivery_not_found", MessageKind.REJECTED_EVENT),
        ("availability", "reserve_resource", MessageKind.COMMAND),
        ("availability", "resource_reserved", MessageKind.EVENT),
        ("identity", "sign_up_rejected", MessageKind.REJECTED_EVENT),
        ("ordermaker", "make_order_completed", MessageKind.EVENT),
        ("vehicles", "add_vehicle", MessageKind.COMMAND),
    ],
)
def test_pacco_messages_have_their_exchange_and_kind(
    exchange: str, message: str, kind: MessageKind
) -> None:
    assert PACCO.lookup(exchange, message) == Subscription(exchange, message, kind)


def test_pacco_exchanges_are_listed_sorted() -> None:
    assert PACCO.exchanges == PACCO_EXCHANGES
    assert PACCO.exchanges == sorted(PACCO.exchanges)


def test_pacco_catalogue_size_and_iteration_agree_with_the_file() -> None:
    document = json.loads(DEFAULT_MESSAGES_FILE.read_text(encoding="utf-8"))
    expected = {
        (entry["exchange"], name)
        for entry in document.values()
        for key in ("commands", "events", "rejectedEvents")
        for name in entry.get(key, [])
    }
    subscriptions = list(PACCO)
    assert len(PACCO) == len(expected) == len(subscriptions)
    assert {(s.exchange, s.message) for s in subscriptions} == expected
    assert all(isinstance(s, Subscription) for s in subscriptions)


def test_lookup_by_message_alone_on_an_unknown_exchange() -> None:
    found = PACCO.lookup("", "create_order")
    assert found == Subscription("orders", "create_order", MessageKind.COMMAND)
    assert PACCO.lookup("not-an-exchange", "order_created") == Subscription(
        "orders", "order_created", MessageKind.EVENT
    )


def test_lookup_of_an_unknown_message_is_none() -> None:
    assert PACCO.lookup("orders", "order_exploded") is None
    assert PACCO.lookup("", "") is None


def test_lookup_prefers_the_exchange_when_a_name_is_on_two() -> None:
    catalogue = Catalogue.from_document(
        {
            "a": {"exchange": "alpha", "commands": ["ping"]},
            "b": {"exchange": "beta", "events": ["ping"]},
        }
    )
    assert catalogue.lookup("alpha", "ping") == Subscription("alpha", "ping", MessageKind.COMMAND)
    assert catalogue.lookup("beta", "ping") == Subscription("beta", "ping", MessageKind.EVENT)
    assert catalogue.lookup("gamma", "ping") == Subscription("alpha", "ping", MessageKind.COMMAND)
    assert len(catalogue) == 2
    assert catalogue.exchanges == ["alpha", "beta"]


def test_lists_may_be_absent() -> None:
    catalogue = Catalogue.from_document({"s": {"exchange": "x", "rejectedEvents": ["no_go"]}})
    assert list(catalogue) == [Subscription("x", "no_go", MessageKind.REJECTED_EVENT)]


def test_load_reads_a_custom_file(tmp_path: Path) -> None:
    path = tmp_path / "messages.json"
    path.write_text(
        json.dumps({"svc": {"exchange": "shop", "commands": ["buy"], "events": ["bought"]}}),
        encoding="utf-8",
    )
    catalogue = Catalogue.load(path)
    assert catalogue.exchanges == ["shop"]
    assert catalogue.lookup("shop", "bought") == Subscription("shop", "bought", MessageKind.EVENT)


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [[], ["orders"], "orders", 1, None, {}])
def test_document_that_is_not_a_non_empty_object(document: object) -> None:
    refused(document)


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({"commands": ["a"]}, id="missing"),
        pytest.param({"exchange": 1, "commands": ["a"]}, id="number"),
        pytest.param({"exchange": None, "commands": ["a"]}, id="null"),
        pytest.param(["orders"], id="entry-a-list"),
        pytest.param("orders", id="entry-a-string"),
    ],
)
def test_missing_exchange(entry: object) -> None:
    assert "exchange" in str(refused({"svc": entry}))


@pytest.mark.parametrize("key", ["commands", "events", "rejectedEvents"])
@pytest.mark.parametrize(
    "names",
    [
        pytest.param("create_order", id="a-string"),
        pytest.param(["ok", 1], id="a-number-inside"),
        pytest.param([None], id="null-inside"),
        pytest.param({"a": "b"}, id="an-object"),
        pytest.param(None, id="null"),
    ],
)
def test_list_that_is_not_a_list_of_strings(key: str, names: object) -> None:
    error = refused({"svc": {"exchange": "x", key: names}})
    assert key in str(error)


@pytest.mark.parametrize(
    "name",
    ["CreateOrder", "create order", "", "_leading", "-dash", "naïve", "a/b", "a*", "a#", "a\nb"],
)
def test_invalid_message_name(name: str) -> None:
    error = refused({"svc": {"exchange": "x", "commands": ["fine", name]}})
    assert repr(name) in str(error)


@pytest.mark.parametrize("exchange", ["", "Orders", "or ders", "#", "_x", "orders\n"])
def test_invalid_exchange_name(exchange: str) -> None:
    refused({"svc": {"exchange": exchange, "commands": ["a"]}})


def test_a_catalogue_without_messages_is_refused() -> None:
    refused({"svc": {"exchange": "x", "commands": [], "events": []}})


@pytest.mark.parametrize(
    "content",
    [b"this is not json", b'{"svc": {"exchange": "x",', b"", b"\xff\xfe\x00garbage"],
)
def test_file_that_is_not_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(CatalogueError) as caught:
        Catalogue.load(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(CatalogueError) as caught:
        Catalogue.load(path)
    assert str(path) in str(caught.value)


def test_file_with_a_valid_json_array(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        Catalogue.load(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("name", ["create_order\n", "create_order\n\n", "create_order "])
def test_name_with_trailing_whitespace_is_invalid(name: str) -> None:
    """A routing key is matched exactly; a trailing newline is not part of a valid name."""
    error = refused({"svc": {"exchange": "orders", "commands": [name]}})
    assert repr(name) in str(error)


def test_the_example_catalogue_of_four_buses_binds_as_the_wire_format_page_says() -> None:
    catalogue = Catalogue.load(ROOT / "examples" / "any-bus-messages.json")
    bound = {(b.exchange, b.kind.value, b.routing_key) for b in catalogue.bindings}
    assert bound == {
        ("orders", "topic", "create_order"),
        ("orders", "topic", "order_created"),
        ("orders", "topic", "create_order_rejected"),
        ("Shop.Payments:CapturePayment", "fanout", ""),
        ("Shop.Payments:PaymentCaptured", "fanout", ""),
        ("Shop.Payments:PaymentDeclined", "fanout", ""),
        ("MassTransit:Fault--Shop.Payments:CapturePayment--", "fanout", ""),
        ("Shop.Shipping:ShipOrder", "fanout", ""),
        ("Shop.Shipping:OrderShipped", "fanout", ""),
        ("notifications", "topic", "com.example.notifications.#"),
    }
    assert {s.format for s in catalogue} == {"convey", "masstransit", "nservicebus", "cloudevents"}
    assert "examples/any-bus-messages.json" in (ROOT / "docs" / "wire-format.md").read_text()
