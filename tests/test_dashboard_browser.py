"""The dashboard in a real browser (Debian's headless Chromium through selenium), on a
search that is still writing: the runs page lists it, the trials table gains rows,
plots render, filtering works and the console stays clean.

Skipped (with the reason) where chromium, chromedriver or selenium is missing; CI
installs them (``.ci/run``, ``nasforge[browser]``). ``NASFORGE_SCREENSHOTS=DIR`` keeps
the page screenshots there (the README's come from ``benchmarks/results``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if os.environ.get("CI") and (CHROMIUM is None or DRIVER is None):  # must run in CI
    raise RuntimeError("CI must run the browser test: .ci/run installs chromium and "
                       "chromium-driver; neither the browser nor its driver was found")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="needs Debian's chromium and chromium-driver "
                       "(apt-get install chromium chromium-driver; .ci/run does)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium "
                                "(pip install 'nasforge[browser]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start_search(out: Path, trials: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nasforge.cli", "search", "--dataset", "digits", "--space", "cnn",
         "--strategy", "random", "--trials", str(trials), "--epochs", "2", "--data-fraction",
         "0.5", "--no-final-train", "--no-progress", "--out", str(out)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _n_trials(out: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{out / 'nasforge.db'}?mode=ro", uri=True) as c:
            return int(c.execute("SELECT COUNT(*) FROM trials WHERE status!='running'")
                       .fetchone()[0])
    except sqlite3.Error:
        return 0


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _count(driver) -> tuple[int, str]:
    text = driver.find_element(By.ID, "count").text
    m = re.search(r"of (\d+)", text)
    return (int(m.group(1)) if m else -1), text


def test_dashboard_in_chromium_on_a_live_search(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = _start_search(runs / "done", 3)  # a finished run to compare with
    assert done.wait(120) == 0
    live = _start_search(runs / "live", 500)
    dash = None
    driver = None
    shots = Path(os.environ.get("NASFORGE_SCREENSHOTS") or tmp_path)
    try:
        deadline = time.monotonic() + 60
        while _n_trials(runs / "live") < 2:  # the run exists and is writing
            assert live.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        dash = subprocess.Popen([sys.executable, "-m", "nasforge.cli", "dashboard", str(runs),
                                 "--port", "0"], env=_env(), stdout=subprocess.PIPE, text=True)
        line = dash.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://\S+/", line)
        assert url, line
        base = url.group(0)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                  "--window-size=1400,1100", "--disable-gpu"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(DRIVER))
        wait = WebDriverWait(driver, 20)

        driver.get(base)
        wait.until(lambda d: "live" in d.find_element(By.ID, "runs").text)
        rows = {r.find_elements(By.TAG_NAME, "td")[1].text: r.find_elements(By.TAG_NAME, "td")
                for r in driver.find_elements(By.CSS_SELECTOR, "#runs tr")[1:]}
        assert rows["live"][2].text == "running" and rows["done"][2].text == "finished"
        driver.save_screenshot(str(shots / "dashboard_runs.png"))
        logs = driver.get_log("browser")  # read per page: each read drains the log

        driver.get(base + "run?run=live")
        wait.until(lambda d: _count(d)[0] > 0)
        first, _ = _count(driver)
        wait.until(lambda d: _count(d)[0] > first)  # polled while the search writes
        assert len(driver.find_elements(By.CSS_SELECTOR, "#trials tr.trial")) > 0
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-best_trials svg.main-svg"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-best_trials path.point"))
        assert driver.find_elements(By.CSS_SELECTOR, "#plot-importance svg.main-svg")
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(shots / "dashboard_run.png"))
        # filter: only matching rows, and the count says it is filtered
        driver.find_element(By.ID, "q").send_keys("maxpool")
        wait.until(lambda d: "filtered from" in _count(d)[1])
        archs = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#trials td.arch")]
        assert all("maxpool" in a for a in archs)
        driver.find_element(By.CSS_SELECTOR, "#trials tr.trial").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detail svg.arch"))
        driver.execute_script("document.getElementById('q').scrollIntoView()")
        driver.save_screenshot(str(shots / "dashboard_trials.png"))
        logs += driver.get_log("browser")

        driver.get(base + "compare?run=done&run=live")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-compare_n svg.main-svg"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#archs svg.arch")) == 2)
        driver.save_screenshot(str(shots / "dashboard_compare.png"))

        logs += driver.get_log("browser")
        errors = [e for e in logs if e["level"] in ("SEVERE", "WARNING")]
        assert not errors, errors
    finally:
        if driver is not None:
            driver.quit()
        for p in (live, dash):
            if p is not None:
                _stop(p)
