"""``POST /relationships`` and ``GET /relationships`` (admin routes), compatible with the
original Pully route: the body is ``{"relationshipString": "<document as a JSON string>"}`` or
the document itself; the reply is always ``{"status", "message", "error": [{"message"}]}``."""

from __future__ import annotations

import orjson

from ..errors import TooLarge
from ..relationships import InvalidRelationships, load, loads
from .base import JsonHandler

MAX_DOCUMENT_BYTES = 512 * 1024


class RelationshipsHandler(JsonHandler):
    def get(self) -> None:
        """The document the node runs, and its version (null before the first load)."""
        self.require_admin()
        manager = self.node.relationships
        self.write_json(
            200,
            {"status": 200, "message": "current relationships", "error": [],
             "version": manager.version, "relationships": manager.current.to_json()},
        )  # fmt: skip

    async def post(self) -> None:
        """Validate (every problem listed, 400), save as a new version, reload every node."""
        self.require_admin()
        body = self.request.body
        if len(body) > MAX_DOCUMENT_BYTES:
            raise TooLarge(f"body is {len(body)} bytes; the limit is {MAX_DOCUMENT_BYTES}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRelationships([f"body: not valid JSON: {exc}"]) from None
        if isinstance(doc, dict) and "relationshipString" in doc:
            text = doc["relationshipString"]
            if len(doc) != 1 or not isinstance(text, str):
                raise InvalidRelationships(
                    ["relationshipString: must be the only field, a string holding the document"]
                )
            relationships = loads(text)
        else:
            relationships = load(doc)
        version = await self.node.save_relationships(relationships)
        self.write_json(
            200,
            {"status": 200, "message": f"relationships saved as version {version}", "error": [],
             "version": version},
        )  # fmt: skip
