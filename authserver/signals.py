"""Receivers that make a user account's activation or deactivation, saved by any path (a shell, a
form of another app, a script), do what services.set_user_active does: a deactivated account's
clients are disabled with it, audited. Connected in authserver/apps.py.

A queryset's update() sends no signal and is not seen here: set_user_active writes with one for
that reason, and does the same work itself."""

from authserver import services

# What pre_save read of the stored account, for post_save (on the instance, for this one save).
STORED_ACTIVE = "_authserver_stored_is_active"


def user_saving(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    """Before a user's save: whether the stored account is active, when this save may change it."""
    instance.__dict__.pop(STORED_ACTIVE, None)
    if raw or instance._state.adding or instance.pk is None:
        return  # a fixture's row as it is; a new account owns no client yet
    if update_fields is not None and "is_active" not in update_fields:
        return  # a login's last_login, say: one query less on every sign-in
    stored = sender._default_manager.filter(pk=instance.pk).values_list("is_active", flat=True).first()
    if stored is not None:
        instance.__dict__[STORED_ACTIVE] = stored


def user_saved(sender, instance, created=False, raw=False, **kwargs) -> None:
    """After a user's save: an account that was active and is no more, or the other way round,
    has what follows done and recorded once (services.user_active_changed)."""
    stored = instance.__dict__.pop(STORED_ACTIVE, None)
    if stored is None or bool(stored) == bool(instance.is_active):
        return
    services.user_active_changed(user=instance, active=instance.is_active, actor=services.UNATTRIBUTED)
