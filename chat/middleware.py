"""Middleware for the pages: static files in-process, and a strict Content-Security-Policy."""
import os

from django.conf import settings
from whitenoise.middleware import WhiteNoiseMiddleware

POLICY = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
          "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
          "form-action 'self'")


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, serving the apps' static/ folders (``WHITENOISE_USE_FINDERS``).

    The only change: it says nothing of a ``STATIC_ROOT`` that ``collectstatic`` never made
    (WhiteNoise warns "No directory at" for it), since the finders serve the files anyway.
    """

    def add_files(self, root, prefix=None):
        if root == self.static_root and not os.path.isdir(root):
            return
        super().add_files(root, prefix)


class ContentSecurityPolicyMiddleware:
    """Add a strict Content-Security-Policy to each response that has none yet.

    No inline script or style is allowed, so a message body that slipped into a page as HTML
    could still run nothing. ``connect-src 'self'`` covers ``ws://`` and ``wss://`` to the
    page's own host (CSP level 3, as browsers implement it). ``CHAT_CONTENT_SECURITY_POLICY``
    replaces the policy; ``""`` sends none.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = getattr(settings, "CHAT_CONTENT_SECURITY_POLICY", POLICY)

    def __call__(self, request):
        response = self.get_response(request)
        if not self.policy or "Content-Security-Policy" in response:
            return response
        # Django's DEBUG pages for 404 and 500 are styled inline: leave them readable.
        if settings.DEBUG and response.status_code in (404, 500):
            return response
        response["Content-Security-Policy"] = self.policy
        return response
