"""Test harness: real ``authkeeper mock-idp`` and ``authkeeper serve`` processes on free loopback
ports, in a temp dir, with their own store and key. Every process is started in its own process
group and stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

READY_TIMEOUT = 30.0


def _http(method: str, url: str, body: Optional[bytes] = None, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read()
    return json.loads(data) if data else None


class Process:
    """A server process whose first lines name its URL."""

    def __init__(self, name: str, argv: List[str], workdir: Path, env: Dict[str, str], pattern: str) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        self.url = self._wait_for(pattern)

    def _wait_for(self, pattern: str) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.log_path.read_text(errors="replace"))
            if match:
                return match.group(1)
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()


class MockIdp:
    """``authkeeper mock-idp``: 2-second access tokens, rotation and reuse detection (defaults)."""

    def __init__(self, binary: str, workdir: Path, name: str, env: Dict[str, str], access_ttl: str) -> None:
        self.process = Process(
            f"idp-{name}",
            [binary, "mock-idp", "--listen", "127.0.0.1:0", "--access-ttl", access_ttl],
            workdir,
            env,
            r"mock IdP listening on (http://\S+)",
        )
        self.url = self.process.url

    def mint(self) -> Dict[str, Any]:
        """A token response (with ``grant_id``) for a fresh grant."""
        result: Dict[str, Any] = _http("POST", f"{self.url}/admin/grants")
        return result

    def revoke(self, grant_id: str) -> None:
        _http("POST", f"{self.url}/admin/grants/{grant_id}/revoke")

    def stats(self) -> Dict[str, Any]:
        result: Dict[str, Any] = _http("GET", f"{self.url}/admin/stats")
        return result

    def knobs(self, **patch: Any) -> Dict[str, Any]:
        result: Dict[str, Any] = _http("PUT", f"{self.url}/admin/knobs", json.dumps(patch).encode())
        return result

    def grant(self, grant_id: str) -> Dict[str, Any]:
        for grant in self.stats()["grants"]:
            if grant["id"] == grant_id:
                return dict(grant)
        raise KeyError(grant_id)


def _toml_string(value: str) -> str:
    return json.dumps(value)


def _toml_list(values: List[str]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


class Stack:
    """Mock IdPs, credentials, sites and client keys, then one broker over them.

    Use: ``add_idp``, ``add_credential``, ``add_site``, ``add_client``, then ``start()``;
    ``stop()`` always (it stops whatever was started).
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config_path = workdir / "authkeeper.toml"
        self.env = {
            **os.environ,
            "AUTHKEEPER_STORE": str(workdir / "store.db"),
            "AUTHKEEPER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "AUTHKEEPER_LOG": "warn",
        }
        self.idps: Dict[str, MockIdp] = {}
        self.credentials: Dict[str, str] = {}  # credential -> idp name
        self.grants: Dict[str, str] = {}  # credential -> current grant id
        self.sites: Dict[str, Dict[str, Any]] = {}
        self.clients: Dict[str, Dict[str, Any]] = {}
        self.keys: Dict[str, str] = {}
        self.broker: Optional[Process] = None
        self.url = ""

    # --- building ---------------------------------------------------------------------------

    def add_idp(self, name: str, access_ttl: str = "2s") -> MockIdp:
        idp = MockIdp(self.binary, self.workdir, name, self.env, access_ttl)
        self.idps[name] = idp
        return idp

    def add_credential(self, name: str, idp: str) -> None:
        self.credentials[name] = idp

    def add_site(self, name: str, origin: str, accounts: List[str]) -> None:
        self.sites[name] = {"origin": origin, "accounts": accounts}

    def add_client(
        self,
        name: str,
        credentials: List[str],
        sites: Optional[List[str]] = None,
        checkpoints: Optional[List[str]] = None,
        permissions: Optional[List[str]] = None,
    ) -> str:
        out = subprocess.run(
            [self.binary, "keys", "new", name], capture_output=True, text=True, check=True, env=self.env
        ).stdout
        key_match = re.search(r"ak_[A-Za-z0-9_-]+", out)
        sha_match = re.search(r"\b[0-9a-f]{64}\b", out)
        assert key_match and sha_match, "authkeeper keys new printed no key"
        self.clients[name] = {
            "sha": sha_match.group(0),
            "credentials": credentials,
            "sites": sites or [],
            "checkpoints": checkpoints or [],
            "permissions": permissions,
        }
        self.keys[name] = key_match.group(0)
        return key_match.group(0)

    def _config(self) -> str:
        lines = ["[server]", 'listen = "127.0.0.1:0"', ""]
        for name, client in self.clients.items():
            lines += [
                "[[clients]]",
                f"name = {_toml_string(name)}",
                f"key_sha256 = {_toml_string(client['sha'])}",
                f"credentials = {_toml_list(client['credentials'])}",
                f"sites = {_toml_list(client['sites'])}",
                f"checkpoints = {_toml_list(client['checkpoints'])}",
            ]
            if client["permissions"] is not None:
                lines.append(f"permissions = {_toml_list(client['permissions'])}")
            lines.append("")
        for name, idp_name in self.credentials.items():
            idp = self.idps[idp_name]
            lines += [
                f"[credentials.{name}]",
                f"token_url = {_toml_string(idp.url + '/token')}",
                'client_id = "mock-client"',
                'client_secret = "mock-secret"',
                f"upstream = {_toml_string(idp.url)}",
                "",
            ]
        for name, site in self.sites.items():
            accounts = ", ".join(f"{{ name = {_toml_string(a)} }}" for a in site["accounts"])
            lines += [
                f"[sites.{name}]",
                f"origin = {_toml_string(site['origin'])}",
                f"accounts = [{accounts}]",
                "",
            ]
        return "\n".join(lines)

    def _cli(self, args: List[str], stdin: str) -> str:
        result = subprocess.run(
            [self.binary, "--config", str(self.config_path), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
        )
        if result.returncode != 0:
            raise RuntimeError(f"authkeeper {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def import_grant(self, credential: str) -> str:
        """Mints a grant at the credential's IdP and imports it (``authkeeper import``); returns
        the grant id."""
        grant = self.idps[self.credentials[credential]].mint()
        self._cli(["import", credential], json.dumps(grant))
        self.grants[credential] = str(grant["grant_id"])
        return self.grants[credential]

    def revoke(self, credential: str) -> None:
        """Revokes the credential's current grant at its IdP (every token of it dies)."""
        self.idps[self.credentials[credential]].revoke(self.grants[credential])

    def import_session(self, site: str, account: str, state: Dict[str, Any]) -> None:
        """``authkeeper sessions import SITE ACCOUNT`` of a storage state."""
        path = self.workdir / f"state-{site}-{account}.json"
        path.write_text(json.dumps(state))
        self._cli(["sessions", "import", site, account, str(path)], "")

    def start(self) -> None:
        self.config_path.write_text(self._config())
        for credential in self.credentials:
            self.import_grant(credential)
        self.broker = Process(
            "broker",
            [self.binary, "--config", str(self.config_path), "serve"],
            self.workdir,
            self.env,
            r"authkeeper broker listening on (http://\S+)",
        )
        self.url = self.broker.url
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                _http("GET", f"{self.url}/readyz", timeout=2)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"broker not ready:\n{self.broker.tail()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stops the broker first, then the IdPs; never raises for an already dead process."""
        processes = ([self.broker] if self.broker else []) + [idp.process for idp in self.idps.values()]
        for process in processes:
            process.stop()

    def logs(self) -> str:
        parts = []
        for process in ([self.broker] if self.broker else []) + [i.process for i in self.idps.values()]:
            parts.append(f"--- {process.name}\n{process.tail(2000)}")
        return "\n".join(parts)
