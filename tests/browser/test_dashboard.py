"""The developer dashboard in a real browser, as every seed starts: sign up, verify the email,
log in, open API Keys in the sidebar, Create New API Key, name it, Generate, copy it, use it,
and revoke it. Every page is saved as a screenshot (artifacts/screenshots/), at a desktop and
at a phone width.
"""

import time

import requests
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

EMAIL = "john@example.com"
PASSWORD = "correct horse battery staple"


def fill(browser, field_id: str, value: str) -> None:
    field = browser.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(value)


def follow(browser, element) -> None:
    """Clicks a link or a submit button and waits for the next page to load."""
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()

    def left(_) -> bool:
        # The old page's root is gone. Chromedriver says so with a stale-element error, or at
        # times with "Node with given id does not belong to the document": both mean it left.
        try:
            page.is_enabled()
            return False
        except WebDriverException:
            return True

    WebDriverWait(browser, 15).until(left)
    WebDriverWait(browser, 15).until(lambda b: b.execute_script("return document.readyState") == "complete")


def submit(browser, label: str) -> None:
    follow(browser, browser.find_element(By.XPATH, f"//button[normalize-space()='{label}']"))


def sidebar(browser, label: str) -> None:
    follow(browser, browser.find_element(By.CSS_SELECTOR, "nav.nav").find_element(By.LINK_TEXT, label))


def heading(browser) -> str:
    return browser.find_element(By.TAG_NAME, "h1").text


def me(server, key: str) -> requests.Response:
    return requests.get(
        server.base_url + "/api/v1/auth/me",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_sign_up_verify_log_in_create_a_key_use_it_and_revoke_it(server, browser, shoot):
    # Sign up.
    browser.get(server.base_url + "/signup")
    assert heading(browser) == "Create your account"
    shoot("01-signup")
    fill(browser, "name", "John Doe")
    fill(browser, "email", EMAIL)
    fill(browser, "password", PASSWORD)
    fill(browser, "organization", "Acme Inc")
    submit(browser, "Sign up")
    assert heading(browser) == "Check your email"
    shoot("02-check-email")

    # Open the verification link from the mail.
    link = server.link_in_mail_to(EMAIL)
    assert "/verify-email?token=" in link
    browser.get(link)
    assert heading(browser) == "Your email address is verified"
    shoot("03-email-verified")

    # Log in.
    follow(browser, browser.find_element(By.LINK_TEXT, "Log in"))
    assert heading(browser) == "Log in"
    fill(browser, "email", EMAIL)
    fill(browser, "password", "not the password")
    submit(browser, "Log in")
    assert "Incorrect email or password" in browser.page_source
    shoot("04-login-error")
    fill(browser, "email", EMAIL)
    fill(browser, "password", PASSWORD)
    submit(browser, "Log in")
    assert browser.current_url.endswith("/keys")
    shoot("05-keys-empty")

    # API Keys in the sidebar, Create New API Key, a descriptive name, Generate.
    sidebar(browser, "API Keys")
    follow(browser, browser.find_element(By.CSS_SELECTOR, ".page-head").find_element(
        By.PARTIAL_LINK_TEXT, "Create New API Key"
    ))
    assert heading(browser) == "Create New API Key"
    fill(browser, "name", "Development Key")
    fill(browser, "description", "My laptop")
    shoot("06-create-key")
    submit(browser, "Generate")
    assert heading(browser) == "Your new API key", browser.find_element(By.TAG_NAME, "main").text
    assert "It will not be shown again" in browser.page_source
    key = browser.find_element(By.ID, "new-key").get_attribute("value")
    assert key.startswith("ak_live_")
    # The copy button is there with JavaScript, and says so when pressed.
    copy = browser.find_element(By.CSS_SELECTOR, "button[data-copy]")
    assert copy.is_displayed()
    copy.click()
    WebDriverWait(browser, 5).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "button[data-copy]"), "Copied"))
    shoot("07-key-created")

    # The key works over HTTP.
    for _ in range(5):
        answer = me(server, key)
        assert answer.status_code == 200, answer.text
    assert answer.json()["email"] == EMAIL

    follow(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "back to API Keys"))
    assert "Development Key" in browser.page_source
    assert key not in browser.page_source, "the list never shows the whole key"
    shoot("08-keys-list")

    # Usage (the test server writes the counts every second) and Account.
    time.sleep(3)
    sidebar(browser, "Usage")
    assert heading(browser) == "Usage"
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect"), "the chart has bars"
    shoot("09-usage")
    sidebar(browser, "Account")
    assert heading(browser) == "Account"
    assert EMAIL in browser.page_source
    fill(browser, "invite-email", "jane@example.com")
    submit(browser, "Send invitation")
    assert "Invitation sent" in browser.page_source
    shoot("10-account")

    # Revoke it, after a confirmation.
    sidebar(browser, "API Keys")
    follow(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "Revoke"))
    assert heading(browser) == "Revoke “Development Key”?"
    shoot("11-revoke-confirm")
    submit(browser, "Revoke key")
    assert "The key is revoked" in browser.page_source
    shoot("12-keys-revoked")

    answer = me(server, key)
    assert answer.status_code == 401, answer.text

    # The same pages at a phone's width.
    for path, name in [("/keys", "13-phone-keys"), ("/keys/new", "14-phone-create-key"), ("/usage", "15-phone-usage"), ("/account", "16-phone-account")]:
        browser.get(server.base_url + path)
        shoot(name, phone=True)

    # Log out.
    browser.get(server.base_url + "/keys")
    submit(browser, "Log out")
    assert heading(browser) == "Log in"
    assert "You are logged out" in browser.page_source
    shoot("17-logged-out")
    shoot("18-phone-login", phone=True)

    # The invited teammate joins, and the owner sees them with their role.
    browser.get(server.link_in_mail_to("jane@example.com"))
    assert heading(browser) == "Join Acme Inc"
    shoot("19-invitation")
    fill(browser, "name", "Jane Roe")
    fill(browser, "password", "another good password")
    submit(browser, "Accept and continue")
    assert browser.current_url.endswith("/keys")
    submit(browser, "Log out")
    fill(browser, "email", EMAIL)
    fill(browser, "password", PASSWORD)
    submit(browser, "Log in")
    browser.get(server.base_url + "/account")
    assert "jane@example.com" in browser.page_source
    shoot("20-account-users")
    shoot("21-phone-account-users", phone=True)


def test_the_dashboard_works_without_javascript(server, browser, shoot):
    """Every step of the flow is a link or a form: with scripts off, only the copy button goes."""
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    browser.get(server.base_url + "/signup")
    fill(browser, "name", "Jane Roe")
    fill(browser, "email", "jane@example.com")
    fill(browser, "password", PASSWORD)
    fill(browser, "organization", "Roe Labs")
    submit(browser, "Sign up")
    browser.get(server.link_in_mail_to("jane@example.com"))
    browser.get(server.base_url + "/login")
    fill(browser, "email", "jane@example.com")
    fill(browser, "password", PASSWORD)
    submit(browser, "Log in")
    browser.get(server.base_url + "/keys/new")
    fill(browser, "name", "No-JS Key")
    submit(browser, "Generate")
    key = browser.find_element(By.ID, "new-key").get_attribute("value")
    assert not browser.find_element(By.CSS_SELECTOR, "button[data-copy]").is_displayed()
    shoot("30-nojs-key-created")
    assert me(server, key).status_code == 200
