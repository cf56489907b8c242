from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, InterfaceError, OperationalError


class OperatorCommand(BaseCommand):
    """A command an operator scripts: a database it cannot reach, or a file that is no database, is
    one line on stderr and exit status 1, as any other error, not a traceback (--traceback still
    shows it). An error in the command's own statements (IntegrityError, ProgrammingError...) stays
    a traceback: that is a bug to report, not a setting to fix."""

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as error:
            raise CommandError(f"Database error: {error}") from error
        except DatabaseError as error:
            if type(error) is not DatabaseError:
                raise
            raise CommandError(f"Database error: {error}") from error  # SQLite: "file is not a database"
