"""`reel serve`'s token: stripped, at least 16 characters, refused when blank or short (from --token or
REEL_TOKEN, exit 2 with the fix), required off loopback, and a request with blanks never gets in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from reel.engine.cli import app as cli
from reel.engine.serve import ServeConfig, ServeError, create_app
from reel.engine.serve_security import BindError, TokenError, check_bind, clean_token, token_matches

TOKEN = "s3cret-token-0123456789"
BLANKS = ("", " ", "   ", "\t\n", " \u00a0 ")


def test_tokens_are_stripped_and_must_be_long_enough():
    assert clean_token(None) is None
    assert clean_token(f"  {TOKEN}\n") == TOKEN
    assert clean_token("x" * 16) == "x" * 16
    for blank in BLANKS:
        with pytest.raises(TokenError, match=r"--token / REEL_TOKEN is (blank|empty).*secrets.token_urlsafe"):
            clean_token(blank)
    for short in ("s3cret", "  fifteen-chars-  ", "x" * 15):
        with pytest.raises(TokenError, match="at least 16"):
            clean_token(short)
    for odd in ("with a space inside it", "caf\u00e9-token-0123456789", "tab\tinside-0123456789"):
        with pytest.raises(TokenError, match="letters, digits and punctuation"):
            clean_token(odd)


def test_a_public_bind_needs_a_real_token():
    for token in (None, *BLANKS, "short"):
        with pytest.raises(BindError):
            check_bind("0.0.0.0", token)
        with pytest.raises(BindError):
            check_bind("192.168.1.20", token)
    check_bind("0.0.0.0", f" {TOKEN} ")
    check_bind("127.0.0.1", None)
    with pytest.raises(TokenError):  # a blank token is refused on loopback too: it was meant to protect something
        check_bind("127.0.0.1", "   ")


def test_the_config_holds_the_clean_token_and_does_not_show_it():
    config = ServeConfig(token=f"\t{TOKEN}  ")
    assert config.token == TOKEN and TOKEN not in repr(config)
    for bad in (*BLANKS, "s3cret"):
        with pytest.raises(ServeError, match="--token / REEL_TOKEN"):
            ServeConfig(token=bad)


@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("token", ["   ", "", "s3cret"])
def test_serve_command_refuses_blank_and_short_tokens(tmp_path, monkeypatch, how, token):
    monkeypatch.delenv("REEL_TOKEN", raising=False)
    args = ["serve", "--host", "0.0.0.0", "--port", "0", "--data", str(tmp_path / "d")]
    if how == "option":
        result = CliRunner().invoke(cli, [*args, "--token", token])
    else:
        result = CliRunner().invoke(cli, args, env={"REEL_TOKEN": token})
    assert result.exit_code == 2, result.output
    if how == "env" and token == "":  # Click reads an empty variable as unset: then no token, off loopback
        assert "is not a loopback address" in result.output and "REEL_TOKEN" in result.output
    else:
        assert "--token / REEL_TOKEN" in result.output and "secrets.token_urlsafe" in result.output
    assert not (tmp_path / "d").exists()  # refused before anything started


def test_requests_with_blanks_or_a_near_token_are_refused(tmp_path):
    config = ServeConfig(token=f" {TOKEN} ", data=tmp_path / "data", devices=("cpu",))
    with TestClient(create_app(config), base_url="http://127.0.0.1:8188") as http:
        for sent in ("", " ", "   ", TOKEN[:-1], TOKEN + "x", f" {TOKEN} x", TOKEN.upper()):
            r = http.get("/api/jobs", headers={"Authorization": f"Bearer {sent}"})
            assert r.status_code == 401, repr(sent)
            assert http.post("/api/session", json={"token": sent}).status_code == 401, repr(sent)
        assert http.get("/api/jobs", headers={"Authorization": "Bearer"}).status_code == 401
        http.cookies.set("reel_token", "   ")
        assert http.get("/api/jobs").status_code == 401
        http.cookies.clear()
        for odd in ('"\\ud800"', "7", "null", '["x"]'):  # a lone surrogate, non-strings: refused, not a 500
            r = http.post("/api/session", content=f'{{"token": {odd}}}', headers={"Content-Type": "application/json"})
            assert r.status_code == 401, odd
        assert http.post("/api/session", content=b"[" * 3000).status_code == 400  # too deep for json: not a 500
        assert http.get("/api/jobs", headers={"Authorization": f"Bearer   {TOKEN}  "}).status_code == 200
        assert http.post("/api/session", json={"token": TOKEN}).status_code == 200
        assert http.get("/api/jobs").status_code == 200  # the cookie carries the clean token


def test_token_matches_no_token_matches_nothing():
    assert not token_matches("", None) and not token_matches(None, TOKEN) and not token_matches("", "")
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN, TOKEN + "!")
