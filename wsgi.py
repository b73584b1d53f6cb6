"""The WSGI application: Django pages and the /ws/ endpoint, served by one gevent worker."""
import patches  # noqa: F401  (first: gevent and psycogreen before django.db is imported)

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
