"""The operator's approval, driven through the real Prefect UI in headless Chromium."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from prefect import flow
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from devservers.prefect_runs import find_flow_run, wait_for_approval_form
from tasks.approvals import request_approval

PLAN = (
    "## Join new members\n\n"
    "| # | action | --initial-cluster | quorum after |\n|---|---|---|---|\n"
    "| 1 | add learner `etcd-main-0` | etcd-0,etcd-1,etcd-2,etcd-main-0 | 2 of 3 voters |\n\n"
    "Verified so far: source healthy, leader etcd-1.\n\nRollback: remove the learner; source untouched."
)


@flow(name="browser-approval-probe")
def browser_probe() -> str:
    answer = request_approval("Join new members", PLAN, timeout_seconds=300)
    return answer.comment


def _button(driver: WebDriver, text: str, within: WebElement | None = None) -> WebElement:
    root = within or driver
    for b in root.find_elements(By.TAG_NAME, "button"):
        if b.text.strip() == text and b.is_displayed():
            return b
    raise AssertionError(f"no visible button {text!r}")


def test_operator_approves_in_the_ui(prefect_server: Any, browser: WebDriver, tmp_path: Path) -> None:
    box: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: box.setdefault("state", browser_probe(return_state=True)), daemon=True
    )
    thread.start()
    run_id = find_flow_run("browser-approval-probe")
    wait_for_approval_form(run_id)

    wait = WebDriverWait(browser, 60)
    browser.get(f"{prefect_server.ui_url}/runs/flow-run/{run_id}")
    wait.until(lambda d: any(b.text.strip() == "Resume" for b in d.find_elements(By.TAG_NAME, "button")))
    _button(browser, "Resume").click()
    modal = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))
    # the plan is readable in the form
    wait.until(lambda d: "add learner" in modal.text)
    assert "Rollback" in modal.text and "Approved" in modal.text
    switch = modal.find_element(By.CSS_SELECTOR, "[role=switch]")
    switch.click()
    wait.until(lambda d: switch.get_attribute("aria-checked") == "true")
    modal.find_element(By.TAG_NAME, "textarea").send_keys("approved from the browser")
    shot = Path(os.environ.get("STATEFERRY_SCREENSHOT_DIR", str(tmp_path))) / "approval-form.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    _button(browser, "Submit", within=modal).click()

    thread.join(60)
    assert not thread.is_alive(), "the flow run did not continue after the approval"
    state = box["state"]
    assert state.is_completed(), state
    assert state.result() == "approved from the browser"
    # the UI shows the run completed
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "Completed" not in browser.page_source:
        browser.refresh()
        time.sleep(1)
    assert "Completed" in browser.page_source
