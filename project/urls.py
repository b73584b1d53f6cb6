"""URLconf: pages, rooms, the accounts views and the /ws/ and /http/ endpoints."""
from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from chat import accounts, health, httpendpoint, scrape, searchviews, views, wsendpoint

urlpatterns = [
    path("", views.home, name="home"),
    path("rooms/", views.room_list, name="room_list"),
    path("rooms/new/", views.room_create, name="room_create"),  # before the slug route
    path("rooms/<slug:slug>/", views.room_detail, name="room_detail"),
    path("rooms/<slug:slug>/messages/", views.room_post, name="room_post"),  # the page's form
    path("direct/", views.direct_list, name="direct_list"),  # GET: the list; POST: start one
    path("direct/<str:username>/", views.direct_confirm, name="direct_confirm"),
    path(settings.CHAT_WS_PATH.lstrip("/"), wsendpoint.websocket, name="websocket"),
    path(settings.CHAT_HTTP_PATH.lstrip("/"), httpendpoint.http_transport, name="http_transport"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/login/", accounts.ThrottledLoginView.as_view(), name="login"),  # before auth.urls
    path("accounts/", include("django.contrib.auth.urls")),
    # Before admin.site.urls: the admin's log-in counts in the log-in throttle's buckets.
    path("admin/login/", accounts.admin_login, name="admin_login"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", scrape.metrics, name="metrics"),
    # Search (issue 16): the results, and a message among its neighbours, where results link.
    path("search/", searchviews.search_page, name="search"),
    path("rooms/<slug:slug>/messages/<int:seq>/", searchviews.message_context, name="message_context"),
]
