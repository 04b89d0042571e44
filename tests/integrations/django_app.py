"""What an application sees through a Django backend, as JSON on stdout:
``python django_app.py ENGINE DIRECTORY`` (run by tests/test_django_backend.py)."""

from __future__ import annotations

import datetime
import decimal
import json
import sqlite3
import sys

import django
from django.conf import settings

engine, directory = sys.argv[1], sys.argv[2]
settings.configure(
    DATABASES={
        "default": {
            "ENGINE": engine,
            "NAME": f"{directory}/app.db",
        }
    },
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    USE_TZ=False,
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import IntegrityError, connection, models, transaction  # noqa: E402
from django.db.models import F  # noqa: E402


class Counter(models.Model):
    name = models.CharField(max_length=20, unique=True)
    n = models.IntegerField(default=0)
    when = models.DateTimeField(null=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True)
    flag = models.BooleanField(default=False)

    class Meta:
        app_label = "contenttypes"


seen: list = []
call_command("migrate", verbosity=0)
seen.append(sorted(connection.introspection.table_names()))
with connection.schema_editor() as editor:
    editor.create_model(Counter)
first = Counter.objects.create(
    name="a", when=datetime.datetime(2020, 1, 2, 3, 4, 5), price=decimal.Decimal("1.25"), flag=True
)
seen.append(first.pk)
with transaction.atomic():
    Counter.objects.filter(pk=first.pk).update(n=F("n") + 1)
    try:
        with transaction.atomic():  # a savepoint
            Counter.objects.create(name="a")
    except IntegrityError as e:
        seen.append(["IntegrityError", str(e)])
    seen.append(Counter.objects.create(name="b").pk)
    list(Counter.objects.select_for_update().filter(name="b"))
try:
    with transaction.atomic():
        Counter.objects.create(name="c")
        raise RuntimeError("rolled back")
except RuntimeError:
    pass
row = Counter.objects.get(name="a")
seen.append([row.n, row.when.isoformat(), str(row.price), row.flag])
seen.append(list(Counter.objects.order_by("pk").values_list("pk", "name", "n")))
seen.append(Counter.objects.filter(name__startswith="A").count())  # Django's LIKE and functions

# Django's test runner clones a file database by copying it (``--parallel``).
connection.creation.clone_test_db(suffix="1", verbosity=0)
clone = sqlite3.connect(f"{directory}/app_1.db")
seen.append(clone.execute("SELECT name, n FROM contenttypes_counter ORDER BY id").fetchall())
clone.close()
seen.append(Counter.objects.count())  # the connection goes on after the clone
with transaction.atomic():
    try:
        with transaction.atomic():
            Counter.objects.create(name="b")
    except IntegrityError as e:
        seen.append(["IntegrityError", str(e)])
# Left open, as Django leaves it: the interpreter's exit must close it cleanly.
print(json.dumps(seen))
