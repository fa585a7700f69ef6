"""The HTTP layer: the FastAPI app (``main``: factory, lifespan, middleware, error
mapping), one router per resource (``routers``) whose handlers translate HTTP to a call of
the part they depend on (``deps``: typed dependencies), API and admin keys (``security``),
what one worker accepts (``connections``), the optional API pages (``api_docs``) and the
web console (``ui``). Nothing below imports it."""
