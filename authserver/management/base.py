import unicodedata

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, InterfaceError, OperationalError


class OperatorCommand(BaseCommand):
    """A command an operator scripts: a database it cannot reach, or a file that is no database, is
    one line on stderr and exit status 1, as any other error, not a traceback (--traceback still
    shows it). An error in the command's own statements (IntegrityError, ProgrammingError...) stays
    a traceback: that is a bug to report, not a setting to fix.

    An argument that is not valid UTF-8 (Python hands its bytes over as lone surrogates, which no
    database stores) or holds a control character (a tab or line break pasted into a name, an
    escape sequence) is refused the same way, before anything is read or written."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # How the operator typed each argument, for the messages: --token-ttl, CLIENT_ID.
        self.argument_labels = {
            action.dest: action.option_strings[-1] if action.option_strings else action.dest.upper()
            for action in parser._actions
        }
        return parser

    def execute(self, *args, **options):
        self.refuse_unprintable_arguments(args, options)
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as error:
            raise CommandError(f"Database error: {error}") from error
        except DatabaseError as error:
            if type(error) is not DatabaseError:
                raise
            raise CommandError(f"Database error: {error}") from error  # SQLite: "file is not a database"

    def refuse_unprintable_arguments(self, args, options) -> None:
        labels = getattr(self, "argument_labels", {})
        given = [("an argument", value) for value in args]
        given += [(labels.get(dest, f"--{dest.replace('_', '-')}"), value) for dest, value in options.items()]
        for label, value in given:
            if not isinstance(value, str):
                continue
            categories = {unicodedata.category(character) for character in value}
            # Not echoed: the value is what cannot be shown.
            if "Cs" in categories:
                raise CommandError(f"{label} is not valid UTF-8 (check the shell's or script's encoding).")
            if "Cc" in categories:
                raise CommandError(f"{label} holds a control character (a tab, a line break, ...).")
