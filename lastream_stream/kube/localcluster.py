"""A real Kubernetes control plane on 127.0.0.1, for the test suite and for trying the
Kubernetes executor on one machine, the way controller-runtime's envtest does it: etcd,
kube-apiserver (token auth, RBAC), kube-controller-manager, kube-scheduler, and kwok, which
plays the kubelet of one fake node so that pods are scheduled and turn Running and Ready.

The binaries come from ``scripts/k8s-binaries.sh`` (built once per machine from the official
sources, cached under ``$LASTREAM_HOME/k8s/<version>/bin``). Everything lives in one work
directory: certificates, the token file, a kubeconfig of the admin, etcd's data, logs.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lastream_stream.settings import lastream_home

log = logging.getLogger(__name__)

K8S_VERSION = "v1.34.4"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
FAKE_NODE = "kwok-node-0"


class MissingBinaries(RuntimeError):
    """The control plane's binaries are not built on this machine."""


def bin_dir() -> Path:
    return lastream_home() / "k8s" / K8S_VERSION / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    workdir: Path
    bin: Path = field(default_factory=bin_dir)
    token: str = "lastream-admin-token"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    server: str = ""

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def binary(self, name: str) -> str:
        return str(self.bin / name)

    def start(self, timeout_s: float = 120.0) -> LocalCluster:
        missing = [b for b in BINARIES if not (self.bin / b).exists()]
        if missing:
            raise MissingBinaries(
                f"{', '.join(missing)} not in {self.bin}: build them with scripts/k8s-binaries.sh "
                "(once per machine, about 10 minutes; `make test` does it)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)  # its processes run in sessions of their own: not left behind
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        w = self.workdir
        sa_key = w / "sa.key"
        if not sa_key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
            subprocess.run(
                ["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(w / "sa.pub")],
                check=True,
                capture_output=True,
            )
        (w / "tokens.csv").write_text(f'{self.token},lastream-admin,lastream-admin,"system:masters"\n')
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self._spawn(
            "etcd",
            [
                self.binary("etcd"),
                f"--data-dir={w / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--quota-backend-bytes=2147483648",
            ],
        )
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                self.binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={w / 'certs'}",
                f"--token-auth-file={w / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={w / 'sa.pub'}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--shutdown-delay-duration=0s",
                # Debian's etcd 3.4 cannot report watch progress, which streamed lists need: with
                # them on, clients that ask for them (kwok) see every watch end with an error and
                # learn of pods late; off, they list and watch as before.
                "--feature-gates=WatchList=false",
                "--shutdown-send-retry-after=false",
            ],
        )
        self._wait_ready(timeout_s)
        self._write_kubeconfig()
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        self._spawn(
            "kube-controller-manager",
            [
                self.binary("kube-controller-manager"),
                kubeconfig,
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={sa_key}",
                "--controllers=*",
                # kwok renews its node's status about once a minute, which the default grace
                # period (50 s) takes for a dead node: every pod would be marked not ready.
                "--node-monitor-grace-period=1h",
            ],
        )
        self._spawn(
            "kube-scheduler", [self.binary("kube-scheduler"), kubeconfig, "--leader-elect=false", "--secure-port=0"]
        )
        self._spawn(
            "kwok",
            [
                self.binary("kwok"),
                kubeconfig,
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.1.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self.kubectl("apply", "-f", "-", input=FAKE_NODE_YAML)

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.processes[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def _wait_ready(self, timeout_s: float) -> None:
        context = None  # until the certificate exists, the first answers cannot be checked
        request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + timeout_s
        problem = "not asked yet"
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}: see {self.workdir / name}.log")
            if context is None and self.ca.exists():
                context = ssl.create_default_context(cafile=str(self.ca))
            if context is None:
                time.sleep(0.5)
                continue
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                problem = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"kube-apiserver not ready after {timeout_s:.0f} s ({problem}): see {self.workdir}")

    @property
    def ca(self) -> Path:
        """The API server's own self-signed certificate, which clients trust as their CA."""
        return self.workdir / "certs" / "apiserver.crt"

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(kubeconfig_yaml(self.server, self.ca, "lastream-admin", self.token))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run the suite's kubectl against this cluster as its admin; raises with its output
        when it fails, unless ``check`` is off (``auth can-i`` answers "no" with exit code 1)."""
        result = subprocess.run(
            [self.binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def stop(self) -> None:
        """Stop in reverse order of start, so that nothing outlives what it talks to."""
        for name in reversed(list(self.processes)):
            process = self.processes.pop(name)
            if process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                log.warning("%s did not stop on SIGTERM: killed", name)


def kubeconfig_yaml(server: str, ca: Path, user: str, token: str, namespace: str = "default") -> str:
    """A kubeconfig holding a bearer token, trusting ``ca`` for the API server."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: local
  context:
    cluster: local
    user: {user}
    namespace: {namespace}
current-context: local
"""


# kwok plays the kubelet of the nodes carrying this annotation: it marks them Ready and the
# pods scheduled on them Running and Ready.
FAKE_NODE_YAML = f"""apiVersion: v1
kind: Node
metadata:
  name: {FAKE_NODE}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: {FAKE_NODE}
    type: kwok
spec: {{}}
status:
  allocatable: {{cpu: "64", memory: 256Gi, pods: "500"}}
  capacity: {{cpu: "64", memory: 256Gi, pods: "500"}}
"""


def main() -> None:
    """``python -m lastream_stream.kube.localcluster [DIR]``: a control plane to try the
    executor on, until Ctrl-C; prints the admin kubeconfig's path."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lastream_stream.kube.localcluster", description=main.__doc__)
    parser.add_argument("workdir", nargs="?", default=str(lastream_home() / "k8s" / "local"), help="work directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cluster = LocalCluster(Path(args.workdir))
    try:
        cluster.start()
    except MissingBinaries as exc:
        raise SystemExit(str(exc)) from None
    log.info("Kubernetes %s on %s; kubeconfig: %s (Ctrl-C stops it)", K8S_VERSION, cluster.server, cluster.kubeconfig)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        stop.wait()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
