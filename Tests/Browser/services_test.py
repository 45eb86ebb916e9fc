#!/usr/bin/env python3
"""Drives the console's Services section in real headless Chromium (Selenium + Debian's chromedriver).

Expects a server where --interface is provided by --top (the highest ranking) and --other (both enabled) and by
--inactive (installed, not enabled), consumed by --consumer (required, route /ext/<consumer>/call answering
"... provider=<id> ..."), and where --tenant has chosen --other. Logs in with the admin token, then: the row shows
--top serving by ranking; picking --other in the select chooses it (the row says so and the consumer's calls reach
it); "Use ranking" switches back; the tenant's "Clear" forgets its choice; and a choice that has gone stale (the
plugin was uninstalled behind the page's back) shows the API's error and a fresh row. Prints one line per step
(and "call: <answer>" for each call through the server); exits 0 when every step held.

    services_test.py --url http://127.0.0.1:PORT --token TOKEN --interface test.echo/1 --top beta --other alpha
                     --inactive gamma --consumer user --tenant acme [--screenshot FILE]
"""
import argparse
import sys
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "interface", "top", "other", "inactive", "consumer", "tenant"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--screenshot")
    args = parser.parse_args()

    steps = Steps()
    d, wait, click, step = steps.driver, steps.wait, steps.click, steps.step
    row = f'tr[data-service-row="{args.interface}"]'
    select = f'select[data-provider-select="{args.interface}"]'

    def text(selector):
        return d.find_element(By.CSS_SELECTOR, selector).text

    def serving(provider, reason):
        wait.until(lambda _: d.find_element(By.CSS_SELECTOR, row + " td.serving").get_attribute("data-serving") == provider
                   and reason in text(row + " td.serving")
                   and Select(d.find_element(By.CSS_SELECTOR, select)).first_selected_option.get_attribute("value") == provider)

    def call():
        """The consumer's route through the server, as an anonymous caller (host-wide)."""
        with urllib.request.urlopen(f"{args.url}/ext/{args.consumer}/call?x", timeout=10) as r:
            answer = r.read().decode()
        print(f"call: {answer}")
        return answer

    try:
        d.get(args.url + "/#/services")
        steps.hidden_until_login("services", "the services table", args.token, row)

        def initial():
            serving(args.top, "highest ranking")
            options = {o.get_attribute("value"): o for o in Select(d.find_element(By.CSS_SELECTOR, select)).options}
            assert set(options) == {args.top, args.other, args.inactive}, f"options {sorted(options)}"
            assert options[args.inactive].get_attribute("disabled") and "(not enabled)" in options[args.inactive].text
            assert not options[args.other].get_attribute("disabled")
            label = d.execute_script("return arguments[0].closest('label').textContent", d.find_element(By.CSS_SELECTOR, select))
            assert label.startswith("Host-wide provider of " + args.interface), f"label {label!r}"
            assert d.find_element(By.CSS_SELECTOR, f'button[data-use-ranking="{args.interface}"]').get_attribute("disabled")
            tenant = text(f'{row} li[data-tenant="{args.tenant}"]')
            assert tenant.startswith(f"{args.tenant}: {args.other} (chosen for the tenant)"), f"tenant {tenant!r}"
            consumer = text(f'{row} li[data-consumer="{args.consumer}"]')
            assert consumer == f"{args.consumer} ^1 required", f"consumer {consumer!r}"
        step("the row shows the highest ranking provider serving, the providers, the tenant's choice, the consumer", initial)

        def pick_other():
            Select(d.find_element(By.CSS_SELECTOR, select)).select_by_value(args.other)
            serving(args.other, "chosen by the operator")
            assert f"provider={args.other}" in call()
            assert text("#message") == ""
        step("picking the other provider chooses it: the row says so, and the consumer's calls reach it", pick_other)

        if args.screenshot:
            d.execute_script("document.getElementById('services').scrollIntoView({ block: 'start' })")
            d.save_screenshot(args.screenshot)

        def use_ranking():
            click(f'button[data-use-ranking="{args.interface}"]')
            serving(args.top, "highest ranking")
            assert f"provider={args.top}" in call()
        step("\"Use ranking\" forgets the choice: the highest ranking provider serves again", use_ranking)

        def clear_tenant():
            click(f'{row} li[data-tenant="{args.tenant}"] button[data-clear-tenant="{args.tenant}"]')
            wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, f'{row} li[data-tenant="{args.tenant}"]')) == 0)
            assert "no tenant choices" in text(row + " td:nth-child(4)")
        step("a tenant's \"Clear\" forgets that tenant's choice", clear_tenant)

        def stale_choice():
            # Another operator uninstalls the other provider while this page still offers it. The uninstall and the
            # pick run in one task of the page (a synchronous request), so the live update the uninstall causes
            # cannot redraw the row in between: the pick is of a provider that has just gone.
            status = d.execute_script(
                "const x = new XMLHttpRequest(); x.open('DELETE', arguments[0], false);"
                "x.setRequestHeader('Authorization', 'Bearer ' + arguments[1]); x.send();"
                "const s = document.querySelector(arguments[2]); s.value = arguments[3];"
                "s.dispatchEvent(new Event('change')); return x.status;",
                f"/api/v1/plugins/{args.other}", args.token, select, args.other)
            assert status == 200, status
            wait.until(lambda _: f'no plugin "{args.other}" in the plugin folder' in text("#message"))
            assert text("#message").startswith(args.interface + ": "), text("#message")
            wait.until(lambda _: args.other not in [o.get_attribute("value")
                                                    for o in Select(d.find_element(By.CSS_SELECTOR, select)).options])
            serving(args.top, "highest ranking")
        step("choosing a provider that has gone shows the API's error and a fresh row", stale_choice)
    finally:
        result = steps.finish(7)
    return result


if __name__ == "__main__":
    sys.exit(main())
