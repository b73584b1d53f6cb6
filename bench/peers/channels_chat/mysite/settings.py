"""Settings of the Channels peer: the tutorial's, trimmed to what a WebSocket chat needs.

Differences from ``startproject``: PostgreSQL from ``DATABASE_URL``, ``DEBUG = False`` (no
query log), ``ALLOWED_HOSTS = ["*"]`` (so ``AllowedHostsOriginValidator`` lets clients without
an ``Origin`` header in), persistent database connections (``CONN_MAX_AGE``, default 60 s).
The channel layer is the tutorial's ``InMemoryChannelLayer`` with its defaults (capacity 100
messages per channel, expiry 60 s) unless ``CHANNEL_LAYER_CAPACITY`` / ``_EXPIRY`` are set.
"""
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("SECRET_KEY", "peer-benchmark-key-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "chat",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
ROOT_URLCONF = "mysite.urls"
ASGI_APPLICATION = "mysite.asgi.application"

if not os.environ.get("DATABASE_URL"):
    raise ImproperlyConfigured("set DATABASE_URL to a postgres:// URL")
DATABASES = {
    "default": dj_database_url.config(
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")), conn_health_checks=True),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_layer_config = {key.lower(): int(os.environ[f"CHANNEL_LAYER_{key}"])
                 for key in ("CAPACITY", "EXPIRY") if os.environ.get(f"CHANNEL_LAYER_{key}")}
CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": _layer_config},
}

USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
