"""/healthz: a SELECT 1 and a broker probe (a Redis PING, or an AMQP handshake with RabbitMQ),
200 when both answer, 503 naming the one that did not."""

from __future__ import annotations

import pytest

from tests.stack import free_port

pytestmark = pytest.mark.django_db


def test_it_is_healthy_when_the_database_and_the_broker_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_a_stopped_broker_is_a_503_that_names_the_broker(client, settings):
    # Nothing listens on this port: the PING is refused.
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "unavailable"}


def test_a_broker_that_stops_turns_the_check_from_200_to_503(client, settings, private_redis):
    import redis

    tcp_url, unix_url = private_redis
    socket_url = unix_url.replace("unix://", "redis+socket://")  # kombu's spelling
    settings.CELERY_BROKER_URL = tcp_url
    assert client.get("/healthz").status_code == 200
    settings.CELERY_BROKER_URL = socket_url  # unix sockets work as well
    assert client.get("/healthz").status_code == 200

    redis.Redis.from_url(tcp_url).shutdown(nosave=True)

    settings.CELERY_BROKER_URL = tcp_url
    assert client.get("/healthz").json()["broker"] == "unavailable"
    settings.CELERY_BROKER_URL = socket_url
    assert client.get("/healthz").status_code == 503


def test_anyone_may_ask_without_signing_in(client, alice):
    assert client.get("/healthz").status_code == 200
