"""The browser fixtures (the app served on a throw-away data folder, Chromium, a page) for every module here;
they are defined beside the clinician flow that first needed them."""

from tests.browser.test_council_flow import app_env, app_environ, app_url, browser, page, upstream  # noqa: F401
