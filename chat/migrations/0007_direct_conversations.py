import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

# Rooms that exist already were last active at their newest message, or when made.
BACKFILL_ACTIVE_AT = """
    UPDATE chat_room SET active_at = COALESCE(
        (SELECT max(created) FROM chat_message WHERE chat_message.room_id = chat_room.id),
        chat_room.created)"""


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("chat", "0006_event_spill"),
    ]

    operations = [
        migrations.AddField(
            model_name="room",
            name="active_at",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.RunSQL(BACKFILL_ACTIVE_AT, migrations.RunSQL.noop),
        migrations.CreateModel(
            name="DirectConversation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("room", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="direct", to="chat.room")),
                ("user_high", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL)),
                ("user_low", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("user_low", "user_high"), name="chat_direct_pair"),
                    models.CheckConstraint(condition=models.Q(("user_low__lt", models.F("user_high"))),
                                           name="chat_direct_pair_ordered"),
                ],
            },
        ),
    ]
