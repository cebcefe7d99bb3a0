"""Packaging for napixclient."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "napixclient" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="napixclient",
    version=VERSION,
    description="Call many Napix HTTP hosts at once from gevent code",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    packages=find_packages(include=["napixclient", "napixclient.*"]),
    package_data={"napixclient": ["py.typed"]},
    # The versions gevent ships wheels for: on 3.9 pip builds it from source
    # (minutes), and 3.9 is past its end of life.
    python_requires=">=3.10",
    install_requires=[
        "gevent>=22.10",
        # llhttp, the default parser (napixclient.core.parser), through
        # httptools: wheels for CPython 3.10 to 3.13; it imports no gevent.
        "httptools>=0.6",
        # The pure-Python parser, where httptools does not load.
        "h11>=0.14",
        # Content-Encoding: br decoded by default, with its output bounded
        # while decoding (1.2; bombs).
        "brotli>=1.2",
        "requests>=2.28",
        "rich>=12",
        "urllib3>=2.0,<3",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "responses>=0.23",
            "hypothesis>=6",
            "trustme>=1.0",
            "flask>=2.2",
            "gunicorn>=21",
            "ruff>=0.4",
            "mypy>=1.5",
            "types-requests",
            # The compression extra, so that br and zstd are tested too.
            "brotli>=1.2",
            "backports-zstd>=1.0; python_version < '3.14'",
            # The OpenTelemetry SDK's in-memory exporter and metric reader,
            # for tests/test_otel.py (the library uses the API only).
            "opentelemetry-api>=1.30",
            "opentelemetry-sdk>=1.30",
            # The fleet's tests: a real Redis (Debian's redis-server) and
            # Celery workers.
            "celery[redis]>=5.3",
            "redis>=4.5",
            # napixclient.asgi's tests: a real uvicorn serving a plain ASGI
            # app and a Starlette one.
            "uvicorn>=0.30",
            "starlette>=0.37",
            # async def tests (tests/test_aio.py, tests/test_testing_threads.py)
            # run under anyio's pytest plugin: it comes with anyio itself (no
            # plugin package, no asyncio_mode setting), and runs a test on
            # uvloop by a parameter of its anyio_backend fixture.
            "anyio>=4.0",
            # pytest-asyncio only to check that napixclient's fixtures also
            # serve an async suite written for it, as many are.
            "pytest-asyncio>=0.23",
            # A few asyncio tests run again on uvloop: optional for
            # napixclient.aio, never required.
            "uvloop>=0.19; sys_platform != 'win32' and platform_python_implementation == 'CPython'",
        ],
        "docs": [
            "sphinx>=7.2",
            "myst-parser>=2.0",
            # The tracing page's doctest and napixclient.otel's API page.
            "opentelemetry-api>=1.30",
            "opentelemetry-sdk>=1.30",
        ],
        # Kept for the installations that name it: llhttp, the fast parser,
        # comes with the default install (httptools).
        "fast": [],
        # Accept-Encoding: br and zstd besides gzip and deflate. brotli 1.2
        # bounds its output (bombs); zstd is in the standard library from 3.14.
        "compression": [
            "brotli>=1.2",
            "backports-zstd>=1.0; python_version < '3.14'",
        ],
        # napixclient.otel: spans, metrics and trace context through the
        # OpenTelemetry API (1.30: histogram bucket advice); no SDK.
        "otel": ["opentelemetry-api>=1.30"],
        # napixclient.fleet: probes spread over Celery workers, Redis broker.
        "fleet": ["celery[redis]>=5.3", "redis>=4.5"],
        # napixclient.asgi needs only the standard library: the extra names
        # nothing, so that installations may name it.
        "asgi": [],
    },
    entry_points={
        "console_scripts": ["napix = napixclient.cli:main"],
        # The entry point's name is the module's name, so a conftest that also
        # lists it in pytest_plugins does not register it twice.
        "pytest11": ["napixclient.testing.plugin = napixclient.testing.plugin"],
    },
    classifiers=[
        "Framework :: Pytest",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
