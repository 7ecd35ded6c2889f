"""`ray up` for real: the on-premises cluster config against a private sshd on loopback.

The "cluster" is this machine, reached over ssh as a dedicated account: `ray up` and `ray down` run a
bare `ray stop`, which ends every Ray process of the account it runs as: as the test's own account
it would end the test session's Ray (and anything else of it that uses Ray). The account's home is
a temporary directory; its sshd listens on a free loopback port (Ray's ssh has no port option: the
connection goes through ``ProxyCommand nc``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT

pytestmark = pytest.mark.slow

ACCOUNT = "flux-secu-test"
VENV_BIN = ROOT / ".venv" / "bin"


def test_cluster_configs_follow_rays_schema() -> None:
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    for name in ("onprem.yaml", "aws-gpu.yaml"):
        config = yaml.safe_load((ROOT / "cluster" / name).read_text())
        validate_config(fillout_defaults(config))
    onprem = yaml.safe_load((ROOT / "cluster" / "onprem.yaml").read_text())
    workers = " ".join(onprem["worker_start_ray_commands"])
    assert "flux_secu_cameras" in workers and "flux_secu_cameras" not in " ".join(
        onprem["head_start_ray_commands"])  # cameras only where the GPUs are
    aws = yaml.safe_load((ROOT / "cluster" / "aws-gpu.yaml").read_text())
    # Every Ray process of a cluster gets the memory settings `flux-secu run` sets on one machine.
    from flux_secu.actors.graph import MEMORY_ENV

    for config in (onprem, aws):
        starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands")
                  for c in config[key] if "ray start" in c]
        assert starts and all(f"{k}={v} " in c for c in starts for k, v in MEMORY_ENV.items()), starts
    types = aws["available_node_types"]
    assert {"cpu_worker", "gpu_worker"} <= types.keys()
    assert "flux_secu_cameras" in types["gpu_worker"]["resources"]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all held open until all are chosen (ports asked for one at a time
    can come back twice, and Ray refuses two components on one port: seen in a run)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run(*cmd: str, timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        pytest.fail(f"{' '.join(cmd[:4])} timed out after {timeout} s:\n{out[-4000:]}")
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:4])} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-3000:]}")
    return result


def readable_by_account(path: Path) -> bool:
    return subprocess.run(["runuser", "-u", ACCOUNT, "--", "test", "-r", str(path)],
                          check=False).returncode == 0


def stage_for_account(stage: Path) -> Path:
    """What the account imports, where it can read it: the checkout's packages and its source.

    A clone in a folder only root can read (``mktemp -d``, a home under /root) cannot be imported by
    another account in place. The venv's packages are hard-linked (one file system: instant, no copy;
    a copy otherwise) into ``stage``, a folder outside the account's home (the home is handed to the
    account with chown, which would change the checkout's own files through the links), and the
    editable install is pointed at a copy of ``src/``. Returns the staged site-packages.
    """
    mine = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    packages = ROOT / ".venv" / "lib" / mine / "site-packages"
    staged = stage / "site-packages"
    stage.mkdir(mode=0o755)
    linked = subprocess.run(["cp", "-al", str(packages), str(staged)], capture_output=True, check=False)
    if linked.returncode != 0:
        shutil.rmtree(staged, ignore_errors=True)
        run("cp", "-a", str(packages), str(staged))
    shutil.copytree(ROOT / "src", stage / "src")
    for editable in staged.glob("__editable__*flux_secu*.pth"):
        editable.unlink()  # a hard link to the checkout's file: replaced, not rewritten in place
        editable.write_text(f"{stage / 'src'}\n")
    run("chmod", "-R", "a+rX", str(stage / "src"))
    return staged


def stage_file(path: Path, stage: Path) -> Path:
    """``path`` itself when the account can read it, else a copy of it in ``stage/files``."""
    if readable_by_account(path):
        return path
    copy = stage / "files" / path.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    for folder in (stage, copy.parent):
        folder.chmod(0o755)
    shutil.copy(path, copy)
    copy.chmod(0o644)
    return copy


def account_venv(venv: Path, stage: Path) -> None:
    """A venv of Debian's python3 for the account that uses this checkout's packages.

    The checkout's own venv may be built on an interpreter the account cannot run (one under /root);
    Debian's python3 of the same minor version runs the same wheels. The account reads the checkout's
    packages in place when it can, else from a staged copy (``stage_for_account``).
    """
    system = "/usr/bin/python3"
    version = run(system, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')").stdout
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version.strip() != mine:
        pytest.fail(f"{system} is Python {version.strip()}, this venv {mine}: the account cannot use it")
    run(system, "-m", "venv", "--without-pip", str(venv))
    packages = ROOT / ".venv" / "lib" / f"python{mine}" / "site-packages"
    if not (readable_by_account(packages / "ray" / "__init__.py")
            and readable_by_account(ROOT / "src" / "flux_secu" / "__init__.py")):
        packages = stage_for_account(stage)
    # addsitedir, not a plain path line: the checkout's editable install is itself a .pth file.
    (venv / "lib" / f"python{mine}" / "site-packages" / "flux-secu-checkout.pth").write_text(
        f"import site; site.addsitedir({str(packages)!r})\n")
    for name, entry in (("ray", "from ray.scripts.scripts import main"),
                        ("flux-secu", "from flux_secu.cli import app as main")):
        script = venv / "bin" / name
        script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\n{entry}\nsys.exit(main())\n")
        script.chmod(0o755)
    probe = subprocess.run(["runuser", "-u", ACCOUNT, "--", str(venv / "bin" / "python"), "-c",
                            "import flux_secu, ray; print(flux_secu.__file__)"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.fail(f"the account {ACCOUNT} cannot import flux_secu and ray from {packages}:\n"
                    f"{probe.stderr[-1500:]}")


@dataclass
class Sshd:
    port: int
    key: Path
    home: Path
    stage: Path
    """Where files the account must read but cannot reach in the checkout are staged."""
    proc: subprocess.Popen[bytes]


@pytest.fixture()
def sshd() -> Iterator[Sshd]:
    """A private sshd on a free loopback port that lets ACCOUNT in with a fresh key."""
    if os.geteuid() != 0:
        pytest.fail("the ray up test creates an account and runs sshd: run it as root (make test does)")
    for tool in ("/usr/sbin/sshd", "rsync", "nc", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (make system-deps installs openssh-server, rsync, netcat)")
    # Not under pytest's tmp_path: that directory is private to root, and the account must reach its home.
    base = Path(tempfile.mkdtemp(prefix="flux-secu-cluster-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    try:
        pwd.getpwnam(ACCOUNT)
        run("usermod", "--home", str(home), ACCOUNT)
    except KeyError:
        run("useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash", ACCOUNT)
    # No password, but not locked ("!"): sshd without PAM refuses a locked account even with a key.
    run("usermod", "--password", "*", ACCOUNT)
    (home / ".ssh").mkdir(mode=0o700)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "host_key"))
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "id"))
    shutil.copy(base / "id.pub", home / ".ssh" / "authorized_keys")
    account_venv(home / "venv", base / "stage")
    run("chown", "-R", f"{ACCOUNT}:{ACCOUNT}", str(home))
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\nPidFile {base / 'sshd.pid'}\n"
        f"AllowUsers {ACCOUNT}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PubkeyAuthentication yes\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=(base / "sshd.log").open("wb"))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (base / "sshd.log").read_text()
            time.sleep(0.05)
    try:
        yield Sshd(port, base / "id", home, base / "stage", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        subprocess.run(["pkill", "-KILL", "-u", ACCOUNT], check=False)  # only if the test failed midway
        shutil.rmtree(base, ignore_errors=True)


def incidents(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0])
        except sqlite3.OperationalError:  # the store is being created
            return 0


def account_processes() -> list[str]:
    result = subprocess.run(["ps", "-ww", "-u", ACCOUNT, "-o", "pid=,args="], capture_output=True, text=True)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def test_ray_up_runs_flux_secu_on_the_onprem_config_and_ray_down_leaves_nothing(sshd: Sshd) -> None:
    gcs_port, metrics_port, client_port, agent_port, agent_grpc_port, runtime_env_port = free_ports(6)
    home = sshd.home
    work = home / "flux-secu-demo"
    # The demo config, with its paths made absolute and its state in the account's home.
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    configs = ROOT / "configs"
    for section, key in (("model", "path"), ("model", "labels")):
        demo[section][key] = str(stage_file((configs / demo[section][key]).resolve(), sshd.stage))
    for camera in demo["sites"][0]["cameras"]:
        camera["source"] = str(stage_file((configs / camera["source"]).resolve(), sshd.stage))
    demo["sites"][0]["cameras"] = demo["sites"][0]["cameras"][:1]
    demo["var_dir"] = str(work / "var")
    demo["store"]["path"] = str(work / "var" / "flux-secu.db")
    work.mkdir()
    (work / "demo.yaml").write_text(yaml.safe_dump(demo, allow_unicode=True))
    run("chown", "-R", f"{ACCOUNT}:{ACCOUNT}", str(work))

    # The shipped on-premises config, pointed at this machine. The setup commands put this checkout's
    # venv on the account's PATH instead of installing flux-secu again (the same steps otherwise).
    cluster = yaml.safe_load((ROOT / "cluster" / "onprem.yaml").read_text())
    name = f"flux-secu-test-{os.getpid()}"
    cluster["cluster_name"] = name
    cluster["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    cluster["max_workers"] = 0
    cluster["auth"] = {"ssh_user": ACCOUNT, "ssh_private_key": str(sshd.key),
                       "ssh_proxy_command": f"nc 127.0.0.1 {sshd.port}"}
    cluster["file_mounts"] = {"~/flux-secu": str(ROOT / "cluster")}
    env_lines = [f'export PATH="{home / "venv" / "bin"}:$PATH"', "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"]
    cluster["setup_commands"] = [f"echo '{line}' >> ~/.bashrc" for line in env_lines]
    ports = (f"--port={gcs_port} --metrics-export-port={metrics_port} --include-dashboard=false "
             f"--ray-client-server-port={client_port} --dashboard-agent-listen-port={agent_port} "
             f"--dashboard-agent-grpc-port={agent_grpc_port} --runtime-env-agent-port={runtime_env_port} "
             f"--num-cpus=2 --object-store-memory={300 * 2**20} --temp-dir={home}/ray")
    head_start = cluster["head_start_ray_commands"]
    assert head_start[0] == "ray stop" and "--port=6379" in head_start[1]
    cluster["head_start_ray_commands"] = [
        "ray stop", f"ray start --head {ports} --autoscaling-config=~/ray_bootstrap_config.yaml"]
    config_path = home.parent / "cluster.yaml"
    config_path.write_text(yaml.safe_dump(cluster))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # The launcher (root) and the head's autoscaler (the account) share the local provider's state
    # files, as they are on one machine here: create them writable by both.
    state = [Path("/tmp/ray") / f"cluster-{name}.{suffix}" for suffix in ("state", "lock")]
    for path in state:
        path.parent.mkdir(exist_ok=True)
        path.touch()
        path.chmod(0o666)
    state[0].write_text("{}")
    ray = str(VENV_BIN / "ray")

    try:
        up = run(ray, "up", "-y", "--no-config-cache", str(config_path), timeout=120, env=env)
        assert any("raylet" in p for p in account_processes()), up.stdout[-3000:]
        assert (home / "flux-secu" / "onprem.yaml").is_file()  # file_mounts went over rsync
        address = f"--address 127.0.0.1:{gcs_port}"
        started = run(ray, "exec", str(config_path),
                      f"flux-secu run {work / 'demo.yaml'} {address} --detach --json-logs", env=env)
        assert "flux-secu: running on" in started.stdout + started.stderr
        # The deployment outlives the command that started it: the demo's intruder becomes an incident.
        db_path = work / "var" / "flux-secu.db"
        deadline = time.monotonic() + 90
        while not incidents(db_path):
            assert time.monotonic() < deadline, "no incident from the demo clip"
            time.sleep(1)
        listed = run(ray, "exec", str(config_path), f"flux-secu cameras list --json {address}", env=env)
        assert '"camera": "quai-principal"' in listed.stdout and '"state": "running"' in listed.stdout
        stopped = run(ray, "exec", str(config_path), f"flux-secu stop {address}", env=env)
        assert "stopped 1 camera(s)" in stopped.stdout
    finally:
        down = run(ray, "down", "-y", str(config_path), timeout=120, env=env, check=False)
        for path in state:
            path.unlink(missing_ok=True)
    assert down.returncode == 0, down.stderr[-3000:]
    deadline = time.monotonic() + 20
    while account_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert account_processes() == []  # ray down left no Ray process behind
