#!/usr/bin/env python3
"""Drives the console's live updates in real headless Chromium: logs in with the admin token, waits for the event
stream, then disables --plugin with the real keel CLI (which hands the change to the running server) and checks that
the plugins table shows it disabled within --within seconds without any click; enables it again the same way.
Prints one line per step and "seen after <ms> ms"; exits 0 when every step held.

    live_test.py --url http://127.0.0.1:PORT --token TOKEN --keel KEEL --plugins DIR --state FILE --plugin ID
"""
import argparse
import subprocess
import sys
import time

from selenium.webdriver.common.by import By

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "keel", "plugins", "state", "plugin"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--within", type=float, default=1.0)
    args = parser.parse_args()

    steps = Steps()
    d, wait, step = steps.driver, steps.wait, steps.step
    d.get(args.url + "/#/plugins")
    row = f'tr[data-plugin-row="{args.plugin}"]'
    steps.hidden_until_login("admin", "the plugins table and opens the event stream", args.token, row,
                             then=lambda: wait.until(lambda _: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "true"))

    def state():
        return d.find_element(By.CSS_SELECTOR, row + " td:nth-child(3)").text

    def change(verb, expected):
        def check():
            subprocess.run([args.keel, "plugins", verb, args.plugin, "--plugins", args.plugins, "--state", args.state],
                           check=True, capture_output=True)
            started = time.monotonic()
            deadline = started + args.within
            while time.monotonic() < deadline:
                try:
                    if state() == expected:
                        print(f"seen after {int((time.monotonic() - started) * 1000)} ms")
                        return
                except Exception:  # noqa: BLE001 - the table is being redrawn
                    pass
                time.sleep(0.02)
            raise AssertionError(f"the row still says {state()!r} {args.within} s after `keel plugins {verb}`")
        step(f"`keel plugins {verb} {args.plugin}` shows {expected} within {args.within} s, without a click", check)

    change("disable", "disabled")
    change("enable", "enabled")
    sys.exit(steps.finish(4))


if __name__ == "__main__":
    main()
