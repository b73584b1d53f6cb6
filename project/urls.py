"""URLconf: pages, the accounts views and the /ws/ endpoint."""
from django.contrib import admin
from django.urls import include, path

from chat import views

urlpatterns = [
    path("", views.home, name="home"),
    path("ws/", views.websocket, name="websocket"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
