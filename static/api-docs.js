// Starts Swagger UI on /api/docs (progress_server/web/apidocs.py) with the server's own
// OpenAPI document. A file of its own, not an inline script, so the page's CSP stays strict.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    domNode: root,
    deepLinking: true,
    // Nothing is fetched from elsewhere: no validator badge (it calls a public service).
    validatorUrl: null,
  });
});
