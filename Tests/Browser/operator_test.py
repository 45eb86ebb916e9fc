#!/usr/bin/env python3
"""Drives the console's operator views in real headless Chromium (Selenium + Debian's chromedriver).

Expects a server where --plugin is enabled and ships a config.schema.yaml with `retries` (integer, 0..5) and
`greeting` (enum), where --granted is enabled with the sensitive capability --capability granted, and where --failing
was enabled and failed. Logs in with the admin token, then: the overview shows the host's version, the counts and the
failure with its reason; `keel plugins disable --plugin` (the real CLI) shows in the overview's counts and recent
events within --within seconds, without a click; keyboard only (Tab, Enter) reaches the Plugins view with a visible
focus; --granted's page shows its grants and load history, and revoking and granting its capability works; --plugin's
configuration form refuses retries 9 with the server's bad-config error and stores retries 3 (and its `number`
field's 2^53 + 1 with its digits); at 400 px wide the navigation folds behind a button and no view scrolls sideways;
`KeelConsole` (what console-pages.js calls) navigates inside the console only and shows notices as text; a key
trusted through the Repositories and trust form is removed with its button after a confirmation, and one scoped to
some plugin ids shows them. With --screenshots
DIR it also saves each view at 1280 px and the overview at 400 px as PNG. Prints one line per step; exits 0 when
every step held.

    operator_test.py --url URL --token TOKEN --keel KEEL --plugins DIR --state FILE --plugin calc --granted hello
                     --capability authenticate --failing tuned [--screenshots DIR]
"""
import argparse
import base64
import os
import shutil
import subprocess
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "keel", "plugins", "state", "plugin", "granted", "capability", "failing"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--within", type=float, default=1.0)
    parser.add_argument("--screenshots")
    args = parser.parse_args()

    steps = Steps()
    d, wait, click, step = steps.driver, steps.wait, steps.click, steps.step

    def css(selector):
        return d.find_element(By.CSS_SELECTOR, selector)

    def text(selector):
        return css(selector).text

    def count(state):
        found = d.find_elements(By.CSS_SELECTOR, f'li[data-count="{state}"] .count')
        return int(found[0].text) if found else None

    def shown(section):
        wait.until(lambda _: css("#" + section).is_displayed())

    def cli(verb):
        subprocess.run([args.keel, "plugins", verb, args.plugin, "--plugins", args.plugins, "--state", args.state],
                       check=True, capture_output=True)

    def screenshot(name):
        """Saves the window as docs-sized PNG: quantized with pngquant when it is installed."""
        path = os.path.join(args.screenshots, name)
        d.save_screenshot(path)
        if shutil.which("pngquant"):
            subprocess.run(["pngquant", "--quality", "60-85", "--speed", "1", "--force", "--output", path, path], check=False)

    try:
        d.get(args.url + "/")
        steps.hidden_until_login("admin", "the overview", args.token, "#plugin-counts",
                                 then=lambda: wait.until(lambda _: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "true"))

        def overview():
            assert text("#host-version"), "no host version"
            assert text("#uptime"), "no uptime"
            assert count("enabled") >= 2, text("#plugin-counts")
            assert count("failed") == 1, text("#plugin-counts")
            failure = text(f'li[data-failure="{args.failing}"]')
            assert "failed" in failure and "needs a valid configuration" in failure, failure
            assert not css("#admin").is_displayed(), "the plugin list is a view of its own"
        step("the overview shows the host's version, uptime, counts by state and the failure with its reason", overview)

        def live(verb, expected_enabled, expected_disabled):
            def check():
                cli(verb)
                started = time.monotonic()
                deadline = started + args.within
                event = f'li[data-event="{verb}"][data-subject="{args.plugin}"]'
                while time.monotonic() < deadline:
                    try:
                        if (count("enabled"), count("disabled")) == (expected_enabled, expected_disabled) \
                                and d.find_elements(By.CSS_SELECTOR, event) and "by cli" in text(event):
                            print(f"seen after {int((time.monotonic() - started) * 1000)} ms")
                            return
                    except Exception:  # noqa: BLE001 - the overview is being redrawn
                        pass
                    time.sleep(0.02)
                raise AssertionError(f"the overview says {text('#plugin-counts')!r} {args.within} s after `keel plugins {verb}`")
            return check
        enabled, disabled = count("enabled"), count("disabled")
        step(f"`keel plugins disable {args.plugin}` shows in the overview's counts and events within {args.within} s",
             live("disable", enabled - 1, disabled + 1))
        step(f"`keel plugins enable {args.plugin}` shows again within {args.within} s", live("enable", enabled, disabled))

        def keyboard():
            d.get(args.url + "/")
            wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#plugin-counts")))
            body = d.find_element(By.TAG_NAME, "body")
            body.send_keys(Keys.TAB)
            active = d.switch_to.active_element
            assert "skip-link" in active.get_attribute("class") and active.is_displayed(), active.get_attribute("outerHTML")
            for _ in range(20):
                active = d.switch_to.active_element
                if active.get_attribute("data-view") == "plugins":
                    break
                active.send_keys(Keys.TAB)
            assert active.get_attribute("data-view") == "plugins", "Tab never reached the Plugins link"
            outline = d.execute_script("const s = getComputedStyle(document.activeElement); return s.outlineStyle + ' ' + s.outlineWidth")
            assert not outline.startswith("none") and not outline.endswith(" 0px"), f"no visible focus: {outline}"
            active.send_keys(Keys.ENTER)
            shown("admin")
            wait.until(lambda _: d.switch_to.active_element.get_attribute("id") == "plugins-title")
            wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, f'tr[data-plugin-row="{args.plugin}"]')))
        step("keyboard only: Tab reaches the skip link first, then the Plugins link (visibly focused); Enter opens the view", keyboard)

        def plugin_page():
            click(f'a[data-plugin-link="{args.granted}"]')
            shown("plugin")
            assert d.current_url.endswith(f"#/plugin/{args.granted}"), d.current_url
            row = f'tr[data-grant="{args.capability}"]'
            wait.until(lambda _: text(row + " [data-granted]") == "granted")
            assert d.find_elements(By.CSS_SELECTOR, 'tr[data-grant="routes"]'), "the capabilities it asks for"
            wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#history tr[data-generation]")) >= 1)
            assert "activated" in text("#history tbody"), text("#history tbody")
            assert text('[data-plugin-state]') == "enabled"
            click(f'button[data-grant-action="{args.capability}"]')
            wait.until(lambda _: text(row + " [data-granted]") == "not granted")
            click(f'button[data-grant-action="{args.capability}"]')
            wait.until(lambda _: text(row + " [data-granted]") == "granted")
            assert text("#plugin p.error") == "", text("#plugin p.error")
        step("a plugin's page shows its grants and load history; revoke and grant work", plugin_page)

        def config():
            d.get(args.url + f"/#/plugin/{args.plugin}")
            field = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, 'input[data-config-key="retries"]')))
            assert (field.get_attribute("type"), field.get_attribute("min"), field.get_attribute("max")) == ("number", "0", "5")
            assert css('select[data-config-key="greeting"]').tag_name == "select"
            out = css(f'output[data-config-result="{args.plugin}"]')
            field.clear()
            field.send_keys("9")
            click(f'button[data-config-save="{args.plugin}"]')
            wait.until(lambda _: out.text not in ("", "…"))
            assert out.text.startswith("bad-config: ") and "above the maximum 5" in out.text, out.text
            assert "error" in out.get_attribute("class")
            field = css('input[data-config-key="retries"]')
            field.clear()
            field.send_keys("3")
            d.execute_script("arguments[0].value = 'hi'", css('select[data-config-key="greeting"]'))
            # A `type: number` field goes as typed: 2^53 + 1 read as a JS number would be stored as ...992.
            weight = css('input[data-config-key="weight"]')
            assert (weight.get_attribute("type"), weight.get_attribute("step")) == ("number", "any")
            weight.clear()
            weight.send_keys("9007199254740993")
            click(f'button[data-config-save="{args.plugin}"]')
            wait.until(lambda _: out.text == "stored")
            wait.until(lambda _: '"retries": 3' in text(f'pre[data-config-stored="{args.plugin}"]'))
            assert '"greeting": "hi"' in text(f'pre[data-config-stored="{args.plugin}"]')
            assert css('input[data-config-key="retries"]').get_attribute("value") == "3"
            # Filled again from the stored text, not through a JS number.
            assert css('input[data-config-key="weight"]').get_attribute("value") == "9007199254740993"
        step("the configuration form refuses retries 9 with the server's bad-config error and stores retries 3", config)

        def bridge():
            # What console-pages.js calls for a plugin page: navigation stays inside the console; notices are text.
            assert d.execute_script("return KeelConsole.navigate('https://evil.example/')") is False
            assert d.execute_script("return KeelConsole.navigate('//evil.example/x')") is False
            assert d.execute_script("return KeelConsole.navigate('javascript:alert(1)')") is False
            # Asked for by a plugin's page: its own paths, another plugin's only where a menu entry links (hello's
            # menu links /ext/hello/greet/world; the grant step above stopped hello: enabled again, its menu comes
            # back live), resolved first.
            subprocess.run([args.keel, "plugins", "enable", args.granted, "--plugins", args.plugins, "--state", args.state],
                           check=True, capture_output=True)
            wait.until(lambda _: "Hello" in d.find_element(By.ID, "menu").text)
            assert d.execute_script("return KeelConsole.navigate('/ext/greeter/', 'hello')") is False, "another plugin's path"
            assert d.execute_script("return KeelConsole.navigate('/ext/hello/x/../../greeter/', 'hello')") is False, "resolved first"
            for encoded in ("/ext/hello/..%2fgreeter/", "/ext/%67reeter/", "/ext%2fgreeter/", "/ext/hello/%2e%2e/greeter/"):
                assert d.execute_script("return KeelConsole.navigate(arguments[0], 'hello')", encoded) is False, "decoded first: " + encoded
            assert d.execute_script("return KeelConsole.navigate('/ext/hello/greet/world', 'greeter')") is True, "a menu's link"
            wait.until(lambda _: css("#page").get_dom_attribute("src") == "/ext/hello/greet/world")
            assert d.execute_script("return KeelConsole.navigate('/ext/greeter/x/../', 'greeter')") is True, "its own path"
            wait.until(lambda _: css("#page").get_dom_attribute("src") == "/ext/greeter/")
            # A plugin page's address is resolved before the frame loads it and the page session is asked for.
            assert d.execute_script("return KeelConsole.navigate('/ext/hello/x/../../greeter/')") is True
            wait.until(lambda _: css("#page").get_dom_attribute("src") == "/ext/greeter/" and css("#page").is_displayed())
            assert d.execute_script("return KeelConsole.navigate('/plugins')") is True
            shown("admin")
            assert d.current_url.startswith(args.url + "/#/plugins"), d.current_url
            d.execute_script("KeelConsole.notify('<b>saved</b>', 'success')")
            notice = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#notices .notice.success")))
            assert notice.text == "<b>saved</b>", notice.text
            assert d.find_element(By.ID, "notices").get_attribute("aria-live") == "polite"
        step("KeelConsole: a plugin page may navigate inside the console only, and its notices are shown as text", bridge)

        def untrust():
            d.get(args.url + "/#/repositories")
            shown("repositories")
            key = base64.b64encode(bytes([9] * 32)).decode()  # [7] is acme-release's: a key has one name
            css('form[data-form="trust"] input[name="name"]').send_keys("leaked")
            css('form[data-form="trust"] input[name="publicKey"]').send_keys(key)
            click('form[data-form="trust"] button[type="submit"]')
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-key-row="leaked"]')))
            click('button[data-remove-key="leaked"]')
            wait.until(EC.alert_is_present())
            d.switch_to.alert.accept()
            wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, 'tr[data-key-row="leaked"]')) == 0)
            wait.until(lambda _: text("#message").startswith("no longer trusting leaked (key "))
            # A key scoped to some plugin ids through the form's "May sign" field shows its scope in the table.
            css('form[data-form="trust"] input[name="name"]').send_keys("vendor")
            css('form[data-form="trust"] input[name="publicKey"]').send_keys(base64.b64encode(bytes([8] * 32)).decode())
            css('form[data-form="trust"] input[name="only"]').send_keys("vendor-*, billing")
            click('form[data-form="trust"] button[type="submit"]')
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, 'td[data-key-scope="vendor"]')))
            assert text('td[data-key-scope="vendor"]') == "vendor-*, billing only", text('td[data-key-scope="vendor"]')
        step("Repositories and trust: a key trusted through the form is removed with its button, after a confirmation; one scoped with May sign shows its ids", untrust)

        shots = args.screenshots
        if shots:
            os.makedirs(shots, exist_ok=True)
            for view in ("", "plugins", f"plugin/{args.granted}", "services", "commands", "tenants", "repositories", "catalog"):
                d.get(args.url + "/#/" + view)
                section = {"": "overview", "plugins": "admin"}.get(view, view.split("/")[0])
                shown(section)
                time.sleep(0.5)
                screenshot("console-" + (view.split("/")[0] or "overview") + ".png")

        def narrow():
            d.set_window_size(400, 860)
            d.get(args.url + "/")
            wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#plugin-counts")))
            width = d.execute_script("return window.innerWidth")
            assert width <= 420, f"the window is {width} px wide"
            for view in ("", "plugins", f"plugin/{args.plugin}", "tenants", "catalog"):
                d.get(args.url + "/#/" + view)
                wait.until(lambda _: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
                time.sleep(0.3)
                if view == "tenants":
                    member = css('[data-tenant-row="acme"] li[data-member="ada"]')
                    assert member.text == "ada viewer", f"acme's member shows as {member.text!r}"
                    # The built-in admin role grants everything (the API's grantsEverything), not "no permissions".
                    admin_role = css('[data-role-row="admin"] [data-grants-everything="admin"]')
                    assert admin_role.text == "every permission", f"admin shows as {admin_role.text!r}"
                wide = d.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                culprits = d.execute_script("""
                    const w = document.documentElement.clientWidth;
                    return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > w + 1
                        && e.parentElement.getBoundingClientRect().right <= w + 1)
                      .slice(0, 3).map(e => e.tagName + '.' + e.className + ' ' + (e.textContent || '').slice(0, 30));""")
                assert wide <= 0, f"#/{view} scrolls {wide} px sideways: {culprits}"
            d.get(args.url + "/")
            wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#plugin-counts")))
            if shots:
                screenshot("console-overview-400.png")
            assert not css("#nav").is_displayed(), "the navigation folds at 400 px"
            toggle = css("#nav-toggle")
            assert toggle.is_displayed() and toggle.get_attribute("aria-expanded") == "false"
            toggle.click()
            wait.until(lambda _: css("#nav").is_displayed())
            assert toggle.get_attribute("aria-expanded") == "true"
            click('nav a[data-view="plugins"]')
            shown("admin")
            assert not css("#nav").is_displayed(), "the navigation folds again after a choice"
        step("at 400 px the navigation folds behind a button and no view scrolls sideways", narrow)
    finally:
        result = steps.finish(11)
    return result


if __name__ == "__main__":
    sys.exit(main())
