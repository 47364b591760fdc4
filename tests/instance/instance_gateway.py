"""What the instance tests share: the ClientKey password and the ``Instance`` handle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsbeam.emulator import EmulatorServer

PASSWORD = "instance-client-key-password-0f3a"


@dataclass
class Instance:
    server: EmulatorServer
    keys: dict[str, str]
    client_key: Path
    home: Path

    def uri(self, key: str = "alias/pii") -> str:
        return f"alibaba-kms-instance://{self.server.instance_endpoint}/{key}?ca={self.server.instance_ca_file}"

    def audit(self) -> list[dict[str, Any]]:
        lines = (self.server.data_dir / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def calls(self, name: str, since: int = 0) -> int:
        return sum(1 for r in self.audit()[since:] if r.get("eventName") == name and r.get("outcome") == "success")
