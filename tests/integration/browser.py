"""Headless Debian Chromium driven by Playwright, shared by the UI checks (no browser download:
Playwright only drives the system's binary). Screenshots go to test-artifacts/ for CI."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as the device probe found: without the background-networking flags Chromium keeps trying hosts
# this closed network refuses
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("ALIGNFLOW_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def chromium_available(what: str) -> bool:
    """False (with a warning) only outside CI; under CI a missing browser fails the test."""
    if Path(CHROMIUM).exists():
        return True
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium (make test does, as root)")
    warnings.warn(f"Debian's chromium is not installed (apt install chromium): {what} not checked")
    return False


@contextmanager
def chromium_page() -> Iterator:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1600, "height": 1000})
        finally:
            browser.close()
