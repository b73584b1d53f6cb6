"""``manage.py announce "text" [--room slug]``: push a notice to open sockets.

``-`` as the text reads it from standard input (a long notice: one argument may carry at
most 128 KiB on Linux). A notice over ``CHAT_EVENT_MAX_BYTES`` is refused whole, never cut.
"""
import sys

from django.core.management.base import BaseCommand, CommandError

from chat.errors import EventTooLarge
from chat.models import Room
from chat.publish import announce


class Command(BaseCommand):
    help = "Send a notice to every open socket, or to one room's."

    def add_arguments(self, parser):
        parser.add_argument("body", help="the text of the notice, or - to read it from standard input")
        parser.add_argument("--room", help="a room's slug (default: every socket)")

    def handle(self, body, room=None, **options):
        if body == "-":
            body = sys.stdin.read()
        if not body.strip():
            raise CommandError("The notice is empty: give some text.")
        if room is not None and not Room.objects.filter(slug=room).exists():
            raise CommandError(f"There is no room {room!r}.")
        try:
            announce(body, room)
        except EventTooLarge as error:
            raise CommandError(f"The notice is too large to send: {error}.") from None
        self.stdout.write(f"Announced to {room or 'every socket'}.")
