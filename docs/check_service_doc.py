"""Run every curl example of docs/service.md against a real server and compare its output
with the excerpt printed under it.

    python docs/check_service_doc.py            # starts `micrec serve` on the demo bundle
    python docs/check_service_doc.py --url http://127.0.0.1:8000 --key KEY   # a running one
    python docs/check_service_doc.py --show     # also print what each block answered

The examples are stateful (an item registered in one block is used by later ones), so they
run top to bottom against a fresh store; with ``--url`` the server must be fresh too.

What "as documented" means here: every HTTP status line and every JSON value of an excerpt
(for a plain-text excerpt: every line) must appear, in order, in the block's real output (headers and extra records may appear in
between, so an excerpt can show only the interesting part). Numbers are compared at the 4
decimals the doc prints; ``created_at``/``updated_at``/``loaded_at``/``started_at``/``finished_at`` (wall-clock) and
``model_version`` (build date + weights hash) and ``recommendation_id`` (random) are not
compared.
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
DEMO_ADMIN_KEY = "demo-admin-key-0b8d4e6a27"
VOLATILE = {
    "created_at",
    "updated_at",
    "loaded_at",
    "started_at",
    "finished_at",
    "model_version",
    "recommendation_id",
}
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


def records(text: str, *, raw: bool = False) -> list[Any]:
    """Status lines (as ("status", code)) and JSON values, in the order they appear
    (normalised for comparison unless ``raw``)."""
    recs: list[Any] = []
    dec = json.JSONDecoder()
    i = 0
    while i < len(text):
        line_start = i == 0 or text[i - 1] == "\n"
        # curl prints bodies without a trailing newline, so the next call's status line
        # can follow a JSON body directly
        if (line_start or text[i - 1] in "}]") and (m := STATUS.match(text[i:])):
            line_end = text.find("\n", i)
            line = text[i : line_end if line_end >= 0 else len(text)].strip()
            recs.append(line if raw else ("status", int(m.group(1))))
            i += m.end()
            continue
        if text[i] in "{[" and (line_start or text[i - 1] in " \r\t}]"):
            try:
                value, end = dec.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            recs.append(value if raw else normalise(value))
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


def excerpt(output: str, width: int = 100) -> str:
    """The output block for a real output: status lines and JSON values (headers left
    out), numbers at 4 decimals, long objects wrapped at top-level keys with list items
    one per line."""
    lines: list[str] = []
    for rec in records(output, raw=True):
        if isinstance(rec, str):
            lines.append(rec)
        else:
            lines.extend(wrap_json(rounded(rec), width))
    return "\n".join(lines) if lines else output.strip()


def rounded(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    if isinstance(v, float) and not v.is_integer():
        return round(v, 4)
    return v


def compact(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def wrap_json(v: Any, width: int) -> list[str]:
    if not isinstance(v, dict) or len(compact(v)) <= width:
        return [compact(v)]
    lines: list[str] = []
    cur = "{"
    keys = list(v)
    for n, key in enumerate(keys):
        tail = "}" if n == len(keys) - 1 else ","
        value = v[key]
        part = f"{compact(key)}:{compact(value)}{tail}"
        if isinstance(value, (list, dict)) and value and len(part) > width:
            # one element (list) or entry (object) per line, aligned under the first
            if cur.strip() not in ("{", ""):
                lines.append(cur)
                cur = " "
            is_list = isinstance(value, list)
            head = f"{cur}{compact(key)}:" + ("[" if is_list else "{")
            pad = " " * len(head)
            if isinstance(value, list):
                parts = [compact(x) for x in value]
            else:
                parts = [f"{compact(k)}:{compact(x)}" for k, x in value.items()]
            for k, text in enumerate(parts):
                end = "," if k < len(parts) - 1 else ("]" if is_list else "}") + tail
                lines.append((head if k == 0 else pad) + text + end)
            cur = " "
            continue
        if len(cur) + len(part) > width and cur.strip() not in ("{", ""):
            lines.append(cur)
            cur = " "
        cur += part
    if cur.strip():
        lines.append(cur)
    return lines


def rewrite(text: str, outputs: dict[int, str]) -> str:
    """``text`` with the excerpt under each example replaced by its real output."""
    lines = text.splitlines()
    blocks = {ex.line: ex for ex in examples(text)}
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        ex = blocks.get(i + 1)
        if ex is not None and ex.expected is not None and i + 1 in outputs:
            j = i + 1
            while lines[j].strip() != "```":  # the rest of the bash block
                out.append(lines[j])
                j += 1
            out.append(lines[j])
            out.append(lines[j + 1])  # the excerpt's opening fence
            out.extend(excerpt(outputs[i + 1]).splitlines())
            k = j + 2
            while lines[k].strip() != "```":
                k += 1
            i = k  # the excerpt's closing fence is appended next
            continue
        i += 1
    return "\n".join(out) + "\n"


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


def run_example(ex: Example, base: str, key: str, admin_key: str) -> str:
    env = dict(os.environ, B=base, K=key, A=admin_key)
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
    ap.add_argument("--key", default=DEMO_KEY, help="its write API key ($K in the examples)")
    ap.add_argument("--admin-key", default=DEMO_ADMIN_KEY, help="its admin key ($A)")
    ap.add_argument("--bundle", default="artifacts/demo-bundle")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--show", action="store_true", help="print every block's real output")
    ap.add_argument(
        "--rewrite",
        action="store_true",
        help="replace every excerpt in docs/service.md by the real output (after a model "
        "or catalogue change; review the diff)",
    )
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
            MICREC_ADMIN_KEYS=args.admin_key,
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
        outputs: dict[int, str] = {}
        for ex in examples(DOC.read_text()):
            out = outputs[ex.line] = run_example(ex, base, args.key, args.admin_key)
            if ex.expected is None:
                verdict = "ran (no excerpt)"
            else:
                want = records(ex.expected)
                if want:
                    ok, missing = matches(want, records(out))
                else:  # plain text (e.g. Prometheus lines): the excerpt's lines, in order
                    ok, missing = matches(
                        [ln.strip() for ln in ex.expected.splitlines() if ln.strip()],
                        [ln.strip() for ln in out.splitlines()],
                    )
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
    if args.rewrite:
        DOC.write_text(rewrite(DOC.read_text(), outputs))
        print(f"rewrote the excerpts of {DOC.relative_to(ROOT)}")
        return 0
    print(
        f"{failures} example(s) differ from docs/service.md"
        if failures
        else "all examples as documented"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
