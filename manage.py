#!/usr/bin/env python
"""Django's command-line utility, attached to the same database as the server."""
import patches  # noqa: F401  (first: gevent and psycogreen before django.db is imported)

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from project import embedded

    server = embedded.ensure_database_url()
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    finally:
        embedded.stop(server)


if __name__ == "__main__":
    main()
