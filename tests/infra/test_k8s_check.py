"""`make k8s-check` (infra/k8s_check.py) as `make test` runs it: every overlay renders and validates, and a broken
manifest, a dangling reference or a setting the suite refuses makes it fail with a message naming what is wrong."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "infra" / "k8s_check.py"
OVERLAYS = ("dev", "district", "city")


def run_check(*overlays: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), *map(str, overlays)], capture_output=True, text=True,
                          timeout=170, check=False)


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    """A copy of infra/k8s that a test may break."""
    return Path(shutil.copytree(REPO / "infra" / "k8s", tmp_path / "k8s"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.slow  # kubectl renders every overlay and each is validated against the schemas: ~11 s
def test_every_overlay_renders_and_validates_against_the_kubernetes_schemas() -> None:
    out = run_check()
    assert out.returncode == 0, out.stdout + out.stderr
    for overlay in OVERLAYS:
        assert f"overlays/{overlay}: renders and validates" in out.stdout, out.stdout


def test_a_field_the_kubernetes_api_does_not_know_fails_with_the_schema_message(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "parking.yaml", "              service: v2x.parking.v1.ParkingService\n",
         "              service: v2x.parking.v1.ParkingService\n              portt: 50053\n")
    out = run_check(k8s_copy / "overlays" / "district")
    assert out.returncode == 1
    assert ("Deployment/parking: spec.template.spec.containers.0.readinessProbe.grpc: Additional properties are not "
            "allowed ('portt' was unexpected)") in out.stdout, out.stdout


def test_a_value_of_the_wrong_type_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "municipal.yaml", "  replicas: 2\n", "  replicas: two\n")
    out = run_check(k8s_copy / "overlays" / "city")
    assert out.returncode == 1
    assert "Deployment/municipal: spec.replicas: 'two' is not of type 'integer'" in out.stdout, out.stdout


def test_an_autoscaler_of_a_deployment_that_is_not_there_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "charging.yaml", "    kind: Deployment\n    name: charging\n",
         "    kind: Deployment\n    name: chargers\n")
    out = run_check(k8s_copy / "overlays" / "dev")
    assert out.returncode == 1
    assert "HorizontalPodAutoscaler/charging: scales Deployment/chargers, which is not rendered" in out.stdout


def test_a_setting_the_suite_refuses_fails_with_the_suites_own_message(k8s_copy: Path) -> None:
    edit(k8s_copy / "overlays" / "district" / "settings.env", "V2X_ROADSIDE_PARKING_TARGET=parking:50053",
         "V2X_ROADSIDE_PARKING_TARGET=parking")
    out = run_check(k8s_copy / "overlays" / "district")
    assert out.returncode == 1
    assert ("Deployment/roadside: the suite refuses its settings: V2X_ROADSIDE_PARKING_TARGET must be host:port, "
            "not 'parking'") in out.stdout, out.stdout


def test_a_manifest_that_does_not_render_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "kustomization.yaml", "  - ocpp.yaml\n", "  - ocpp.yaml\n  - missing.yaml\n")
    out = run_check(k8s_copy / "overlays" / "dev")
    assert out.returncode == 1
    assert "does not render" in out.stdout and "missing.yaml" in out.stdout, out.stdout


def test_a_service_container_without_the_grpc_health_probe_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "idps.yaml", "          livenessProbe:\n            grpc:\n              port: 50052\n",
         "          livenessProbe:\n            tcpSocket:\n              port: 50052\n")
    out = run_check(k8s_copy / "overlays" / "dev")
    assert out.returncode == 1
    assert "Deployment/idps: livenessProbe is not the standard gRPC health probe" in out.stdout, out.stdout


def test_a_grace_period_longer_than_the_pods_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "settings.env", "V2X_GRACE_S=20", "V2X_GRACE_S=30")
    out = run_check(k8s_copy / "overlays" / "city")
    assert out.returncode == 1
    assert ("Deployment/charging: terminationGracePeriodSeconds 30 leaves no time after the preStop pause (5 s) and "
            "V2X_GRACE_S (30 s)") in out.stdout, out.stdout


def test_the_console_is_held_to_http_probes_of_its_health_path(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "console.yaml",
         "          readinessProbe:\n            httpGet:\n              path: /healthz\n              port: http\n",
         "          readinessProbe:\n            grpc:\n              port: 8080\n")
    edit(k8s_copy / "base" / "console.yaml",
         "          livenessProbe:\n            httpGet:\n              path: /healthz\n              port: http\n",
         "          livenessProbe:\n            httpGet:\n              path: /healthz\n              port: 9999\n")
    out = run_check(k8s_copy / "overlays" / "dev")
    assert out.returncode == 1
    assert "Deployment/console: readinessProbe is not an HTTP GET of the console's /healthz" in out.stdout, out.stdout
    assert "Deployment/console: livenessProbe checks port 9999, which the container does not declare" in out.stdout
    assert "Deployment/console: startupProbe" not in out.stdout, out.stdout


def test_a_console_setting_the_console_refuses_fails_with_its_own_message(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "console.yaml", "              value: parking:50053\n", "              value: parking\n")
    out = run_check(k8s_copy / "overlays" / "district")
    assert out.returncode == 1
    assert ("Deployment/console: the console refuses its settings: V2X_CONSOLE_PARKING_TARGET must be host:port, "
            "not 'parking'") in out.stdout, out.stdout


def test_a_console_port_the_container_does_not_declare_fails(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "console.yaml", '              value: "8080"\n', '              value: "8081"\n')
    out = run_check(k8s_copy / "overlays" / "city")
    assert out.returncode == 1
    assert ("Deployment/console: the console listens on V2X_CONSOLE_PORT 8081, which the container does not declare"
            in out.stdout), out.stdout


def test_console_sessions_in_memory_fail_where_there_may_be_more_than_one_pod(k8s_copy: Path) -> None:
    edit(k8s_copy / "base" / "console.yaml", "              value: redis\n", "              value: memory\n")
    out = run_check(k8s_copy / "overlays" / "district")
    assert out.returncode == 1
    assert ("Deployment/console: up to 4 pods with V2X_CONSOLE_SESSIONS=memory: each pod knows only its own sign-ins"
            in out.stdout), out.stdout
