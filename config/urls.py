from django.contrib import admin
from django.urls import include, path

from authserver.views import HealthView, ReadinessView

urlpatterns = [
    path("", include("authserver.urls")),
    path("admin/", admin.site.urls),
    path("", include("fooapi.urls")),
    path("", include("sdkportal.urls")),
    path("healthz", HealthView.as_view(), name="healthz"),
    path("readyz", ReadinessView.as_view(), name="readyz"),
]

handler400 = "authserver.errors.bad_request"
handler403 = "authserver.errors.permission_denied"
handler404 = "authserver.errors.page_not_found"
handler500 = "authserver.errors.server_error"
