"""Admin for rooms (membership of private rooms) and messages; "disconnect now" on users."""
from django.contrib import admin, messages
from django.contrib.auth import get_user_model

from chat import edits, publish
from chat.models import DirectConversation, Message, MessageEdit, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "private", "last_seq", "created"]
    list_filter = ["private"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]
    readonly_fields = ["last_seq", "created"]


class MessageEditInline(admin.TabularInline):
    """A message's edit history (chat/edits.py): each body it replaced, when and by whom."""

    model = MessageEdit
    fields = readonly_fields = ["change", "action", "body", "by", "at"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False  # written by edits only, in the transaction that takes the change seq


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    inlines = [MessageEditInline]
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
        """Delete softly, as ``delete`` frames do (a change seq, a history row), and tell every
        open socket of the rooms concerned."""
        for message in edits.delete_shown(list(queryset), by=request.user):
            publish.message_deleted(message)

    def has_add_permission(self, request):
        # Messages get their seq from the room's row lock (chat/rooms.py), not from a form.
        return False


User = get_user_model()
# Extend whatever admin the user model has (django.contrib.auth's, or the site's own).
_UserAdmin = type(admin.site.get_model_admin(User)) if admin.site.is_registered(User) else admin.ModelAdmin
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class UserAdmin(_UserAdmin):
    actions = [*(_UserAdmin.actions or ()), "disconnect_now"]

    @admin.action(description="Disconnect now (close their open chat sockets)")
    def disconnect_now(self, request, queryset):
        """Close every socket of the selected users, on every worker, with 4401."""
        users = list(queryset.values_list("pk", flat=True))
        for pk in users:
            publish.disconnect(user=pk, reason="disconnected by an administrator")
        self.message_user(request, f"Disconnected {len(users)} user{'s' * (len(users) != 1)}.",
                          messages.SUCCESS)


@admin.register(DirectConversation)
class DirectConversationAdmin(admin.ModelAdmin):
    """The pair behind each direct room; made by the pages (chat/direct.py), never here."""

    list_display = ["room", "user_low", "user_high", "created"]
    list_select_related = ["room", "user_low", "user_high"]
    search_fields = ["user_low__username", "user_high__username", "room__slug"]
    readonly_fields = ["room", "user_low", "user_high", "created"]

    def has_add_permission(self, request):
        # A pair needs its room, its members and the order of the constraint: chat/direct.py.
        return False


# Read markers and mentions (chat/reads.py, chat/mentions.py): written by the chat, shown here.

from chat.models import Mention, ReadMarker  # noqa: E402 (this block's own import)


@admin.register(ReadMarker)
class ReadMarkerAdmin(admin.ModelAdmin):
    list_display = ["user", "room", "last_read"]
    list_select_related = ["user", "room"]
    search_fields = ["user__username", "room__slug"]
    readonly_fields = ["user", "room", "last_read"]


@admin.register(Mention)
class MentionAdmin(admin.ModelAdmin):
    list_display = ["user", "message", "seen"]
    list_filter = ["seen"]
    list_select_related = ["user", "message__room"]
    search_fields = ["user__username"]
    readonly_fields = ["user", "message", "seen"]
