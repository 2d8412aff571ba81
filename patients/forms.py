from __future__ import annotations

from django import forms

from patients.models import Patient, PatientIdentifier


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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # No maxlength in the page: a browser would cut a longer paste without a word; the form says so.
        self.fields["label"].widget.attrs.pop("maxlength", None)
        limit = Patient._meta.get_field("label").max_length
        self.fields["label"].error_messages["max_length"] = (
            f"The label is too long: at most {limit} characters (this one has %(show_value)d). Shorten it; "
            "nothing was cut."
        )

    def clean_label(self) -> str:
        return self.cleaned_data["label"].strip()


class IdentifierForm(forms.Form):
    kind = forms.ChoiceField(choices=PatientIdentifier.Kind.choices)
    value = forms.CharField(max_length=200, help_text="A date of birth as YYYY-MM-DD.")


class RedactionForm(forms.Form):
    SCOPES = [("report", "this report only"), ("patient", "every report of this patient")]

    phrase = forms.CharField(max_length=200, help_text="Removed wherever it appears, in any case or spacing.")
    scope = forms.ChoiceField(choices=SCOPES, initial="report")
