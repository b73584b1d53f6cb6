from django.db import migrations


def create_lobby(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    Room.objects.get_or_create(slug="lobby", defaults={"name": "Lobby"})


def remove_lobby(apps, schema_editor):
    apps.get_model("chat", "Room").objects.filter(slug="lobby").delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_rooms_and_messages")]

    operations = [migrations.RunPython(create_lobby, remove_lobby)]
