# Circuits are keyed per route and target host (they were per connector and host), and a
# route limits how many of its executions run at once. Circuit rows are transient state
# (a circuit re-opens by itself after enough failures), so the old ones are dropped.

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


def drop_circuits(apps, schema_editor):
    apps.get_model("connectors", "CircuitBreaker").objects.all().delete()


class Migration(migrations.Migration):

    dependencies = [
        ('connectors', '0004_circuit_names'),
    ]

    operations = [
        migrations.AddField(
            model_name='route',
            name='max_in_flight',
            field=models.PositiveIntegerField(default=16, help_text='At most this many of its executions run at once, over all workers, so one slow or hanging destination cannot take every worker\'s slots. Raise it for a busy route to a fast API (docs/engine.md).', validators=[django.core.validators.MinValueValidator(1)]),
        ),
        migrations.AddConstraint(
            model_name='route',
            constraint=models.CheckConstraint(condition=models.Q(('max_in_flight__gte', 1)), name='connectors_route_max_in_flight_gte_1'),
        ),
        migrations.RunPython(drop_circuits, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name='circuitbreaker',
            name='connectors_circuit_uniq',
        ),
        migrations.AlterModelOptions(
            name='circuitbreaker',
            options={'ordering': ['route', 'target'], 'verbose_name': 'connector and circuit breaker', 'verbose_name_plural': 'connectors and circuit breakers'},
        ),
        migrations.RemoveField(
            model_name='circuitbreaker',
            name='connector',
        ),
        migrations.AddField(
            model_name='circuitbreaker',
            name='route',
            field=models.ForeignKey(default=0, on_delete=django.db.models.deletion.CASCADE, related_name='circuits', to='connectors.route'),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name='circuitbreaker',
            constraint=models.UniqueConstraint(fields=('route', 'target'), name='connectors_circuit_uniq'),
        ),
    ]
