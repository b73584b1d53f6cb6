import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0007_direct_conversations'),  # the user model: through 0001
    ]

    operations = [
        migrations.CreateModel(
            name='MessageEdit',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('action', models.CharField(choices=[('edit', 'edited'), ('delete', 'deleted')], max_length=6)),
                ('body', models.TextField(help_text='the body before this change')),
                ('at', models.DateTimeField(default=django.utils.timezone.now)),
                ('change', models.BigIntegerField(help_text="the room's change seq this change took")),
            ],
            options={
                'ordering': ['message', 'change'],
            },
        ),
        migrations.AddField(
            model_name='message',
            name='change',
            field=models.BigIntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AddField(
            model_name='message',
            name='edited',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='room',
            name='last_change',
            field=models.BigIntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AddIndex(
            model_name='message',
            index=models.Index(condition=models.Q(('change__gt', 0)), fields=['room', 'change'], name='chat_message_room_change'),
        ),
        migrations.AddField(
            model_name='messageedit',
            name='by',
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='messageedit',
            name='message',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='edits', to='chat.message'),
        ),
    ]
