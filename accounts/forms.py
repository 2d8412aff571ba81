from __future__ import annotations

from django import forms

from accounts.models import Profile


class ProfileForm(forms.ModelForm):
    class Meta:
        model = Profile
        fields = ["display_name", "credentials"]

    def clean(self) -> dict:
        data = super().clean()
        if not (data.get("display_name") or "").strip():
            self.add_error("display_name", "Your name as it should appear under a signature.")
        return data
