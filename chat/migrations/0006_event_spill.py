import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0005_presence_heals"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventSpill",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("topic", models.TextField(help_text="the room's slug, or * for every socket")),
                ("payload", models.BinaryField()),
                ("created", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
            ],
            options={
                "indexes": [models.Index(fields=["created"], name="chat_eventspill_created")],
            },
        ),
    ]
