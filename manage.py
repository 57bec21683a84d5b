#!/usr/bin/env python3
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "automation_runtime.settings")
    try:
        from django.core.management import execute_from_command_line
    except ImportError:
        sys.exit(
            f"Django is not installed for {sys.executable}. Run commands with the project's "
            "virtualenv: .venv/bin/python manage.py ... (`make venv` creates it)."
        )

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
