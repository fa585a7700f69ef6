"""Run every curl example of docs/service.md against a real server and compare its output
with the excerpt printed under it.

    python docs/check_service_doc.py            # starts `micrec serve` on the demo bundle
    python docs/check_service_doc.py --url http://127.0.0.1:8000 --key KEY   # a running one
    python docs/check_service_doc.py --show     # also print what each block answered

The examples are stateful (an item registered in one block is used by later ones), so they
run top to bottom against a fresh store; with ``--url`` the server must be fresh too.

What "as documented" means here: every HTTP status line and every JSON value of an excerpt
must appear, in order, in the block's real output (headers and extra records may appear in
between, so an excerpt can show only the interesting part). Numbers are compared at the 4
decimals the doc prints; ``created_at``/``updated_at``/``loaded_at``/``started_at``/``finished_at`` (wall-clock) and
``model_version`` (build date + weights hash) are not compared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "service.md"
DEMO_KEY = "demo-key-7f3a9c2e51"
VOLATILE = {"created_at", "updated_at", "loaded_at", "started_at", "finished_at", "model_version"}
FENCE = re.compile(r"^```(\w*)\s*$")
STATUS = re.compile(r"^HTTP/1\.1 (\d{3})")


@dataclass
class Example:
    line: int
    script: str
    expected: str | None


def examples(text: str) -> list[Example]:
    """Bash blocks that call the service ($B), each with the output block right below it."""
    blocks: list[tuple[int, str, str]] = []  # (start line, language, body)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i].strip())
        if m:
            start, lang = i, m.group(1)
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            blocks.append((start, lang, "\n".join(lines[i + 1 : j])))
            i = j + 1
            continue
        i += 1
    out: list[Example] = []
    for k, (start, lang, body) in enumerate(blocks):
        if lang != "bash" or "$B" not in body:
            continue
        expected = None
        if k + 1 < len(blocks):
            nstart, nlang, nbody = blocks[k + 1]
            end_of_this = start + body.count("\n") + 2
            if nlang in ("", "json") and nstart == end_of_this + 1:
                expected = nbody
        out.append(Example(start + 1, body, expected))
    return out


def records(text: str) -> list[Any]:
    """Status lines (as ("status", code)) and JSON values, in the order they appear."""
    recs: list[Any] = []
    dec = json.JSONDecoder()
    i = 0
    while i < len(text):
        line_start = i == 0 or text[i - 1] == "\n"
        if line_start and (m := STATUS.match(text[i:])):
            recs.append(("status", int(m.group(1))))
            i += m.end()
            continue
        if text[i] in "{[" and (line_start or text[i - 1] in " \r\t"):
            try:
                value, end = dec.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            recs.append(normalise(value))
            i = end
            continue
        i += 1
    return recs


def normalise(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: normalise(x) for k, x in v.items() if k not in VOLATILE}
    if isinstance(v, list):
        return [normalise(x) for x in v]
    if isinstance(v, float):
        return round(v, 4)
    return v


def matches(expected: list[Any], actual: list[Any]) -> tuple[bool, Any]:
    """Every expected record appears in ``actual`` in order; the first one that does not."""
    pos = 0
    for rec in expected:
        while pos < len(actual) and actual[pos] != rec:
            pos += 1
        if pos == len(actual):
            return False, rec
        pos += 1
    return True, None


def run_example(ex: Example, base: str, key: str) -> str:
    env = dict(os.environ, B=base, K=key)
    proc = subprocess.run(
        ["bash", "-c", ex.script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    return proc.stdout


def wait_ready(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {base} not ready after {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="a running, freshly started server (default: start one)")
    ap.add_argument("--key", default=DEMO_KEY, help="its write API key")
    ap.add_argument("--bundle", default="artifacts/demo-bundle")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--show", action="store_true", help="print every block's real output")
    args = ap.parse_args(argv)

    server = None
    tmp = tempfile.TemporaryDirectory(prefix="micrec-doccheck-")
    server_log = (Path(tmp.name) / "server.log").open("w")  # closed in the finally below
    base = args.url
    if base is None:
        if not (ROOT / args.bundle / "manifest.json").exists():
            raise SystemExit(f"no bundle at {args.bundle}: run `make demo-bundle` first")
        env = dict(
            os.environ,
            MICREC_BUNDLE_PATH=args.bundle,
            MICREC_STORE_URL=f"sqlite:///{tmp.name}/state.db",
            MICREC_API_KEYS=args.key,
            MICREC_TORCH_THREADS="1",
            MICREC_FAISS_THREADS="1",
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(args.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{args.port}"
    failures = 0
    try:
        wait_ready(base, 300)
        for ex in examples(DOC.read_text()):
            out = run_example(ex, base, args.key)
            if ex.expected is None:
                verdict = "ran (no excerpt)"
            else:
                ok, missing = matches(records(ex.expected), records(out))
                verdict = "ok" if ok else f"DIFFERS: not found in the output: {missing}"
                failures += not ok
            print(f"docs/service.md:{ex.line}: {verdict}")
            if args.show or verdict.startswith("DIFFERS"):
                print("  " + out.strip().replace("\n", "\n  "))
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        server_log.close()
        tmp.cleanup()
    print(
        f"{failures} example(s) differ from docs/service.md"
        if failures
        else "all examples as documented"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
