"""An index on events' event ids in the C collation, for the admin's search by event id
prefix (PostgreSQL).

`event_id COLLATE "C" >= 'evt_3f9a' AND ... < 'evt_3f9b'` and `LIKE 'evt_3f9a%'` are
answered through it whatever the database's collation is; the plain index of migration
0004 serves neither under a linguistic collation. SQLite needs none: it compares text byte
by byte, so that plain index serves the range (events.models,
EventQuerySet.with_event_id_prefix).

Built CONCURRENTLY, outside a transaction: webhooks keep arriving while it builds. A build
that failed half way leaves an invalid index behind, which is dropped and built again.
"""

from django.db import migrations

INDEX = "events_event_event_id_c_idx"


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [INDEX]
        )
        found = cursor.fetchone()
    if found is not None and not found[0]:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    schema_editor.execute(
        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON events_event (event_id COLLATE "C")'
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("events", "0012_execution_approval")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
