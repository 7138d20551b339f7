"""Unit tests for operations.states: the state rule of contract section 2."""

from __future__ import annotations

import pytest

from operations.states import MessageKind, State, decide

DEFAULTS = {
    MessageKind.COMMAND: State.PENDING,
    MessageKind.EVENT: State.COMPLETED,
    MessageKind.REJECTED_EVENT: State.REJECTED,
}


@pytest.mark.parametrize("kind", list(MessageKind))
@pytest.mark.parametrize("saga", [None, *State])
def test_decide_truth_table(kind: MessageKind, saga: State | None) -> None:
    expected = DEFAULTS[kind] if saga is None else saga
    assert decide(kind, saga) is expected


def test_the_truth_table_covers_every_kind_and_state() -> None:
    assert set(MessageKind) == set(DEFAULTS)
    assert {State.PENDING, State.COMPLETED, State.REJECTED} == set(State)


@pytest.mark.parametrize(
    ("kind", "state"),
    [
        (MessageKind.COMMAND, State.PENDING),
        (MessageKind.EVENT, State.COMPLETED),
        (MessageKind.REJECTED_EVENT, State.REJECTED),
    ],
)
def test_default_state_of_each_kind(kind: MessageKind, state: State) -> None:
    assert kind.default_state is state


@pytest.mark.parametrize(
    ("value", "state"),
    [
        ("pending", State.PENDING),
        ("Pending", State.PENDING),
        ("PENDING", State.PENDING),
        ("pEnDiNg", State.PENDING),
        (" pending\n", State.PENDING),
        ("completed", State.COMPLETED),
        ("Completed", State.COMPLETED),
        ("COMPLETED", State.COMPLETED),
        ("rejected", State.REJECTED),
        ("Rejected", State.REJECTED),
        ("REJECTED", State.REJECTED),
    ],
)
def test_from_saga_header_in_any_case(value: str, state: State) -> None:
    assert State.from_saga_header(value) is state


@pytest.mark.parametrize(
    "value", ["", " ", "unknown", "complete", "reject", "failed", "pending!", "pend ing", "None"]
)
def test_from_saga_header_unknown_values_are_none(value: str) -> None:
    assert State.from_saga_header(value) is None


@pytest.mark.parametrize(
    ("state", "terminal"),
    [(State.PENDING, False), (State.COMPLETED, True), (State.REJECTED, True)],
)
def test_is_terminal(state: State, terminal: bool) -> None:
    assert state.is_terminal is terminal


def test_states_are_their_wire_strings() -> None:
    assert [str(state) for state in State] == ["pending", "completed", "rejected"]
    assert State.REJECTED.value == "rejected"
    assert State("completed") is State.COMPLETED
