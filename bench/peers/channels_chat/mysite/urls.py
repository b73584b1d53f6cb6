"""No pages: the peer serves only its WebSocket (``chat/routing.py``)."""
urlpatterns = []
