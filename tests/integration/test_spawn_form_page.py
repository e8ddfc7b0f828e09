"""The spawn form and the hub pages around it, on a real hub in Chromium (issue 14, item 8).

A hub with 2 GPUs, where students see two GPU profiles (1 GPU and 2 GPUs) and no CPU profile:
- a profile that cannot start with the GPUs free now is disabled, its reason beside it, legible
  (WCAG AA, 4.5:1) in Bootstrap's light and dark themes; when none can start the Start button
  says why, and a POST for a disabled profile is still refused with a sentence;
- every expected refusal (no free GPU, a profile not offered, a bad value) is ONE INFO/WARNING
  line in the hub log, without a traceback;
- hub.announcement shows on the login, home and spawn pages, as text (its HTML escaped).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from harness import Hub, running_hub
from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions, pytest.mark.browser]

ANNOUNCEMENT = 'Maintenance Saturday 9-12 <script>window.mlrpPwned = 1</script> & "quotes"'
ANNOUNCEMENT_HTML = (
    "Maintenance Saturday 9-12 &lt;script&gt;window.mlrpPwned = 1&lt;/script&gt; "
    "&amp; &#34;quotes&#34;"
)
ALL_IN_USE = "All 2 GPUs on this server are in use right now."
AA = 4.5  # WCAG 2 level AA, normal text


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    def configure(h: Hub) -> None:
        h.config["hub"]["announcement"] = ANNOUNCEMENT
        h.config["profiles"] = [
            {"slug": "cpu", "name": "CPU only (staff)", "gpus": 0, "groups": ["staff"]},
            {"slug": "gpu1", "name": "One GPU", "gpus": 1, "groups": ["students"]},
            {"slug": "pair", "name": "Two GPUs", "gpus": 2, "groups": ["students"]},
        ]

    with running_hub(gpus=2, configure=configure) as h:
        yield h


# -- helpers -----------------------------------------------------------------------------------
def spawn_page(hub: Hub, browser: Browser, name: str, scheme: str) -> Page:
    """`name`'s spawn form in a fresh browser whose system colour scheme is `scheme`."""
    context = browser.new_context(color_scheme=scheme)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", hub.passwords[name])
    page.click("#login_submit")
    page.wait_for_url("**/hub/spawn*")
    page.wait_for_selector("[data-mlrp-form]")
    assert page.evaluate("document.documentElement.dataset.bsTheme") == scheme
    return page


# What the browser rendered: the element's text colour, and the backgrounds from it up to <html>
# (a transparent one lets the next show through), with the opacity the text is drawn at.
COLOURS_JS = """
(el) => {
  const out = {fg: getComputedStyle(el).color, bgs: [], opacity: 1};
  for (let e = el; e; e = e.parentElement) {
    const style = getComputedStyle(e);
    out.bgs.push(style.backgroundColor);
    out.opacity *= parseFloat(style.opacity);
  }
  return out;
}
"""


def parse_rgba(css: str) -> tuple[float, float, float, float]:
    m = re.fullmatch(r"rgba?\(([\d.]+), ([\d.]+), ([\d.]+)(?:, ([\d.]+))?\)", css)
    assert m is not None, f"unexpected computed colour {css!r}"
    r, g, b, a = m.groups()
    return float(r), float(g), float(b), float(a) if a is not None else 1.0


