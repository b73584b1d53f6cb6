"""The room-creation form: a name and a private flag; the slug comes from the name."""
from itertools import count, islice

from django import forms
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from chat.models import Room

SLUG_MAX = Room._meta.get_field("slug").max_length
RESERVED_SLUGS = {"new"}  # path words under /rooms/ that a room's page must not shadow
SLUG_ATTEMPTS = 3
SLUG_BATCH = 100


def slug_candidates(base):
    """Yield ``base``, then ``base-2``, ``base-3``, ..., each cut to the slug's length."""
    yield base
    for n in count(2):
        suffix = f"-{n}"
        yield base[:SLUG_MAX - len(suffix)].rstrip("-") + suffix


def free_slug(name):
    """Return the first slug derived from ``name`` that no room has yet."""
    candidates = slug_candidates(slugify(name)[:SLUG_MAX].rstrip("-"))
    while batch := list(islice(candidates, SLUG_BATCH)):
        taken = set(Room.objects.filter(slug__in=batch).values_list("slug", flat=True))
        for slug in batch:
            if slug not in taken:
                return slug


class RoomForm(forms.ModelForm):
    class Meta:
        model = Room
        fields = ["name", "private"]

    def clean_name(self):
        """Refuse names that give an empty or reserved slug."""
        name = self.cleaned_data["name"]
        slug = slugify(name)
        if not slug:
            raise forms.ValidationError("Use letters or digits in the name.", code="no_slug")
        if slug in RESERVED_SLUGS:
            raise forms.ValidationError(f"“{slug}” is reserved; choose another name.",
                                        code="reserved")
        return name

    def save(self, commit=True):
        """Save the room under the first free slug, retrying if another request takes it."""
        room = super().save(commit=False)
        for attempt in range(1, SLUG_ATTEMPTS + 1):
            room.slug = free_slug(room.name)
            if not commit:
                return room
            try:
                with transaction.atomic():
                    room.save()
                return room
            except IntegrityError:
                if attempt == SLUG_ATTEMPTS:
                    raise
