#!/usr/bin/env python3
"""An existing web app (Tests/KeelTests/Fixtures/upstream/app.py) joined to the console through a manifest-only
bundle's `proxy:`, driven in real headless Chromium.

Logs in with --token, opens the app's menu entry (--menu) and checks, inside the console's sandboxed frame, that the
app's page names the logged-in caller (--user, --tenant) with a signature the app could verify; then that a request
carrying forged identity headers reaches the app as the host says, not as the client claims; that the app's page,
which loads /keel-page.js, reaches its own back end as the caller through keel.fetch, while a link it follows from the
sandboxed frame goes anonymous (an opaque origin sends no page session). Then the app turns hostile, beside another
plugin's app (--other, the same app.py, its requests in --other-log): its script, in the console's frame and opened
on its own, with a policy of its own asking for allow-same-origin, reaches neither the console's token, storage or
cookies, nor the admin API, nor the other app as the caller; and a cookie it sets for the whole origin or for the
other app's path reaches only its own app (its requests in --app-log). Prints one line per step; exits 0 when every
step held.

    proxy_app_test.py --url http://127.0.0.1:PORT --token TOKEN --menu wiki.app --app /ext/wiki/app --user admin
                      --tenant default --other /ext/other/app --app-log FILE --other-log FILE [--screenshot FILE]
"""
import argparse
import json
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "menu", "app", "user", "tenant", "other", "app-log", "other-log"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--screenshot")
    args = parser.parse_args()

    steps = Steps()
    d, wait, click, step = steps.driver, steps.wait, steps.click, steps.step

    in_frame = steps.in_frame

    try:
        def login():
            d.get(args.url + "/")
            d.find_element(By.ID, "token").send_keys(args.token)
            d.find_element(By.ID, "login-button").click()
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'nav a[data-menu-id="{args.menu}"]')))
        step("logged in, the console's navigation has the app's entry", login)

        def app_page():
            click(f'nav a[data-menu-id="{args.menu}"]')

            def check():
                wait.until(EC.presence_of_element_located((By.ID, "verified")))
                seen = {k: d.find_element(By.ID, k).text for k in ("user", "tenant", "roles", "verified")}
                assert seen["user"] == args.user and seen["tenant"] == args.tenant, seen
                assert seen["verified"] == "true", f"the app could not verify the host's signature: {seen}"
                assert d.execute_script("return self.origin") == "null", "the app runs in an opaque origin"
            in_frame(check)
            if args.screenshot:
                d.save_screenshot(args.screenshot)
        step("the app's page opens inside the console and names the logged-in caller, signed", app_page)

        def bridge():
            # The app's page loads /keel-page.js: its own back end is reached as the caller through keel.fetch.
            ask = ("const done = arguments[arguments.length - 1];"
                   "keel.ready.then(() => keel.fetch(arguments[0])).then(r => done(r.body), e => done('error ' + e.code));")
            seen = json.loads(in_frame(lambda: d.execute_async_script(ask, args.app + "/whoami")))
            assert seen["user"] == args.user and seen["verified"] is True, seen

            # Its own navigation, from the frame's opaque origin, carries no page session: anonymous.
            def follow():
                d.execute_script("location.href = 'whoami'")
                wait.until(lambda _: '"path": "/whoami"' in d.find_element(By.TAG_NAME, "body").text)
                return json.loads(d.find_element(By.TAG_NAME, "body").text)
            seen = in_frame(follow)
            assert seen["user"] == "" and seen["verified"] is True, seen
        step("the app reaches its own back end as the caller through keel.fetch; its own links from the sandbox go anonymous", bridge)

        def forged():
            # From the console's own origin (which holds the app's page session): a client that claims to be
            # someone else. The app must see the host's word only.
            ask = ("const done = arguments[arguments.length - 1];"
                   "fetch(arguments[0], { headers: { 'X-Keel-User': 'mallory', 'X-Keel-Tenant': 'evil',"
                   " 'X-Keel-Roles': 'admin', 'X-Keel-Signature': 'f00d', 'X-Forged': 'plain header' } })"
                   ".then(r => r.text()).then(done, e => done('error ' + e));")
            seen = json.loads(d.execute_async_script(ask, args.app + "/whoami"))
            assert seen["user"] == args.user and seen["tenant"] == args.tenant, seen
            assert "mallory" not in json.dumps(seen) and "evil" not in json.dumps(seen), seen
            assert seen["verified"] is True, seen
            assert seen["forged"] == "plain header", "ordinary headers still pass"
            assert args.token not in json.dumps(seen), "the app saw the console's token"
        step("forged identity headers from the client never reach the app; the host's signed ones do", forged)

        def show(address, element):
            """Opens a page in the console's frame by its address; waits for `element` (an id) in it."""
            d.execute_script("location.hash = arguments[0]", "#" + address)
            in_frame(lambda: wait.until(EC.presence_of_element_located((By.ID, element))))

        def loot():
            text = wait.until(lambda _: d.find_element(By.ID, "loot").text)
            return json.loads(text)

        def requests(log):
            with open(log, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]

        def stolen(seen, where):
            assert seen["origin"] == "null", f"{where}: the app's own policy gave it an origin: {seen}"
            for key in ("storage", "parent", "top", "cookie"):
                assert seen[key] == "blocked", f"{where}: {key} was readable: {seen}"
            # Its requests to this origin are cross-origin now: their answers are unreadable ("blocked"), and what
            # the apps saw of them (below) is an anonymous caller.
            for key in ("api", "other", "own"):
                assert seen[key] == "blocked" or (key == "api" and seen[key]["status"] == 401), f"{where}: {key} answered: {seen}"
            for log in (args.other_log, args.app_log):
                sent = [r for r in requests(log) if "from=attack" in r["path"]]
                assert sent and all(r["user"] == "" and "keel_page" not in json.dumps(r) for r in sent), \
                    f"{where}: an app was reached as the caller: {sent}"
            assert args.token not in json.dumps(seen), f"{where}: the token leaked: {seen}"

        attack = args.app + "/attack?other=" + args.other

        def hostile_in_console():
            # The caller opens the other plugin's app first: it holds a page session for that plugin now.
            show(args.other + "/", "verified")
            d.execute_script("location.hash = arguments[0]", "#" + attack)
            stolen(in_frame(loot), "in the console")
        step("a hostile app's script in the console reaches neither the token, storage, cookies or admin API, nor another plugin's app as the caller, whatever policy it sends",
             hostile_in_console)

        def hostile_alone():
            d.get(args.url + attack)
            stolen(loot(), "on its own")
            # A navigation of the whole tab from the app's opaque origin carries no page session either.
            d.execute_script("location.href = arguments[0]", args.other + "/whoami?from=attack-navigation")
            wait.until(lambda _: "attack-navigation" in d.find_element(By.TAG_NAME, "body").text)
            went = [r for r in requests(args.other_log) if "attack-navigation" in r["path"]]
            assert went and all(r["user"] == "" for r in went), f"the navigation reached the other app as the caller: {went}"
            d.get(args.url + "/")
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'nav a[data-menu-id="{args.menu}"]')))
        step("opened on its own, the same script is as powerless", hostile_alone)

        def cookies():
            show(args.app + "/setcookie", "set")
            show(args.other + "/after-cookie", "verified")
            show(args.app + "/again", "verified")
            other = [r for r in requests(args.other_log) if r["path"].endswith("/after-cookie")]
            assert other, "the other app was not reached"
            for r in other:
                cookie = r["headers"].get("cookie", "")
                assert "app_session" not in cookie and "toss" not in cookie, f"another plugin's app got the cookie: {cookie}"
            again = [r for r in requests(args.app_log) if r["path"].endswith("/again")]
            assert again and "app_session=s3cret" in again[-1]["headers"].get("cookie", ""), \
                f"the app's own cookie no longer reaches it: {again}"
        step("a cookie the app sets for the whole origin or for another plugin's app reaches only its own app", cookies)
    finally:
        result = steps.finish(7)
    return result


if __name__ == "__main__":
    sys.exit(main())
