"""A Django database backend: ``"ENGINE": "sqlite_concurrent.django"``.

Django's own sqlite3 backend with :mod:`sqlite_concurrent` as its driver; everything else
(features, operations, schema editor, introspection) is Django's.
"""
