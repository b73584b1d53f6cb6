"""URLconf: pages, rooms, the accounts views and the /ws/ endpoint."""
from django.contrib import admin
from django.urls import include, path

from chat import health, scrape, views

urlpatterns = [
    path("", views.home, name="home"),
    path("rooms/", views.room_list, name="room_list"),
    path("rooms/new/", views.room_create, name="room_create"),  # before the slug route
    path("rooms/<slug:slug>/", views.room_detail, name="room_detail"),
    path("ws/", views.websocket, name="websocket"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", views.ThrottledLoginView.as_view(), name="login"),  # before auth.urls
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", scrape.metrics, name="metrics"),
]
