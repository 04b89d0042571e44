"""One writer process of an ORM application, written as the ORM's documentation shows, with no
retry loop: ``python orm_writers.py ORM DRIVER DATABASE setup|work ME COUNT [THINK]``.

ORM is ``django`` (DRIVER: a Django ENGINE) or ``sqlalchemy`` (DRIVER: a URL scheme).  ``work``
prints ``ready``, waits for a line on stdin (every writer starts together), runs COUNT
transactions, each with THINK seconds (default 0) of the application's work at its end, and
prints the errors it got, by class name, and their messages, as JSON (run by
tests/test_ways.py).
"""

from __future__ import annotations

import collections
import json
import sys
import time

orm, driver, database, action = sys.argv[1:5]
me, count = (int(sys.argv[5]), int(sys.argv[6])) if action == "work" else (0, 0)
think = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0


def django_app():
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {"ENGINE": driver, "NAME": database, "OPTIONS": {"timeout": 60}}},
        INSTALLED_APPS=["django.contrib.contenttypes"],
        USE_TZ=False,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.db import models

    class Counter(models.Model):
        name = models.CharField(max_length=20, unique=True)
        n = models.IntegerField(default=0)

        class Meta:
            app_label = "contenttypes"

    class Item(models.Model):
        owner = models.IntegerField()
        seq = models.IntegerField()

        class Meta:
            app_label = "contenttypes"

    return Counter, Item


def django_main():
    Counter, Item = django_app()  # noqa: N806 - model classes
    from django.db import connection, transaction
    from django.db.models import F

    if action == "setup":
        with connection.cursor() as cursor:  # what ours keeps the file in, for both
            cursor.execute("PRAGMA journal_mode=WAL")
        with connection.schema_editor() as editor:
            editor.create_model(Counter)
            editor.create_model(Item)
        Counter.objects.create(name="hot")
        return None

    def body(i):
        with transaction.atomic():  # F() increments and create(), as Django's docs show them
            Counter.objects.filter(name="hot").update(n=F("n") + 1)
            Item.objects.create(owner=me, seq=i)
            time.sleep(think)  # the application's own work, inside the transaction

    return body


def sqlalchemy_main():
    from sqlalchemy import Column, ForeignKey, Integer, create_engine, select
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Counter(Base):
        __tablename__ = "counter"
        id = Column(Integer, primary_key=True)
        n = Column(Integer, nullable=False)

    class Item(Base):
        __tablename__ = "item"
        id = Column(Integer, primary_key=True)
        owner = Column(Integer, nullable=False)
        seq = Column(Integer, nullable=False)
        counter_id = Column(Integer, ForeignKey("counter.id"), nullable=False)

    engine = create_engine(f"{driver}:///{database}", connect_args={"timeout": 60})
    if action == "setup":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            session.add(Counter(id=1, n=0))
        return None

    def body(i):
        with Session(engine) as session, session.begin():
            session.add(Item(owner=me, seq=i, counter_id=1))
            # Autoflush writes the item first: the counter is read inside the write
            # transaction, so the increment is exact.
            counter = session.scalars(select(Counter).where(Counter.id == 1)).one()
            counter.n += 1
            time.sleep(think)  # the application's own work, inside the transaction

    return body


body = {"django": django_main, "sqlalchemy": sqlalchemy_main}[orm]()
if body is not None:
    print("ready", flush=True)
    sys.stdin.readline()
    errors: collections.Counter[str] = collections.Counter()
    said: set[str] = set()
    for i in range(count):
        try:
            body(i)
        except Exception as e:  # what the application would see
            errors[type(e).__name__] += 1
            said.add(f"{type(e).__name__}: {e}")
    print(json.dumps({"errors": dict(errors), "messages": sorted(said)}), flush=True)
