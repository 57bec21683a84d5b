"""The bare baseline `make bench` measures ingest against (see bench/README.md).

A plain Django project with one view doing one INSERT into a table with the same unique
constraint as `events_event` (source, event id). It uses the runtime's own database
settings and is served by gunicorn with the runtime's own config file, so the difference
between the two is what the runtime does per request, not how it is served.
"""
