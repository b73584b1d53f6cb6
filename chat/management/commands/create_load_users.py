"""``manage.py create_load_users --count N``: accounts and rooms for ``loadtest.py``.

One password hash is computed and shared by every account, and the accounts are written with
bulk inserts, so ten thousand users take a second rather than an hour of PBKDF2.
"""
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from chat.models import Room

DEFAULT_PASSWORD = "chat-load-test"


class Command(BaseCommand):
    help = "Create (or update) load-test accounts <prefix>1..<prefix>N and rooms <prefix>-1..<prefix>-R."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True, help="how many accounts")
        parser.add_argument("--rooms", type=int, default=1, help="how many rooms (default 1)")
        parser.add_argument("--prefix", default="load", help="account and room name prefix (default: load)")
        parser.add_argument("--password", default=DEFAULT_PASSWORD,
                            help=f"the password of every account (default: {DEFAULT_PASSWORD})")
        parser.add_argument("--delete", action="store_true",
                            help="delete the accounts and rooms with this prefix instead")

    def handle(self, count, rooms, prefix, password, delete, **options):
        if count < 1 or rooms < 0:
            raise CommandError("--count must be at least 1 and --rooms at least 0.")
        if not prefix.isalnum():
            raise CommandError(f"--prefix must be letters and digits only, not {prefix!r}.")
        if delete:
            return self.delete(prefix)
        with transaction.atomic():
            self.create_users(prefix, count, make_password(password))
            slugs = self.create_rooms(prefix, rooms)
        self.stdout.write(f"Ready: {count} accounts {prefix}1..{prefix}{count} sharing one password, "
                          f"rooms {', '.join(slugs[:3])}{'...' if len(slugs) > 3 else ''}.")
        if password == DEFAULT_PASSWORD:
            self.stderr.write("These accounts have a well-known password: delete them after the test "
                              f"(manage.py create_load_users --count 1 --prefix {prefix} --delete).")

    def create_users(self, prefix, count, encoded):
        User = get_user_model()
        users = (User(username=f"{prefix}{n}", password=encoded) for n in range(1, count + 1))
        # Update the password of accounts left by an earlier run, so the given one works.
        User.objects.bulk_create(users, batch_size=2000, update_conflicts=True,
                                 unique_fields=["username"], update_fields=["password"])

    def create_rooms(self, prefix, count):
        slugs = [f"{prefix}-{n}" for n in range(1, count + 1)]
        Room.objects.bulk_create((Room(slug=slug, name=f"Load test {slug}") for slug in slugs),
                                 ignore_conflicts=True)
        return slugs

    def delete(self, prefix):
        User = get_user_model()
        users = User.objects.filter(username__regex=rf"^{prefix}[0-9]+$")
        rooms = Room.objects.filter(slug__regex=rf"^{prefix}-[0-9]+$")
        user_count, room_count = users.count(), rooms.count()
        rooms.delete()
        users.delete()
        self.stdout.write(f"Deleted {user_count} accounts and {room_count} rooms.")
