# Presence that heals (issue 13): rows are stamped by the database's clock, and the worker id
# carries a random part per process (host:pid alone collides between containers).

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0004_login_failures'),
    ]

    operations = [
        migrations.AlterField(
            model_name='presence',
            name='seen',
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), help_text="the last heartbeat, by the database's clock"),
        ),
        migrations.AlterField(
            model_name='presence',
            name='worker',
            field=models.CharField(help_text='host:pid:random, the worker process holding the sockets', max_length=200),
        ),
    ]
