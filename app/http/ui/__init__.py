"""The web console under ``/ui/`` (issue 17): static pages that call the REST API. The
pages are shells rendered from Jinja2 templates with no data in them; each page's script
(``static/*.js``) reads everything from the public API with the key the person typed (kept
in the browser's sessionStorage, sent as ``X-API-Key``), so the console has exactly the
API's access rules and none of its own. Every text from the API is set with
``textContent`` (never parsed as HTML), and the pages carry a Content-Security-Policy that
allows only this origin's scripts."""
