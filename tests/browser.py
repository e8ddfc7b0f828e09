"""Chromium through Playwright, for tests that drive the hub's real pages as a person would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from harness import Hub
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
PAGE_TIMEOUT_MS = 60_000  # Playwright's 30 s default is too short on a busy 2-core machine


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Person:
    name: str
    context: BrowserContext
    page: Page


def browser_login(hub: Hub, browser: Browser, name: str, password: str | None = None) -> Person:
    """Log in through the real login page; the hub sends a user without a server to the form."""
    context = browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password or hub.passwords[name])
    page.click("#login_submit")
    page.wait_for_url("**/hub/spawn*")
    page.wait_for_selector("[data-mlrp-form]")
    return Person(name, context, page)


def form_profiles(page: Page) -> list[str]:
    radios = page.locator("input[name=profile]")
    return [str(radios.nth(i).get_attribute("value")) for i in range(radios.count())]
