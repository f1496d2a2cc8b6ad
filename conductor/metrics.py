"""Prometheus metrics from the conductor: VMs by state, bytes converted, stage durations."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from conductor.driver import VMView


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.vms = Gauge("h2k_vms", "VMs by wave and state", ["wave", "state"], registry=self.registry)
        self.bytes = Counter("h2k_bytes_converted_total", "bytes written by finished convert stages", ["host"],
                             registry=self.registry)
        self.stage = Histogram("h2k_stage_seconds", "duration of finished stages", ["stage"], registry=self.registry,
                               buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200))
        self._seen: set[tuple] = set()
        self._observed: dict[tuple[str, str], tuple[VMView, str]] = {}  # the view last counted, and its state
        self._states: set[tuple[str, str]] = set()

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def observe(self, wave: str, views: list[VMView]) -> None:
        counts: dict[str, int] = {}
        for v in views:
            last, status = self._observed.get((wave, v.pvm.vm.name), (None, ""))
            if last is v:  # the driver kept it: nothing of this VM moved since
                counts[status] = counts.get(status, 0) + 1
                continue
            self._observed[(wave, v.pvm.vm.name)] = (v, v.status)
            counts[v.status] = counts.get(v.status, 0) + 1
            for (lane, stage), rec in v.records.items():
                if rec.get("status") != "succeeded" or not rec.get("ended"):
                    continue
                key = (wave, v.pvm.vm.name, lane, stage, rec.get("gen"))
                if key in self._seen:
                    continue
                self._seen.add(key)
                self.stage.labels(stage).observe(float(rec["ended"]) - float(rec.get("started") or rec["ended"]))
                if stage == "convert":
                    self.bytes.labels(v.pvm.host).inc(int(rec.get("bytes") or 0))
        for state in {s for (w, s) in self._states if w == wave} - set(counts):
            self.vms.labels(wave, state).set(0)
        for state, n in counts.items():
            self.vms.labels(wave, state).set(n)
            self._states.add((wave, state))
