#!/usr/bin/env python3
"""Drives the Keel console in real headless Chromium (Selenium + Debian's chromedriver).

Logs in with the admin token, opens a plugin page from the navigation (in place of the plugin list), disables the
plugin in the Plugins view and checks that its menu entry is gone, then enables it and checks that the entry is back. With --install, it also
installs that plugin from the catalog (the repositories the server knows), enables it, checks its menu entry, and
uninstalls it again through the page. Exits 0 when every step held; prints one line per step.

    console_test.py --url http://127.0.0.1:PORT --token TOKEN [--plugin greeter --menu greeter.hello]
                    [--install ID --install-menu MENU]
"""
import argparse
import sys

from selenium.common.exceptions import NoSuchElementException, NoSuchFrameException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from keel_browser import Steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--plugin", default="greeter")
    parser.add_argument("--menu", default="greeter.hello")
    parser.add_argument("--install", help="a plugin the catalog offers and that is not installed")
    parser.add_argument("--install-menu", help="the menu entry that plugin adds")
    parser.add_argument("--hostile-menu", help="a menu entry opening a page that tries to steal the console's token")
    parser.add_argument("--external-menu", help="a menu entry whose link is an http(s) URL outside the console")
    parser.add_argument("--screenshot")
    args = parser.parse_args()

    steps = Steps()
    d, wait, click, step = steps.driver, steps.wait, steps.click, steps.step
    menu = f'nav a[data-menu-id="{args.menu}"]'
    row_state = f'tr[data-plugin-row="{args.plugin}"] td:nth-child(3)'

    try:
        d.get(args.url + "/#/plugins")
        step("the console loads and shows the navigation from /api/v1/menus",
             lambda: wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, menu))))
        def enabled():
            assert d.find_element(By.CSS_SELECTOR, row_state).text == "enabled"
        steps.hidden_until_login("admin", "the plugin list", args.token, f'tr[data-plugin-row="{args.plugin}"]', enabled)

        def open_page():
            click(menu)
            frame = wait.until(EC.visibility_of_element_located((By.ID, "page")))
            d.switch_to.frame(frame)
            try:
                greeting = wait.until(EC.presence_of_element_located((By.ID, "greeting")))
                # The page is told who is looking (a page session), although it holds no credential.
                wait.until(lambda _: greeting.text == "Hello, Administrator!")
            finally:
                d.switch_to.default_content()
            # The page opens in place of the view that was open, where the admin can see it.
            assert not d.find_element(By.ID, "admin").is_displayed(), "the plugin list is still shown"
            top = d.execute_script("return document.getElementById('page').getBoundingClientRect().top")
            assert 0 <= top < 400, f"the page frame starts at {top}px"
        step("a menu entry opens the plugin's page inside the console, as the logged-in caller, in view", open_page)

        if args.hostile_menu:
            def hostile_page():
                click(f'nav a[data-menu-id="{args.hostile_menu}"]')

                # The console replaces the frame of the page shown before: a frame found just as it goes is stale
                # (or still the other page), so each look finds it anew.
                def who():
                    try:
                        frame = d.find_element(By.ID, "page")
                        if not frame.is_displayed():
                            return None
                        d.switch_to.frame(frame)
                        try:
                            if d.find_element(By.TAG_NAME, "body").get_attribute("data-done") != "true":
                                return None
                            return d.find_element(By.ID, "who").text
                        finally:
                            d.switch_to.default_content()
                    except (StaleElementReferenceException, NoSuchElementException, NoSuchFrameException):
                        return None
                assert wait.until(lambda _: who()) == "admin"
                assert d.execute_script("return sessionStorage.getItem('keel.token')") == args.token
            step("a hostile plugin page runs sandboxed: it knows the caller but cannot reach the console's token", hostile_page)

        if args.external_menu:
            def external_link():
                link = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'nav a[data-menu-id="{args.external_menu}"]')))
                assert link.get_attribute("href").startswith("https://"), link.get_attribute("href")
                # A tab of its own with no opener: the page it leads to never holds this tab (its session keeps the token).
                assert link.get_attribute("target") == "_blank", link.get_attribute("target")
                rel = (link.get_attribute("rel") or "").split()
                assert "noopener" in rel and "noreferrer" in rel, rel
                console, before = d.current_window_handle, set(d.window_handles)
                url = d.current_url
                link.click()
                wait.until(lambda _: len(d.window_handles) == len(before) + 1)
                for handle in set(d.window_handles) - before:
                    d.switch_to.window(handle)
                    d.close()
                d.switch_to.window(console)
                assert d.current_url == url, f"the console's tab went to {d.current_url}"
                assert d.execute_script("return sessionStorage.getItem('keel.token')") == args.token
            step("a plugin's external menu link opens in a tab of its own, without an opener; the console's tab stays", external_link)

        def disable():
            click('nav a[data-view="plugins"]')
            click(f'button[data-plugin="{args.plugin}"]')
            wait.until(lambda _: d.find_element(By.CSS_SELECTOR, row_state).text == "disabled")
            wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, menu)) == 0)
        step("disabling the plugin through the page removes its menu entry", disable)

        def enable():
            click(f'button[data-plugin="{args.plugin}"]')
            wait.until(lambda _: d.find_element(By.CSS_SELECTOR, row_state).text == "enabled")
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, menu)))
        step("enabling it again brings the menu entry back", enable)

        if args.install:
            new_row = f'tr[data-plugin-row="{args.install}"]'
            new_menu = f'nav a[data-menu-id="{args.install_menu}"]'

            def accept_confirmation():
                wait.until(EC.alert_is_present())
                d.switch_to.alert.accept()

            def install():
                click('nav a[data-view="catalog"]')
                wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, f'tr[data-catalog-row="{args.install}"]')))
                click(f'button[data-install="{args.install}"]')
                accept_confirmation()  # the catalog entry is unsigned: the page asks first
                wait.until(lambda _: d.find_element(By.CSS_SELECTOR, f'tr[data-catalog-row="{args.install}"] td:nth-child(5)').text == "installed")
                click('nav a[data-view="plugins"]')
                wait.until(lambda _: d.find_element(By.CSS_SELECTOR, new_row + " td:nth-child(3)").text == "installed")
            step("installing a plugin from the catalog adds it to the plugin list", install)

            def enable_new():
                click(f'button[data-plugin="{args.install}"]')
                wait.until(lambda _: d.find_element(By.CSS_SELECTOR, new_row + " td:nth-child(3)").text == "enabled")
                wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, new_menu)))
            step("enabling the installed plugin adds its menu entry", enable_new)

            def uninstall():
                click(f'button[data-uninstall="{args.install}"]')
                accept_confirmation()
                wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, new_row)) == 0)
                wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, new_menu)) == 0)
                click('nav a[data-view="catalog"]')
                wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'button[data-install="{args.install}"]')))
            step("uninstalling it through the page removes it, its menu entry, and offers it again", uninstall)

        if args.screenshot:
            d.save_screenshot(args.screenshot)
    finally:
        result = steps.finish((9 if args.install else 6) + (1 if args.hostile_menu else 0) + (1 if args.external_menu else 0))
    return result


if __name__ == "__main__":
    sys.exit(main())
