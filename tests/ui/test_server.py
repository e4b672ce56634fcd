"""``isthmus ui`` as a user starts it: its own process, serving the runs another process recorded."""

from __future__ import annotations

import json
import urllib.request

from tests.ui.conftest import Seeded, serving


def test_isthmus_ui_serves_the_recorded_runs(seeded: Seeded) -> None:
    with serving() as url:
        with urllib.request.urlopen(f"{url}/runs", timeout=10) as response:
            page = response.read().decode()
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert seeded.first[:8] in page and seeded.failed[:8] in page and "<script>alert" not in page
        with urllib.request.urlopen(f"{url}/api/v1/runs?status=FAILED", timeout=10) as response:
            assert [r["id"] for r in json.load(response)["runs"]] == [seeded.failed]
