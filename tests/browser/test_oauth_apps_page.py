"""The OAuth Apps page in a real browser: register a confidential app (its client ID and secret
shown once), see it listed, at a desktop and a phone width, and delete it after confirming.
Screenshots go to artifacts/screenshots/ like the other pages'.
"""

from selenium.webdriver.common.by import By

from test_dashboard import fill, follow, heading, sidebar, submit
from test_webhooks_page import sign_up_and_log_in


def test_register_an_oauth_app_see_its_secret_once_and_delete_it(server, browser, shoot):
    sign_up_and_log_in(server, browser)

    sidebar(browser, "OAuth Apps")
    assert heading(browser) == "OAuth Apps"
    assert "No OAuth apps yet" in browser.page_source
    assert "Apps you have authorized" in browser.page_source
    shoot("41-oauth-apps-empty")

    follow(browser, browser.find_element(By.CSS_SELECTOR, ".page-head").find_element(By.PARTIAL_LINK_TEXT, "Register App"))
    assert heading(browser) == "Register App"
    fill(browser, "name", "Reporting service")
    fill(browser, "redirect_uris", "https://reports.example.com/oauth/callback")
    browser.find_element(By.NAME, "scope_write").click()
    shoot("42-oauth-app-new")
    shoot("43-phone-oauth-app-new", phone=True)
    submit(browser, "Register App")
    assert heading(browser) == "App registered"
    assert "It will not be shown again" in browser.page_source
    client_id = browser.find_element(By.ID, "client-id").get_attribute("value")
    secret = browser.find_element(By.ID, "new-key").get_attribute("value")
    assert client_id.startswith("kgc_")
    assert secret.startswith("kgcs_")
    shoot("44-oauth-app-secret")
    shoot("45-phone-oauth-app-secret", phone=True)

    follow(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "OAuth Apps"))
    assert client_id in browser.page_source
    assert "read write" in browser.page_source
    assert secret not in browser.page_source, "the secret is shown once"
    shoot("46-oauth-apps-list")
    shoot("47-phone-oauth-apps-list", phone=True)

    follow(browser, browser.find_element(By.CSS_SELECTOR, f"a[href='/oauth-apps/{client_id}/delete']"))
    assert heading(browser) == "Delete this app?"
    submit(browser, "Delete app")
    assert "The app is deleted" in browser.page_source
    assert client_id not in browser.page_source
