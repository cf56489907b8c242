from django.apps import AppConfig


class FooApiConfig(AppConfig):
    name = "fooapi"
    verbose_name = "Foo API"

    def ready(self) -> None:
        # Registers the OpenAPI description of the bearer-token authentication (drf-spectacular).
        from fooapi import schema  # noqa: F401
