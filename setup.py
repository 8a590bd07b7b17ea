"""The one part pyproject.toml cannot declare: the optional C extension (sync/mail/_speedups.c).

``optional=True``: where it cannot be compiled (no C compiler or Python headers), the
install still succeeds and xtmail.sync.mail.textops uses its Python versions.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("xtmail.sync.mail._speedups", ["sync/mail/_speedups.c"], optional=True),
    ],
)
