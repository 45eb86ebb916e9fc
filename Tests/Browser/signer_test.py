#!/usr/bin/env python3
"""Checks a plugin page's signature facts in real headless Chromium: logs in with the admin token on #/plugin/<id>
and reads its Signature and Pinned signer, which must be --signature and --signer. Prints one line per step; exits 0
when every step held.

    signer_test.py --url http://127.0.0.1:PORT --token TOKEN --plugin ID --signature TEXT --signer TEXT
"""
import argparse
import sys

from selenium.webdriver.common.by import By

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "plugin", "signature", "signer"):
        parser.add_argument("--" + name, required=True)
    args = parser.parse_args()

    steps = Steps()
    d, wait, step = steps.driver, steps.wait, steps.step
    d.get(args.url + "/#/plugin/" + args.plugin)
    steps.hidden_until_login("plugin", "the plugin page with its signature facts", args.token, "span[data-signer]")

    def facts():
        wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "span[data-signer]").text == args.signer)
        assert d.find_element(By.CSS_SELECTOR, "span[data-signature]").text == args.signature
    step(f"the page shows how the plugin was signed and the key it is pinned to ({args.signer!r})", facts)
    sys.exit(steps.finish(3))


if __name__ == "__main__":
    main()
