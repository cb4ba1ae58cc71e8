"""Who may use the proxy routes and where the gateway forwards (tokenlens.access)."""

from __future__ import annotations

import base64

import pytest

from tokenlens.access import cross_site_browser_request, internal_address, token_presented, token_required


@pytest.mark.parametrize(
    "headers, cross",
    [
        ({}, False),  # an SDK or an agent: no Origin, no Sec-Fetch-Site
        ({"sec-fetch-site": "none"}, False),  # the user typed the URL
        ({"sec-fetch-site": "same-origin", "origin": "http://localhost:8420"}, False),
        ({"origin": "http://127.0.0.1:8420"}, False),  # loopback names are one origin
        ({"sec-fetch-site": "same-site"}, True),  # another port on localhost
        ({"sec-fetch-site": "cross-site"}, True),
        ({"origin": "http://localhost:3000"}, True),
        ({"origin": "null"}, True),
    ],
)
def test_cross_site_browser_requests(headers: dict[str, str], cross: bool) -> None:
    assert cross_site_browser_request(headers, "localhost:8420") is cross


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "headers, ok",
    [
        ({"x-tokenlens-token": "s3cret"}, True),
        ({"proxy-authorization": "Bearer s3cret"}, True),
        ({"proxy-authorization": basic("anyone", "s3cret")}, True),  # HTTPS_PROXY=http://anyone:s3cret@host
        ({"proxy-authorization": basic("s3cret", "")}, False),
        ({"proxy-authorization": "Basic !!!"}, False),
        ({"proxy-authorization": "Bearer s3cre"}, False),
        ({"authorization": "Bearer s3cret"}, False),  # the provider's key header is not the gateway's token
        ({}, False),
    ],
)
def test_token_presented(headers: dict[str, str], ok: bool) -> None:
    assert token_presented(headers, "s3cret") is ok
    assert token_presented(headers, None) is False


def test_token_required_beyond_loopback_only() -> None:
    assert not token_required("127.0.0.1") and not token_required("localhost")
    assert token_required("0.0.0.0") and token_required("192.0.2.2")


@pytest.mark.parametrize(
    "address, internal",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("fe80::1%eth0", True),
        ("0.0.0.0", True),
        ("192.0.2.2", False),
        ("8.8.8.8", False),
        ("api.openai.com", False),  # names are resolved before they are checked
    ],
)
def test_internal_address(address: str, internal: bool) -> None:
    assert internal_address(address) is internal
