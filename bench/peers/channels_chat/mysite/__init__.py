"""The Django project of the Channels peer (the tutorial's ``mysite``)."""
