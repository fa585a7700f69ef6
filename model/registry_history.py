"""The bundle registry's history (``history.jsonl``): one JSON line per event, appended
and fsynced, never rewritten (model/registry.py).

Events: ``add``, ``promote``, ``rollback``, ``refuse`` and ``recovered`` (a promotion whose
line a crash lost, written when the next mutation finds the pointer ahead of the history).
Each has ``time`` (epoch seconds), ``at`` (UTC, readable), ``event``, ``version`` and its
own fields (``previous``, ``reason``, ``metrics``, ``report``, ``meta``...).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

POINTING = ("promote", "rollback", "recovered")
"""Events after which their version was current."""


class History:
    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[dict[str, Any]]:
        """Every event, oldest first (a line torn by a crash is skipped)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def append(self, event: str, version: str, **fields: Any) -> None:
        """Append one event durably (the caller holds the registry lock)."""
        now = time.time()
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        entry = {"time": now, "at": at, "event": event, "version": version, **fields}
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with open(self.path, "ab") as f:
            if f.tell() > 0:
                with open(self.path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":  # a line torn by a crash: do not extend it
                        line = "\n" + line
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())

    def stack(self) -> list[str]:
        """The promotion stack: promote pushes, rollback pops back to its version."""
        stack: list[str] = []
        for e in self.events():
            event, version = e.get("event"), e.get("version")
            if not isinstance(version, str):
                continue
            if event in ("promote", "recovered"):
                if not stack or stack[-1] != version:
                    stack.append(version)
            elif event == "rollback":
                while stack and stack[-1] != version:
                    stack.pop()
                if not stack:
                    stack.append(version)
        return stack

    def served(self) -> set[str]:
        """Every version that was current at some time."""
        return {
            v
            for e in self.events()
            if e.get("event") in POINTING and isinstance(v := e.get("version"), str)
        }
