"""What the console's browser tests share: headless Chromium through Debian's chromedriver, and a list of named
steps that reports each one ("ok: ..." or "FAILED: ...") and goes on after a failure."""
import shutil
import time

from selenium import webdriver
from selenium.common.exceptions import NoSuchFrameException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Steps:
    """One browser session and the count of steps that held and failed."""

    def __init__(self):
        self.driver = browser()
        self.timeout = 15
        self.wait = WebDriverWait(self.driver, self.timeout, ignored_exceptions=[StaleElementReferenceException])
        self.passed, self.failed = 0, 0

    def click(self, selector):
        # The page re-renders its lists after every change: find and click in one retried step.
        self.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True)

    def hidden_until_login(self, section, name, token, shown, then=lambda: None):
        """Two steps: the admin `section` (an element id) is hidden before login; logging in with `token` shows the
        `shown` element (a CSS selector), and `then` holds. `name` says what logging in shows."""
        d = self.driver
        self.step(f"the {section} section is hidden before login",
                  lambda: self.wait.until(lambda _: not d.find_element(By.ID, section).is_displayed()))

        def login():
            d.find_element(By.ID, "token").send_keys(token)
            d.find_element(By.ID, "login-button").click()
            self.wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, shown)))
            then()
        self.step("logging in with the admin token shows " + name, login)

    def in_frame(self, check):
        """Runs `check` inside the console's plugin frame (iframe#page, once visible); returns what it returns."""
        # A frame found just as the console replaces it (another page opened) is stale: found anew, up to the wait's
        # time-out. `check` itself runs once.
        deadline = time.monotonic() + self.timeout
        while True:
            frame = self.wait.until(EC.visibility_of_element_located((By.ID, "page")))
            try:
                self.driver.switch_to.frame(frame)
                break
            except (StaleElementReferenceException, NoSuchFrameException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        try:
            return check()
        finally:
            self.driver.switch_to.default_content()

    def step(self, name, check):
        try:
            check()
            self.passed += 1
            print(f"ok: {name}")
        except Exception as e:  # noqa: BLE001 - report every failed step, then go on
            self.failed += 1
            print(f"FAILED: {name}: {type(e).__name__}: {e}".splitlines()[0])

    def finish(self, expected):
        """Closes the browser and prints the tally; the exit status: 0 when all `expected` steps held."""
        self.driver.quit()
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 and self.passed == expected else 1
