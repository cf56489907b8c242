"""Django's authentication backend (AUTHENTICATION_BACKENDS), with a username matched in any case.

A username is unique in any case (the sign-up and console forms check it; the database's unique
index on its lowercase, migration 0009, holds it against two requests at once), so "Ada" names the
account "ada" at the portal's login and the console's.
"""

import re

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.db.models import QuerySet


def users_named(username: str) -> QuerySet:
    """The accounts whose username is `username` in any case. iregex, not iexact: SQLite's iexact
    (LIKE) folds ASCII letters only ("Élodie" beside "élodie"); PostgreSQL's folds all."""
    users = get_user_model()._default_manager
    return users.filter(**{f"{get_user_model().USERNAME_FIELD}__iregex": rf"^{re.escape(username)}$"})


def stored_username(username: str) -> str:
    """The username as the account has it: `username` itself when an account has exactly it, else
    the one account's that differs only in case (none or several, from before the index: as given)."""
    users = get_user_model()._default_manager
    if users.filter(**{get_user_model().USERNAME_FIELD: username}).exists():
        return username
    matches = list(users_named(username).values_list(get_user_model().USERNAME_FIELD, flat=True)[:2])
    return matches[0] if len(matches) == 1 else username


class CaseInsensitiveModelBackend(ModelBackend):
    """Django's ModelBackend (password, is_active, permissions), the username in any case."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.pop(get_user_model().USERNAME_FIELD, None)
        if username is not None:
            username = stored_username(username)
        return super().authenticate(request, username=username, password=password, **kwargs)
