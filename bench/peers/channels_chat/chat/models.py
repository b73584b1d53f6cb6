"""Rooms (with their latest seq) and the messages saved before each broadcast."""
from django.db import models


class Room(models.Model):
    name = models.CharField(max_length=100, unique=True)
    last_seq = models.BigIntegerField(default=0)


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE)
    seq = models.BigIntegerField()
    user = models.CharField(max_length=150)
    body = models.TextField()
    ref = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq")]
