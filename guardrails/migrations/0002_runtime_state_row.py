from django.db import migrations


def create_row(apps, schema_editor):
    # The one runtime state row exists from the start, so no request ever has to create it.
    apps.get_model("guardrails", "RuntimeState").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("guardrails", "0001_initial")]

    operations = [migrations.RunPython(create_row, migrations.RunPython.noop)]
