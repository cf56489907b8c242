// Renders the API reference from the OpenAPI schema with the bundled Swagger UI
// (a file, not an inline script: the Content-Security-Policy allows scripts from 'self' only).
(function () {
  "use strict";
  var element = document.getElementById("swagger-ui");
  if (!element || typeof window.SwaggerUIBundle === "undefined") return;
  window.SwaggerUIBundle({
    url: element.getAttribute("data-schema-url"),
    domNode: element,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    defaultModelsExpandDepth: 0,
    displayRequestDuration: true,
    // No calls to the public validator service: nothing leaves this site.
    validatorUrl: null,
  });
})();
