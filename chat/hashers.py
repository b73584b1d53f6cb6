"""Password hashing off the gevent hub.

PBKDF2 at Django 5.2's 1,000,000 iterations costs about 0.35 s of CPU per check here; on the
hub, ten logins at once would freeze every socket of the worker for seconds.
``hashlib.pbkdf2_hmac`` releases the GIL, so ``chat.db.offload``'s native threads run it in parallel.
"""
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from chat.db import offload


class OffloadedPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 hasher, hashing on ``offload``'s threads; stored hashes are unchanged."""

    algorithm = "pbkdf2_sha256"

    def encode(self, password, salt, iterations=None):
        return offload(super().encode, password, salt, iterations)