def over(top: tuple[float, ...], below: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    return tuple(t * alpha + b * (1 - alpha) for t, b in zip(top[:3], below[:3], strict=True))


def luminance(rgb: tuple[float, ...]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(page: Page, selector: str) -> float:
    """WCAG contrast ratio of the text of `selector` against what is rendered behind it."""
    got: dict[str, Any] = page.eval_on_selector(selector, COLOURS_JS)
    background: tuple[float, ...] = (255.0, 255.0, 255.0)  # the canvas under everything
    for css in reversed(got["bgs"]):
        colour = parse_rgba(css)
        background = over(colour, background, colour[3])
    fg = parse_rgba(got["fg"])
    text = over(fg, background, fg[3] * got["opacity"])
    lighter, darker = sorted((luminance(text), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def log_since(hub: Hub, mark: int, request_line: str) -> str:
    """The hub log after `mark`, once the access line of the request (logged last) is there."""
    deadline = time.monotonic() + 10
    while request_line not in hub.log()[mark:]:
        assert time.monotonic() < deadline, f"no {request_line!r} in:\n{hub.log()[mark:]}"
        time.sleep(0.05)
    return hub.log()[mark:]


def assert_one_quiet_line(log: str, sentence: str, level: str) -> None:
    lines = [line for line in log.splitlines() if sentence in line]
    assert len(lines) == 1, f"the refusal must be logged once:\n{log}"
    assert lines[0].startswith(f"[{level} "), lines[0]
    assert "Traceback" not in log, log
    assert not re.search(r"^\[E ", log, re.M), log


def form_post(hub: Hub, session: requests.Session, data: dict[str, str]) -> requests.Response:
    xsrf = session.cookies.get("_xsrf", "")
    return session.post(
        f"{hub.url}/hub/spawn", params={"_xsrf": xsrf}, data=data, allow_redirects=False
    )


def start(hub: Hub, name: str, profile: str) -> None:
    r = hub.start_server(name, profile=profile)
    assert r.status_code in (201, 202), r.text


def stop(hub: Hub, name: str) -> None:
    hub.stop_server(name)
    deadline = time.monotonic() + 10
    while f"{name}/" in hub.leases().values():
        assert time.monotonic() < deadline, f"{name}'s GPUs were not freed"
        time.sleep(0.1)


# -- the announcement --------------------------------------------------------------------------
def test_announcement_on_login_home_and_spawn_pages(hub: Hub, browser: Browser) -> None:
    login = requests.get(f"{hub.url}/hub/login", timeout=30)
    bob = hub.login_session("bob", hub.passwords["bob"])
    home = bob.get(f"{hub.url}/hub/home", timeout=30)
    spawn = bob.get(f"{hub.url}/hub/spawn", timeout=30)
    for page in (login, home, spawn):
        assert page.status_code == 200, page.url
        assert ANNOUNCEMENT_HTML in page.text, page.url
        assert "<script>window.mlrpPwned" not in page.text, page.url

    # In the browser: shown as the text the admin wrote, and nothing of it ran.
    form = spawn_page(hub, browser, "bob", "light")
    try:
        assert form.inner_text(".announcement").strip() == ANNOUNCEMENT
        assert form.evaluate("window.mlrpPwned") is None
        assert contrast(form, ".announcement") >= AA
    finally:
        form.context.close()


# -- disabled profiles ---------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_profile_without_enough_free_gpus_is_disabled_with_a_legible_reason(
    hub: Hub, browser: Browser, scheme: str
) -> None:
    start(hub, "alice", "gpu1")  # 1 of 2 GPUs free: "Two GPUs" cannot start, "One GPU" can
    try:
        page = spawn_page(hub, browser, "bob", scheme)
        try:
            radios = page.locator("input[name=profile]")
            assert [radios.nth(i).get_attribute("value") for i in range(radios.count())] == [
                "gpu1",
                "pair",
            ], "the staff-only CPU profile stays hidden from students"
            assert page.is_enabled("#profile-gpu1") and page.is_checked("#profile-gpu1")
            assert page.is_disabled("#profile-pair") and not page.is_checked("#profile-pair")
            reason = page.inner_text("#reason-pair")
            assert reason == (
                "This profile needs 2 GPUs and only 1 of 2 is free. "
                "Try again later or pick another profile."
            )
            assert page.get_attribute("#profile-pair", "aria-describedby") == "reason-pair"
            ratio = contrast(page, "#reason-pair")
            assert ratio >= AA, f"reason text contrast {ratio:.2f}:1 in {scheme} scheme"
            assert contrast(page, ".announcement") >= AA
            assert page.get_by_role("button", name="Start").is_enabled()
        finally:
            page.context.close()
    finally:
        stop(hub, "alice")


def test_when_no_profile_can_start_the_button_says_why_and_a_post_is_refused(
    hub: Hub, browser: Browser
) -> None:
    start(hub, "alice", "pair")  # both GPUs leased
    try:
        page = spawn_page(hub, browser, "bob", "light")
        try:
            assert page.is_disabled("#profile-gpu1") and page.is_disabled("#profile-pair")
            assert page.locator("input[name=profile]:checked").count() == 0
            assert ALL_IN_USE.removesuffix(" right now.") in page.inner_text("#reason-gpu1")
            button = page.locator("#spawn_form button[type=submit]")
            assert button.is_disabled()
            assert button.inner_text() == "Cannot start now: all 2 GPUs on this server are in use"

            # A page kept open from before, or a hand-made request: the hub refuses anyway.
            page.evaluate(
                "document.querySelectorAll('#spawn_form [disabled]')"
                ".forEach(e => e.disabled = false)"
            )
            page.check("#profile-gpu1")
            mark = len(hub.log())
            with page.expect_response(
                lambda r: r.request.method == "POST" and "/hub/spawn" in r.url
            ) as posted:
                button.click()
            assert posted.value.status == 400
            page.wait_for_load_state()
            assert ALL_IN_USE in page.inner_text(".spawn-error-msg")
        finally:
            page.context.close()
        log = log_since(hub, mark, "400 POST /hub/spawn")
        assert_one_quiet_line(log, ALL_IN_USE, "W")
        assert "bob/" not in hub.leases().values()

        # The same refusal through the REST API: one line too.
        mark = len(hub.log())
        r = hub.api("POST", "/users/bob/server", json={"profile": "gpu1"})
        assert r.status_code == 400 and ALL_IN_USE in r.json()["message"], r.text
        assert_one_quiet_line(
            log_since(hub, mark, "400 POST /hub/api/users/bob/server"), ALL_IN_USE, "W"
        )
    finally:
        stop(hub, "alice")


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        ({"profile": "cpu"}, "There is no profile 'cpu' for you."),  # staff only
        ({"profile": "pair", "gpus-pair": "3"}, "Profile 'Two GPUs' offers 2 GPU(s)"),
        ({"profile": "gpu1", "cmd": "/bin/sh"}, "Unexpected field(s) in the form"),
    ],
)
def test_bad_form_values_are_one_info_line(hub: Hub, data: dict[str, str], sentence: str) -> None:
    bob = hub.login_session("bob", hub.passwords["bob"])
    mark = len(hub.log())
    r = form_post(hub, bob, data)
    assert r.status_code == 400
    assert_one_quiet_line(log_since(hub, mark, "400 POST /hub/spawn"), sentence, "I")
