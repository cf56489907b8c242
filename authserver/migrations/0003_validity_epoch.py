import secrets

from django.db import migrations, models


def create_the_row(apps, schema_editor):
    # A random start: a new database does not start from a value that workers of another one
    # remember rows under.
    ValidityEpoch = apps.get_model("authserver", "ValidityEpoch")
    ValidityEpoch.objects.using(schema_editor.connection.alias).create(pk=1, value=secrets.randbelow(2**62))


class Migration(migrations.Migration):
    dependencies = [("authserver", "0002_audit_event_application_index")]

    operations = [
        migrations.CreateModel(
            name="ValidityEpoch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("value", models.BigIntegerField()),
            ],
        ),
        migrations.RunPython(create_the_row, migrations.RunPython.noop),
    ]
