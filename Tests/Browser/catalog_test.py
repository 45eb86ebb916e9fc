#!/usr/bin/env python3
"""Checks the console's catalog in real headless Chromium against the signature facts the server gives: a package
signed by a trusted key installs with one click and no question; one signed by a signer no key is trusted under asks
first, and the install goes ahead only once accepted; a newer version of a pinned plugin that its key did not sign
(whoever did) offers no upgrade. Prints one line per step; exits 0 when every step held.

    catalog_test.py --url http://127.0.0.1:PORT --token TOKEN --trusted ID --untrusted ID --untrusted-signer NAME
                    --pinned ID --pinned-signer TEXT
"""
import argparse
import sys

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "trusted", "untrusted", "untrusted-signer", "pinned", "pinned-signer"):
        parser.add_argument("--" + name, required=True)
    args = parser.parse_args()

    steps = Steps()
    d, wait, step, click = steps.driver, steps.wait, steps.step, steps.click
    d.get(args.url + "/#/catalog")
    steps.hidden_until_login("catalog", "the catalog", args.token, f'tr[data-catalog-row="{args.trusted}"]')

    def cell(plugin, column):
        return d.find_element(By.CSS_SELECTOR, f'tr[data-catalog-row="{plugin}"] td:nth-child({column})').text

    def trusted():
        assert cell(args.trusted, 4).startswith("signed by "), cell(args.trusted, 4)
        button = d.find_element(By.CSS_SELECTOR, f'button[data-install="{args.trusted}"]')
        assert button.text == "Install", button.text
        button.click()
        wait.until(lambda _: cell(args.trusted, 5) == "installed")
        try:
            d.switch_to.alert
            raise AssertionError("the page asked before installing a package a trusted key signed")
        except NoAlertPresentException:
            pass
    step(f"{args.trusted}, signed by a trusted key, installs with one click and no question", trusted)

    def untrusted():
        assert cell(args.untrusted, 4) == f"signed by {args.untrusted_signer} (not trusted here)", cell(args.untrusted, 4)
        button = d.find_element(By.CSS_SELECTOR, f'button[data-install="{args.untrusted}"]')
        assert button.text == "Install unsigned", button.text
        # Dismissed: nothing is installed.
        button.click()
        wait.until(EC.alert_is_present())
        alert = d.switch_to.alert
        assert f'is signed by "{args.untrusted_signer}", whose key is not trusted here' in alert.text, alert.text
        alert.dismiss()
        assert cell(args.untrusted, 5) == "Install unsigned", cell(args.untrusted, 5)
        # Accepted: installed.
        click(f'button[data-install="{args.untrusted}"]')
        wait.until(EC.alert_is_present())
        d.switch_to.alert.accept()
        wait.until(lambda _: cell(args.untrusted, 5) == "installed")
    step(f"{args.untrusted}, signed by {args.untrusted_signer} (not trusted here), asks first and installs only once accepted", untrusted)

    def pinned():
        note = d.find_element(By.CSS_SELECTOR, f'span[data-pinned="{args.pinned}"]').text
        assert note.startswith(f"pinned to {args.pinned_signer}: "), note
        assert not d.find_elements(By.CSS_SELECTOR, f'button[data-upgrade="{args.pinned}"]')
    step(f"{args.pinned}, pinned to {args.pinned_signer}, offers no upgrade to a version that key did not sign", pinned)
    sys.exit(steps.finish(5))


if __name__ == "__main__":
    main()
