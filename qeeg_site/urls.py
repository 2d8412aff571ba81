from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from qeeg_site import account
from qeeg_site.api import api

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("account/tokens/", account.token_list, name="account-tokens"),
    path("account/tokens/<int:pk>/revoke/", account.token_revoke, name="account-token-revoke"),
    path("api/", api.urls),
    path("audit/", include("audit.urls")),
    path("runs/", include("runs.urls")),
    path("account/", include("accounts.urls")),
    path("", include("patients.urls")),
]
