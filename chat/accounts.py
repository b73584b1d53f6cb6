"""Log-in (ours and the admin site's) with its throttle and hashing admission, and sign-up.

Every request that hashes a password takes a hashing slot first, before any database work
(chat/hashers.py): beyond the slots a worker answers 503 at once. A log-in then reserves its
attempt (chat/throttle.py) and is refused with 429 when its username or address is throttled.
"""
import logging

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import login, user_logged_in
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import LoginView
from django.dispatch import receiver
from django.http import HttpResponse
from django.shortcuts import redirect, render

from chat import throttle
from chat.hashers import HashingBusy, hashing_slot

logger = logging.getLogger(__name__)

BUSY = "The server is busy checking other log-ins. Try again in a few seconds."
SIGNUP_BUSY = "The server is busy creating other accounts. Try again in a few seconds."
SIGNUP_LIMITED = "Too many accounts were created from your address. Try again later."


@receiver(user_logged_in)
def _note_login(sender, request, user, **kwargs):
    if request is not None:
        request.chat_logged_in = user  # the guard below tells success from failure by it


def throttled_message():
    """Say how long a throttled user waits, in minutes."""
    minutes = max(1, round(settings.CHAT_LOGIN_WINDOW / 60))
    plural = "s" * (minutes > 1)
    return f"Too many failed log-in attempts. Wait {minutes} minute{plural} and try again."


def guarded_login(request, view, refuse):
    """Run the log-in ``view`` behind a hashing slot and a reserved attempt.

    ``refuse(status, message)`` renders a refusal: 503 with no slot, 429 when throttled.
    """
    if request.method != "POST":
        return view(request)
    username = request.POST.get("username", "")
    address = throttle.client_address(request)
    try:
        with hashing_slot():
            if throttle.reserve(username, address) is None:
                response = refuse(429, throttled_message())
                # At most the window: the oldest failure may leave it sooner.
                response["Retry-After"] = str(round(settings.CHAT_LOGIN_WINDOW))
                return response
            response = view(request)
    except HashingBusy:
        response = refuse(503, BUSY)
        response["Retry-After"] = str(settings.CHAT_HASH_RETRY_AFTER)
        return response
    if getattr(request, "chat_logged_in", None) is not None:
        throttle.succeeded(username)
    else:
        throttle.failed(username, address)
    return response


class ThrottledLoginView(LoginView):
    """Django's log-in, refused with 429 after too many failures and 503 when busy."""

    def post(self, request, *args, **kwargs):
        login_view = super().post
        return guarded_login(request, lambda r: login_view(r, *args, **kwargs), self.refuse)

    def refuse(self, status, message):
        username = self.request.POST.get("username", "")
        form = self.get_form_class()(self.request, initial={"username": username})
        return self.render_to_response(self.get_context_data(form=form, throttled=message),
                                       status=status)


def admin_login(request, extra_context=None):
    """The admin site's log-in, counted in the same buckets as ours."""
    def refuse(status, message):
        return HttpResponse(message + "\n", status=status, content_type="text/plain")

    return guarded_login(request, lambda r: admin.site.login(r, extra_context), refuse)


def signup(request):
    """Create an account with Django's ``UserCreationForm`` and sign the new user in."""
    form = UserCreationForm(request.POST or None)
    if request.method != "POST":
        return render(request, "registration/signup.html", {"form": form})
    address = throttle.client_address(request)
    limit = throttle.address_limit("signup")
    if not limit.allow(address):
        logger.info("sign-up from %s refused: over the per-address limit", address)
        return _refused_signup(request, form, SIGNUP_LIMITED, 429, limit.retry_after(address))
    try:
        with hashing_slot():
            if form.is_valid():  # validates and hashes the password
                user = form.save()
                login(request, user)
                return redirect("home")
    except HashingBusy:
        return _refused_signup(request, form, SIGNUP_BUSY, 503, settings.CHAT_HASH_RETRY_AFTER)
    return render(request, "registration/signup.html", {"form": form})


def _refused_signup(request, form, message, status, retry_after):
    """Show the form again, unvalidated (validating costs a query), with ``message``."""
    form = UserCreationForm(initial={"username": form.data.get("username", "")})
    form.cleaned_data = {}  # add_error expects a cleaned form
    form.add_error(None, message)
    response = render(request, "registration/signup.html", {"form": form}, status=status)
    response["Retry-After"] = str(retry_after)
    return response
