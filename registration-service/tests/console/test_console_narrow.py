"""The console at a desktop and a phone width (issue 13, item 2).

At each width, on every section's page: the page never scrolls sideways (a wide table scrolls
inside its own box), the top bar's "Sign out" and every tab are on screen, the tabs sit right
under the top bar, and a URL keeps enough width to read (it does not wrap letter by letter).
"""

from __future__ import annotations

import pytest

from registration.services import endpoints, event_types

ADMIN_TOKEN = "test-admin-token-0123456789"
FAILED = [(503, "http_error", "HTTP 503", '{"error": "upstream down"}')]

LAYOUT = """
const width = document.documentElement.clientWidth;
const box = (el) => el.getBoundingClientRect();
const bar = box(document.querySelector('.topbar'));
const tabs = document.querySelector('.tabs');
const signOut = [...document.querySelectorAll('.topbar button')]
    .find((b) => b.textContent.trim() === 'Sign out');
const links = [...document.querySelectorAll('.tabs a')].map((a) => {
    const r = box(a);
    return {text: a.textContent.trim(), left: r.left, right: r.right, visible: r.width > 0};
});
const urls = [...document.querySelectorAll('main .url, main .url-title')]
    .filter((el) => el.offsetParent !== null)
    .map((el) => box(el).width);
return {
    width: width,
    scrollWidth: document.documentElement.scrollWidth,
    barBottom: bar.bottom,
    tabsTop: tabs ? box(tabs).top : bar.bottom,
    signOut: signOut ? {left: box(signOut).left, right: box(signOut).right} : null,
    links: links,
    urls: urls,
};
"""

PAGES = [
    "/console/endpoints",
    "{endpoint}",
    "/console/messages",
    "/console/deliveries",
    "{delivery}",
    "/console/deliveries?state=undelivered",
    "/console/dead-letters",
    "/console/event-types",
]


def _check(browser, where: str) -> None:
    layout = browser.execute_script(LAYOUT)
    assert layout["scrollWidth"] <= layout["width"], f"{where} scrolls sideways: {layout}"
    sign_out = layout["signOut"]
    assert sign_out is not None, where
    assert sign_out["left"] >= 0, f"{where}: Sign out is cut off: {layout}"
    assert sign_out["right"] <= layout["width"], f"{where}: Sign out is cut off: {layout}"
    for link in layout["links"]:
        assert link["visible"], f"{where}: tab {link['text']} is hidden"
        assert link["left"] >= 0, f"{where}: tab {link['text']} is cut off: {layout}"
        assert link["right"] <= layout["width"], f"{where}: tab {link['text']} cut: {layout}"
    assert abs(layout["tabsTop"] - layout["barBottom"]) < 1, f"{where}: gap: {layout}"
    # 8 em at least: a URL wraps in words of a few characters, never letter by letter.
    assert all(url_width >= 120 for url_width in layout["urls"]), f"{where}: {layout}"


@pytest.mark.parametrize("width", [1280, 420])
def test_every_page_fits_the_window(
    width, browser, ui, db, settings, make_tenant, record_delivery, screenshot
) -> None:
    event_types.ensure_event_types(db, {"person.created": "A person was added."})
    tenant = make_tenant("A rather long application name, Ltd.")
    endpoint, _ = endpoints.upsert_endpoint(
        db, settings, tenant.id,
        {"url": "http://127.0.0.1:8002/hooks/a-rather-long-path/for-the-crm-sync?team=people",
         "description": "CRM sync", "event_types": ["person.created"]},
    )  # fmt: skip
    record_delivery(tenant.id, endpoint.id, attempts=FAILED * 3, state="dead")
    delivery = record_delivery(tenant.id, endpoint.id, attempts=FAILED, state="retrying")

    ui.sign_in(tenant.token)
    browser.set_window_size(width, 900)
    for path in PAGES:
        path = path.format(
            endpoint=f"/console/endpoints/{endpoint.id}",
            delivery=f"/console/deliveries/{delivery.id}",
        )
        ui.open(path)
        _check(browser, f"{path} at {width} px")
        if width < 1000 and path.startswith("/console/endpoints/"):
            screenshot("endpoint-narrow")
        if width < 1000 and path == "/console/deliveries":
            screenshot("deliveries-narrow")


@pytest.mark.parametrize("width", [1280, 420])
def test_the_admin_top_bar_fits_too(width, browser, ui, db, settings, make_tenant) -> None:
    """The admin's bar holds more: the application switcher and "New application"."""
    for name in ("Acme", "A rather long application name for a narrow switcher, Ltd."):
        tenant = make_tenant(name)
        endpoints.upsert_endpoint(db, settings, tenant.id, {"url": "http://127.0.0.1:9/a"})
    ui.sign_in(ADMIN_TOKEN)
    browser.set_window_size(width, 900)
    for path in ("/console/endpoints", "/console/deliveries", "/console/applications/new"):
        ui.open(path)
        _check(browser, f"admin {path} at {width} px")
