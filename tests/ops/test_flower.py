"""Flower, as the Procfile and docker-compose start it: a real ``celery -A config flower`` on the
test broker refuses requests without its basic-auth login and serves them with it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.stack import celery_environment, free_port, spawn, stop, tail

START_TIMEOUT = 30
LOGIN = ("operator", "flower-test-password")


@pytest.fixture
def flower(broker, tmp_path: Path):
    port = free_port()
    log = tmp_path / "flower.log"
    proc = spawn(
        ["flower", "--address=127.0.0.1", f"--port={port}",
         f"--basic-auth={LOGIN[0]}:{LOGIN[1]}",
         # A private database of its own: never the developer's flower.db.
         "--persistent=False"],
        log=log,
        env=celery_environment(database=False),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT
    why = ""
    while True:
        if proc.poll() is not None:
            why = f"flower exited with {proc.returncode}"
            break
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError as exc:
            why = f"nothing answered on {url} ({type(exc).__name__})"
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if proc.poll() is not None or time.monotonic() > deadline:
        stop(proc, timeout=10)
        print(f"Flower did not start within {START_TIMEOUT} s: {why}\n{tail(log, 30)}")
        pytest.skip(f"Flower did not start within {START_TIMEOUT} s: {why}")
    yield url
    stop(proc, timeout=10)


def test_flower_refuses_requests_without_its_login(flower):
    response = httpx.get(flower, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert httpx.get(flower, auth=("operator", "wrong"), timeout=5).status_code == 401


def test_flower_serves_its_pages_with_the_login(flower):
    response = httpx.get(flower, auth=LOGIN, timeout=5, follow_redirects=True)
    assert response.status_code == 200
    assert "Flower" in response.text
    workers = httpx.get(flower + "workers", auth=LOGIN, timeout=5, follow_redirects=True)
    assert workers.status_code == 200


@pytest.mark.django_db
def test_the_dashboard_links_to_flower(staff_client, settings):
    settings.CONVEYOR_FLOWER_URL = "https://flower.example.com/"
    assert 'href="https://flower.example.com/"' in staff_client.get("/ops/").content.decode()
