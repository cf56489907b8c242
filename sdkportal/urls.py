from django.urls import path
from django.views.generic import RedirectView

from sdkportal import views

app_name = "sdkportal"


def page(route: str, view, name: str) -> list:
    """`route/` (its name, for links) and `route` without the slash: never a redirect that would
    turn a POST into a GET."""
    return [path(f"{route}/", view, name=name), path(route, view)]


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="sdkportal:home"), name="root"),
    *page("portal", views.HomeView.as_view(), "home"),
    *page("portal/app", views.ApplicationView.as_view(), "application"),
    *page("portal/download", views.DownloadSdkView.as_view(), "download"),
    *page("portal/app/rotate-secret", views.RotateSecretView.as_view(), "rotate-secret"),
    *page("portal/app/tokens", views.NewTestTokenView.as_view(), "new-token"),
    *page("portal/app/tokens/<int:token_id>/revoke", views.RevokeTokenView.as_view(), "revoke-token"),
    *page("portal/app/delete", views.DeleteApplicationView.as_view(), "delete"),
    *page("accounts/signup", views.SignUpView.as_view(), "signup"),
    *page("accounts/login", views.PortalLoginView.as_view(), "login"),
    *page("accounts/logout", views.PortalLogoutView.as_view(), "logout"),
    *page("accounts/password", views.PortalPasswordChangeView.as_view(), "password-change"),
    *page("accounts/password/done", views.PortalPasswordChangeDoneView.as_view(), "password-change-done"),
    *page("accounts/password/reset", views.PortalPasswordResetView.as_view(), "password-reset"),
    *page("accounts/password/reset/sent", views.PortalPasswordResetDoneView.as_view(), "password-reset-done"),
    *page(
        "accounts/password/reset/<uidb64>/<token>",
        views.PortalPasswordResetConfirmView.as_view(),
        "password-reset-confirm",
    ),
    *page(
        "accounts/password/reset/done",
        views.PortalPasswordResetCompleteView.as_view(),
        "password-reset-complete",
    ),
]
