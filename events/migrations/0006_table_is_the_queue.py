# The executions table is the queue (docs/engine.md): no task message beside each
# execution any more. next_attempt_at is always set, so one partial index on
# (route, next_attempt_at) serves the claim; dispatched_at (when the last task message
# became runnable) goes, and so do django-tasks-db's table and its migration records.
# Workers record their concurrency, in-flight count and claims instead of an engine name.

from django.db import migrations, models
from django.db.models import F

import django.utils.timezone


def fill_next_attempt_at(apps, schema_editor):
    Execution = apps.get_model("events", "Execution")
    Execution.objects.filter(next_attempt_at__isnull=True).update(next_attempt_at=F("created_at"))


def drop_task_queue(apps, schema_editor):
    connection = schema_editor.connection
    table = "django_tasks_database_dbtaskresult"
    if table in connection.introspection.table_names():
        schema_editor.execute(f"DROP TABLE {connection.ops.quote_name(table)}")
    schema_editor.execute(
        "DELETE FROM django_migrations WHERE app = %s", ["django_tasks_database"]
    )


class Migration(migrations.Migration):

    dependencies = [
        ('connectors', '0005_route_max_in_flight_circuit_per_route'),
        ('events', '0005_bulkoperation_progressed_at'),
    ]

    operations = [
        migrations.RunPython(fill_next_attempt_at, migrations.RunPython.noop),
        migrations.RemoveIndex(
            model_name='execution',
            name='events_execution_pending_idx',
        ),
        migrations.RemoveIndex(
            model_name='execution',
            name='events_execution_running_idx',
        ),
        migrations.RemoveField(
            model_name='execution',
            name='dispatched_at',
        ),
        migrations.AlterField(
            model_name='execution',
            name='next_attempt_at',
            field=models.DateTimeField(default=django.utils.timezone.now, help_text='A queued or retrying execution is not claimed before this time (retry backoff, a rate limit, an open circuit).'),
        ),
        migrations.AddIndex(
            model_name='execution',
            index=models.Index(condition=models.Q(('status__in', ['queued', 'retrying'])), fields=['route', 'next_attempt_at'], name='events_execution_claim_idx'),
        ),
        migrations.AddIndex(
            model_name='execution',
            index=models.Index(condition=models.Q(('status__in', ['queued', 'retrying'])), fields=['next_attempt_at'], name='events_execution_due_idx'),
        ),
        migrations.AddIndex(
            model_name='execution',
            index=models.Index(condition=models.Q(('status', 'running')), fields=['route', 'lease_expires_at'], name='events_execution_running_idx'),
        ),
        migrations.AddConstraint(
            model_name='execution',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'running'), _negated=True), models.Q(('lease_expires_at__isnull', False), models.Q(('lease_owner', ''), _negated=True)), _connector='OR'), name='events_execution_running_has_lease'),
        ),
        migrations.RemoveField(
            model_name='workerheartbeat',
            name='engine',
        ),
        migrations.AddField(
            model_name='workerheartbeat',
            name='claims',
            field=models.PositiveBigIntegerField(default=0, help_text='Executions it has claimed since it started.'),
        ),
        migrations.AddField(
            model_name='workerheartbeat',
            name='concurrency',
            field=models.PositiveIntegerField(default=0, help_text='Actions it runs at once (runworker --concurrency).'),
        ),
        migrations.AddField(
            model_name='workerheartbeat',
            name='in_flight',
            field=models.PositiveIntegerField(default=0, help_text='Actions it was running at its last heartbeat.'),
        ),
        migrations.AlterField(
            model_name='bulkoperation',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('running', 'Running'), ('done', 'Done'), ('failed', 'Failed')], default='pending', max_length=7),
        ),
        migrations.RunPython(drop_task_queue, migrations.RunPython.noop),
    ]
