"""One private stack (PostgreSQL, Redis with the manifest's persistence, the Procfile's roles) per module."""

import pytest

from system.client import create_token
from system.stack import Stack


@pytest.fixture(scope="module")
def stack():
    with Stack() as running:
        running.start("web", "worker", "beat")
        yield running


@pytest.fixture(scope="module")
def token(stack):
    return create_token(stack)
