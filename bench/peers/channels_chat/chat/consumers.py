"""The tutorial's ``ChatConsumer``, speaking the benchmark dialect (``bench/peers/README.md``).

As in the tutorial: an ``AsyncWebsocketConsumer``, one channel-layer group per room
(``group_add`` / ``group_send`` / ``group_discard``), and a ``chat_message`` handler that
sends each group event to the socket. Added: rooms come from ``join`` frames, the user from
``?user=``, and each message is saved through ``database_sync_to_async`` before the
``group_send``. The seq is the room row's ``last_seq``, incremented by the ``UPDATE``
that locks the row in the insert's transaction, so it is gapless per room.
"""
import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import connection, transaction

from .models import Message, Room

NEXT_SEQ = f"UPDATE {Room._meta.db_table} SET last_seq = last_seq + 1 WHERE name = %s RETURNING id, last_seq"


def group_name(room):
    return f"chat_{room}"


@database_sync_to_async
def room_seq(room):
    """Return the room's latest seq, creating the room if it is new."""
    return Room.objects.get_or_create(name=room)[0].last_seq


@database_sync_to_async
def save_message(room, user, body, ref):
    """Take the room's next seq and insert the message in one transaction; return the event.

    Return None when the room does not exist (nobody joined it yet)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(NEXT_SEQ, [room])
            row = cursor.fetchone()
        if row is None:
            return None
        message = Message.objects.create(room_id=row[0], seq=row[1], user=user, body=body,
                                         ref=ref or "")
    return {"type": "message", "room": room, "seq": message.seq, "id": message.id,
            "user": user, "body": body, "ts": message.created.isoformat(), "ref": ref}


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        query = parse_qs(self.scope["query_string"].decode("latin-1"))
        self.user = query.get("user", ["anon"])[0]
        self.rooms = set()
        await self.accept()

    async def disconnect(self, close_code):
        for room in self.rooms:
            await self.channel_layer.group_discard(group_name(room), self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data or bytes_data)
            handler = getattr(self, f"on_{frame['type']}", None)
            if handler is None:
                await self.send_event({"type": "error", "code": "unknown_type"})
                return
            await handler(frame)
        except (ValueError, KeyError, TypeError):
            await self.send_event({"type": "error", "code": "bad_request"})

    async def on_join(self, frame):
        room = frame["room"]
        # Subscribe first: a message committed after the seq is read still reaches us.
        await self.channel_layer.group_add(group_name(room), self.channel_name)
        self.rooms.add(room)
        await self.send_event({"type": "joined", "room": room, "seq": await room_seq(room)})

    async def on_send(self, frame):
        room = frame["room"]
        event = await save_message(room, self.user, str(frame["body"]), frame.get("ref"))
        if event is None:
            await self.send_event({"type": "error", "code": "unknown_room", "ref": frame.get("ref")})
            return
        await self.channel_layer.group_send(group_name(room), {"type": "chat.message", "message": event})

    async def on_ping(self, frame):
        await self.send_event({"type": "pong", "ref": frame.get("ref")})

    async def chat_message(self, event):
        """A room event from the channel layer: send it to this socket (as in the tutorial)."""
        await self.send_event(event["message"])

    async def send_event(self, event):
        await self.send(text_data=json.dumps(event))
