"""The sign-in cookies' `Secure` flag (setting `cookie_secure`, docs/security.md): behind
a TLS-terminating proxy the server sees plain HTTP, so `auto` (request.secure) leaves
the flag off; `always` sets it whatever the transport, `never` never does. Over plain
HTTP against real servers with real keys (no browser: the flag is in the headers)."""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from helpers.server import serve_in_thread

from runlake.api.keys import add_key
from runlake.settings import BadSetting, resolve

COOKIES = ("runlake_key", "runlake_csrf")


def set_cookies(mode: str | None, tmp_path: Path) -> dict[str, dict[str, bool]]:
    """Sign in, then out, on a server with `cookie_secure=mode` (None: the default):
    per response, each cookie set and whether it carries Secure."""
    _, key = add_key(tmp_path / "data" / "keys.json", "read", (), name="reader")
    settings = {} if mode is None else {"cookie_secure": mode}
    with serve_in_thread(tmp_path, **settings) as server:
        async def post(path: str, form: dict[str, str], cookies: dict[str, str]
                       ) -> dict[str, bool]:
            async with server.client.session.post(
                    server.client.url + path, data=form, cookies=cookies,
                    allow_redirects=False) as resp:
                assert resp.status == 303, await resp.text()
                jar: SimpleCookie = SimpleCookie()
                for header in resp.headers.getall("Set-Cookie"):
                    jar.load(header)
                return {name: bool(jar[name]["secure"]) for name in jar}

        signed_in = server.run(post("/signin", {"key": key, "next": "/"}, {}))
        signed_out = server.run(post("/signout", {"csrf": "t"},
                                     {"runlake_key": key, "runlake_csrf": "t"}))
    return {"signin": signed_in, "signout": signed_out}


@pytest.mark.parametrize(("mode", "secure"), [(None, False), ("auto", False),
                                              ("always", True), ("never", False)])
def test_cookie_secure_setting_over_plain_http(mode: str | None, secure: bool,
                                               tmp_path: Path) -> None:
    seen = set_cookies(mode, tmp_path)
    for response in ("signin", "signout"):
        assert seen[response] == dict.fromkeys(COOKIES, secure), (response, seen)


def test_cookie_secure_takes_only_its_values() -> None:
    assert resolve(env={"RUNLAKE_COOKIE_SECURE": "always"}).cookie_secure == "always"
    with pytest.raises(BadSetting, match="RUNLAKE_COOKIE_SECURE='yes'"):
        resolve(env={"RUNLAKE_COOKIE_SECURE": "yes"})
