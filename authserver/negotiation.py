"""Content negotiation for the JSON APIs (REST_FRAMEWORK's DEFAULT_CONTENT_NEGOTIATION_CLASS)."""

from rest_framework.negotiation import DefaultContentNegotiation


class JSONFirstNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, answered without parsing for what machine clients send on every call: no
    Accept header, `*/*` (curl, requests) or the first renderer's own type. Anything else (other
    types, parameters, q-values, ?format=) goes through DRF's full negotiation, 406 included."""

    def select_renderer(self, request, renderers, format_suffix=None):
        first = renderers[0]
        accept = request.META.get("HTTP_ACCEPT")
        plain = accept is None or accept == "*/*" or accept == first.media_type
        if plain and not format_suffix and self.settings.URL_FORMAT_OVERRIDE not in request.query_params:
            return first, first.media_type  # what DRF's negotiation picks for these
        return super().select_renderer(request, renderers, format_suffix)
