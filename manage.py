#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from config.env import ConfigurationError

    try:
        execute_from_command_line(sys.argv)
    except ConfigurationError as error:  # a bad environment value: one line and exit 1
        sys.exit(f"Configuration error: {error}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C where no command handles it (importing Django, say): no traceback
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
