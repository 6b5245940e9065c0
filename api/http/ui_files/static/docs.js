// /docs: Swagger UI from this server's own copy (swagger-ui 4.15.5, Apache-2.0, see
// swagger-ui-LICENSE), reading this server's OpenAPI. No validator badge: it would call out.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
