"""The SQLAlchemy dialect (``sqlite+sqlite_concurrent://``) against SQLAlchemy's pysqlite
dialect on the stdlib: the same Core and ORM work gives the same results."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm

import sqlite_concurrent


class Base(orm.DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    owner: orm.Mapped[str] = orm.mapped_column(sa.String(20), unique=True)
    balance: orm.Mapped[int] = orm.mapped_column(default=0)


def _work(url: str) -> list:
    engine = sa.create_engine(url)
    seen: list = [engine.dialect.name, engine.dialect.dbapi.sqlite_version_info >= (3, 35)]
    Base.metadata.create_all(engine)
    with orm.Session(engine) as session, session.begin():
        session.add_all([Account(owner="ann", balance=10), Account(owner="bob")])
    with orm.Session(engine) as session:
        try:
            with session.begin():
                session.add(Account(owner="ann"))
        except sa.exc.IntegrityError as e:
            seen.append(str(e.orig))
        with session.begin():
            ann = session.scalars(sa.select(Account).where(Account.owner == "ann")).one()
            ann.balance -= 3
            session.execute(sa.update(Account).where(Account.owner == "bob").values(balance=3))
            nested = session.begin_nested()  # a SAVEPOINT
            session.add(Account(owner="cat"))
            nested.rollback()
    with engine.connect() as conn:
        seen.append(conn.execute(sa.text("SELECT id, owner, balance FROM accounts")).all())
        seen.append(
            conn.execute(
                sa.text("INSERT INTO accounts(owner, balance) VALUES ('dan', 1)")
            ).lastrowid
        )
        conn.commit()
    seen.append(sa.inspect(engine).get_table_names())
    engine.dispose()
    return [
        list(map(tuple, s)) if isinstance(s, list) and s and isinstance(s[0], sa.Row) else s
        for s in seen
    ]


def test_the_dialect_is_registered_and_uses_sqlite_concurrent(tmp_path):
    engine = sa.create_engine(f"sqlite+sqlite_concurrent:///{tmp_path / 'a.db'}")
    assert engine.dialect.dbapi is sqlite_concurrent.dbapi2
    assert engine.dialect.driver == "sqlite_concurrent"
    engine.dispose()


def test_core_and_orm_work_as_on_pysqlite(tmp_path):
    theirs = _work(f"sqlite:///{tmp_path / 'stdlib.db'}")
    ours = _work(f"sqlite+sqlite_concurrent:///{tmp_path / 'ours.db'}")
    assert ours == theirs
    assert ("cat" not in repr(ours)) and ["accounts"] in ours
