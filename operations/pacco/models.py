"""The typed models (msgspec) of ``POST /orders``: the order it reads, and the answer it gives."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from operations.auth.identity import MAX_ID_LENGTH, id_problem
from operations.pacco.ordermaking import MAX_PARCELS

Id = Annotated[
    str,
    Meta(
        pattern=r"\S",
        max_length=MAX_ID_LENGTH,
        description="Not blank; printable characters only.",
    ),
]


class MakeOrder(msgspec.Struct, rename="camel"):
    """parcelIds, or parcelId for one parcel; parcelIds wins when both are given. Field names
    are matched in any letter case (PascalCase too), and a null field counts as absent."""

    # Merged into the document's component: the rule __post_init__ checks.
    json_schema_extra: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": ["parcelIds"]}, {"required": ["parcelId"]}]
    }

    customer_id: Id
    parcel_ids: Annotated[list[Id], Meta(min_length=1, max_length=MAX_PARCELS)] | UnsetType = UNSET
    parcel_id: Annotated[Id, Meta(description="One parcel.")] | UnsetType = UNSET
    order_id: (
        Annotated[
            Id,
            Meta(
                description="Default: a new GUID. Printable ASCII only: it is answered in the"
                " Resource-ID header."
            ),
        ]
        | UnsetType
    ) = UNSET

    def __post_init__(self) -> None:
        if not self.parcel_ids and not self.parcel_id:
            raise ValueError("parcelIds (a non-empty list of ids) or parcelId is required")
        named = [("customerId", self.customer_id)]
        named += [(f"parcelIds[{n}]", parcel) for n, parcel in enumerate(self.parcel_ids or [])]
        named += [("parcelId", self.parcel_id or ""), ("orderId", self.order_id or "")]
        for field, value in named:
            if value and (problem := id_problem(value)) is not None:
                raise ValueError(f"{field} {problem}")
        if self.order_id and not self.order_id.isascii():
            raise ValueError("orderId must be ASCII: it is answered in the Resource-ID header")


class OrderAccepted(msgspec.Struct, rename="camel"):
    operation_id: str
    order_id: str
