"""The SDK portal's pages: parse the request, call services.py, render."""

import base64
import unicodedata
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import (
    LoginView,
    LogoutView,
    PasswordChangeDoneView,
    PasswordChangeView,
    PasswordResetCompleteView,
    PasswordResetConfirmView,
    PasswordResetDoneView,
    PasswordResetView,
)
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.generic import FormView, TemplateView

from authserver import throttling
from sdkportal import services
from sdkportal.forms import PortalLoginForm, RotateSecretForm, SignUpForm


def remote_addr(request) -> str:
    return throttling.client_address(request.META)


def api_base_url() -> str:
    return f"{settings.ISSUER}/api/v1"


@method_decorator(never_cache, name="dispatch")
class HomeView(TemplateView):
    """/portal/: what the Foo API offers, the live catalogue, and the way in. Never cached, like the
    login page: it shows who is signed in, and their forms carry a CSRF token."""

    template_name = "sdkportal/home.html"

    def get_context_data(self, **kwargs):
        user = self.request.user
        return super().get_context_data(
            catalogue=services.live_catalogue(),
            sandbox=services.sandbox_client_of(user) if user.is_authenticated else None,
            offer=services.sandbox_offer(),
            api_base_url=api_base_url(),
            **kwargs,
        )


@method_decorator(never_cache, name="dispatch")
class SignUpView(FormView):
    template_name = "sdkportal/signup.html"
    form_class = SignUpForm

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            return redirect("sdkportal:application")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return super().get_context_data(offer=services.sandbox_offer(), **kwargs)

    def post(self, request, *args, **kwargs):
        # Every attempt counts, refused ones too: the form tells whether an email address has an
        # account, and that must not be asked without limit.
        wait = throttling.SIGNUPS_PER_ADDRESS.record(throttling.counted_address(remote_addr(request)))
        if wait:
            return throttling.too_many_attempts(request, wait)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        # Hashed here, before the sign-up's transaction: on SQLite that holds every writer's lock.
        developer = form.save(commit=False)
        taken = services.sign_up(developer=developer)
        if taken is not None:
            # The same username or email, in any case, signed up by a request at once (a second tab).
            form.add_error(taken, form.username_taken() if taken == "username" else form.email_taken())
            return self.form_invalid(form)
        login(self.request, developer, backend=settings.AUTHENTICATION_BACKENDS[0])
        messages.success(
            self.request, f"Welcome, {developer.username}. Download the SDK to get your credentials."
        )
        return redirect("sdkportal:application")


class PortalLoginView(throttling.LoginThrottleMixin, LoginView):
    template_name = "sdkportal/login.html"
    form_class = PortalLoginForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return super().get_context_data(password_reset=services.password_reset_offered(), **kwargs)

    def form_valid(self, form):
        response = super().form_valid(form)
        services.record_login(
            presented_username=self.request.POST.get("username", ""),
            user=form.get_user(),
            remote_addr=remote_addr(self.request) or None,
        )
        return response

    def form_invalid(self, form):
        if self.request.method == "POST":
            services.record_login(
                presented_username=self.request.POST.get("username", ""),
                remote_addr=remote_addr(self.request) or None,
            )
        return super().form_invalid(form)

    def get_redirect_url(self) -> str:
        # ?next= naming this very page sends a signed-in developer nowhere: Django raises (a 500).
        url = super().get_redirect_url()
        return "" if url == self.request.path else url


