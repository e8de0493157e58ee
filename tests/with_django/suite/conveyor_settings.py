"""Settings for Django's test suite with the tasks on Conveyor (copied into the sdist's
``tests/`` directory by ``tests/with_django/run_suite.py``).

``$CONVEYOR_SUITE_DATABASE``: ``sqlite`` (Django's databases in memory, as its own
``test_sqlite`` settings; the queue in a SQLite file) or a PostgreSQL URL (Django's databases
and the queue on that server). ``$CONVEYOR_URL`` is the queue ``ConveyorBackend`` uses.
"""

import os
from urllib.parse import unquote, urlsplit

_database = os.environ["CONVEYOR_SUITE_DATABASE"]
if _database == "sqlite":
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3"},
        "other": {"ENGINE": "django.db.backends.sqlite3"},
    }
else:
    _url = urlsplit(_database)
    _server = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": _url.hostname,
        "PORT": _url.port,
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
    }
    DATABASES = {
        "default": {**_server, "NAME": _url.path.lstrip("/")},
        "other": {**_server, "NAME": _url.path.lstrip("/") + "_other"},
    }

SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
USE_TZ = False
