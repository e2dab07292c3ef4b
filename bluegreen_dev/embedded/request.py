"""One REST request to the embedded upstream, as its handlers read it (the gRPC face builds these too)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from bluegreen_dev.embedded.errors import ApiError


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    collection_name: str | None = None
    path_param: str | None = None

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Format error in JSON body: {exc}") from None

    def parse(self, model: Any) -> Any:
        """The body as a qdrant-client model (or TypeAdapter of a union), so shapes are exactly Qdrant's."""
        body = self.json()
        try:
            return model.validate_python(body) if isinstance(model, TypeAdapter) else model.model_validate(body)
        except ValidationError as exc:
            raise ApiError(422, f"Validation error in JSON body: {_validation_summary(exc)}") from None

    @property
    def wait(self) -> bool:
        return self.query.get("wait", ["false"])[-1].lower() == "true"


def _validation_summary(exc: ValidationError, limit: int = 3) -> str:
    errors = exc.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:limit]]
    if len(errors) > limit:
        parts.append(f"... {len(errors) - limit} more")
    return "[" + "; ".join(parts) + "]"
