"""The GIN index of full-text search (chat/search.py) on ``to_tsvector(CHAT_SEARCH_CONFIG, body)``.

Built CONCURRENTLY (so outside a transaction): on a large chat_message a plain CREATE INDEX
would hold back every send until the index is built. The config is read from the settings, as
the model's index reads it, so that a deployment sets it once before migrating.
"""
import django.contrib.postgres.indexes
import django.contrib.postgres.search
from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ("chat", "0008_message_edits"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="message",
            index=django.contrib.postgres.indexes.GinIndex(
                models.Func(django.contrib.postgres.search.SearchConfig(settings.CHAT_SEARCH_CONFIG),
                            models.F("body"), function="to_tsvector",
                            output_field=django.contrib.postgres.search.SearchVectorField()),
                name="chat_message_body_search"),
        ),
    ]
