"""Issue 23 item 7 in a real browser: headless Chromium on a page of another origin fetches the proxy's
own refusals, the colour endpoint and a routed answer, and reads what a page would (status, error
message, `x-bluegreen-color`). Preflights are answered by the embedded upstream, as by Qdrant.
Skipped where no Chromium is installed."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading

import pytest

from tests.support import RunningProxy, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")

PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
const proxy = "%s";
async function attempt(name, url, options, read) {
  try { const answer = await fetch(proxy + url, options); return [name, await read(answer)]; }
  catch (error) { return [name, "fetch failed: " + error]; }
}
const json = {"content-type": "application/json"};
Promise.all([
  attempt("no_key", "/collections/docs/points/query", {method: "POST", headers: json, body: '{"query":[1]}'},
          async (a) => [a.status, (await a.json()).status.error]),
  attempt("colour", "/bluegreen/routes/docs/color", {headers: {"api-key": "reader-key", "x-user-id": "u1"}},
          async (a) => [a.status, a.headers.get("x-bluegreen-color"), (await a.json()).result.color]),
  attempt("routed", "/collections/docs/points/query",
          {method: "POST", headers: {...json, "api-key": "reader-key", "x-bluegreen-color": "green"}, body: '{"query":[1]}'},
          async (a) => [a.status, a.headers.get("x-bluegreen-color"), a.headers.get("x-bluegreen-collection")]),
]).then((results) => { document.getElementById("out").textContent = JSON.stringify(Object.fromEntries(results)); });
</script></body></html>"""


@pytest.fixture
def page_server(tmp_path):
    directory = tmp_path / "site"
    directory.mkdir()
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def test_a_page_reads_the_proxys_answers(tmp_path, embedded_upstream, page_server):
    directory, page_origin = page_server
    routes = "  docs:\n    blue: docs_v1\n    green: docs_v2\n    green_percent: 50\n    allow_override: true\n"
    clients = "clients:\n  api_keys:\n    - {key: reader-key, access: r}\n  anonymous: none\n"
    with RunningProxy(tmp_path / "proxy", embedded_upstream, routes, extra_yaml=clients) as proxy:
        (directory / "page.html").write_text(PAGE % proxy.url)
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=20000", "--dump-dom",
             f"{page_origin}/page.html"],
            capture_output=True, text=True, timeout=120,
        ).stdout
    text = dom.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]
    assert text != "pending", dom
    seen = json.loads(text.replace("&quot;", '"').replace("&amp;", "&"))
    assert seen["no_key"][0] == 401 and seen["no_key"][1].startswith("Unauthorized"), seen
    assert seen["colour"][0] == 200 and seen["colour"][1] == seen["colour"][2] in ("blue", "green"), seen
    assert seen["routed"][1:] == ["green", "docs_v2"], seen
