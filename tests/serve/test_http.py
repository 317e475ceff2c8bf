"""The real server on a loopback port, driven over HTTP: generate, micro-batching, back-pressure, bad input,
API key, metrics."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from genrt.cli import main
from genrt.runtime.png import png_parameters
from genrt.serve.settings import ServeSettings
from tests.runtime.tiny.ldm import build_ldm
from tests.runtime.tiny.vqgan import build_vqgan
from tests.serve.server import decode_png, running_server

CPU = {"backend": "onnxruntime-cpu", "threads": 1}


@pytest.fixture(scope="module")
def ldm_dir(tmp_path_factory):
    return build_ldm(tmp_path_factory.mktemp("ldm"))


@pytest.fixture(scope="module")
def vqgan_dir(tmp_path_factory):
    return build_vqgan(tmp_path_factory.mktemp("vqgan"))


def cli_image(directory, tmp_path, *args) -> np.ndarray:
    """The image `genrt run` writes with ``args``."""
    out = tmp_path / f"run-{hashlib.sha1(repr(args).encode()).hexdigest()[:8]}.png"
    assert main(["run", str(directory), "--out", str(out), "--backend", "onnxruntime-cpu", "--threads", "1",
                 "--no-progress", *args]) == 0
    return np.asarray(Image.open(out).convert("RGB"))


def post_all(url: str, bodies: list[dict], **kwargs) -> list[httpx.Response]:
    """POST every body at once, each from its own thread; the answers in order."""
    answers: list = [None] * len(bodies)

    def send(index: int) -> None:
        answers[index] = httpx.post(f"{url}/v1/generate", json=bodies[index], timeout=60, **kwargs)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_generate_returns_the_image_of_genrt_run(ldm_dir, tmp_path):
    with running_server(ldm_dir) as (url, pipe):
        answer = httpx.post(f"{url}/v1/generate", timeout=60, json={
            "prompt": "a red cube", "negative_prompt": "blue", "num_inference_steps": 3, "guidance_scale": 3.0,
            "seed": 7, "height": 48, "width": 32})
        assert answer.status_code == 200, answer.text
        data = answer.json()
        as_png = httpx.post(f"{url}/v1/generate", json={"prompt": "a red cube", "seed": 7},
                            headers={"Accept": "image/png"}, timeout=60)
        schema = httpx.get(f"{url}/openapi.json").json()
    manifest_sha = hashlib.sha256((ldm_dir / "manifest.json").read_bytes()).hexdigest()
    assert data["seed"] == 7 and data["manifest_sha256"] == manifest_sha and data["batch_images"] == 1
    assert {"tokenize", "text_encoder", "denoise", "vae_decoder", "total", "queue"} <= set(data["timings"])
    image = decode_png(data["images"][0])
    assert image.shape == (48, 32, 3)
    expected = cli_image(ldm_dir, tmp_path, "--prompt", "a red cube", "--negative-prompt", "blue", "--steps", "3",
                         "--guidance", "3", "--seed", "7", "--height", "48", "--width", "32")
    np.testing.assert_array_equal(image, expected)
    written = png_parameters(base64.b64decode(data["images"][0]))
    assert written == {"prompt": "a red cube", "negative_prompt": "blue", "num_inference_steps": 3,
                       "guidance_scale": 3.0, "sampler": "ddim", "seed": 7, "height": 48, "width": 32,
                       "num_images": 1, "index": 0, "manifest_sha256": manifest_sha}
    # the raw PNG answer: the default size (64x64), 4 steps and guidance 5 of the manifest
    assert as_png.status_code == 200 and as_png.headers["content-type"] == "image/png"
    assert as_png.headers["x-genrt-seed"] == "7" and "denoise" in json.loads(as_png.headers["x-genrt-timings"])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(as_png.content)).convert("RGB")),
                                  cli_image(ldm_dir, tmp_path, "--prompt", "a red cube", "--seed", "7"))
    assert "/v1/generate" in schema["paths"]
    body_schema = schema["paths"]["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"prompt", "seed", "num_inference_steps", "num_images_per_prompt"} <= set(body_schema["properties"])


def test_concurrent_requests_share_pipeline_calls_and_keep_their_seeds(ldm_dir, tmp_path):
    seeds = [11, 12, 13, 14, 15, 16]
    bodies = [{"prompt": f"prompt {seed}", "seed": seed, "num_inference_steps": 3} for seed in seeds]
    settings = ServeSettings(max_batch=8, max_wait_s=0.05, **CPU)  # guidance: the profile's 8 -> 4 images a call
    with running_server(ldm_dir, settings) as (url, pipe):
        answers = queued_behind_one(url, pipe, {"prompt": "warm", "seed": 1}, bodies)
    assert [a.status_code for a in answers] == [200] * len(bodies)
    batch_sizes = [len(call) for call in pipe.calls]
    assert batch_sizes[0] == 1 and sorted(batch_sizes[1:]) == [2, 4], batch_sizes  # 6 queued -> 4 + 2
    assert len(pipe.calls) == 3 < 1 + len(bodies)
    for seed, answer in zip(seeds, answers):
        data = answer.json()
        assert data["seed"] == seed and data["parameters"]["prompt"] == f"prompt {seed}"
        expected = cli_image(ldm_dir, tmp_path, "--prompt", f"prompt {seed}", "--seed", str(seed), "--steps", "3")
        np.testing.assert_array_equal(decode_png(data["images"][0]), expected)  # measured: identical


def wait_for_queue(url: str, depth: int, timeout: float = 30.0) -> None:
    """Until /metrics shows ``depth`` queued jobs."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics").text
        if f"genrt_queue_depth {depth}" in text:
            return
        time.sleep(0.02)
    raise TimeoutError(f"the queue never reached {depth}")


