"""The console's own settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import SERVICE_PORTS, ConfigError, env_bool, env_choice, env_int

# The simulated district's road network (roadside_sim/district/, built with SUMO): the map draws its lanes. Read as
# a file, never imported: the console depends on no other package's code.
DISTRICT_NET = Path(__file__).resolve().parents[2] / "roadside_sim" / "district" / "district.net.xml"
BACKENDS = ("idps", "parking", "charging", "roadside", "municipal")
SESSION_STORES = ("redis", "memory")
# What the probes ask (infra/k8s/base/console.yaml; `make k8s-check` holds the manifests to it).
HEALTH_PATH = "/healthz"


@dataclass(frozen=True)
class ConsoleSettings:
    port: int = 8080
    # host:port of each service the console calls (default: this host, the service's port).
    targets: Mapping[str, str] = field(default_factory=lambda: {n: f"127.0.0.1:{SERVICE_PORTS[n]}" for n in BACKENDS})
    # How long a sign-in lasts (the cookie's Max-Age, and the server forgets the session then).
    session_ttl_s: int = 8 * 3600
    # The Secure flag on the session cookie: on when the console is served over HTTPS (a TLS front).
    secure_cookie: bool = False
    # Where sign-ins live (services/console/sessions.py): "redis" (REDIS_URL; every replica knows every session) or
    # "memory" (this process only: one replica, and a restart signs everyone out).
    sessions: str = "redis"
    # The key the public page (no sign-in) queries parking and charging with: a driver key, which sees no plates.
    # Empty: the public page says it is not configured.
    public_key: str = ""
    # The SUMO net whose lanes the map draws; empty: no lanes.
    district_net: str = str(DISTRICT_NET)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConsoleSettings:
        d = cls()
        targets = {}
        for name in BACKENDS:
            port = env_int(env, f"V2X_{name.upper()}_PORT", SERVICE_PORTS[name], 1, 65535)
            target = env.get(f"V2X_CONSOLE_{name.upper()}_TARGET") or f"127.0.0.1:{port}"
            if ":" not in target:
                raise ConfigError(f"V2X_CONSOLE_{name.upper()}_TARGET must be host:port, not {target!r}")
            targets[name] = target
        public_key = env.get("V2X_CONSOLE_PUBLIC_KEY", "").strip()
        if public_key and not public_key.startswith("v2x_"):
            raise ConfigError("V2X_CONSOLE_PUBLIC_KEY must be an API key (v2x_<id>_<secret>), a driver's")
        net = env.get("V2X_CONSOLE_DISTRICT_NET", d.district_net)
        if net and not Path(net).is_file():
            raise ConfigError(f"V2X_CONSOLE_DISTRICT_NET: no file {net}")
        return cls(port=env_int(env, "V2X_CONSOLE_PORT", d.port, 0, 65535), targets=targets,
                   session_ttl_s=env_int(env, "V2X_CONSOLE_SESSION_TTL_S", d.session_ttl_s, 60, 7 * 86400),
                   secure_cookie=env_bool(env, "V2X_CONSOLE_SECURE_COOKIE", d.secure_cookie),
                   sessions=env_choice(env, "V2X_CONSOLE_SESSIONS", d.sessions, SESSION_STORES),
                   public_key=public_key, district_net=net)


def require_session_redis(console: ConsoleSettings, redis_url: str | None) -> None:
    """Sessions in Redis need REDIS_URL (`v2x console` at start, and `make k8s-check` on the manifests)."""
    if console.sessions == "redis" and not redis_url:
        raise ConfigError("REDIS_URL is not set: the console keeps its sessions in Redis (V2X_CONSOLE_SESSIONS=redis, "
                          "the default); V2X_CONSOLE_SESSIONS=memory keeps them in a single console process")