class PortalLogoutView(LogoutView):
    """POST logs out (CSRF-protected); a GET, the address typed or bookmarked, gets a page with the
    button rather than a blank 405."""

    http_method_names = ["get", "head", "post", "options"]
    template_name = "sdkportal/logout.html"

    def get(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect(self.get_success_url())
        return render(request, self.template_name, {"next": self.get_redirect_url()})


@method_decorator(never_cache, name="dispatch")
class ApplicationView(LoginRequiredMixin, TemplateView):
    """/portal/app/: the developer's sandbox client, its active tokens, and what they can do."""

    template_name = "sdkportal/application.html"

    def get_context_data(self, **kwargs):
        developer = self.request.user
        sandbox = services.sandbox_client_of(developer)
        lifetime = None if sandbox is None else services.duration_text(sandbox.application.token_lifetime)
        return super().get_context_data(
            sandbox=sandbox,
            token_lifetime=lifetime,
            tokens=services.active_test_tokens(developer),
            api_base_url=api_base_url(),
            zip_name=services.sdk_zip_name(),
            sdk_folder=f"foo-sdk-{services.__version__}",
            self_signed=services.self_signed_certificate() is not None,
            certificate_file=services.CERTIFICATE_FILE_NAME,
            rotate_form=RotateSecretForm(),
            **kwargs,
        )


class PortalActionView(LoginRequiredMixin, View):
    """A POST that changes the developer's client; a refusal comes back as a message on their page."""

    http_method_names = ["get", "head", "post"]

    def get(self, request, *args, **kwargs):
        """To the page with the button: after a login, a POST whose session had expired comes
        back here as a GET (the login page's ?next=), which must not act nor answer a blank 405."""
        return redirect("sdkportal:application")

    def post(self, request, *args, **kwargs):
        try:
            return self.act(request, *args, **kwargs)
        except services.PortalError as error:
            messages.error(request, str(error))
            return redirect("sdkportal:application")

    def act(self, request, *args, **kwargs):
        """The action itself, in each subclass: call a service, return the page to show."""
        raise NotImplementedError(f"{type(self).__name__} must define act()")


def render_delivery(request, *, delivery=None, token=None, headline: str):
    """The page that shows credentials and a token once; nothing of it is kept, nor cached."""
    token = delivery.token if delivery else token
    context = {
        "headline": headline,
        "delivery": delivery,
        "token": token,
        "client_id": token.client_id,
        "api_base_url": api_base_url(),
        "self_signed": services.self_signed_certificate() is not None,
        "certificate_file": services.CERTIFICATE_FILE_NAME,
        "sdk_version": services.__version__,
    }
    if delivery:
        context["zip_data_uri"] = (
            "data:application/zip;base64," + base64.b64encode(delivery.zip_bytes).decode()
        )
    response = render(request, "sdkportal/delivery.html", context)
    response["Cache-Control"] = "no-store"
    return response


class DownloadSdkView(PortalActionView):
    def act(self, request):
        delivery = services.download_sdk(developer=request.user, remote_addr=remote_addr(request))
        headline = "Your SDK and credentials" if delivery.client_secret else "Your SDK and a new test token"
        return render_delivery(request, delivery=delivery, headline=headline)


class RotateSecretView(PortalActionView):
    def act(self, request):
        form = RotateSecretForm(request.POST)
        if not form.is_valid():
            raise services.PortalError(
                "That page was out of date: nothing was rotated. Press Rotate secret again."
            )
        try:
            delivery = services.rotate_secret(
                developer=request.user, remote_addr=remote_addr(request), form_id=form.cleaned_data["form_id"]
            )
        except services.AlreadyRotated as done:
            messages.warning(request, str(done))
            return redirect("sdkportal:application")
        return render_delivery(request, delivery=delivery, headline="Your new client secret")


class NewTestTokenView(PortalActionView):
    def act(self, request):
        token = services.new_test_token(developer=request.user, remote_addr=remote_addr(request))
        return render_delivery(request, token=token, headline="A new test token")


class RevokeTokenView(PortalActionView):
    def act(self, request, token_id: int):
        services.revoke_test_token(
            developer=request.user, token_id=token_id, remote_addr=remote_addr(request)
        )
        messages.success(request, "The token was revoked; the API no longer accepts it.")
        return redirect("sdkportal:application")


@method_decorator(never_cache, name="dispatch")
class DeleteApplicationView(LoginRequiredMixin, View):
    """GET asks for confirmation; POST deletes the client, its secret and its tokens."""

    http_method_names = ["get", "head", "post"]

    def get(self, request):
        sandbox = services.sandbox_client_of(request.user)
        if sandbox is None:
            return redirect("sdkportal:application")
        return render(
            request,
            "sdkportal/delete.html",
            {"sandbox": sandbox, "tokens": services.active_test_tokens(request.user)},
        )

    def post(self, request):
        try:
            services.delete_application(
                developer=request.user,
                remote_addr=remote_addr(request),
                client_id=request.POST.get("client_id"),
            )
        except services.AlreadyDeleted as done:
            messages.info(request, str(done))
        except services.PortalError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, "Your application was deleted. Download the SDK again to start afresh.")
        return redirect(reverse("sdkportal:application"))


