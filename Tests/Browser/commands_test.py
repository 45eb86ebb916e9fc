#!/usr/bin/env python3
"""Drives the console's Commands section in real headless Chromium (Selenium + Debian's chromedriver).

Expects a server where --plugin is the "calc" fixture (Tests/KeelTests/Fixtures/plugins/commands.c with
CommandsFixture.calcManifest), enabled. Logs in with the admin token, then: each command has a row with its
signature, description and permission ("admins only" without one) and a form with one labelled input per argument,
of the right kind; add runs (2 + 40 = 42, and a value past 2^53 arrives unrounded); an empty integer field shows
the server's bad-argument message; greet, div, not, half and len run; div by zero shows the plugin's failure.
Prints one line per step; exits 0 when every step held.

    commands_test.py --url http://127.0.0.1:PORT --token TOKEN --plugin calc [--screenshot FILE]
"""
import argparse
import sys

from selenium.webdriver.common.by import By

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "plugin"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--screenshot")
    args = parser.parse_args()

    steps = Steps()
    d, wait, step = steps.driver, steps.wait, steps.step
    p = args.plugin

    def row(name):
        return f'tr[data-command-row="{p}.{name}"]'

    def field(name, n):
        return d.find_element(By.CSS_SELECTOR, f'{row(name)} input[data-arg="{n}"]')

    def label(name, n):
        return d.execute_script("return arguments[0].closest('label').textContent", field(name, n))

    def run(name, *values):
        """Types `values` into the command's fields (a bool is a click when True), runs it; the shown outcome."""
        for n, value in enumerate(values, start=1):
            f = field(name, n)
            if isinstance(value, bool):
                if f.is_selected() != value:
                    f.click()
            else:
                f.clear()
                f.send_keys(value)
        out = d.find_element(By.CSS_SELECTOR, f'output[data-command-result="{p}.{name}"]')
        d.execute_script("arguments[0].textContent = ''", out)
        d.find_element(By.CSS_SELECTOR, f'button[data-run="{p}.{name}"]').click()
        wait.until(lambda _: out.text not in ("", "…"))
        return out.text, "error" in out.get_attribute("class").split()

    try:
        d.get(args.url + "/#/commands")
        steps.hidden_until_login("commands", "the commands table", args.token, row("add"))

        def rows():
            cells = [c.text for c in d.find_elements(By.CSS_SELECTOR, row("add") + " > td")]
            assert cells[:4] == [p, "add\nAdds two numbers.", "(i64, i64) -> i64", "calc.math:run"], f"add {cells}"
            assert d.find_element(By.CSS_SELECTOR, row("neg32") + " td.permission").text == "admins only"
            for n in (1, 2):
                f = field("add", n)
                assert (f.get_attribute("type"), f.get_attribute("step")) == ("number", "1"), f.get_attribute("outerHTML")
                assert label("add", n) == f"argument {n} of {p}.add, i64", label("add", n)
            kinds = {name: field(name, 1).get_attribute("type") for name in ("not", "greet", "len", "half", "twice32")}
            assert kinds == {"not": "checkbox", "greet": "text", "len": "text", "half": "number", "twice32": "number"}, kinds
            assert field("half", 1).get_attribute("step") == "any"
            assert label("len", 1) == f"argument 1 of {p}.len, bytes, base64", label("len", 1)
            assert label("not", 1) == f"argument 1 of {p}.not, bool", label("not", 1)
            assert not d.find_elements(By.CSS_SELECTOR, row("nothing") + " input")
            assert d.find_element(By.CSS_SELECTOR, f'button[data-run="{p}.add"]').get_attribute("aria-label") == f"Run {p}.add"
        step("each command's row: signature, description, permission or \"admins only\", a labelled input per argument", rows)

        def add():
            assert run("add", "2", "40") == ("42", False)
            assert d.find_element(By.ID, "message").text == ""
        step("add with 2 and 40 shows 42", add)

        def wide():
            # 2^53 + 1 is no JS number: the page must send the typed digits, and show the host's digits.
            assert run("add", "9007199254740993", "0") == ("9007199254740993", False)
        step("a 64-bit integer past 2^53 goes and comes back unrounded", wide)

        def empty():
            text, error = run("add", "", "40")
            assert error and text == f'bad-argument: argument 1 of {p}.add: "" is not an i64', text
        step("an empty integer field shows the server's bad-argument message", empty)

        def greet():
            assert run("greet", "Ada") == ('"hello, Ada"', False)
        step("greet with \"Ada\" shows \"hello, Ada\"", greet)

        def div():
            assert run("div", "84", "2") == ('{"quotient":42}', False)
            text, error = run("div", "1", "0")
            assert error and text == f"command-failed: {p}.div returned KEEL_ERR_INVALID_ARGUMENT: division by zero", text
        step("div by zero shows the plugin's failure; 84 / 2 shows its JSON", div)

        def types():
            assert run("not", False) == ("true", False)
            assert run("not", True) == ("false", False)
            assert run("half", "5") == ("2.5", False)
            assert run("len", "AAEC/w==") == ("4", False)
            assert run("nothing") == ("null", False)
        step("a checkbox, a float, base64 bytes and no arguments", types)

        if args.screenshot:
            d.execute_script("document.getElementById('commands').scrollIntoView({ block: 'start' })")
            d.save_screenshot(args.screenshot)
    finally:
        result = steps.finish(9)
    return result


if __name__ == "__main__":
    sys.exit(main())
