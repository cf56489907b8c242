import re

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm


def taken_in_any_case(field: str, value: str) -> bool:
    """Whether an account has `value` as its `field` in any case. iregex, not iexact: SQLite's
    iexact (LIKE) folds ASCII letters only ("Élodie" beside "élodie"); PostgreSQL's folds all."""
    return get_user_model().objects.filter(**{f"{field}__iregex": rf"^{re.escape(value)}$"}).exists()


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
        if username and taken_in_any_case("username", username):
            raise self.instance.unique_error_message(self._meta.model, ["username"])
        return username

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip()
        if taken_in_any_case("email", email):
            raise forms.ValidationError("An account with this email address already exists; log in instead.")
        return email
