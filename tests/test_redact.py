"""napixclient.redact: secret values, their encoded forms, and signatures masked."""

from urllib.parse import quote, quote_plus

import pytest

from napixclient.redact import MASK, redact_secrets, redact_signatures
from napixclient.testing import hmac_token

TOKEN = hmac_token("root", "toor")  # "root:<64 hex digits>"


def test_a_secret_is_masked_wherever_it_appears():
    assert redact_secrets("key=s3cret, again s3cret.", ["s3cret"]) == "key=***, again ***."
    assert MASK == "***"


@pytest.mark.parametrize("encode", [
    lambda s: quote(s, safe=""), quote, quote_plus,
    lambda s: quote(s, safe="").lower(),  # lower-case escapes (and hex digits)
])
def test_a_token_echoed_percent_encoded_is_masked(encode):
    echoed = encode(TOKEN)
    assert echoed != TOKEN  # the ":" is escaped: the test is about the encoded form
    text = f'{{"you_sent": "/x?token={echoed}&n=1"}}'
    assert redact_secrets(text, [TOKEN]) == '{"you_sent": "/x?token=***&n=1"}'


def test_a_secret_with_spaces_and_slashes_is_masked_in_each_encoding():
    secret = "a b/c:d"
    for form in (secret, "a%20b%2Fc%3Ad", "a%20b/c%3Ad", "a+b%2Fc%3Ad"):
        assert redact_secrets(f"<{form}>", [secret]) == "<***>", form


def test_the_longest_secret_is_masked_first_so_nothing_of_it_shows():
    # The key is inside the token: replacing the key first would leave
    # "root:" and the rest of the token around a mask.
    assert redact_secrets("t=root:abc-key-xyz", ["key", "root:abc-key-xyz"]) == "t=***"


def test_empty_secrets_and_text_without_secrets_are_left_alone():
    assert redact_secrets("nothing here", ["", "absent"]) == "nothing here"
    assert redact_secrets("nothing here", []) == "nothing here"


def test_secrets_with_regex_characters_are_matched_literally():
    assert redact_secrets("a.b a+b a*b", ["a.b", "a*b"]) == "*** a+b ***"
    assert redact_secrets("axb", ["a.b"]) == "axb"


def test_non_str_input_raises_type_error():
    with pytest.raises(TypeError, match="text must be a str"):
        redact_secrets(b"bytes", ["x"])
    with pytest.raises(TypeError, match="a secret must be a str"):
        redact_secrets("text", [None])
    with pytest.raises(TypeError, match="text must be a str"):
        redact_signatures(None)


def test_every_run_of_exactly_64_hex_digits_is_masked_as_a_signature():
    signature = TOKEN.split(":", 1)[1]
    line = f"Authorization: login=root:{signature} upper {signature.upper()} glued x{signature}"
    assert redact_signatures(line) == "Authorization: login=root:*** upper *** glued x***"


def test_shorter_and_longer_hex_runs_are_not_signatures():
    short, long = "a" * 63, "b" * 65
    assert redact_signatures(f"{short} {long}") == f"{short} {long}"


# -- credentials in URLs: a password holding "#", "/" or "?" (issue 19, item 8) --------

from napixclient.redact import (  # noqa: E402
    redact_parameters,
    redact_secret_parameters,
    redact_url_credentials,
)

RAW_PASSWORDS = ["pa#ss", "pa/ss", "pa?ss", "a#b/c?d", "x@y#z", "p@ss/w?r#d@"]


@pytest.mark.parametrize("password", RAW_PASSWORDS)
def test_a_password_holding_a_raw_delimiter_is_masked_whole(password):
    url = f"http://ops:{password}@127.0.0.1:3128"
    for text in (url, repr(url), f"proxy {url} refused", f"proxies['http'] {url!r}: bad"):
        shown = redact_url_credentials(text)
        assert password not in shown, shown
        assert "http://***@127.0.0.1:3128" in shown, shown


def test_urls_without_credentials_and_plain_addresses_are_left_alone():
    text = "GET http://h:1/x?a=1#top from ops@example.com"
    assert redact_url_credentials(text) == text
    assert redact_url_credentials("via http://u:p@h:1/x and https://a:b@c") == \
        "via http://***@h:1/x and https://***@c"


def test_secret_parameters_echoed_in_a_text_are_masked():
    token = TOKEN
    text = f"`/vm/10?a=1&token={quote(token, safe='')}` not found; again ?token={token}"
    assert redact_secret_parameters(text) == "`/vm/10?a=1&token=***` not found; again ?token=***"
    assert redact_parameters("/x?auth=s3cret", ["auth"]) == "/x?auth=***"
