"""Re-capture the screenshots of docs/console.md from a running service.

Start the service on the demo bundle with a key and the catalogue's pictures, then run:

    MICREC_API_KEYS=demo-key-7f3a9c2e51 MICREC_ITEM_IMAGES_DIR=artifacts/demo-data/images \\
      MICREC_STORE_URL=sqlite:////tmp/console-demo/state.db micrec serve --port 8000 &
    python docs/capture_console.py --url http://127.0.0.1:8000 --key demo-key-7f3a9c2e51

It drives the system chromium (Playwright, no download) through every view: a
cross-domain user, a playground history of two items, a registration with a picture;
the registration writes to that service's store (use a throwaway one).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

OUT = Path(__file__).resolve().parent / "console"
PICTURE = Path("artifacts/demo-data/images/kitchen_0001.png")


def capture(page: Page, url: str, key: str, user: str) -> None:
    def shot(name: str) -> None:
        page.wait_for_load_state("networkidle")
        path = OUT / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        # a 256-colour palette: a third of the bytes, the same to read
        with Image.open(path) as img:
            img.convert("RGB").quantize(256).save(path, optimize=True)

    page.goto(f"{url}/ui/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Use key").click()
    page.goto(f"{url}/ui/items?domain=office")
    expect(page.locator("#results .card").first).to_be_visible()
    page.get_by_role("button", name="Details and similar").first.click()
    expect(page.locator("#detail .grid .card").first).to_be_visible()
    shot("items")
    page.goto(f"{url}/ui/user?user={user}")
    expect(page.locator("#recs .column")).to_have_count(3)
    shot("user")
    page.goto(f"{url}/ui/playground")
    for i in (0, 2):
        page.get_by_role("button", name="Add to history").nth(i).click()
    expect(page.locator("#history li")).to_have_count(2)
    shot("playground")
    page.goto(f"{url}/ui/register")
    page.get_by_label("Item id").fill(f"console-demo-mug-{int(time.time())}")
    page.get_by_label("Domain").select_option("kitchen")
    page.get_by_label("Title").fill("red enamel camping mug")
    page.get_by_label("Categories (separate with |)").fill("Kitchen > Drinkware")
    if PICTURE.is_file():
        page.get_by_label("Picture (JPEG, PNG, WebP or GIF)").set_input_files(str(PICTURE))
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#registered")).to_be_visible(timeout=120_000)
    shot("register")
    page.goto(f"{url}/ui/evaluation")
    expect(page.locator("#plots figure").first).to_be_visible()
    shot("evaluation")
    page.goto(f"{url}/ui/")  # last: the counters include everything above
    expect(page.locator("#latency tbody tr").first).to_be_visible()
    shot("overview")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", default="")
    p.add_argument("--user", default="u00780", help="a user with history in one domain")
    args = p.parse_args()
    OUT.mkdir(exist_ok=True)
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium not found: make system-deps")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        capture(page, args.url.rstrip("/"), args.key, args.user)
        browser.close()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
