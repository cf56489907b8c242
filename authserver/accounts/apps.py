from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "authserver.accounts"
    label = "authserver_accounts"
    verbose_name = "Account commands"