def queued_behind_one(url: str, pipe, first: dict, bodies: list[dict]) -> list[httpx.Response]:
    """Hold the pipeline on ``first``, queue ``bodies`` behind it, then release: the answers to ``bodies``."""
    pipe.gate.clear()
    held = threading.Thread(target=post_all, args=(url, [first]))
    held.start()
    assert pipe.entered.acquire(timeout=30)
    answers: list = []
    waiting = threading.Thread(target=lambda: answers.extend(post_all(url, bodies)))
    waiting.start()
    wait_for_queue(url, len(bodies))
    pipe.gate.set()
    waiting.join()
    held.join()
    return answers


def test_vqgan_requests_batch_with_their_own_class_and_seed(vqgan_dir, tmp_path):
    bodies = [{"class_id": 3, "seed": 5}, {"class_id": 7, "seed": 6}, {"seed": 8, "num_images_per_prompt": 2}]
    with running_server(vqgan_dir, ServeSettings(max_wait_s=0.05, **CPU)) as (url, pipe):
        answers = queued_behind_one(url, pipe, {"class_id": 1, "seed": 0}, bodies)
    assert [len(call) for call in pipe.calls] == [1, 4] and sorted(pipe.calls[1]) == [0, 0, 3, 7]  # in arrival order
    for body, answer in zip(bodies, answers):
        data = answer.json()
        args = ["--seed", str(body["seed"]), "--num-images", str(body.get("num_images_per_prompt", 1))]
        args += ["--class-id", str(body["class_id"])] if "class_id" in body else []
        first_image = cli_image(vqgan_dir, tmp_path, *args) if len(data["images"]) == 1 else None
        if first_image is not None:
            np.testing.assert_array_equal(decode_png(data["images"][0]), first_image)
        else:
            out = tmp_path / "pair.png"
            assert main(["run", str(vqgan_dir), "--out", str(out), "--backend", "onnxruntime-cpu", "--no-progress",
                         *args]) == 0
            for index in range(2):
                np.testing.assert_array_equal(decode_png(data["images"][index]),
                                              np.asarray(Image.open(tmp_path / f"pair_{index}.png").convert("RGB")))


