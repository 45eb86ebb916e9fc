#!/usr/bin/env python3
"""Drives a plugin page's live log in real headless Chromium: logs in with the admin token on #/plugin/<id>, then
requests --path (a route whose handler logs a line through host->log) and checks that the line appears in the page's
Log panel, as text, without a reload or a click. Prints one line per step; exits 0 when every step held.

    logs_test.py --url http://127.0.0.1:PORT --token TOKEN --plugin ID --path /ext/ID/ROUTE --expect TEXT
"""
import argparse
import sys
import urllib.request

from selenium.webdriver.common.by import By

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "plugin", "path", "expect"):
        parser.add_argument("--" + name, required=True)
    args = parser.parse_args()

    steps = Steps()
    d, wait, step = steps.driver, steps.wait, steps.step
    d.get(args.url + "/#/plugin/" + args.plugin)
    log = 'section[data-part="log"] ol.plugin-log'
    steps.hidden_until_login("plugin", "the plugin page with its Log panel", args.token, log)

    def lines():
        return [li.text for li in d.find_elements(By.CSS_SELECTOR, log + " li")]

    def appears():
        before = sum(args.expect in line for line in lines())
        urllib.request.urlopen(args.url + args.path, timeout=10).read()
        wait.until(lambda _: sum(args.expect in line for line in lines()) == before + 1)
    step(f"a line the plugin logs while the page is open shows up in its Log panel ({args.expect!r})", appears)

    def plain_text():
        assert not d.find_elements(By.CSS_SELECTOR, log + " li *"), "a log line holds markup"
    step("log lines are plain text", plain_text)
    sys.exit(steps.finish(4))


if __name__ == "__main__":
    main()
