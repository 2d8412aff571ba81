from __future__ import annotations

from django import forms

from patients.models import Patient


class PatientForm(forms.ModelForm):
    """Label, notes and the clinical context a clinician may enter; every field but the label is optional."""

    class Meta:
        model = Patient
        fields = ["label", "age", "sex", "handedness", "medications", "referral_reason", "notes"]
        widgets = {
            "medications": forms.Textarea(attrs={"rows": 2}),
            "referral_reason": forms.Textarea(attrs={"rows": 2}),
            "notes": forms.Textarea(attrs={"rows": 3}),
            "age": forms.NumberInput(attrs={"min": 0, "max": 130}),
        }

    def clean_label(self) -> str:
        return self.cleaned_data["label"].strip()