def test_full_queue_answers_503_with_retry_after(ldm_dir):
    settings = ServeSettings(queue_size=2, max_batch=1, **CPU)
    with running_server(ldm_dir, settings) as (url, pipe):
        pipe.gate.clear()
        answers: list = []
        first = threading.Thread(target=lambda: answers.extend(post_all(url, [{"prompt": "a", "seed": 0}])))
        first.start()
        assert pipe.entered.acquire(timeout=30)
        queued = threading.Thread(target=lambda: answers.extend(post_all(url, [{"prompt": "b"}, {"prompt": "c"}])))
        queued.start()
        wait_for_queue(url, 2)
        refused = httpx.post(f"{url}/v1/generate", json={"prompt": "d"}, timeout=30)
        pipe.gate.set()
        first.join()
        queued.join()
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert refused.json() == {"error": "the queue is full (2 requests waiting) (fix: retry after "
                                       f"{refused.headers['retry-after']} s)"}
    assert [a.status_code for a in answers] == [200, 200, 200]  # every accepted request was answered


BAD_REQUESTS = [
    (b"{not json", 400, "request is not valid JSON"),
    (b'["a cat"]', 400, "request is list"),
    (b'{"prompt": "a cat", "steps": 3}', 400, "request has unknown key(s) steps"),
    (b'{"prompt": 3}', 400, "request.prompt is int 3"),
    (b'{"seed": 1}', 400, "the ldm model needs a text prompt"),
    (b'{"prompt": "a", "num_inference_steps": 0}', 400, "num_inference_steps is 0"),
    (b'{"prompt": "a", "height": 60}', 400, "height is 60; expected a multiple of 8"),
    (b'{"prompt": "a", "width": 256}', 400, "width is 256; expected a multiple of 8 in [32, 128]"),
    (b'{"prompt": "a", "guidance_scale": 1e9}', 400, "guidance_scale is 1000000000.0"),
    (b'{"prompt": "a", "num_images_per_prompt": 9}', 400, "num_images_per_prompt is 9"),
    (b'{"prompt": "a", "num_images_per_prompt": 5, "guidance_scale": 2}', 400, "exceeds the engines' batch of 4"),
    (b'{"prompt": "a", "class_id": 2}', 400, "class_id applies to vqgan models"),
    (b'{"prompt": "a", "sampler": "euler"}', 400, "sampler 'euler' is not the sampler this server runs"),
    (b'{"prompt": "a", "seed": -1}', 400, "seed is -1"),
    (b'{"prompt": "' + b"x" * 1001 + b'"}', 400, "prompt has 1001 characters"),
    (b'{"prompt": "' + b"x" * 70000 + b'"}', 413, "the request body exceeds 65536 bytes"),
]


def test_bad_requests_get_one_line_4xx(ldm_dir):
    with running_server(ldm_dir, ServeSettings(max_images=8, **CPU)) as (url, pipe):
        answers = [httpx.post(f"{url}/v1/generate", content=body, headers={"Content-Type": "application/json"})
                   for body, _, _ in BAD_REQUESTS]
        png = httpx.post(f"{url}/v1/generate", json={"prompt": "a", "num_images_per_prompt": 2},
                         headers={"Accept": "image/png"})
    for (body, status, message), answer in zip(BAD_REQUESTS, answers):
        assert answer.status_code == status, (body[:40], answer.text)
        error = answer.json()["error"]
        assert message in error and "fix:" in error and "\n" not in error and "Traceback" not in error, error
    assert png.status_code == 400 and "image/png carries one image, not 2" in png.json()["error"]
    assert pipe.calls == []  # no bad request reached the pipeline


