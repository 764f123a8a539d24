"""A stateful fake of the Vast.ai REST API on 127.0.0.1, for driving the real ``vastai`` SDK in tests.

Routes and fault knobs follow ``../shared/reference/vast.md`` §1.5 and §5.3. It keeps offers, instances,
attached SSH keys and a request log (method, path, decoded query, JSON body, whether the Bearer key was
right; the key itself is never stored). Instances move ``null -> loading -> running`` one step per read
(``GET /instances/{id}/`` or the v1 list), and when running point their SSH coordinates at ``ssh_port`` on
127.0.0.1, where a test runs a real listener (``BannerServer`` or sshd).

    with VastFake(api_key="k-test-123456", ssh_port=banner.port) as fake:
        fake.add_offer(1001, gpu_name="RTX 3060", num_gpus=2, dph_base=0.20)
        fake.faults.offer_gone.add(1001)
        VastAI(api_key="k-test-123456", server_url=fake.url).create_instance(1001, image="x")  # HTTPError 404

Run it by hand: ``python tests/fakes/vast_server.py`` (prints the URL; serves three sample offers).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

NGINX_502 = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
             "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
NGINX_504 = NGINX_502.replace("502 Bad Gateway", "504 Gateway Time-out")

OCI_ERROR = (
    "Error response from daemon: failed to create task for container: OCI runtime create failed: "
    "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.8, please update your driver"
)


@dataclass
class Failure:
    """Answer the next ``count`` requests matching ``method`` and ``prefix`` with ``status`` and ``body``
    (``count=None``: until the test clears it). The request is NOT carried out."""

    method: str
    prefix: str
    status: int = 502
    body: Any = NGINX_502
    count: int | None = 1


@dataclass
class Faults:
    """Per-test fault knobs. Offer-keyed sets apply to the instance created from that offer."""

    offer_gone: set[int] = field(default_factory=set)  # create -> 404 no_such_ask (nothing created)
    offer_gone_410: set[int] = field(default_factory=set)  # create -> 410 no_such_ask
    create_error_with_contract: set[int] = field(default_factory=set)  # 400 invalid_price + new_contract
    create_hang_s: dict[int, float] = field(default_factory=dict)  # instance created, answer delayed
    loading_ticks: dict[int, int | None] = field(default_factory=dict)  # reads spent loading; None: forever
    oci_error: set[int] = field(default_factory=set)  # loading -> created + OCI error in status_msg
    exited: set[int] = field(default_factory=set)  # loading -> exited
    lost: set[int] = field(default_factory=set)  # loading -> unknown (no host heartbeat)
    outbid: set[int] = field(default_factory=set)  # everything "stopped"
    mid_run: dict[int, str] = field(default_factory=dict)  # a running instance turns "exited" or "unknown" (offline)
    proxy_only: set[int] = field(default_factory=set)  # no 22/tcp in ports: only ssh_host:ssh_port
    whitespace_ip: bool = True  # public_ipaddr comes with a trailing newline, as seen on Vast
    rate_limit_next: int = 0  # the next N API requests answer 429 (no Retry-After)
    unavailable_next: int = 0  # the next N API requests answer 503
    destroy_fails: set[int] = field(default_factory=set)  # DELETE of these instance ids -> 500
    bad_key: bool = False  # every request -> 404 auth_error
    create_then_error: dict[int, tuple[int, Any]] = field(default_factory=dict)  # instance made, answer = error
    failures: list[Failure] = field(default_factory=list)  # scripted 429/5xx on matching requests


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, Any]
    body: Any
    auth: str  # "ok", "missing" or "bad" -- never the key
    status: int = 0


def sample_offer(offer_id: int, **over: Any) -> dict[str, Any]:
    """An offer row with the documented field names and units (vast.md §4.2)."""
    num = int(over.pop("num_gpus", 1))
    gpu_ram = float(over.pop("gpu_ram", 12288))
    row: dict[str, Any] = {
        "id": offer_id, "ask_contract_id": offer_id, "bundle_id": offer_id * 10, "machine_id": offer_id + 50000,
        "host_id": 187212, "public_ipaddr": "127.0.0.1", "num_gpus": num, "gpu_name": "RTX 3060",
        "gpu_arch": "nvidia", "gpu_ram": gpu_ram, "gpu_total_ram": gpu_ram * num, "gpu_frac": 1.0,
        "compute_cap": 860, "cuda_max_good": 12.8, "driver_version": "550.127.05", "driver_vers": 550127005,
        "cpu_name": "AMD Ryzen 9 5950X", "cpu_arch": "amd64", "cpu_cores": 32, "cpu_cores_effective": 16.0,
        "cpu_ram": 64218.0, "disk_space": 400.0, "inet_up": 600.0, "inet_down": 850.0, "direct_port_count": 99,
        "pcie_bw": 24.3, "pci_gen": 4.0, "gpu_lanes": 16, "disk_bw": 3120.5, "dlperf": 18.7,
        "reliability": 0.995, "reliability2": 0.995, "verification": "verified", "rentable": True,
        "rented": False, "external": False, "hosting_type": 0, "geolocation": "Ontario, CA",
        "dph_base": 0.20, "storage_cost": 0.10, "min_bid": 0.08, "is_bid": False, "score": 100.0,
        "start_date": time.time() - 86400, "end_date": time.time() + 30 * 86400, "duration": 30 * 86400.0,
    }
    row.update(over)
    row["gpu_total_ram"] = row["gpu_ram"] * row["num_gpus"]
    return row


def _coerce(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _compare(op: str, a: Any, b: Any) -> bool:
    if op in ("in", "notin", "nin"):
        inside = a in [_coerce(x) for x in b]
        return inside if op == "in" else not inside
    return {"eq": a == b, "neq": a != b}[op] if op in ("eq", "neq") else {
        "gt": lambda: a > b, "gte": lambda: a >= b, "lt": lambda: a < b, "lte": lambda: a <= b}[op]()


def _match(value: Any, ops: Any) -> bool:
    if not isinstance(ops, dict):
        ops = {"eq": ops}
    for op, want in ops.items():
        try:
            if not _compare(op, _coerce(value), _coerce(want)):
                return False
        except (KeyError, TypeError):
            return False
    return True


class VastFake:
    """The fake server. Use as a context manager; ``url`` is its base URL."""

    def __init__(self, api_key: str, *, ssh_port: int = 1, default_loading_ticks: int = 1,
                 authorized_keys: Path | None = None) -> None:
        self._key_digest = hashlib.sha256(api_key.encode()).hexdigest()
        self.ssh_port = ssh_port
        self.authorized_keys = authorized_keys  # attached keys are installed here, as Vast does in the container
        self.default_loading_ticks = default_loading_ticks
        self.faults = Faults()
        self.offers: dict[int, dict[str, Any]] = {}
        self.instances: dict[int, dict[str, Any]] = {}
        self.destroyed: dict[int, dict[str, Any]] = {}
        self.ssh_keys: dict[int, list[str]] = {}
        self.log: list[LoggedRequest] = []
        self.results: dict[str, str] = {}
        self._next_instance = 31337001
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> VastFake:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="vast-fake",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)  # type: ignore[union-attr]
            self._server = None

    def __enter__(self) -> VastFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------------ setup and inspection
    def add_offer(self, offer_id: int, **over: Any) -> dict[str, Any]:
        row = sample_offer(offer_id, **over)
        with self.lock:
            self.offers[offer_id] = row
        return row

    def requests(self, method: str | None = None, prefix: str = "") -> list[LoggedRequest]:
        with self.lock:
            return [r for r in self.log if (method is None or r.method == method) and r.path.startswith(prefix)]

    def creates(self) -> list[LoggedRequest]:
        return self.requests("PUT", "/api/v0/asks/")

    def deletes(self) -> list[LoggedRequest]:
        return self.requests("DELETE", "/api/v0/instances/")

    def unknown_to(self, registry: Any) -> list[int]:
        """Live instances the registry does not list as live: what a user would pay for without seeing it."""
        known = {r.instance_id for r in registry.cloud.instances(active_only=True, provider="vast")}
        return [i["id"] for i in self.live() if str(i["id"]) not in known]

    def duplicates(self) -> list[str]:
        """Labels carried by more than one live instance."""
        labels = [i.get("label") for i in self.live()]
        return sorted({lb for lb in labels if lb and labels.count(lb) > 1})

    def live(self) -> list[dict[str, Any]]:
        """Instances that exist (and bill) right now."""
        with self.lock:
            return list(self.instances.values())

    # ------------------------------------------------------------------ state machine
    def _new_instance(self, offer: dict[str, Any], body: dict[str, Any], *, stopped: bool = False) -> dict:
        iid = self._next_instance
        self._next_instance += 1
        env = body.get("env") or {}
        inst = {
            "id": iid, "machine_id": offer["machine_id"], "host_id": offer["host_id"], "offer_id": offer["id"],
            "actual_status": "stopped" if stopped else None, "intended_status": "stopped" if stopped else "running",
            "cur_state": "stopped" if stopped else "running", "next_state": "stopped" if stopped else "running",
            "status_msg": None, "label": body.get("label"), "image_uuid": body.get("image"),
            "image_runtype": body.get("runtype") or "ssh", "onstart": body.get("onstart"),
            "extra_env": [[k, v] for k, v in env.items()], "start_date": time.time(),
            "num_gpus": offer["num_gpus"], "gpu_name": offer["gpu_name"], "gpu_ram": offer["gpu_ram"],
            "cpu_cores_effective": offer["cpu_cores_effective"], "cpu_ram": offer["cpu_ram"],
            "disk_space": body.get("disk"), "dph_total": offer["dph_base"], "cuda_max_good": offer["cuda_max_good"],
            "ssh_host": None, "ssh_port": None, "ssh_idx": "5", "public_ipaddr": None, "ports": None,
            "direct_port_count": offer["direct_port_count"], "is_bid": body.get("price") is not None,
            "_reads": 0,
        }
        self.instances[iid] = inst
        offer["rented"] = True
        return inst

    def _advance(self, inst: dict[str, Any]) -> None:
        """One read = one step of the state machine."""
        f, off = self.faults, inst["offer_id"]
        inst["_reads"] += 1
        reads = inst["_reads"]
        if inst["cur_state"] == "stopped" or off in f.outbid:
            inst.update(actual_status="stopped", intended_status="stopped", cur_state="stopped", next_state="stopped")
            return
        if inst["actual_status"] == "running" and off in f.mid_run:
            msg = {"exited": "container exited with code 137"}.get(f.mid_run[off])
            inst.update(actual_status=f.mid_run[off], status_msg=msg)
        if inst["actual_status"] in ("running", "exited", "created", "unknown"):
            return
        loading = f.loading_ticks.get(off, self.default_loading_ticks)
        if reads <= 1:
            inst.update(actual_status=None, status_msg="scheduling")
        elif loading is None or reads <= 1 + loading:
            inst.update(actual_status="loading", status_msg="Downloading [=====>    ] 1.9GB/4.4GB")
        elif off in f.oci_error:
            inst.update(actual_status="created", status_msg=OCI_ERROR)
        elif off in f.exited:
            inst.update(actual_status="exited", status_msg="container exited with code 1")
        elif off in f.lost:
            inst.update(actual_status="unknown", status_msg=None)
        else:
            port = str(self.ssh_port)
            ports = {"29500/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41023"}]}
            if off not in f.proxy_only:
                ports["22/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": port}]
            inst.update(
                actual_status="running", status_msg="success, running", ssh_host="127.0.0.1",
                ssh_port=self.ssh_port, public_ipaddr="127.0.0.1\n" if f.whitespace_ip else "127.0.0.1",
                ports=ports,
            )

    @staticmethod
    def _public(inst: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in inst.items() if not k.startswith("_")}

    # ------------------------------------------------------------------ routing
    def handle(self, method: str, path: str, query: dict[str, Any], body: Any, auth: str) -> tuple[int, Any]:
        f = self.faults
        if path.startswith("/_results/"):
            text = self.results.get(path.rsplit("/", 1)[-1])
            return (200, text) if text is not None else (404, {"error": "not ready"})
        if auth.startswith("container-"):  # Vast's instance-scoped key: only its own instance's state
            iid_s = auth.removeprefix("container-")
            if not (method == "PUT" and path == f"/api/v0/instances/{iid_s}/" and set(body or {}) == {"state"}):
                return 404, {"success": False, "error": "auth_error", "msg": "Invalid user key"}
        elif f.bad_key or auth == "bad" or (auth == "missing" and path != "/api/v0/bundles/"):
            return 404, {"success": False, "error": "auth_error", "msg": "Invalid user key"}
        if f.rate_limit_next > 0:
            f.rate_limit_next -= 1
            return 429, "API requests too frequent: endpoint threshold=2.0"
        if f.unavailable_next > 0:
            f.unavailable_next -= 1
            return 503, {"error": "service unavailable"}
        for rule in f.failures:
            if rule.method == method and path.startswith(rule.prefix) and (rule.count is None or rule.count > 0):
                if rule.count is not None:
                    rule.count -= 1
                return rule.status, rule.body
        parts = [p for p in path.split("/") if p]
        if method == "POST" and path == "/api/v0/bundles/":
            return 200, {"offers": self._search(body or {})}
        if method == "PUT" and parts[:3] == ["api", "v0", "asks"] and len(parts) == 4:
            return self._create(int(parts[3]), body or {})
        if method == "GET" and path == "/api/v0/instances/":
            return 410, {"success": False, "error": "deprecated_endpoint",
                         "msg": "/api/v0/instances/ is deprecated. Use /api/v1/instances/ instead."}
        if method == "GET" and path == "/api/v1/instances/":
            return self._list(query)
        if parts[:3] == ["api", "v0", "instances"] and len(parts) >= 4:
            if parts[3] in ("request_logs", "command") and method == "PUT":
                token = hashlib.sha1(f"{parts[4]}{time.time()}".encode()).hexdigest()[:12]
                self.results[token] = f"fake log for instance {parts[4]}\n"
                return 200, {"success": True, "result_url": f"{self.url}/_results/{token}", "msg": "ok"}
            if parts[3] == "bid_price" and method == "PUT":
                return 200, {"success": True}
            iid = int(parts[3])
            if len(parts) == 5 and parts[4] == "ssh" and method == "POST":
                if iid not in self.instances:
                    return 404, {"success": False, "error": "no_such_instance", "msg": f"no instance {iid}"}
                key = (body or {}).get("ssh_key", "")
                self.ssh_keys.setdefault(iid, []).append(key)
                if self.authorized_keys is not None:
                    with self.authorized_keys.open("a") as f:
                        f.write(key.strip() + "\n")
                return 200, {"success": True, "msg": "SSH key attached successfully"}
            if method == "GET":
                inst = self.instances.get(iid)
                if inst is None:
                    return 200, {"instances": None}
                self._advance(inst)
                return 200, {"instances": self._public(inst)}
            if method == "PUT":
                inst = self.instances.get(iid)
                if inst is None:
                    return 404, {"success": False, "error": "no_such_instance", "msg": f"no instance {iid}"}
                if "label" in (body or {}):
                    inst["label"] = body["label"]
                if "state" in (body or {}):
                    st = body["state"]
                    inst.update(intended_status=st, cur_state=st, next_state=st, actual_status=st)
                return 200, {"success": True}
            if method == "DELETE":
                if iid in f.destroy_fails:
                    return 500, {"success": False, "error": "server_error", "msg": "internal error"}
                inst = self.instances.pop(iid, None)
                if inst is None:
                    return 404, {"success": False, "error": "no_such_instance", "msg": f"no instance {iid}"}
                self.destroyed[iid] = inst
                return 200, {"success": True, "msg": "Instance destroyed successfully"}
        if method == "GET" and path == "/api/v0/users/current":
            return 200, {"id": 1, "username": "fake", "credit": 25.0, "ssh_key": None}
        return 404, {"success": False, "error": "not_found", "msg": f"no route {method} {path}"}

    def _search(self, q: dict[str, Any]) -> list[dict[str, Any]]:
        storage = float(q.get("allocated_storage", 5.0))
        special = {"order", "type", "limit", "allocated_storage", "disable_bundling"}
        out = []
        for offer in self.offers.values():
            row = dict(offer)
            row["verified"] = row["verification"] == "verified"
            ok = all(_match(row.get(k), ops) for k, ops in q.items() if k not in special and k in row)
            if ok:
                row.pop("verified")
                row["storage_total_cost"] = storage * row["storage_cost"] / 720
                row["dph_total"] = row["dph_base"] + row["storage_total_cost"]
                row["is_bid"] = q.get("type") == "bid"
                row["search"] = {"gpuCostPerHour": row["dph_base"], "diskHour": row["storage_total_cost"],
                                 "totalHour": row["dph_total"]}
                out.append(row)
        for col, direction in reversed(q.get("order") or []):
            out.sort(key=lambda r, c=col: (r.get(c) is None, r.get(c) or 0), reverse=direction == "desc")
        if q.get("limit"):
            out = out[: int(q["limit"])]
        return out

    def _create(self, offer_id: int, body: dict[str, Any]) -> tuple[int, Any]:
        f = self.faults
        offer = self.offers.get(offer_id)
        if offer_id in f.offer_gone_410:
            return 410, {"success": False, "error": "no_such_ask", "ask_id": offer_id,
                         "msg": f"error 410/3907: no_such_ask Instance type {offer_id} is no longer available."}
        if offer is None or offer.get("rented") or offer_id in f.offer_gone:
            return 404, {"success": False, "error": "invalid_args", "ask_id": offer_id,
                         "msg": f"error 404/3603: no_such_ask Instance type by id {offer_id} is not available."}
        if not body.get("image") or len(str(body.get("label") or "")) > 256 or float(body.get("disk", 0)) < 8:
            return 400, {"success": False, "error": "invalid_args", "msg": "image, label <= 256, disk >= 8"}
        if offer_id in f.create_error_with_contract:
            inst = self._new_instance(offer, body, stopped=True)
            return 400, {"success": False, "error": "invalid_price", "new_contract": inst["id"],
                         "msg": "bid price too low; instance created in stopped state"}
        inst = self._new_instance(offer, body)
        if offer_id in f.create_then_error:  # seen on Vast: a 502/504 from nginx for a create the API carried out
            return f.create_then_error[offer_id]
        hang = f.create_hang_s.get(offer_id)
        if hang:
            self.lock.release()  # let other requests (the reconcile by label) through while we hang
            try:
                time.sleep(hang)
            finally:
                self.lock.acquire()
        return 200, {"success": True, "new_contract": inst["id"]}

    def _list(self, query: dict[str, Any]) -> tuple[int, Any]:
        filters = query.get("select_filters") or {}
        limit = min(int(query.get("limit") or 25), 25)
        start = 0
        if query.get("after_token"):
            try:
                start = int(base64.b64decode(str(query["after_token"])).decode())
            except ValueError:
                return 400, {"success": False, "error": "invalid_args", "msg": "bad after_token"}
        rows = []
        for inst in sorted(self.instances.values(), key=lambda r: r["id"]):
            if all(_match(inst.get(k), ops) for k, ops in filters.items()):
                self._advance(inst)
                rows.append(self._public(inst))
        page = rows[start: start + limit]
        more = start + limit < len(rows)
        labels: dict[str, int] = {}
        for r in rows:
            labels[r.get("label") or ""] = labels.get(r.get("label") or "", 0) + 1
        return 200, {
            "success": True, "instances": page, "instances_found": len(page), "total_instances": len(rows),
            "label_counts": labels,
            "next_token": base64.b64encode(str(start + limit).encode()).decode() if more else None,
        }


class _Handler(BaseHTTPRequestHandler):
    server_fake: VastFake
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        fake = self.server_fake
        split = urlsplit(self.path)
        query: dict[str, Any] = {}
        for k, vals in parse_qs(split.query, keep_blank_values=True).items():
            try:
                query[k] = json.loads(vals[-1])
            except ValueError:
                query[k] = vals[-1]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        header = self.headers.get("Authorization") or ""
        if not header:
            auth = "missing"
        else:
            token = header[7:] if header.startswith("Bearer ") else ""
            auth = "ok" if hashlib.sha256(token.encode()).hexdigest() == fake._key_digest else "bad"
            if auth == "bad" and token.startswith("container-"):  # an instance's own key (CONTAINER_API_KEY)
                auth = token
        entry = LoggedRequest(self.command, split.path, query, body, auth)
        with fake.lock:
            fake.log.append(entry)
            status, payload = fake.handle(self.command, split.path, query, body, auth)
            entry.status = status
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            kind = "application/json" if not isinstance(payload, str) else (
                "text/html" if payload.lstrip().startswith("<") else "text/plain")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (create timeout tests)
            pass

    do_GET = do_PUT = do_POST = do_DELETE = _serve


class BannerServer:
    """A TCP listener on 127.0.0.1 that greets like sshd (``SSH-2.0-...``) and hangs up."""

    def __init__(self, banner: bytes = b"SSH-2.0-OpenSSH_9.2p1 FakeVast\r\n") -> None:
        self.banner = banner
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        self.sock.settimeout(0.02)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            with conn:
                try:
                    conn.sendall(self.banner)
                except OSError:
                    pass

    def __enter__(self) -> BannerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def free_port() -> int:
    """A port with nothing listening (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":  # pragma: no cover - manual demo
    with BannerServer() as banner, VastFake(api_key="demo-key-123456", ssh_port=banner.port) as fake:
        fake.add_offer(1001, gpu_name="RTX 3060", num_gpus=2, dph_base=0.18)
        fake.add_offer(1002, gpu_name="RTX 3060", num_gpus=2, dph_base=0.15, reliability=0.96)
        fake.add_offer(1003, gpu_name="RTX 4090", num_gpus=1, dph_base=0.35, gpu_ram=24564, compute_cap=890)
        print(f"VAST_URL={fake.url} VAST_API_KEY=demo-key-123456  (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
