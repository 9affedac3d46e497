"""`matrix monitor` without a live run: its Prometheus configuration, Ray's targets, the one-line
errors, the dashboard's and provisioning files' validity, and the series the runtime and the sim
export for it (issue #21)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from experiments.monitor.dashboard import (
    DASHBOARD,
    KNOWN_EMPTY,
    NEEDS_GPU,
    PROVISIONING,
    Result,
    load_dashboard,
    problems_of,
    queries,
    validate,
)
from experiments.monitor.prometheus import (
    MonitorError,
    MonitorSettings,
    check_port_free,
    check_session,
    find_prometheus,
    parse_target,
    prepare,
    prometheus_config,
    ray_targets,
    refresh_ray_targets,
)
from matrix.metrics import Metrics, announce_target, withdraw_target
from matrix.runtime.report import PrometheusExporter, gauges_text


@pytest.fixture
def monitor_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "monitor"
    monkeypatch.setenv("MATRIX_MONITOR_DIR", str(folder))
    return folder


def session(tmp_path: Path, *, ports: list[int] = (), discovery: list[dict] | None = None) -> Path:
    d = tmp_path / "session_2026-01-01_00-00-00_000000_1"
    d.mkdir(parents=True)
    for i, port in enumerate(ports):
        (d / f"metrics_export_port_{i:040x}").write_text(str(port))
    if discovery is not None:
        (d / "prom_metrics_service_discovery.json").write_text(json.dumps(discovery))
    return d


# --------------------------------------------------------------------------------- configuration


def test_the_config_scrapes_each_kind_of_target_from_its_files(monitor_folder: Path) -> None:
    settings = MonitorSettings(port=9999, scrape_interval="2s", targets=[("vllm", "127.0.0.1:8001")])
    cfg = yaml.safe_load(yaml.safe_dump(prometheus_config(settings)))
    assert cfg["global"]["scrape_interval"] == "2s"
    jobs = {j["job_name"]: j["file_sd_configs"][0]["files"][0] for j in cfg["scrape_configs"]}
    assert set(jobs) == {"ray", "matrix", "replicas", "vllm"}
    assert jobs["replicas"] == str(monitor_folder / "targets" / "replicas-*.json")
    assert jobs["vllm"].endswith("targets/vllm-*.json")


def test_prepare_writes_the_config_and_the_static_targets(monitor_folder: Path, tmp_path: Path) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = MonitorSettings(port=port, prometheus=str(fake), ray_session="none", targets=[("replicas", "h:1")])
    assert prepare(settings) == str(fake)
    assert (monitor_folder / "prometheus.yml").is_file()
    (static,) = (monitor_folder / "targets").glob("replicas-*.json")
    assert json.loads(static.read_text())[0]["targets"] == ["h:1"]


def test_ray_targets_come_from_rays_discovery_file_else_from_the_sessions_ports(tmp_path: Path) -> None:
    only_ports = session(tmp_path / "a", ports=[41000, 41001])
    assert ray_targets(only_ports) == [
        {"targets": ["127.0.0.1:41000", "127.0.0.1:41001"], "labels": {"ray_session": only_ports.name}}
    ]
    with_file = session(
        tmp_path / "b", ports=[41000], discovery=[{"labels": {"job": "ray"}, "targets": ["10.0.0.2:8080"]}]
    )
    assert ray_targets(with_file)[0]["targets"] == ["10.0.0.2:8080"]  # every node of the cluster, from Ray
    assert ray_targets(session(tmp_path / "c")) is None


def test_the_monitor_follows_the_newest_ray_session(monitor_folder: Path, tmp_path: Path) -> None:
    temp = tmp_path / "ray"
    first = session(temp / "x", ports=[41000])
    settings = MonitorSettings(ray_temp_dir=temp, folder=monitor_folder)
    (monitor_folder / "targets").mkdir(parents=True)
    assert refresh_ray_targets(settings) == []  # no session yet: nothing to scrape, no error
    (temp / "session_latest").symlink_to(first)
    written = refresh_ray_targets(settings)
    assert json.loads((monitor_folder / "targets" / "ray.json").read_text()) == written
    assert written[0]["targets"] == ["127.0.0.1:41000"]


# ------------------------------------------------------------------------------------ bad input


def test_a_missing_binary_says_what_to_install() -> None:
    with pytest.raises(MonitorError, match=r"apt-get install prometheus\) or pass --prometheus PATH"):
        find_prometheus("no-such-prometheus-binary")


def test_a_port_in_use_names_the_flag() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MonitorError, match=rf"port {port} on 127.0.0.1 is in use .*pass --port"):
            check_port_free(port)


def test_a_ray_session_without_metrics_names_the_flag(tmp_path: Path) -> None:
    bare = session(tmp_path)
    with pytest.raises(MonitorError, match=r"has no metrics file .* or pass --ray-session none"):
        check_session(MonitorSettings(ray_session=str(bare)))
    with pytest.raises(MonitorError, match="is not a folder"):
        check_session(MonitorSettings(ray_session=str(tmp_path / "nowhere")))
    check_session(MonitorSettings(ray_session="latest"))  # a run may start its Ray later


@pytest.mark.parametrize("bad", ["127.0.0.1:80", "replicas=", "replicas=host", "replicas=host:port"])
def test_a_bad_target_is_refused(bad: str) -> None:
    with pytest.raises(MonitorError, match="is not JOB=HOST:PORT"):
        parse_target(bad)
    assert parse_target("replicas=127.0.0.1:8001") == ("replicas", "127.0.0.1:8001")


def test_the_command_fails_in_one_line(monitor_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.monitor.__main__ import main

    assert main(["start", "--prometheus", "no-such-prometheus-binary"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("matrix monitor: error: no Prometheus binary")
    assert main(["stop"]) == 1
    assert "no monitor is running" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- dashboard


def test_the_dashboard_has_what_grafana_needs() -> None:
    dashboard = load_dashboard()
    assert validate(dashboard) == []
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"run_id", "role", "datasource"} <= names
    keys = {q.key for q in queries(dashboard)}
    assert set(KNOWN_EMPTY) <= keys and set(NEEDS_GPU) <= keys, "the known-empty lists name real queries"
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("in flight", "admitted", "queue depth", "step latency", "tokens/s per role", "tokens/s per replica",
                  "errors and retries", "replays and actor restarts", "kv-cache", "waiting", "gpu"):  # fmt: skip
        assert topic in titles, topic


def test_validation_finds_what_grafana_would_reject() -> None:
    dashboard = load_dashboard()
    dashboard["panels"][1]["id"] = dashboard["panels"][0]["id"]
    dashboard["panels"][2]["gridPos"] = dict(dashboard["panels"][0]["gridPos"])
    dashboard["panels"][3]["targets"][0]["expr"] += " + $nope"
    del dashboard["panels"][4]["datasource"]
    problems = "\n".join(validate(dashboard))
    for expected in ("used twice", "overlaps", "$nope is not defined", "no 'datasource'"):
        assert expected in problems


def test_the_provisioning_files_point_at_the_dashboard_and_the_monitor() -> None:
    ds = yaml.safe_load((PROVISIONING / "datasources" / "matrix-prometheus.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "matrix-harness.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "${MATRIX_GRAFANA_DASHBOARDS}"
    assert DASHBOARD.parent.name == "dashboards" and DASHBOARD.suffix == ".json"


def test_problems_fail_on_empty_errors_and_stale_known_empty_entries() -> None:
    q = queries(load_dashboard())
    known, plain = q[0], q[1]
    empty_ok = {**KNOWN_EMPTY, known.key: "a reason"}
    assert problems_of([Result(known, 0), Result(plain, 3)], empty_ok) == []
    stale, empty, error = problems_of(
        [Result(known, 2), Result(plain, 0), Result(plain, 0, "bad_data: parse error")], empty_ok
    )
    assert stale.startswith(f"{known.key}: returns series now; take it off the known-empty list")
    assert empty == f"{plain.key}: no series ({plain.promql()})"
    assert error.startswith(f"{plain.key}: error bad_data: parse error")


# ----------------------------------------------------------------------- what the dashboard reads


def test_queue_depth_gauges_carry_the_role_as_a_label() -> None:
    text = gauges_text(
        {"tasks_in_flight": 4, "queue_depth_writer": 2, "queue_depth_critic": 1, "completion_tokens_by_role_critic": 9}
    )
    assert 'matrix_completion_tokens_by_role{role="critic"} 9' in text
    assert 'matrix_queue_depth{role="critic"} 1\nmatrix_queue_depth{role="writer"} 2' in text
    assert text.count("# TYPE matrix_queue_depth gauge") == 1 and "matrix_tasks_in_flight 4" in text


def test_an_agents_llm_call_counts_become_counters_by_reason() -> None:
    m = Metrics()
    calls = {"requests": 5, "retries": 2, "failures": 1, "errors_by_reason": {"connection": 2, "http_400": 1},
             "failures_by_reason": {"http_400": 1}}  # fmt: skip
    for _ in range(2):
        m.merge_snapshot({"counters": {"hops": {"writer": 3}}, "histograms": {}, "llm_calls": calls})
    text = m.to_prometheus()
    assert "matrix_llm_requests 10" in text and "matrix_llm_retries 4" in text
    assert 'matrix_llm_errors{reason="connection"} 4' in text and 'matrix_llm_failures{reason="http_400"} 2' in text
    assert 'matrix_hops{role="writer"} 6' in text


def test_announced_targets_appear_only_while_a_monitor_runs(monitor_folder: Path) -> None:
    assert announce_target("replicas", "127.0.0.1:1") is None  # no monitor: nothing written, no error
    (monitor_folder / "targets").mkdir(parents=True)
    path = announce_target("replicas", "127.0.0.1:1", {"backend": "sim"})
    assert path is not None and path.name.startswith("replicas-")
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:1"], "labels": {"backend": "sim"}}]
    withdraw_target(path)
    assert not path.exists()


def test_the_exporter_announces_itself_and_survives_a_busy_port(
    monitor_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (monitor_folder / "targets").mkdir(parents=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        exporter = PrometheusExporter("127.0.0.1", port, labels={"run_id": "r1"})
    try:
        assert exporter.port != port
        assert f"prometheus_port {port} on 127.0.0.1 is not free" in capsys.readouterr().err
        (target,) = (monitor_folder / "targets").glob("matrix-*.json")
        assert json.loads(target.read_text()) == [
            {"targets": [f"127.0.0.1:{exporter.port}"], "labels": {"run_id": "r1"}}
        ]
        exporter.update("matrix_tasks_in_flight 3\n")
        with urllib.request.urlopen(exporter.url, timeout=5) as resp:
            assert resp.read() == b"matrix_tasks_in_flight 3\n"
    finally:
        exporter.stop()
    assert not list((monitor_folder / "targets").glob("matrix-*.json"))


def test_a_sim_replica_exports_vllm_names_and_announces_itself(monitor_folder: Path) -> None:
    from matrix.llm.sim.engine import SimEngine
    from matrix.llm.sim.server import start_server

    (monitor_folder / "targets").mkdir(parents=True)

    async def main() -> tuple[str, list[Any]]:
        runner, url = await start_server(SimEngine("a100-llama31-8b", model_name="m"))
        try:
            announced = [json.loads(f.read_text()) for f in (monitor_folder / "targets").glob("replicas-*.json")]
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url[:-3] + "/metrics", timeout=5).read())
            return text.decode(), announced
        finally:
            await runner.cleanup()

    text, announced = asyncio.run(main())
    (doc,) = announced
    assert doc[0]["labels"] == {"backend": "sim", "model_name": "m", "simulated": "true"}
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket"):  # fmt: skip
        line = next(ln for ln in text.splitlines() if ln.startswith(name + "{"))
        assert 'model_name="m"' in line and 'simulated="true"' in line, line
    assert not list((monitor_folder / "targets").glob("replicas-*.json")), "withdrawn when the server stops"


# ------------------------------------------------------------------------------------- SLURM hook


def test_the_cluster_config_can_ask_the_head_to_start_the_monitor(tmp_path: Path) -> None:
    from slurm.cluster import RaySpec
    from slurm.settings import SlurmSettings

    settings = SlurmSettings(cluster="c", partition="debug", time_min=10)
    assert RaySpec.from_config({"port": 6390, "monitor_port": 9091}, settings).monitor_port == 9091
    assert RaySpec.from_config({"port": 6390}, settings).monitor_port is None


def test_a_head_whose_monitor_cannot_start_goes_on_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from slurm.cluster import RaySpec, start_monitor, stop_monitor

    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus binary on it
    assert start_monitor(tmp_path, RaySpec()) is False  # not asked: nothing runs
    assert start_monitor(tmp_path, RaySpec(monitor_port=free_port())) is False
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("ray head: monitoring not started (matrix monitor: error: no Prometheus binary")
    assert line.endswith("apt-get install prometheus) or pass --prometheus PATH); the cluster runs without it")
    stop_monitor(tmp_path, False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
