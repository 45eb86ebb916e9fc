#!/usr/bin/env python3
"""Plugin console pages in real headless Chromium: the inventory example's page, opened from its menu entry, shows
the logged-in caller (keel.user) and the items of its own route (keel.fetch); a hostile page's every attempt to read
the console's token or to reach beyond its plugin fails, as it reports in its own DOM; a page opened on its own
still runs in an opaque origin; keel.navigate reaches the console. Exits 0 when every step held; prints one line per step.

    pages_test.py --url http://127.0.0.1:PORT --token TOKEN --menu inventory.page.items --items 4
                  --hostile-menu spy.page.hostile --hostile-url /ext/spy/pages/hostile
"""
import argparse
import json
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from keel_browser import Steps

# What each attempt of Fixtures/pages/hostile.js must come to.
EXPECTED = {
    "parent.sessionStorage": "blocked",
    "parent.document": "blocked",
    "top.localStorage": "blocked",
    "document.cookie": "blocked",
    "localStorage": "blocked",
    "sessionStorage": "blocked",
    "fetch /api/v1/plugins": "blocked",
    "fetch /ext/spy/echo": "blocked",
    "keel.fetch undeclared /api/v1/plugins": "refused:not-allowed",
    "keel.fetch declared path, other method": "refused:not-allowed",
    "keel.fetch another plugin": "refused:not-allowed",
    "keel.fetch dot-dot": "refused:bad-path",
    "keel.fetch encoded dot-dot": "refused:bad-path",
    "keel.fetch encoded slash": "refused:bad-path",
    "keel.fetch encoded backslash": "refused:bad-path",
    "keel.fetch backslash": "refused:bad-path",
    "keel.fetch other origin": "refused:bad-path",
    "keel.fetch scheme-relative": "refused:bad-path",
    "keel.fetch own prefix lookalike": "refused:not-allowed",
    "keel.fetch with an Authorization header": "refused:bad-request",
    "keel.fetch own route": "allowed:200",
    "keel.fetch declared endpoint": "allowed:200",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--menu", default="inventory.page.items")
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--hostile-menu", default="spy.page.hostile")
    parser.add_argument("--hostile-url", default="/ext/spy/pages/hostile")
    parser.add_argument("--user", default="admin", help="the id the token stands for")
    parser.add_argument("--display-name", default="Administrator")
    parser.add_argument("--only-inventory", action="store_true", help="log in and open the inventory page, no more")
    parser.add_argument("--screenshot")
    args = parser.parse_args()

    steps = Steps()
    d, wait, click, step = steps.driver, steps.wait, steps.click, steps.step

    in_frame = steps.in_frame

    try:
        def login():
            # Logged in the way the console keeps it: the token in its own sessionStorage, read at start.
            d.get(args.url + "/")
            d.execute_script("sessionStorage.setItem('keel.token', arguments[0])", args.token)
            d.get(args.url + "/")
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'nav a[data-menu-id="{args.menu}"]')))
        step("logged in, the console shows the page's menu entry", login)

        def inventory():
            click(f'nav a[data-menu-id="{args.menu}"]')

            def check():
                wait.until(lambda _: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
                viewer = d.find_element(By.ID, "viewer")
                assert args.display_name in viewer.text and viewer.get_attribute("data-user") == args.user, viewer.text
                rows = d.find_elements(By.CSS_SELECTOR, "#items tr[data-sku]")
                assert len(rows) == args.items, f"{len(rows)} rows"
                status = d.find_element(By.ID, "status").text
                assert status.endswith("as " + args.user), f"the route saw the caller through the page session: {status}"
            in_frame(check)
            # keel.notify reached the console (its notice area, or #message without one).
            wait.until(lambda _: "Low stock" in d.execute_script(
                "return [document.getElementById('notices'), document.getElementById('message')]"
                ".map(e => e ? e.textContent : '').join(' ')"))
        step("the inventory page opens from its menu entry, shows the caller and the items of its own route", inventory)
        if args.only_inventory:
            return steps.finish(2)

        def hostile():
            click(f'nav a[data-menu-id="{args.hostile_menu}"]')

            def check():
                wait.until(lambda _: d.find_element(By.TAG_NAME, "body").get_attribute("data-done") == "true")
                found = {li.get_attribute("data-attempt"): (li.get_attribute("data-outcome"), li.text)
                         for li in d.find_elements(By.CSS_SELECTOR, "#attempts li")}
                return found, d.find_element(By.ID, "who").text
            found, who = in_frame(check)
            wrong = {name: found.get(name) for name, want in EXPECTED.items() if (found.get(name) or ("",))[0] != want}
            assert not wrong, "unexpected outcomes: " + json.dumps(wrong)
            assert not any(args.token in text for _, text in found.values()), "the page saw the token"
            assert found["keel.fetch own route"][1].endswith("admin default"), found["keel.fetch own route"][1]
            assert who == "admin", who
            assert d.execute_script("return sessionStorage.getItem('keel.token')") == args.token
        step("a hostile page cannot read the token nor reach beyond its routes and declared endpoints", hostile)

        def navigate():
            refused = ("const done = arguments[arguments.length - 1];"
                       "keel.navigate('//127.0.0.2/x').then(() => done('ok'), e => done(e.code));")
            assert in_frame(lambda: d.execute_async_script(refused)) == "bad-path"
            # The console's view changes at once, which takes the page (and this script) away: not awaited.
            in_frame(lambda: d.execute_script("keel.navigate('/plugins')"))
            # The console's own navigation (KeelConsole.navigate), or without it the request shown in #message.
            wait.until(lambda _: "/plugins" in d.execute_script(
                "const m = document.getElementById('message'); return location.hash + ' ' + (m ? m.textContent : '')"))
        step("keel.navigate asks the console to open one of its paths, never another address", navigate)

        def top_level():
            d.get(args.url + args.hostile_url)
            wait.until(EC.presence_of_element_located((By.ID, "attempts")))
            assert d.execute_script("return self.origin") == "null", "the shell's CSP sandbox makes the origin opaque"
            assert d.execute_script("try { document.cookie; return 'read'; } catch (e) { return 'blocked'; }") == "blocked"
            assert d.execute_script("return typeof window.keel.fetch") == "function"
        step("a page opened on its own still runs in an opaque origin", top_level)

        if args.screenshot:
            d.get(args.url + "/")
            click(f'nav a[data-menu-id="{args.menu}"]')
            in_frame(lambda: wait.until(lambda _: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"))
            d.save_screenshot(args.screenshot)
    except BaseException:
        steps.finish(5)
        raise
    return steps.finish(5)


if __name__ == "__main__":
    sys.exit(main())
