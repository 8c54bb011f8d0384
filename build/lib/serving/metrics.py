"""Prometheus metrics of the model server (one registry per server, so tests can run several)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("radassist_serving_requests", "Inference requests", ["model", "signature", "code"],
                                registry=self.registry)
        self.latency = Histogram("radassist_serving_request_latency_seconds", "Request latency",
                                 ["model", "signature"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("radassist_serving_batch_size", "Examples per executed batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.loaded = Gauge("radassist_serving_loaded_version", "1 for each loaded model version",
                            ["model", "version"], registry=self.registry)

    def observe(self, model: str, signature: str, code: str, seconds: float) -> None:
        self.requests.labels(model, signature, code).inc()
        if code == "OK":
            self.latency.labels(model, signature).observe(seconds)

    def set_loaded(self, loaded: dict[str, list[int]]) -> None:
        self.loaded.clear()
        for model, versions in loaded.items():
            for version in versions:
                self.loaded.labels(model, str(version)).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
