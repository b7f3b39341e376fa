"""A user's own architectures, outside ferd (docs/bring-your-own-teacher.md): ``my_models.tiny:build`` with
``tests/support`` on PYTHONPATH, ``support.my_models.tiny:build`` in-process under pytest."""
