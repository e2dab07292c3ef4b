"""Errors carrying the HTTP status and the message Qdrant would put in `{"status": {"error": ...}}`."""
from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(detail: str) -> ApiError:
    return ApiError(404, f"Not found: {detail}")


def wrong_input(detail: str) -> ApiError:
    return ApiError(400, f"Wrong input: {detail}")


def unsupported(feature: str) -> ApiError:
    return ApiError(501, f"Not implemented: {feature} is not supported by the embedded upstream (qdrant-edge)")


def collection_not_found(name: str) -> ApiError:
    return not_found(f"Collection `{name}` doesn't exist!")


def from_edge(exc: Exception) -> ApiError:
    """qdrant-edge raises plain exceptions whose text is Qdrant's own error text; give it Qdrant's status."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if message.startswith("No point with id"):
        return not_found(message)
    if message.startswith(("Service runtime error", "Service internal error")):
        return ApiError(500, f"Service internal error: {message}")
    return wrong_input(message)
