"""One endpoint, ``/ws/``: rooms are chosen by ``join`` frames, not by the URL."""
from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/", consumers.ChatConsumer.as_asgi()),
]
