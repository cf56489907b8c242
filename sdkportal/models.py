from django.conf import settings
from django.db import models


class SandboxClient(models.Model):
    """The OAuth client the portal registered for a developer: one per developer.

    Deleting the client (from the portal or the management console) deletes this link with it.
    """

    developer = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sandbox_client"
    )
    application = models.OneToOneField(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE, related_name="sandbox_of"
    )
    created = models.DateTimeField(auto_now_add=True)
    last_download = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "sandbox client"

    def __str__(self) -> str:
        return f"{self.developer} → {self.application.client_id}"
