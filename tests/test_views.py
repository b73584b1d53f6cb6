"""Plain pages, through Django's test client."""
import pytest
from django.contrib.auth import get_user_model


@pytest.mark.django_db
def test_signup_creates_the_user_and_signs_them_in(client):
    response = client.post("/accounts/signup/", {
        "username": "newcomer", "password1": "a sturdy passphrase 7", "password2": "a sturdy passphrase 7"})
    assert response.status_code == 302 and response.url == "/"
    assert get_user_model().objects.filter(username="newcomer").exists()
    assert "newcomer" in client.get("/").content.decode()


@pytest.mark.django_db
def test_signup_with_mismatched_passwords_shows_the_error(client):
    response = client.post("/accounts/signup/", {
        "username": "newcomer", "password1": "a sturdy passphrase 7", "password2": "another one 8"})
    assert response.status_code == 200
    assert "The two password fields didn’t match." in response.content.decode()
    assert not get_user_model().objects.filter(username="newcomer").exists()


def test_home_sends_anonymous_users_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302 and response.url == "/accounts/login/?next=/"


@pytest.mark.django_db
def test_login_page_has_a_csrf_protected_form(client):
    page = client.get("/accounts/login/").content.decode()
    assert 'name="csrfmiddlewaretoken"' in page
