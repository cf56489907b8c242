"""Django's createsuperuser, with a username another account has in any case refused as taken.

Django checks the exact username only: "Admin" beside "admin" passed its check and ended in the
database's unique index on the lowercase username (migration 0009), an IntegrityError traceback.
"""

from django.contrib.auth.management.commands import createsuperuser

from authserver.backends import users_named


class Command(createsuperuser.Command):
    def _validate_username(self, username, verbose_field_name, database):
        error = super()._validate_username(username, verbose_field_name, database)
        if error is None and users_named(username).using(database).exists():
            return f"Error: That {verbose_field_name} is already taken, in another case."
        return error
