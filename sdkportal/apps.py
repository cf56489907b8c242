from django.apps import AppConfig


class SdkPortalConfig(AppConfig):
    name = "sdkportal"
    verbose_name = "SDK portal"