def test_api_key_is_required_where_set(ldm_dir):
    with running_server(ldm_dir, ServeSettings(api_key="s3cret", **CPU)) as (url, pipe):
        generate = f"{url}/v1/generate"
        missing = httpx.post(generate, json={"prompt": "a"})
        wrong = httpx.post(generate, json={"prompt": "a"}, headers={"Authorization": "Bearer s3cret!"})
        bearer = httpx.post(generate, json={"prompt": "a"}, headers={"Authorization": "Bearer s3cret"})
        header = httpx.post(generate, json={"prompt": "a"}, headers={"X-API-Key": "s3cret"})
        metrics_without = httpx.get(f"{url}/metrics")
        health = httpx.get(f"{url}/healthz")
    assert missing.status_code == wrong.status_code == metrics_without.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "missing or wrong API key" in wrong.json()["error"]
    assert bearer.status_code == header.status_code == health.status_code == 200
    assert len(pipe.calls) == 2


def test_metrics_parse_and_count(ldm_dir):
    from prometheus_client.parser import text_string_to_metric_families

    with running_server(ldm_dir, ServeSettings(max_batch=1, **CPU)) as (url, pipe):
        for seed in range(3):
            assert httpx.post(f"{url}/v1/generate", json={"prompt": "a", "seed": seed}).status_code == 200
        assert httpx.post(f"{url}/v1/generate", json={"prompt": ""}).status_code == 400
        text = httpx.get(f"{url}/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("genrt_requests_total", (("status", "200"),))] == 3
    assert samples[("genrt_requests_total", (("status", "400"),))] == 1
    assert samples[("genrt_request_duration_seconds_count", ())] == 4
    assert samples[("genrt_request_duration_seconds_bucket", (("le", "+Inf"),))] == 4
    assert samples[("genrt_batch_images_count", ())] == 3 and samples[("genrt_batch_images_sum", ())] == 3
    assert samples[("genrt_queue_depth", ())] == 0
    assert samples[("genrt_stage_seconds_total", (("stage", "denoise"),))] > 0
    assert families["genrt_request_duration_seconds"].type == "histogram"


def test_timed_out_and_abandoned_requests_are_dropped_from_the_queue(ldm_dir):
    settings = ServeSettings(timeout_s=0.5, max_batch=1, **CPU)
    with running_server(ldm_dir, settings) as (url, pipe):
        pipe.gate.clear()
        first = threading.Thread(target=post_all, args=(url, [{"prompt": "held", "seed": 0}]))
        first.start()
        assert pipe.entered.acquire(timeout=30)
        with pytest.raises(httpx.ReadTimeout):  # this client gives up before the server's timeout
            httpx.post(f"{url}/v1/generate", json={"prompt": "abandoned"}, timeout=0.2)
        timed_out = httpx.post(f"{url}/v1/generate", json={"prompt": "too late"}, timeout=30)
        pipe.gate.set()
        first.join()
        after = httpx.post(f"{url}/v1/generate", json={"prompt": "after"}, timeout=30)  # runs after the drops
        text = httpx.get(f"{url}/metrics").text
    assert timed_out.status_code == 504 and "no answer within 0.5 s" in timed_out.json()["error"]
    assert after.status_code == 200
    assert pipe.calls == [["held"], ["after"]]  # neither dropped job reached the pipeline
    assert "genrt_dropped_jobs_total 2" in text and 'genrt_requests_total{status="499"} 1' in text


def test_imagen_requests_batch_and_match_genrt_run(tmp_path):
    from tests.runtime.tiny.imagen import build_imagen

    folder = build_imagen(tmp_path / "imagen")
    bodies = [{"prompt": "a red cube", "seed": 21, "num_inference_steps": 2},
              {"prompt": "an oil painting of a cat", "seed": 22, "num_inference_steps": 2}]
    with running_server(folder, ServeSettings(max_wait_s=0.05, **CPU)) as (url, pipe):
        answers = queued_behind_one(url, pipe, {"prompt": "warm", "num_inference_steps": 2}, bodies)
    assert [len(call) for call in pipe.calls] == [1, 2]
    for body, answer in zip(bodies, answers):
        assert answer.status_code == 200, answer.text
        expected = cli_image(folder, tmp_path, "--prompt", body["prompt"], "--seed", str(body["seed"]), "--steps", "2")
        np.testing.assert_array_equal(decode_png(answer.json()["images"][0]), expected)
