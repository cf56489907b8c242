from django.contrib import admin
from django.urls import include, path

from authserver.views import HealthView, ReadinessView
from fooapi import urls as fooapi_urls

# Django tries the patterns in order, one regular expression each: the most requested first (the load
# balancer's probes, the API, whose prefix turns every other path away at once, the OAuth endpoints:
# a token serves many API calls), the browser's pages last.
urlpatterns = [
    path("healthz", HealthView.as_view(), name="healthz"),
    path("readyz", ReadinessView.as_view(), name="readyz"),
    path(fooapi_urls.PREFIX, include(fooapi_urls)),
    path("", include("authserver.urls")),
    path("admin/", admin.site.urls),
    path("", include("sdkportal.urls")),
    # The probes' other form answers too, as every machine endpoint's does; last, as it is rare.
    path("healthz/", HealthView.as_view()),
    path("readyz/", ReadinessView.as_view()),
]

handler400 = "authserver.errors.bad_request"
handler403 = "authserver.errors.permission_denied"
handler404 = "authserver.errors.page_not_found"
handler500 = "authserver.errors.server_error"
