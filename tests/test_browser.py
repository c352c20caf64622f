"""The MLflow UI in headless Chromium: a study's trials nest under its parent, and compare shows params.

Needs Debian's chromium and chromium-driver (/usr/bin/chromium,
/usr/bin/chromedriver), which `.ci/run` installs, and selenium from the test
extra. Set MLFLOW_HPO_SCREENSHOTS to a folder to keep the screenshots there
(docs/images contains the ones the docs show).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL
from tests.conftest import subprocess_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SERVER_START_TIMEOUT_S = 180
PAGE_TIMEOUT_S = 60
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)

webdriver = pytest.importorskip("selenium.webdriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"mlflow server not healthy after {SERVER_START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def served_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A finished study in a SQLite store, served by `mlflow server` on a free loopback port."""
    folder = tmp_path_factory.mktemp("browser-study")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    config = TuneConfig(
        model="logistic_regression", n_trials=4, n_folds=3, cv="stratified", register_model="", study_name="browser-study"
    )
    result = tune(config)
    client = MlflowClient(uri)
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{result.parent_run_id}'"
    )

    port = _free_port()
    log = folder / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=folder, stdout=output, stderr=subprocess.STDOUT,
            env=subprocess_env(uri), start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, log)
        yield {"url": url, "parent": parent, "children": children, "study_name": result.study_name}
    finally:
        _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and the job consumers it started, all in its own process group."""
    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(driver: Any, tmp_path: Path, name: str) -> None:
    _close_assistant_panel(driver)
    driver.save_screenshot(str(tmp_path / name))
    keep = os.environ.get("MLFLOW_HPO_SCREENSHOTS")
    if keep:
        shutil.copy(tmp_path / name, Path(keep) / name)


def _close_assistant_panel(driver: Any) -> None:
    for button in driver.find_elements(By.CSS_SELECTOR, 'button[aria-label="Close"]'):
        if button.is_displayed():
            button.click()
            time.sleep(1)
            return


def test_trials_nest_under_parent_run(served_study: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    parent = served_study["parent"]
    names = sorted(run.info.run_name for run in served_study["children"])
    wait = WebDriverWait(browser, PAGE_TIMEOUT_S)

    browser.get(f"{served_study['url']}/#/experiments/{parent.info.experiment_id}/runs")
    parent_link = wait.until(
        expected_conditions.visibility_of_element_located((By.LINK_TEXT, served_study["study_name"]))
    )
    folded = [e for e in browser.find_elements(By.LINK_TEXT, names[0]) if e.is_displayed()]
    # MLflow 3.17 renders the square expand button of a parent run inside its run-name cell.
    expander = browser.find_element(By.CSS_SELECTOR, 'button[data-component-id*="runnamecellrenderer"]')
    expander.click()
    child_links = [
        wait.until(expected_conditions.visibility_of_element_located((By.LINK_TEXT, name))) for name in names
    ]
    _screenshot(browser, tmp_path, "mlflow-study-runs.png")

    assert names == [f"trial-{n:04d}" for n in range(4)]
    assert folded == []
    for link in child_links:
        assert link.location["y"] > parent_link.location["y"]
        assert link.location["x"] > parent_link.location["x"]
        assert f"/runs/{parent.info.run_id}" not in link.get_attribute("href")


def test_compare_view_shows_trial_params(served_study: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    children = sorted(served_study["children"], key=lambda run: int(run.data.tags[TAG_TRIAL]))[:3]
    experiment_id = served_study["parent"].info.experiment_id
    query = urllib.parse.urlencode(
        {"runs": json.dumps([run.info.run_id for run in children]), "experiments": json.dumps([experiment_id])}
    )
    wait = WebDriverWait(browser, PAGE_TIMEOUT_S)

    browser.get(f"{served_study['url']}/#/compare-runs?{query}")
    wait.until(expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "body"), "Parameters"))
    wait.until(expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "body"), "trial-0002"))
    heading = browser.find_element(By.XPATH, '//*[text()="Run details"]')
    browser.execute_script("arguments[0].scrollIntoView();", heading)
    _screenshot(browser, tmp_path, "mlflow-compare-trials.png")
    text = browser.find_element(By.TAG_NAME, "body").text

    params = children[0].data.params
    assert params, "the trial child runs have no params"
    assert all(set(run.data.params) == set(params) for run in children)
    for run in children:
        assert run.info.run_name in text
        for name, value in run.data.params.items():
            assert name in text
            assert value in text
