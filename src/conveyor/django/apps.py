"""The Django app ``conveyor.django``: add it to ``INSTALLED_APPS`` for ``manage.py
conveyor_worker``."""

from __future__ import annotations

from django.apps import AppConfig


class ConveyorConfig(AppConfig):
    name = "conveyor.django"
    label = "conveyor_django"  # "django" alone would clash with nothing, but says nothing
    verbose_name = "Conveyor"
