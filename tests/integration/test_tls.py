"""TLS on the hub's address (issue 14): a self-signed certificate made on first start and
served by the real proxy, a given certificate used as is, and plain HTTP beyond loopback
refused with a sentence.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests
from harness import Hub, new_hub, run_mlrp

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the hub creates Unix accounts and setuid()s to them"
)


def start_tls_hub(tls: dict[str, object]) -> Hub:
    hub = new_hub()
    hub.config["hub"]["tls"] = tls
    try:
        hub.start()
    except BaseException:
        hub.cleanup()  # a hub that failed its start is still stopped, by PID
        raise
    return hub


@needs_root
def test_a_self_signed_hub_serves_https_with_its_own_certificate() -> None:
    hub = start_tls_hub({"self_signed": True})
    try:
        assert hub.url.startswith("https://")
        cert = Path(str(hub.verify))
        assert cert.is_file()
        assert (cert.parent / "mlrp-selfsigned.key").stat().st_mode & 0o777 == 0o600
        assert "SHA-256" in hub.log() and str(cert) in hub.log(), "the banner names it"
        r = requests.get(f"{hub.url}/hub/login", verify=str(cert), timeout=30)
        assert r.status_code == 200 and "password" in r.text.lower()
        # A browser that does not trust it is warned (the handshake fails), and plain HTTP on
        # the same port gets no login page.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{hub.url}/hub/login", timeout=30)
        plain = hub.url.replace("https://", "http://", 1)
        try:
            r = requests.get(f"{plain}/hub/login", timeout=10)
            assert r.status_code >= 400 and "password" not in r.text.lower()
        except requests.ConnectionError:
            pass
        # Logging in over HTTPS gives Secure cookies.
        s = requests.Session()  # (verify per request: REQUESTS_CA_BUNDLE would override s.verify)
        s.get(f"{hub.url}/hub/login", verify=str(cert), timeout=30)
        r = s.post(
            f"{hub.url}/hub/login",
            data={
                "username": "admin",
                "password": hub.admin_password,
                "_xsrf": s.cookies.get("_xsrf", ""),
            },
            allow_redirects=False,
            verify=str(cert),
            timeout=30,
        )
        assert r.status_code == 302, r.text[:300]
        assert all(c.secure for c in s.cookies if c.name.startswith("jupyterhub-hub-login"))
        assert any(c.name.startswith("jupyterhub-hub-login") for c in s.cookies)
    finally:
        hub.cleanup()


@needs_root
def test_a_given_certificate_is_used_as_is(tmp_path: Path) -> None:
    """The admin's own PEM pair: here one made by the same code in a scratch directory."""
    from hub.tls import ensure_self_signed

    cert, key = ensure_self_signed(tmp_path, "127.0.0.1")
    given = Path(shutil.copy(cert, tmp_path / "given.crt"))
    hub = start_tls_hub({"cert": str(given), "key": str(key)})
    try:
        assert hub.verify == str(given)
        r = requests.get(f"{hub.url}/hub/login", verify=str(given), timeout=30)
        assert r.status_code == 200
        assert not (hub.data_dir / "tls").exists(), "nothing self-signed was made"
    finally:
        hub.cleanup()


@pytest.mark.parametrize("ip", ["0.0.0.0", "", "10.1.2.3"])
def test_plain_http_beyond_loopback_is_refused_with_a_sentence(tmp_path: Path, ip: str) -> None:
    config = tmp_path / "mlrp.yaml"
    config.write_text(
        f"hub: {{ip: '{ip}', data_dir: {tmp_path / 'data'}}}\n"
        "profiles: [{slug: cpu, name: CPU}]\n"
    )
    out = run_mlrp("config", "check", str(config))
    assert out.returncode == 2
    assert "over plain HTTP would send passwords across the network in clear" in out.stderr
    assert "Traceback" not in out.stderr

    config.write_text(
        f"hub: {{ip: '{ip}', data_dir: {tmp_path / 'data'}, behind_tls_proxy: true}}\n"
        "profiles: [{slug: cpu, name: CPU}]\n"
    )
    assert run_mlrp("config", "check", str(config)).returncode == 0
