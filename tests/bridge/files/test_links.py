"""Signed file links: what a signature covers, when a link expires, where links point, and
that every process on one database signs with the same key."""

from __future__ import annotations

import pytest

from bridge.appkeys import FILE_LINKS
from bridge.files.links import FileLinks, is_signed_file_path, public_base_url
from bridge.settings import HttpSettings
from tests.support.harness import make_settings, running_bridge

NOW = 1_800_000_000.0
LINKS = FileLinks(key=b"k" * 32, base_url="https://bridge.example", ttl_seconds=60)


def _parts(url: str) -> tuple[str, str]:
    query = url.split("?", 1)[1]
    fields = dict(item.split("=", 1) for item in query.split("&"))
    return fields["expires"], fields["sig"]


def test_a_link_opens_its_own_file_until_it_expires() -> None:
    url = LINKS.url(7, now=NOW)
    expires, sig = _parts(url)
    assert url == f"https://bridge.example/api/v1/files/7/signed?expires={expires}&sig={sig}"
    assert int(expires) > NOW + 60
    assert LINKS.check(7, expires=expires, sig=sig, now=NOW + 60) == "ok"
    assert LINKS.check(7, expires=expires, sig=sig, now=int(expires)) == "expired"
    assert LINKS.check(8, expires=expires, sig=sig, now=NOW) == "invalid"
    assert LINKS.check(7, expires=str(int(expires) + 1), sig=sig, now=NOW) == "invalid"


@pytest.mark.parametrize(
    "expires, sig",
    [
        ("", "0" * 64),
        ("12x", "0" * 64),
        ("-5", "0" * 64),
        ("1" * 13, "0" * 64),
        (None, "short"),
        (None, "upper"),
        (None, "flipped"),
    ],
)
def test_anything_but_the_exact_signature_is_invalid(expires: str | None, sig: str) -> None:
    good_expires, good_sig = _parts(LINKS.url(7, now=NOW))
    forged = {
        "short": good_sig[:-1],
        "upper": good_sig.upper(),
        "flipped": good_sig[:-1] + ("0" if good_sig[-1] != "0" else "1"),
    }.get(sig, sig)
    checked = LINKS.check(7, expires=expires or good_expires, sig=forged, now=NOW)
    assert checked == "invalid"
    # Not even an expired forgery says "expired": nothing about the file is revealed.
    assert LINKS.check(7, expires=expires or good_expires, sig=forged, now=NOW + 1e9) == "invalid"


def test_another_key_opens_nothing() -> None:
    expires, sig = _parts(LINKS.url(7, now=NOW))
    other = FileLinks(key=b"x" * 32, base_url="https://bridge.example", ttl_seconds=60)
    assert other.check(7, expires=expires, sig=sig, now=NOW) == "invalid"


def test_only_the_signed_route_is_let_through_without_a_token() -> None:
    assert is_signed_file_path("/api/v1/files/12/signed")
    for path in (
        "/api/v1/files/12",
        "/api/v1/files/12/signed/",
        "/api/v1/files/12/signed/x",
        "/api/v1/files/x/signed",
        "/api/v1/files//signed",
        "/api/v1/sessions/12/signed",
        "/api/v1/files/12/signed\n",
    ):
        assert not is_signed_file_path(path), path


def test_links_point_at_the_public_url_or_the_listening_address() -> None:
    assert public_base_url(HttpSettings(public_url="https://b.example/")) == "https://b.example"
    assert public_base_url(HttpSettings(host="10.0.0.5", port=9000)) == "http://10.0.0.5:9000"
    assert public_base_url(HttpSettings(host="0.0.0.0", port=8080)) == "http://127.0.0.1:8080"
    assert public_base_url(HttpSettings(host="::1", port=8080)) == "http://[::1]:8080"


async def test_every_start_on_one_database_signs_with_the_same_key(database_url: str) -> None:
    """The first start makes the key; later ones (another process, a restart) read it, so a
    link given out before a restart still opens after it."""
    settings = make_settings(database_url)
    async with running_bridge(settings) as first:
        key = first.app[FILE_LINKS].key
        expires, sig = _parts(first.app[FILE_LINKS].url(3))
    async with running_bridge(settings) as second:
        assert second.app[FILE_LINKS].key == key
        assert second.app[FILE_LINKS].check(3, expires=expires, sig=sig) == "ok"
    assert len(key) == 64
