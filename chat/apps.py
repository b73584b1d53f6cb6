from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from chat import checks  # noqa: F401  (registers the system checks)
        from chat import revocation  # noqa: F401  (connects the signal receivers)
