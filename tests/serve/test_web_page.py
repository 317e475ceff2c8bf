"""The web page in a real headless browser (Debian's chromium + chromedriver, driven by selenium): type a
prompt, generate, the image and the timings appear, the tab's history grows; a screenshot is kept under
the test's ``artifacts/`` folder."""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from genrt.cli import main
from genrt.serve.settings import ServeSettings
from tests.runtime.tiny.ldm import build_ldm
from tests.serve.server import running_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install 'genrt[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="chromium and chromedriver are not installed (apt-get install chromium "
                                       "chromium-driver; `make test` does it where apt is available)")


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1000,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_page_generates_and_shows_image_timings_and_history(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    folder = build_ldm(tmp_path / "ldm")
    wait = WebDriverWait(browser, 60)
    with running_server(folder, ServeSettings(backend="onnxruntime-cpu", threads=1)) as (url, pipe):
        browser.get(url + "/")
        wait.until(expected_conditions.element_to_be_clickable((By.ID, "generate")))
        assert "ldm model on onnxruntime-cpu" in browser.find_element(By.ID, "model").text
        browser.find_element(By.ID, "prompt").send_keys("a red cube on a blue sphere")
        browser.find_element(By.ID, "seed").send_keys("3")
        browser.find_element(By.ID, "num_inference_steps").send_keys("3")
        browser.find_element(By.ID, "generate").click()
        image = wait.until(expected_conditions.visibility_of_element_located((By.ID, "image")))
        wait.until(lambda driver: driver.execute_script("return document.getElementById('image').naturalWidth") > 0)
        stages = [row.text.split()[0] for row in browser.find_elements(By.CSS_SELECTOR, "#timings tr")]
        seed_text = browser.find_element(By.ID, "seed-used").text
        source = image.get_attribute("src")
        artifacts = tmp_path / "artifacts"
        artifacts.mkdir()
        assert browser.save_screenshot(str(artifacts / "web_page.png"))
        browser.find_element(By.ID, "seed").clear()
        browser.find_element(By.ID, "seed").send_keys("4")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#history img")) == 2)
        assert browser.find_element(By.ID, "error").text == ""
    assert {"tokenize", "text_encoder", "denoise", "vae_decoder", "total", "queue"} <= set(stages)
    assert seed_text.startswith("seed 3")
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))
    out = tmp_path / "run.png"
    assert main(["run", str(folder), "--prompt", "a red cube on a blue sphere", "--seed", "3", "--steps", "3",
                 "--out", str(out), "--backend", "onnxruntime-cpu", "--no-progress"]) == 0
    np.testing.assert_array_equal(shown, np.asarray(Image.open(out).convert("RGB")))
    screenshot = Image.open(artifacts / "web_page.png")
    assert screenshot.size[0] > 500 and np.asarray(screenshot).std() > 0  # a rendered page, not a blank one
    assert pipe.calls == [["a red cube on a blue sphere"], ["a red cube on a blue sphere"]]
