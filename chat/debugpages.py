"""Debug pages that never show a password: Django's filter misses names like DATABASE_URL."""
import re

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host -> scheme://user:********@host (also with no user).
URL_CREDENTIALS = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@", re.IGNORECASE)


class CredentialsReporterFilter(SafeExceptionReporterFilter):
    """Mask the password of any URL in any setting or request value, whatever its name."""

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + "|DATABASE_URL|REDIS_URL",
        flags=re.IGNORECASE)

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            masked = self.cleansed_substitute
            return URL_CREDENTIALS.sub(lambda m: m["head"] + masked + "@", cleansed)
        return cleansed
