"""``manage.py announce "text" [--room slug]``: push a notice to open sockets."""
from django.core.management.base import BaseCommand, CommandError

from chat.models import Room
from chat.publish import announce


class Command(BaseCommand):
    help = "Send a notice to every open socket, or to one room's."

    def add_arguments(self, parser):
        parser.add_argument("body", help="the text of the notice")
        parser.add_argument("--room", help="a room's slug (default: every socket)")

    def handle(self, body, room=None, **options):
        if not body.strip():
            raise CommandError("The notice is empty: give some text.")
        if room is not None and not Room.objects.filter(slug=room).exists():
            raise CommandError(f"There is no room {room!r}.")
        announce(body, room)
        self.stdout.write(f"Announced to {room or 'every socket'}.")
