"""Fixtures of the API tests: tokens and clients that send them."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import Client
from hypothesis.configuration import set_hypothesis_home_dir

from api.services import token_create

# Hypothesis (under schemathesis, test_schema_conformance.py) keeps caches in ./.hypothesis
# unless told otherwise: under the var directory they stay out of the working tree.
set_hypothesis_home_dir(settings.VAR_DIR / "hypothesis")


class ApiClient:
    """Django's test client speaking JSON with a token: ``api.post(url, {...})``."""

    def __init__(self, token: str | None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = Client(headers=headers)
        self.token = token

    def _send(self, method, url, data=None, *, raw=None, content_type="application/json", **kw):
        body = raw if raw is not None else (b"" if data is None else json.dumps(data))
        return getattr(self.client, method)(url, data=body, content_type=content_type, **kw)

    def get(self, url, params=None, **kw):
        return self.client.get(url, params or {}, **kw)

    def post(self, url, data=None, **kw):
        return self._send("post", url, data, **kw)

    def patch(self, url, data=None, **kw):
        return self._send("patch", url, data, **kw)

    def put(self, url, data=None, **kw):
        return self._send("put", url, data, **kw)

    def delete(self, url, **kw):
        return self.client.delete(url, **kw)


@pytest.fixture
def make_token():
    def make(user, name="test token"):
        _, plain = token_create(owner=user, name=name)
        return plain

    return make


@pytest.fixture
def api(alice, make_token):
    """Alice's API client."""
    return ApiClient(make_token(alice, "alice's token"))


@pytest.fixture
def bob_api(bob, make_token):
    return ApiClient(make_token(bob, "bob's token"))


@pytest.fixture
def anonymous_api():
    return ApiClient(None)
