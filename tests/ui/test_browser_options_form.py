"""A deployment run started from the Prefect UI's form of a flow's pydantic options (headless Chromium).

``bucket_mirror`` is deployed on a process work pool with only its two ObjectStore blocks as default
parameters; the operator opens the deployment's Run form, picks the ``BucketMirrorOptions`` form
that Prefect renders from the model, fills four of its fields (text, switch, enum select, number) and
submits. A process worker runs the dry run; the test reads the run back through the Prefect client.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect_run import flow_run_texts
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from served_deployment import block_ref, served_deployment, wait_final

from blocks.object_store import ObjectStore
from planning.mirror_options import BucketMirrorOptions


def _field(driver: WebDriver, label: str) -> WebElement:
    """The form property whose label is ``label`` (found afresh: the form re-renders on input)."""
    for prop in driver.find_elements(By.CSS_SELECTOR, ".schema-form-property"):
        heads = prop.find_elements(By.CSS_SELECTOR, ":scope > .p-label__header .schema-form-property__label")
        if heads and heads[0].text.strip().split(" (")[0] == label:
            return prop
    raise AssertionError(f"no form field {label!r}")


def _click(driver: WebDriver, root: WebElement, text: str) -> None:
    for button in root.find_elements(By.TAG_NAME, "button"):
        if button.text.strip() == text and button.is_displayed():
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
            button.click()
            return
    raise AssertionError(f"no visible button {text!r}")


def _runs(deployment_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
        )


def test_operator_runs_a_deployment_from_the_options_form(
    prefect_server: Any,
    browser: WebDriver,
    object_store_a: ObjectStore,
    object_store_b: ObjectStore,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:8]
    bucket = f"form-{tag}"
    src, dst = object_store_a.minio_client(), object_store_b.minio_client()
    src.make_bucket(bucket)
    dst.make_bucket(bucket)
    for i in range(3):
        src.put_object(bucket, f"assets/{i}.txt", io.BytesIO(b"x" * (i + 1)), i + 1)
    params = {
        "source": block_ref(object_store_a, f"form-src-{tag}"),
        "destination": block_ref(object_store_b, f"form-dst-{tag}"),
    }
    with served_deployment(
        "flows/bucket_mirror.py:bucket_mirror", f"form-{tag}", params, tmp_path / "worker.log"
    ) as deployment_id:
        wait = WebDriverWait(browser, 60)
        browser.get(f"{prefect_server.ui_url}/deployments/deployment/{deployment_id}/run")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".schema-form-property"))
        options = _field(browser, "options")
        assert "What to mirror and how" in options.text
        _click(browser, options, "BucketMirrorOptions")  # the model's form instead of None
        wait.until(lambda d: _field(d, "Bucket"))
        _click(browser, _field(browser, "Bucket"), "str")
        _field(browser, "Bucket").find_element(By.CSS_SELECTOR, "input, textarea").send_keys(bucket)
        switch = _field(browser, "Dry Run").find_element(By.CSS_SELECTOR, "[role=switch]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", switch)
        switch.click()
        wait.until(lambda d: switch.get_attribute("aria-checked") == "true")
        verify = Select(_field(browser, "Verify").find_element(By.TAG_NAME, "select"))
        assert [o.text for o in verify.options] == ["etag", "checksum"]  # the Literal, as a select
        verify.select_by_visible_text("checksum")
        workers = _field(browser, "Workers").find_element(By.TAG_NAME, "input")
        workers.clear()
        workers.send_keys("4")
        shot = Path(os.environ.get("STATEFERRY_SCREENSHOT_DIR", str(tmp_path))) / "options-form.png"
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", _field(browser, "options"))
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        assert _runs(deployment_id) == []
        _click(browser, browser.find_element(By.TAG_NAME, "body"), "Submit")

        deadline = time.monotonic() + 60
        while not (runs := _runs(deployment_id)):
            assert time.monotonic() < deadline, "the form created no flow run"
            time.sleep(0.5)
        assert len(runs) == 1
        run = wait_final(runs[0].id)

    assert run.state.is_completed(), run.state
    sent = run.parameters["options"]
    typed = BucketMirrorOptions.model_validate(sent)
    assert (typed.bucket, typed.dry_run, typed.verify, typed.workers) == (bucket, True, "checksum", 4)
    assert typed.model_dump(exclude={"bucket", "dry_run", "verify", "workers"}) == BucketMirrorOptions(
        bucket=bucket
    ).model_dump(exclude={"bucket", "dry_run", "verify", "workers"})
    # the form sends the deprecated flat parameters as null: not given, nothing to merge
    assert all(run.parameters.get(k) is None for k in ("bucket", "dry_run", "verify", "workers"))
    texts = flow_run_texts(run.id)
    assert "assets/2.txt" in texts, "the dry run's plan lists the source's keys"
    assert "deprecated flat parameters" not in texts
    assert list(dst.list_objects(bucket, recursive=True)) == [], "a dry run writes nothing"
