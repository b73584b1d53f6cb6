"""Admin for rooms (membership of private rooms) and messages."""
from django.contrib import admin

from chat import publish
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

    def delete_model(self, request, message):
        """Delete softly (the seq stays taken) and remove the message from open pages."""
        self.delete_queryset(request, Message.objects.filter(pk=message.pk))

    def delete_queryset(self, request, queryset):
        """Delete softly and tell every open socket of the rooms concerned."""
        doomed = list(queryset.filter(deleted=False).select_related("room"))
        Message.objects.filter(pk__in=[m.pk for m in doomed]).update(deleted=True)
        for message in doomed:
            publish.message_deleted(message)

    def has_add_permission(self, request):
        # Messages get their seq from the room's row lock (chat/rooms.py), not from a form.
        return False
