"""A username is unique in any case, held by the database: a unique index on its lowercase.

The sign-up and console forms check it first; the index refuses what two requests at once would
both find free. Accounts that already differ only in case (made in a shell, say, before the forms
checked) stop the migration with a message naming them, having changed nothing: rename or delete all
but one of each, then migrate again.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import migrations, models
from django.db.models.functions import Lower

CONSTRAINT = "username_unique_in_any_case"


def username_index() -> models.UniqueConstraint:
    return models.UniqueConstraint(Lower(get_user_model().USERNAME_FIELD), name=CONSTRAINT)


def refuse_accounts_differing_only_in_case(users) -> None:
    name = get_user_model().USERNAME_FIELD  # a historical model has no USERNAME_FIELD
    accounts = users._default_manager.annotate(folded=Lower(name))
    clashing = accounts.values("folded").annotate(count=models.Count("pk")).filter(count__gt=1)
    folded = [row["folded"] for row in clashing]
    if not folded:
        return
    groups = [
        ", ".join(
            f"{username!r} (id {pk})"
            for pk, username in accounts.filter(folded=each).order_by("pk").values_list("pk", name)
        )
        for each in sorted(folded)
    ]
    raise CommandError(
        "Usernames are unique in any case from now on, and these accounts differ only in the case of "
        f"their username: {'; '.join(groups)}. Rename or delete all but one of each (e.g. "
        '`manage.py shell -c "from django.contrib.auth.models import User; '
        "User.objects.filter(pk=ID).update(username='NEW NAME')\"`), then run the command again. "
        "Nothing was changed."
    )


def add_index(apps, schema_editor) -> None:
    users = apps.get_model(settings.AUTH_USER_MODEL)
    refuse_accounts_differing_only_in_case(users)
    schema_editor.add_constraint(users, username_index())


def remove_index(apps, schema_editor) -> None:
    users = apps.get_model(settings.AUTH_USER_MODEL)
    schema_editor.remove_constraint(users, username_index())


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("authserver", "0008_token_endpoint_auth_method"),
    ]

    operations = [migrations.RunPython(add_index, remove_index)]
