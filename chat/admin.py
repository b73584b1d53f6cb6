"""Admin for rooms (membership of private rooms) and messages."""
from django.contrib import admin

from chat.models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "private", "last_seq", "created"]
    list_filter = ["private"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]
    readonly_fields = ["last_seq", "created"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "user", "short_body", "created", "deleted"]
    list_filter = ["deleted", "room"]
    search_fields = ["body", "user__username"]
    list_select_related = ["room", "user"]
    readonly_fields = ["room", "seq", "user", "ref", "created"]
    ordering = ["-created"]

    @admin.display(description="body")
    def short_body(self, message):
        return message.body if len(message.body) <= 80 else message.body[:79] + "…"

    def has_add_permission(self, request):
        # Messages get their seq from the room's row lock (chat/rooms.py), not from a form.
        return False
