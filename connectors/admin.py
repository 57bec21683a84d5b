from django import forms
from django.contrib import admin

from connectors import registry
from connectors.models import Route


class RouteForm(forms.ModelForm):
    connector = forms.ChoiceField(choices=())

    class Meta:
        model = Route
        fields = ("name", "event_type", "connector", "action", "params", "enabled", "max_attempts")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connector"].choices = [(n, n) for n in registry.names()]


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    form = RouteForm
    list_display = ("name", "event_type", "connector", "action", "enabled", "max_attempts")
    list_filter = ("enabled", "connector")
    search_fields = ("name", "event_type")
