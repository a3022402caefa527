import pytest
import redis
from django.conf import settings


@pytest.fixture
def broker_redis():
    """A client of the suite's Redis (the broker's, unless BROKER_URL names another)."""
    c = redis.Redis.from_url(settings.REDIS_URL)
    yield c
    c.close()
