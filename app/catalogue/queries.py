"""A visitor's query (a free text and/or a picture) turned into a user vector: the
content checks of registrations, the bundle's encoders in the encoder process, the
blend's content space (``Engine.query_vector``). No HTTP; the recommend path
(app/serving/recommend.py) is handed :meth:`QueryEmbedder.embed` by the composition root.
"""

from __future__ import annotations

from app.api.errors import InvalidInput, Unavailable
from app.api.schemas import QueryIn
from app.catalogue.content import decode_base64_image, open_image
from app.lifecycle.state import ModelState
from app.settings import Settings
from model.encoders.records import EncoderUnavailable
from model.serving_types import UserEmbedding


class QueryEmbedder:
    """Checks and embeds queries with the limits of item registrations."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check(self, query: QueryIn) -> None:
        """The cheap checks, before any decoding (on the event loop)."""
        text = (query.text or "").strip()
        if not text and query.image_base64 is None:
            raise InvalidInput("query needs a non-empty text or an image_base64")
        limit = self.settings.max_text_chars
        if len(text) > limit:
            raise InvalidInput(
                f"query text is {len(text)} characters; the limit is max_text_chars={limit}"
            )

    def embed(self, state: ModelState, domain: str, query: QueryIn) -> UserEmbedding:
        """The query's user vector in ``domain`` (blocking: decoding and encoding)."""
        s = self.settings
        image = None
        if query.image_base64 is not None:
            raw = decode_base64_image(query.image_base64, max_bytes=s.max_image_bytes)
            image = open_image(
                raw,
                max_bytes=s.max_image_bytes,
                max_pixels=s.max_image_pixels,
                max_aspect=s.max_image_aspect_ratio,
            )
        text = (query.text or "").strip() or None
        engine = state.engine
        try:
            content = engine.encode_query(text=text, image=image)
            return engine.query_vector(domain, content)
        except EncoderUnavailable as err:  # no weights here for this bundle's encoder
            raise Unavailable(str(err), retry_after_s=60) from None
        except (ValueError, OverflowError, MemoryError) as err:
            raise InvalidInput(f"the query cannot be matched: {str(err)[:200]}") from None
