"""No password in any output: every URL of a ``;`` failover list is masked, whatever its password holds.

These tests feed ``mask_url`` passwords full of URL syntax, raw and URL-encoded; the
end-to-end tests of every output surface are in tests/integration/test_masking.py.
"""

from __future__ import annotations

import traceback
from urllib.parse import quote

import pytest

from taskq import App, ConfigurationError
from taskq.broker import mask_url

SECRET = "Zx9SECRET"  # in every password below, and in no host, user or vhost
NASTY = ["plain", "sl/ash", "que?ry", "ha#sh", "at@sign", "per%cent", "%2F%3F%23%40%25", "/?#@%", "@@//??##",
         "co:lon:s", "semi;colon", "sp ace", "pässwörd", "looks@like.a.host:5672/vhost", "%zz%", "trailing@"]


def nasty_passwords() -> list[str]:
    """Each nasty password as written (raw) and URL-encoded, as a careful operator writes it."""
    return [variant for core in NASTY for variant in (f"{SECRET}{core}", quote(f"{SECRET}{core}", safe=""))]


@pytest.mark.parametrize("password", nasty_passwords())
def test_mask_url_hides_every_password_of_a_list_and_never_raises(password):
    url = ";".join(
        f"amqp://shop:{password}@rabbit-{n}.internal:{5672 + n}/shop" for n in range(3)
    )
    # Exactly: no piece of the password left (it can hold an @ and a host), every host still shown.
    assert mask_url(url) == ";".join(f"amqp://shop:**@rabbit-{n}.internal:{5672 + n}/shop" for n in range(3))


@pytest.mark.parametrize(
    "url",
    ["amqp://guest@localhost//", "amqp://localhost:5672/shop", "taskq+sqlite:///tmp/broker.db", "memory://",
     "amqp://a.internal//;amqp://b.internal//"],
)
def test_mask_url_leaves_a_url_without_a_password_alone(url):
    assert mask_url(url) == url


def test_an_unparseable_url_is_a_configuration_error_that_shows_no_password():
    with pytest.raises(ConfigurationError, match="URL-encode") as caught:
        App("masking", broker=f"amqp://guest:{SECRET}/x@127.0.0.1:1//").broker
    assert SECRET not in "".join(traceback.format_exception(caught.value))
