"""Conveyor for Django 6: a backend of Django's tasks framework, ``enqueue_on_commit`` and the
``conveyor_worker`` management command (add ``"conveyor.django"`` to ``INSTALLED_APPS``).

Needs ``pip install 'conveyor[django]'`` (Django 6.0, Python 3.12+). See the README's Django
section.
"""

from __future__ import annotations

from conveyor.django.backend import ConveyorBackend, shared_queue
from conveyor.django.jobs import JOB_NAME, DjangoTask, django_task
from conveyor.django.on_commit import enqueue_on_commit
from conveyor.django.worker import django_worker

__all__ = [
    "JOB_NAME",
    "ConveyorBackend",
    "DjangoTask",
    "django_task",
    "django_worker",
    "enqueue_on_commit",
    "shared_queue",
]
