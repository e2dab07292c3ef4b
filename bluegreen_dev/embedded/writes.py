"""Qdrant's write requests (qdrant-client models) as qdrant-edge update operations.

One builder per kind, used by each write endpoint and by `points/batch`, whose operations are the
same bodies wrapped in `{"upsert": ...}`, `{"delete": ...}` and so on.
"""
from __future__ import annotations

from typing import Any, Callable

import qdrant_edge as qe
from qdrant_client.http import models

from bluegreen_dev.embedded import convert
from bluegreen_dev.embedded.convert import edge_id
from bluegreen_dev.embedded.errors import wrong_input

update = qe.UpdateOperation


def upsert(body: models.PointsList | models.PointsBatch) -> qe.UpdateOperation:
    update_mode = convert.edge_enum(qe.UpdateMode, body.update_mode, "update mode")
    return update.upsert_points(
        convert.points_to_edge(body), condition=convert.to_filter(body.update_filter), update_mode=update_mode,
    )


def _by_selector(selector: Any, by_ids: Callable, by_filter: Callable) -> qe.UpdateOperation:
    """A write whose whole body is a points selector: a list of ids or a filter."""
    if isinstance(selector, models.PointIdsList):
        return by_ids([edge_id(i) for i in selector.points])
    return by_filter(convert.to_filter(selector.filter))


def _by_points_or_filter(body: Any, by_ids: Callable, by_filter: Callable, *args, **kwargs) -> qe.UpdateOperation:
    """A write addressed by `points` or by `filter`, as Qdrant accepts either."""
    if body.points is not None:
        return by_ids([edge_id(i) for i in body.points], *args, **kwargs)
    if body.filter is not None:
        return by_filter(convert.to_filter(body.filter), *args, **kwargs)
    raise wrong_input("either `points` or `filter` is required")


def delete(selector: Any) -> qe.UpdateOperation:
    return _by_selector(selector, update.delete_points, update.delete_points_by_filter)


def set_payload(body: models.SetPayload) -> qe.UpdateOperation:
    return _by_points_or_filter(body, update.set_payload, update.set_payload_by_filter, body.payload, key=body.key)


def overwrite_payload(body: models.SetPayload) -> qe.UpdateOperation:
    return _by_points_or_filter(body, update.overwrite_payload, update.overwrite_payload_by_filter, body.payload, key=body.key)


def delete_payload(body: models.DeletePayload) -> qe.UpdateOperation:
    return _by_points_or_filter(body, update.delete_payload, update.delete_payload_by_filter, body.keys)


def clear_payload(selector: Any) -> qe.UpdateOperation:
    return _by_selector(selector, update.clear_payload, update.clear_payload_by_filter)


def update_vectors(body: models.UpdateVectors) -> qe.UpdateOperation:
    vectors = [qe.PointVectors(edge_id(p.id), convert.vector_struct(p.vector)) for p in body.points]
    return update.update_vectors(vectors, condition=convert.to_filter(body.update_filter))


def delete_vectors(body: models.DeleteVectors) -> qe.UpdateOperation:
    return _by_points_or_filter(body, update.delete_vectors, update.delete_vectors_by_filter, body.vector)


# points/batch: the operation's model, the attribute holding its body, the builder.
BATCH_OPERATIONS: dict[type, tuple[str, Callable[[Any], qe.UpdateOperation]]] = {
    models.UpsertOperation: ("upsert", upsert),
    models.DeleteOperation: ("delete", delete),
    models.SetPayloadOperation: ("set_payload", set_payload),
    models.OverwritePayloadOperation: ("overwrite_payload", overwrite_payload),
    models.DeletePayloadOperation: ("delete_payload", delete_payload),
    models.ClearPayloadOperation: ("clear_payload", clear_payload),
    models.UpdateVectorsOperation: ("update_vectors", update_vectors),
    models.DeleteVectorsOperation: ("delete_vectors", delete_vectors),
}


def batch(body: models.UpdateOperations) -> list[qe.UpdateOperation]:
    """Every operation built (so a malformed one refuses the batch before any is applied)."""
    operations = []
    for operation in body.operations:
        attribute, build = BATCH_OPERATIONS[type(operation)]
        operations.append(build(getattr(operation, attribute)))
    return operations
