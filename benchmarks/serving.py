"""Serving benchmark: RadAssist's model server vs. the same SavedModel called in-process.

Measures latency (p50/p99) at batch 1 and throughput at 1, 4 and 16 concurrent clients, with and without
server-side batching; the machine's matrix-multiply rate beside VGG16's 15.5 GMAC per 224 px image (the
physical floor); and the server's peak resident memory with one version loaded and during a version switch.
Usage: python -m benchmarks.serving --model-base outputs/models [--seconds 20]
"""

import argparse
import glob
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import tensorflow as tf

from benchmarks import write_result
from radassist.contract import Signature
from radassist.stack import ModelServerProcess
from serving.client import ServingClient

VGG16_GMAC = 15.5
RESULTS = os.path.join(os.path.dirname(__file__), "results", "serving.json")


def matmul_gflops(size: int = 4096, repeats: int = 5) -> dict:
    """float32 matrix-multiply rate of TensorFlow and of NumPy's BLAS; the faster is the machine's figure."""
    rates = {}
    a, b = tf.random.normal([size, size]), tf.random.normal([size, size])
    x, y = a.numpy(), b.numpy()
    for name, multiply in (("tensorflow", lambda: tf.linalg.matmul(a, b).numpy()), ("numpy", lambda: x @ y)):
        multiply()
        started = time.perf_counter()
        for _ in range(repeats):
            multiply()
        rates[name] = 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9
    return rates


def percentiles(samples: list[float]) -> dict:
    values = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)), "n": len(values)}


def in_process(model_dir: str, image: bytes, seconds: float) -> dict:
    model = tf.saved_model.load(model_dir)
    predict = model.signatures[Signature.PREDICT_IMAGE]
    single = tf.constant([image])
    for _ in range(3):
        predict(images=single)
    latencies, deadline = [], time.time() + seconds
    while time.time() < deadline:
        started = time.perf_counter()
        predict(images=single)
        latencies.append(time.perf_counter() - started)
    batch = tf.constant([image] * 16)
    predict(images=batch)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predict(images=batch)
        count += 16
    return {"batch1": percentiles(latencies), "batch16_images_per_second": count / (time.perf_counter() - started)}


class Server(ModelServerProcess):
    """`radassist serve` with or without batching, its resident memory sampled on request."""

    def __init__(self, base: str, batching: bool):
        flag = "--enable-batching" if batching else "--no-enable-batching"
        super().__init__(base, flag, "--max-batch-size", "16",
                         log_path=os.path.join(os.path.dirname(base), f"serve-{int(batching)}.log"))
        self.peak_rss = 0
        self.start()
        self.rss()

    def rss(self) -> int:
        value = psutil.Process(self.process.pid).memory_info().rss
        self.peak_rss = max(self.peak_rss, value)
        return value


def client_load(address: str, image: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads calling Predict back to back for ``seconds`` after a common warm-up.

    Throughput counts the requests completed after every client's warm-up (a barrier) up to the last completion
    inside the window, divided by that span, so neither warm-up nor the tail after the window is counted (with
    16 clients a batch takes seconds, and counting those would understate the rate by a batch or two).
    """
    latencies, finished, lock = [], [], threading.Lock()
    barrier = threading.Barrier(clients + 1)
    window = {}

    def worker():
        with ServingClient(address, timeout=120) as client:
            client.predict([image])
            barrier.wait()
            while time.perf_counter() < window["end"]:
                started = time.perf_counter()
                client.predict([image])
                done = time.perf_counter()
                with lock:
                    latencies.append(done - started)
                    finished.append(done)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    window["start"] = time.perf_counter()
    window["end"] = window["start"] + seconds + 60  # until every client passed the barrier
    barrier.wait()
    window["start"] = time.perf_counter()
    window["end"] = window["start"] + seconds
    for thread in threads:
        thread.join()
    inside = sorted(t for t in finished if t <= window["end"])
    rate = len(inside) / (inside[-1] - window["start"]) if inside else 0.0
    return {"clients": clients, "images_per_second": rate, "completed_in_window": len(inside), **percentiles(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", default=os.path.join("outputs", "models"))
    parser.add_argument("--model-name", default="radassist")
    parser.add_argument("--image", help="an encoded scan to send (default: first sample test image)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    versions = sorted(glob.glob(os.path.join(args.model_base, args.model_name, "[0-9]*")), key=lambda p: int(
        os.path.basename(p)))
    if not versions:
        sys.exit(f"no model under {args.model_base}/{args.model_name}: run `make run` first")
    image_path = args.image or sorted(glob.glob("data/sample/chest-ct/test/adenocarcinoma/*.png"))[0]
    image = pathlib.Path(image_path).read_bytes()
    scratch = tempfile.mkdtemp(prefix="radassist-bench-")
    base = os.path.join(scratch, "models")
    shutil.copytree(versions[-1], os.path.join(base, args.model_name, "1"))

    rates = matmul_gflops()
    rate = max(rates.values())
    result = {"benchmark": "serving", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "matmul_gflops": rates, "vgg16_floor_ms": 2 * VGG16_GMAC / rate * 1000,
              "in_process": in_process(os.path.join(base, args.model_name, "1"), image, args.seconds)}
    print(f"matmul {rate:.0f} GFLOP/s -> VGG16 floor {result['vgg16_floor_ms']:.0f} ms/image; in-process batch 1 "
          f"p50 {result['in_process']['batch1']['p50_ms']:.0f} ms, batch 16 "
          f"{result['in_process']['batch16_images_per_second']:.2f} img/s", flush=True)
    for batching in (False, True):
        server = Server(base, batching)
        address = server.address
        runs = [client_load(address, image, n, args.seconds) for n in (1, 4, 16)]
        key = "server_batching" if batching else "server_no_batching"
        result[key] = {"runs": runs, "rss_loaded_mb": server.rss() / 2**20}
        if batching:  # memory during a version switch: push version 2 and sample RSS until it serves
            shutil.copytree(os.path.join(base, args.model_name, "1"), os.path.join(base, args.model_name, "2"))
            deadline = time.time() + 120
            with ServingClient(address) as client:
                while time.time() < deadline and client.predict([image])[0].model_version != 2:
                    server.rss()
                    time.sleep(0.05)
            for _ in range(40):
                server.rss()
                time.sleep(0.05)
            result[key]["rss_peak_during_switch_mb"] = server.peak_rss / 2**20
        server.stop()
        for run in runs:
            print(f"{key:<20} clients {run['clients']:>2}: {run['images_per_second']:.2f} img/s, p50 "
                  f"{run['p50_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms", flush=True)
    single = result["server_no_batching"]["runs"][0]["p50_ms"]
    result["overhead_batch1_percent"] = 100 * (single / result["in_process"]["batch1"]["p50_ms"] - 1)
    result["batched_16_clients_vs_in_process"] = (result["server_batching"]["runs"][2]["images_per_second"]
                                                  / result["in_process"]["batch16_images_per_second"])
    print(f"overhead at batch 1: {result['overhead_batch1_percent']:.1f}%  (target <= 5%)\n"
          f"16 clients batched / in-process batched: {result['batched_16_clients_vs_in_process']:.2f} (target >= 0.9)\n"
          f"RSS loaded {result['server_batching']['rss_loaded_mb']:.0f} MB, peak during switch "
          f"{result['server_batching']['rss_peak_during_switch_mb']:.0f} MB")
    shutil.rmtree(scratch, ignore_errors=True)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
