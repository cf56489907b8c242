from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError


class OperatorCommand(BaseCommand):
    """A command an operator scripts: a database it cannot reach is one line on stderr and exit
    status 1, as any other error, not a traceback (--traceback still shows it)."""

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as error:
            raise CommandError(f"Database error: {error}") from error
