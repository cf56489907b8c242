import secrets
import unicodedata

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from authserver.backends import stored_username, users_named
from sdkportal.services import taken_in_any_case

# UTS #39's "highly restrictive" usernames: letters of one script, or Latin with the scripts written
# together in Japanese, Chinese or Korean. A script is the first word of a letter's Unicode name.
SCRIPTS_WRITTEN_TOGETHER = [
    {"LATIN", "CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"},
    {"LATIN", "CJK", "BOPOMOFO"},
    {"LATIN", "CJK", "HANGUL"},
]


def scripts_of(text: str) -> set[str]:
    """The scripts of the letters in `text` ("LATIN", "CYRILLIC", "GREEK", "CJK", ...)."""
    return {
        unicodedata.name(char, "UNNAMED").split(" ")[0]
        for char in text
        if unicodedata.category(char).startswith("L")
    }


def mixes_scripts(text: str) -> bool:
    scripts = scripts_of(text)
    return len(scripts) > 1 and not any(scripts <= together for together in SCRIPTS_WRITTEN_TOGETHER)


class SignUpForm(UserCreationForm):
    """A developer account: username, email, and a password Django's validators accept."""

    email = forms.EmailField(
        max_length=254,
        help_text="We write only about your application and API changes.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_username(self) -> str:
        # Django's UserCreationForm asks the same with iexact, which SQLite answers for ASCII alone.
        username = self.cleaned_data.get("username")
        if username and mixes_scripts(username):
            # "ada" with a Cyrillic "a" (U+0430) would pass for "ada" in the console, audit trail, portal.
            raise forms.ValidationError(
                "Use the letters of one script: a name that mixes them (Latin and Cyrillic, say) can "
                "pass for another account's.",
                code="mixed_scripts",
            )
        if username and users_named(username).exists():
            raise self.username_taken()
        return username

    def username_taken(self) -> forms.ValidationError:
        return self.instance.unique_error_message(self._meta.model, ["username"])

    def clean_email(self) -> str:
        # As the mail system reads it (IDNA maps "example.com" in fullwidth letters to
        # "example.com"): one mailbox, one account.
        email = unicodedata.normalize("NFKC", self.cleaned_data["email"]).strip()
        if taken_in_any_case("email", email):
            raise self.email_taken()
        return email

    def email_taken(self) -> forms.ValidationError:
        return forms.ValidationError("An account with this email address already exists; log in instead.")


class PortalLoginForm(AuthenticationForm):
    """Django's login form, which tells a deactivated developer so once they give their password:
    Django's backend refuses them before the form can, as if the password were wrong."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "inactive": "This account has been deactivated; please contact the Foo team.",
    }

    def clean(self):
        # One password hash for every attempt, as the backend takes for an active account or none:
        # a second one for a deactivated account made it answer twice as slowly, telling it apart.
        password = self.cleaned_data.get("password")
        deactivated = self._deactivated_account() if password else None
        if deactivated is None:
            return super().clean()
        if deactivated.check_password(password):
            raise forms.ValidationError(self.error_messages["inactive"], code="inactive")
        raise self.get_invalid_login_error()

    def _deactivated_account(self):
        users = get_user_model()._default_manager
        try:
            user = users.get_by_natural_key(stored_username(self.cleaned_data.get("username") or ""))
        except get_user_model().DoesNotExist:
            return None
        return None if user.is_active else user


class RotateSecretForm(forms.Form):
    """The "Rotate secret" button's form. A new form id each time the page shows it: the same form
    posted again (the browser reloading the page that delivered the new secret) rotates nothing."""

    form_id = forms.CharField(
        widget=forms.HiddenInput, initial=lambda: secrets.token_urlsafe(16), max_length=64
    )
