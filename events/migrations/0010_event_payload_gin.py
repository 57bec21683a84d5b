"""A GIN index on events' payloads for the admin's search by payload field (PostgreSQL).

`payload @> '{"order": {"id": 123}}'` is answered through it. jsonb_path_ops keeps the
index small and serves exactly the containment the search asks. SQLite has no such index:
the search there reads a bounded number of the newest events (events.models).
"""

from django.db import migrations

INDEX = "events_event_payload_gin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON events_event USING gin (payload jsonb_path_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("events", "0009_bulkoperation_reason")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