class AuditedNewPasswordMixin:
    """A password change or reset: the new password and its audit event saved together."""

    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)
            services.password_changed(developer=form.user, remote_addr=remote_addr(self.request))
        return response


@method_decorator(never_cache, name="dispatch")
class PortalPasswordChangeView(LoginRequiredMixin, AuditedNewPasswordMixin, PasswordChangeView):
    """Django's password change (the old password, the new one twice, its validators); the session
    stays signed in. Wrong old passwords count as failed logins: a session left open is no way to
    guess the password without limit."""

    template_name = "sdkportal/password_change.html"
    success_url = reverse_lazy("sdkportal:password-change-done")

    def _limits(self):
        return throttling.login_failure_limits(self.request, self.request.user.get_username())

    def post(self, request, *args, **kwargs):
        if wait := throttling.longest_wait(*self._limits()):
            return throttling.too_many_attempts(request, wait)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        if form.has_error("old_password", "password_incorrect"):
            throttling.record_failure(self._limits())
        return super().form_invalid(form)


@method_decorator(never_cache, name="dispatch")
class PortalPasswordChangeDoneView(LoginRequiredMixin, PasswordChangeDoneView):
    template_name = "sdkportal/password_change_done.html"


class ResetByEmailMixin:
    """The reset pages answer only when the portal can send email; else a 404 page that says who can
    set a new password instead."""

    def dispatch(self, request, *args, **kwargs):
        if not services.password_reset_offered():
            return render(request, "sdkportal/password_reset_unavailable.html", status=404)
        return super().dispatch(request, *args, **kwargs)


@method_decorator(never_cache, name="dispatch")
class PortalPasswordResetView(ResetByEmailMixin, PasswordResetView):
    """Django's reset request: the same answer whether or not the address has an account, and no
    email for a deactivated one (Django's form mails active accounts with a usable password only)."""

    template_name = "sdkportal/password_reset.html"
    email_template_name = "sdkportal/password_reset_email.txt"
    subject_template_name = "sdkportal/password_reset_subject.txt"
    success_url = reverse_lazy("sdkportal:password-reset-done")

    def post(self, request, *args, **kwargs):
        # Every request counts, for any address: a limit only for addresses with an account would
        # tell which have one.
        email = unicodedata.normalize("NFKC", request.POST.get("email", "")).strip().lower()
        wait = max(
            throttling.PASSWORD_RESETS_PER_ADDRESS.record(throttling.counted_address(remote_addr(request))),
            throttling.PASSWORD_RESETS_PER_EMAIL.record(email),
        )
        if wait:
            return throttling.too_many_attempts(request, wait)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        # The link is built on ISSUER: the request's Host header is the sender's to choose (a link
        # to their own server would hand them the token).
        issuer = urlsplit(settings.ISSUER)
        self.domain_override = issuer.netloc
        self.extra_email_context = {"issuer": settings.ISSUER}
        return super().form_valid(form)


@method_decorator(never_cache, name="dispatch")
class PortalPasswordResetDoneView(ResetByEmailMixin, PasswordResetDoneView):
    template_name = "sdkportal/password_reset_done.html"


class PortalPasswordResetConfirmView(ResetByEmailMixin, AuditedNewPasswordMixin, PasswordResetConfirmView):
    """Django's: the link's token goes into the session and out of the address bar before the form
    shows; the new password ends every other session (their auth hash no longer matches)."""

    template_name = "sdkportal/password_reset_confirm.html"
    success_url = reverse_lazy("sdkportal:password-reset-complete")

    def get_user(self, uidb64):
        # Django's finds a deactivated account too: a link sent before the Foo team deactivated it
        # would still set its password (and record the change as the developer's).
        user = super().get_user(uidb64)
        return user if user is not None and user.is_active else None


@method_decorator(never_cache, name="dispatch")
class PortalPasswordResetCompleteView(ResetByEmailMixin, PasswordResetCompleteView):
    template_name = "sdkportal/password_reset_complete.html"
