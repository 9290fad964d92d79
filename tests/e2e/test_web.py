"""The web page: served by the server itself, its files confined to the web folder, and (when
Chromium is installed) a real browser starting a task through the page's form."""

from __future__ import annotations

import base64
import fcntl
import http.client
import json
import os
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, wait_until

CHROMIUM = Path("/usr/bin/chromium")
WEB_DIR = Path(__file__).resolve().parents[2] / "blanket" / "server" / "web"
HELLO = '''
description = "Greets <b id='injected'>someone</b>"
command = "echo hello {{ NAME }}"
[environment.required]
NAME = { description = "who to greet" }
'''


def get(server: ServerProcess, path: str) -> tuple[int, str, bytes]:
    """GET `path` exactly as written (no client-side normalising of `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def test_the_root_is_the_page_and_it_references_its_script_and_style(make_server):
    status, content_type, body = get(make_server(), "/")
    assert status == 200
    assert content_type.startswith("text/html")
    assert b'src="/web/app.js"' in body
    assert b'href="/web/style.css"' in body


@pytest.mark.parametrize(("name", "content_type"), [("app.js", "text/javascript"),
                                                    ("style.css", "text/css")])
def test_the_script_and_style_are_served_with_their_content_types(make_server, name,
                                                                  content_type):
    status, served_type, body = get(make_server(), f"/web/{name}")
    assert (status, served_type.split(";")[0]) == (200, content_type)
    assert body == (WEB_DIR / name).read_bytes()


def test_paths_outside_the_web_folder_are_404_json(make_server):
    server = make_server()
    for path in ("/web/../api/web.py", "/web/%2e%2e/api/web.py", "/web/%2E%2E%2Fapi%2Fweb.py",
                 "/web/..%2f..%2fpyproject.toml", "/web//etc/passwd", "/web/missing.js"):
        status, content_type, body = get(server, path)
        assert (status, content_type) == (404, "application/json"), path
        assert json.loads(body)["error"]["code"] == "not_found", path


def test_the_script_never_parses_text_as_html():
    script = (WEB_DIR / "app.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)


def require_chromium() -> None:
    """Skip a browser test where Chromium is missing, except in CI, where it must run."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing: make test installs it (apt-get install chromium)")
        pytest.skip("needs /usr/bin/chromium (apt-get install chromium)")


def test_a_browser_starts_a_task_through_the_form_and_sees_it_listed(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"hello": HELLO})
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.querySelector('#types tbody button') !== null")
        assert browser.evaluate("document.getElementById('injected') === null")
        assert browser.evaluate("document.querySelector('#types').textContent"
                                ".includes(\"<b id='injected'>someone</b>\")")
        browser.evaluate("""
            document.querySelector('#types tbody button').click();
            document.querySelector('input[name="var-NAME"]').value = 'from the page';
            document.getElementById('submit-form').requestSubmit();
        """)
        browser.wait_for("document.querySelector('#tasks tbody tr[id^=\"task-\"]') !== null")
        row_id = browser.evaluate("document.querySelector('#tasks tbody tr[id^=\"task-\"]').id")
    task = server.client.get(f"/task/{row_id.removeprefix('task-')}")
    assert (task["type"], task["environment"]["NAME"]) == ("hello", "from the page")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4), so the
    test needs no WebSocket client."""

    def __init__(self, profile: Path):
        self.profile = profile
        self.commands_r, self.commands_w = os.pipe()
        self.replies_r, self.replies_w = os.pipe()
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=self._pipes_to_3_and_4,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(self.commands_r)
        os.close(self.replies_w)
        self.buffer = b""
        self.next_id = 0
        self.session: str | None = None

    def _pipes_to_3_and_4(self) -> None:
        high_r = fcntl.fcntl(self.commands_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(self.replies_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self.session:
            self.screenshot()
        self.proc.kill()
        self.proc.wait()
        os.close(self.commands_w)
        os.close(self.replies_r)

    def send(self, method: str, params: dict | None = None, timeout: float = 15) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.commands_w, json.dumps(message).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            reply = self._read_message(end)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read_message(self, end: float) -> dict:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.replies_r], [], [], max(0, end - time.monotonic()))
            if not ready:
                raise AssertionError("Chromium did not answer in time")
            chunk = os.read(self.replies_r, 65536)
            if not chunk:
                raise AssertionError("Chromium closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def screenshot(self) -> Path | None:
        """The page as it looked when a test failed, in screenshots/ beside the profile;
        its path is printed (pytest shows it with the failure)."""
        folder = self.profile.parent / "screenshots"
        try:
            data = self.send("Page.captureScreenshot", {"format": "png"}, timeout=10)["data"]
        except (AssertionError, OSError, KeyError) as e:
            print(f"no screenshot: {e}")
            return None
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"failure-{int(time.time() * 1000)}.png"
        path.write_bytes(base64.b64decode(data))
        print(f"screenshot of the page at the failure: {path}")
        return path

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15) -> None:
        def holds() -> bool:
            try:
                return bool(self.evaluate(expression))
            except AssertionError as e:  # the page is between two documents: look again
                if "navigated" in str(e) or "context" in str(e).lower():
                    return False
                raise

        wait_until(holds, timeout=timeout, interval=0.05)

    def reload(self) -> None:
        """Load the page again; `window.beforeReload` marks the old document until then. An
        expression that navigates may lose its own answer to the navigation: the browser's
        reload command does not."""
        self.evaluate("window.beforeReload = true")
        self.send("Page.reload", {})


def test_the_page_signs_in_with_a_token_and_starts_a_task_with_its_csrf_token(make_server,
                                                                             tmp_path):
    require_chromium()
    server = make_server(types={"hello": HELLO}, env={"BLANKET_ANONYMOUS": "none"})
    token = server.token("web-user", "submitter")
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.getElementById('login') !== null "
                         "&& !document.getElementById('login').hidden")
        assert browser.evaluate("document.getElementById('who').textContent") == "not signed in"
        browser.evaluate(f"""
            document.getElementById('login-token').value = {json.dumps(token)};
            document.getElementById('login').requestSubmit();
        """)
        browser.wait_for("document.getElementById('who').textContent === "
                         "'web-user (submitter)'")
        assert browser.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        browser.wait_for("document.querySelector('#types tbody button') !== null")
        browser.evaluate("""
            document.querySelector('#types tbody button').click();
            document.querySelector('input[name="var-NAME"]').value = 'signed in';
            document.getElementById('submit-form').requestSubmit();
        """)
        browser.wait_for("document.querySelector('#tasks tbody tr[id^=\"task-\"]') !== null")
        browser.evaluate("document.getElementById('logout').click()")
        browser.wait_for("document.getElementById('who').textContent === 'not signed in'")
    tasks = server.client.get("/task/")
    assert [(t["environment"]["NAME"], t["submitted_by"]) for t in tasks] == [
        ("signed in", "web-user")]


def test_the_page_warns_of_a_task_no_worker_can_take(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"gpu": 'command = "true"\ntags = ["gpu"]\n'})
    task = server.client.post("/task/", {"type": "gpu"})
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        badge = f"document.querySelector('#task-{task['id']} .waiting-warn')"
        browser.wait_for(f"{badge} !== null")
        assert browser.evaluate(f"{badge}.textContent") == "no worker"
        assert "gpu" in browser.evaluate(f"{badge}.title")


WRITER = ('command = "echo line from {{ WHO }}; echo to-err >&2; echo data > made.txt"\n'
          'tags = ["unix"]\n[environment.defaults]\nWHO = "the task"\n')
PARKED = 'command = "true"\ntags = ["gpu"]\n[environment.defaults]\nLONG = ""\n'


def test_a_task_has_a_page_of_its_own_with_its_fields_log_and_files(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"writer": WRITER})
    make_server.worker(server, tags="unix")
    task = server.client.post("/task/?wait=30", {"type": "writer",
                                                 "environment": {"WHO": "<b>me</b>"}})
    assert task["state"] == "SUCCESS"
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{server.url}/#/task/{task['id']}")
        browser.wait_for("document.querySelector('#t-fields tbody tr') != null")
        fields = browser.evaluate("document.querySelector('#t-fields').textContent")
        assert "WHO=<b>me</b>" in fields and "exit_code" in fields  # as text, not markup
        assert browser.evaluate("document.querySelector('#t-fields b') === null")
        browser.wait_for("document.getElementById('t-log')?.textContent.includes('line from')")
        browser.evaluate("document.getElementById('t-stream-stderr').click()")
        browser.wait_for("document.getElementById('t-log')?.textContent.includes('to-err')")
        browser.wait_for("document.querySelector('#t-files a') !== null")
        links = browser.evaluate(
            "[...document.querySelectorAll('#t-files a')].map(a => a.getAttribute('href'))")
        assert f"/task/{task['id']}/files/made.txt" in links
        attempts = browser.evaluate("document.querySelector('#t-attempts tbody').textContent")
        assert "SUCCESS" in attempts
        # a text file is shown as text, in the page
        browser.evaluate("""[...document.querySelectorAll('#t-files tr')]
            .find(r => r.textContent.includes('made.txt')).querySelector('button').click()""")
        browser.wait_for("document.getElementById('t-file-view').textContent === 'data\\n'")
        assert browser.evaluate("document.getElementById('t-log-download').getAttribute('href')"
                                ) == f"/task/{task['id']}/log/stderr"
        # a link from the dashboard's list leads here, and back returns
        browser.evaluate("location.hash = '#/'")
        browser.wait_for(f"document.querySelector('#task-{task['id']} a') !== null")
        browser.evaluate(f"document.querySelector('#task-{task['id']} a').click()")
        browser.wait_for(f"location.hash === '#/task/{task['id']}'")
        browser.evaluate("history.back()")
        browser.wait_for("location.hash === '#/' && !document.getElementById('view-home').hidden")


def test_the_tasks_page_filters_and_pages_from_its_url(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"parked": PARKED, "other": PARKED})
    server.client.post("/task/", [{"type": "parked"}] * 55)
    server.client.post("/task/", {"type": "other"})
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{server.url}/#/tasks?type=other")
        browser.wait_for("document.getElementById('browse-count')?.textContent === '1 task'")
        assert browser.evaluate("document.querySelectorAll('#browse tbody tr').length") == 1
        assert browser.evaluate("document.getElementById('f-type').value") == "other"
        browser.evaluate("location.hash = '#/tasks?type=parked'")
        browser.wait_for("document.getElementById('page-of')?.textContent === 'page 1 of 2'")
        assert browser.evaluate("document.querySelectorAll('#browse tbody tr').length") == 50
        browser.evaluate("document.getElementById('next-page').click()")
        browser.wait_for("document.getElementById('page-of')?.textContent === 'page 2 of 2'")
        assert "page=2" in browser.evaluate("location.hash")
        assert browser.evaluate("document.querySelectorAll('#browse tbody tr').length") == 5
        assert browser.evaluate("document.getElementById('next-page').disabled")
        # the filter form writes the URL
        browser.evaluate("""document.getElementById('f-state').value = 'SUCCESS';
            document.getElementById('filters').requestSubmit();""")
        browser.wait_for("location.hash.includes('state=SUCCESS')")
        browser.wait_for("document.getElementById('browse-count')?.textContent === '0 tasks'")
        browser.evaluate("history.back()")
        browser.wait_for("document.getElementById('page-of')?.textContent === 'page 2 of 2'")
        # a column header sorts, and a second click turns the order round
        browser.evaluate("location.hash = '#/tasks'")
        browser.wait_for("document.getElementById('browse-count')?.textContent === '56 tasks'")
        browser.evaluate("document.querySelector('th[data-sort=\"type\"] button').click()")
        browser.wait_for("location.hash.includes('sort=type')")
        browser.wait_for("document.querySelector('#browse tbody tr td:nth-child(3)')"
                         "?.textContent === 'parked'")
        browser.evaluate("document.querySelector('th[data-sort=\"type\"] button').click()")
        browser.wait_for("location.hash.includes('order=asc')")
        browser.wait_for("document.querySelector('#browse tbody tr td:nth-child(3)')"
                         "?.textContent === 'other'")
        assert browser.evaluate("document.querySelector('th[data-sort=\"type\"]')"
                                ".getAttribute('aria-sort')") == "ascending"
        browser.evaluate("location.hash = '#/tasks?q=OTHER'")  # a text search, in the URL
        browser.wait_for("document.getElementById('browse-count')?.textContent === '1 task'")
        assert browser.evaluate("document.getElementById('f-q').value") == "OTHER"
        browser.evaluate("location.hash = '#/tasks?added_before=-1h'")  # a time range
        browser.wait_for("document.getElementById('browse-count')?.textContent === '0 tasks'")
        assert browser.evaluate("document.getElementById('f-added_before').value") == "-1h"


def test_the_page_has_a_dark_theme_and_fits_a_phone(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"parked": PARKED})
    server.client.post("/task/", {"type": "parked", "environment": {"LONG": "x" * 300}})
    background = "getComputedStyle(document.body).backgroundColor"
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.querySelector('#tasks tbody tr[id^=\"task-\"]') !== null")
        light = browser.evaluate(background)
        browser.send("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        dark = browser.evaluate(background)
        assert light != dark and _darkness(dark) > _darkness(light)
        browser.evaluate("document.getElementById('theme').click()")  # choose light anyway
        assert browser.evaluate(background) == light
        assert browser.evaluate("localStorage.getItem('blanket-theme')") == "light"
        browser.send("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 800, "deviceScaleFactor": 1, "mobile": True})
        browser.reload()
        # the new page, not the old one still showing while it loads
        browser.wait_for("window.beforeReload === undefined && "
                         "document.querySelector('#tasks tbody button') !== null")
        # no sideways scrolling of the page: wide tables scroll inside their section
        wide = browser.evaluate("""[...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > 391 && !e.closest('section'))
            .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 8)""")
        assert browser.evaluate("document.documentElement.scrollWidth") <= 390, wide
        assert browser.evaluate(
            "document.querySelector('#tasks tbody button').getBoundingClientRect().right"
            " <= document.getElementById('tasks-section').getBoundingClientRect().right"
            " || document.getElementById('tasks-section').scrollWidth > 390")


def _darkness(css_colour: str) -> float:
    red, green, blue = (int(n) for n in re.findall(r"\d+", css_colour)[:3])
    return 765 - (red + green + blue)


TYPED = '''
command = "echo {{ COUNT }} {{ LOUD }}"
tags = ["unix"]
[environment.required]
COUNT = { description = "how many", type = "integer" }
LOUD = { description = "shout", type = "boolean" }
TOKEN = { description = "a key", secret = true }
'''


def test_the_start_form_has_the_right_input_for_each_type(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"typed": TYPED})
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.querySelector('#types tbody button') !== null")
        browser.evaluate("document.querySelector('#types tbody button').click()")
        kinds = browser.evaluate("""Object.fromEntries([...document.querySelectorAll(
            '#variables input')].map(i => [i.name, i.type]))""")
        assert kinds == {"var-COUNT": "number", "var-LOUD": "checkbox", "var-TOKEN": "password"}
        # a wrong number is caught by the browser before anything is sent
        assert not browser.evaluate("""(() => { const i = document.querySelector(
            'input[name="var-COUNT"]'); i.value = '2.5'; return i.checkValidity(); })()""")
        browser.evaluate("""
            document.querySelector('input[name="var-COUNT"]').value = '3';
            document.querySelector('input[name="var-LOUD"]').checked = true;
            document.querySelector('input[name="var-TOKEN"]').value = 'k';
            document.getElementById('submit-form').requestSubmit();""")
        browser.wait_for("document.querySelector('#tasks tbody tr[id^=\"task-\"]') !== null")
    task = server.client.get("/task/?type=typed")[0]
    assert task["environment"]["COUNT"] == "3" and task["environment"]["LOUD"] == "true"


def test_workers_and_schedules_are_paused_and_resumed_from_the_page(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"parked": PARKED}, start=False)
    server.write_schedule("hourly", 'type = "parked"\nevery = "1h"\n')
    server.start()
    make_server.worker(server, args=("--id", "w9"))
    wait_until(lambda: server.client.get("/worker/"))
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        pause = ("[...document.querySelectorAll('#workers button')]"
                 ".find(b => b.textContent === '{}')")
        browser.wait_for(f"{pause.format('Pause')} !== undefined")
        browser.evaluate(f"{pause.format('Pause')}.click()")
        wait_until(lambda: server.client.get("/worker/w9")["state"] == "paused")
        browser.wait_for("document.querySelector('.toast') !== null")
        browser.wait_for(f"{pause.format('Resume')} !== undefined")
        browser.evaluate(f"{pause.format('Resume')}.click()")
        wait_until(lambda: server.client.get("/worker/w9")["state"] != "paused")
        button = ("[...document.querySelectorAll('#schedules button')]"
                  ".find(b => b.textContent === '{}')")
        browser.wait_for(f"{button.format('Pause')} !== undefined")
        browser.evaluate(f"{button.format('Pause')}.click()")
        wait_until(lambda: server.client.get("/schedule/hourly")["state"] == "paused")
        browser.evaluate("window.confirm = () => true")  # the removal asks first
        browser.wait_for(f"{pause.format('Remove')} !== undefined")
        browser.evaluate(f"{pause.format('Remove')}.click()")
        # an idle worker told to stop leaves the list at once
        wait_until(lambda: all(w["id"] != "w9" or w["state"] in ("stopping", "gone")
                               for w in server.client.get("/worker/")), timeout=20)


FAILING = 'command = "exit 3"\ntags = ["unix"]\n'


def test_the_dashboard_says_which_queued_tasks_a_broken_type_holds(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"hello": HELLO})
    task = server.client.post("/task/", {"type": "hello", "environment": {"NAME": "x"}})
    server.stop()
    server.write_type("hello", 'command = "echo"\ntimeout = "soon"\n')  # broken while down
    server.start()
    assert server.client.get("/stats")["queued_type_broken"] == 1
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.getElementById('stuck')?.hidden === false")
        assert browser.evaluate("document.getElementById('stuck').textContent") == (
            "1 queued task held because their type's file has problems: fix the file to run "
            "them")
        browser.open(f"{server.url}/#/task/{task['id']}")
        browser.wait_for("document.getElementById('t-waiting')?.textContent.includes("
                         "'GET /task_type/hello')")
        assert browser.evaluate("document.getElementById('t-waiting').className") == \
            "waiting-line waiting-warn"

def test_the_dashboard_counts_charts_and_lists_failures(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"writer": WRITER, "failing": FAILING, "parked": PARKED})
    make_server.worker(server, tags="unix")
    for _ in range(2):
        assert server.client.post("/task/?wait=30", {"type": "writer"})["state"] == "SUCCESS"
    failed = server.client.post("/task/?wait=30", {"type": "failing"})
    server.client.post("/task/", {"type": "parked"})  # tagged gpu: no worker can take it
    stats = server.client.get("/stats")
    assert stats["states"]["SUCCESS"] == 2 and stats["states"]["FAILED"] == 1
    assert stats["ended_by_type"] == {"failing": {"FAILED": 1}, "writer": {"SUCCESS": 2}}
    assert sum(count for _, count in stats["ended_per_minute"]) == 3
    assert [w for _, w in stats["queue_wait_per_minute"] if w is not None]  # they started
    assert stats["queued_no_worker"] == 1 and sum(stats["workers"].values()) == 1
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.querySelectorAll('#type-bars rect').length === 2")
        assert browser.evaluate("document.querySelector('#type-bars svg').textContent"
                                ".includes('writer')")
        assert browser.evaluate("document.querySelectorAll('#per-minute rect').length") == 60
        assert browser.evaluate("document.querySelectorAll('#queue-wait rect').length") >= 1
        browser.wait_for(f"document.querySelector('#failures a[href=\"#/task/{failed['id']}\"]')"
                         " !== null")
        assert not browser.evaluate("document.getElementById('stuck').hidden")
        assert "1 queued task" in browser.evaluate("document.getElementById('stuck').textContent")
        browser.evaluate("document.querySelector('#state-counts a[href=\"#/tasks?state=FAILED\"]')"
                         ".click()")
        browser.wait_for("document.getElementById('browse-count')?.textContent === '1 task'")
        browser.evaluate("history.back()")
        browser.wait_for("!document.getElementById('view-home').hidden")
        browser.evaluate("document.getElementById('window-day').click()")
        browser.wait_for("document.getElementById('window-day').classList.contains('current')")


def test_tasks_are_chosen_together_and_stopped_rerun_or_removed(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"parked": PARKED})
    ids = [t["id"] for t in server.client.post("/task/", [{"type": "parked"}] * 3)["tasks"]]
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{server.url}/#/tasks?type=parked")
        browser.wait_for("document.querySelectorAll('#browse input.pick').length === 3")
        browser.evaluate("window.confirm = () => true")
        browser.evaluate("document.getElementById('select-all').click()")
        assert browser.evaluate("document.getElementById('selected-count').textContent") == \
            "3 selected"
        browser.evaluate("document.getElementById('bulk-stop').click()")
        wait_until(lambda: all(server.client.get(f"/task/{i}")["state"] == "STOPPED"
                               for i in ids))
        browser.wait_for("document.querySelector('.toast')?.textContent === 'Stopped 3 tasks.'")
        browser.wait_for("document.querySelectorAll('#browse input.pick:checked').length === 0")
        browser.evaluate(f"document.querySelector('#browse-{ids[0]} input.pick').click()")
        browser.evaluate("document.getElementById('bulk-rerun').click()")
        wait_until(lambda: server.client.get("/task/?count&type=parked")["count"] == 4)
        browser.wait_for("document.querySelectorAll('#browse input.pick').length === 4")
        for task_id in ids[1:]:
            browser.evaluate(f"document.querySelector('#browse-{task_id} input.pick').click()")
        browser.evaluate("document.getElementById('bulk-remove').click()")
        wait_until(lambda: server.client.get("/task/?count&type=parked")["count"] == 2)


def test_a_schedule_has_a_page_with_its_next_fires_and_runs(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"writer": WRITER}, start=False)
    server.write_schedule("hourly", 'type = "writer"\nevery = "1h"\n')
    server.start()
    make_server.worker(server, tags="unix")
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        link = "document.querySelector('#schedules a[href=\"#/schedule/hourly\"]')"
        browser.wait_for(f"{link} !== null")
        browser.evaluate(f"{link}.click()")
        browser.wait_for("document.getElementById('s-name')?.textContent === 'hourly'")
        browser.wait_for("document.getElementById('s-fields').textContent.includes('next fires')")
        run = ("[...document.querySelectorAll('#s-buttons button')]"
               ".find(b => b.textContent === '{}')")
        browser.wait_for(f"{run.format('Run now')} !== undefined")
        browser.evaluate(f"{run.format('Run now')}.click()")
        browser.wait_for("document.querySelector('#s-runs .state-SUCCESS') !== null", timeout=30)
        browser.evaluate(f"{run.format('Pause')}.click()")
        wait_until(lambda: server.client.get("/schedule/hourly")["paused"])


SECRET_DEFAULT = ('command = "echo {{ WORD }}"\ntags = ["unix"]\n[environment.defaults]\n'
                  'WORD = "hi"\nAPI_KEY = { value = "sk-do-not-show", secret = true }\n')


def test_a_type_has_a_page_with_its_definition_and_the_versions_that_ran(make_server,
                                                                        tmp_path):
    require_chromium()
    server = make_server(types={"speaker": SECRET_DEFAULT, "loud": 'extends = "speaker"\n'})
    make_server.worker(server, tags="unix")
    first = server.client.post("/task/?wait=30", {"type": "speaker"})
    versions = server.client.get("/task_type/speaker/versions")
    assert [(v["version"], v["tasks"]) for v in versions] == [(first["version"], 1)]
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        link = "document.querySelector('#types a[href=\"#/type/speaker\"]')"
        browser.wait_for(f"{link} !== null")
        browser.evaluate(f"{link}.click()")
        browser.wait_for("document.getElementById('y-fields')?.textContent.includes('echo')")
        shown = browser.evaluate("document.getElementById('view-type').textContent")
        assert "sk-do-not-show" not in shown and "API_KEY=***" in shown
        browser.wait_for("document.querySelectorAll('#y-versions tbody tr td').length > 1")
        assert "(current)" in browser.evaluate(
            "document.getElementById('y-versions').textContent")
        assert "extends" not in browser.evaluate(
            "document.getElementById('y-fields').textContent")
        browser.evaluate("location.hash = '#/type/loud'")
        browser.wait_for("document.getElementById('y-name')?.textContent === 'loud'")
        browser.wait_for("document.getElementById('y-fields')?.textContent.includes('echo')")
        fields = browser.evaluate("document.getElementById('y-fields').textContent")
        assert "extendsspeaker" in fields.replace(" ", "").replace("\n", ""), fields


def test_a_failing_browser_test_leaves_a_screenshot(make_server, tmp_path, capsys):
    require_chromium()
    server = make_server()
    try:
        with Browser(tmp_path / "chromium") as browser:
            browser.open(server.url + "/")
            browser.wait_for("document.querySelector('#types') !== null")
            raise RuntimeError("a test's failure")
    except RuntimeError:
        pass
    shots = list((tmp_path / "screenshots").glob("failure-*.png"))
    assert len(shots) == 1 and shots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(shots[0]) in capsys.readouterr().out


def test_an_extra_variable_lines_up_with_the_declared_ones_and_is_sent(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"hello": "allow_extra_environment = true\n" + HELLO})
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.querySelector('#types tbody button') !== null")
        browser.evaluate("document.querySelector('#types tbody button').click()")
        browser.evaluate("document.getElementById('add-extra').click()")
        left = browser.evaluate("""[document.querySelector('input[name="var-NAME"]'),
            document.querySelector('.extra-value')].map(i => i.getBoundingClientRect().left)""")
        assert abs(left[0] - left[1]) < 2, left  # the value under the declared value
        browser.evaluate("""
            document.querySelector('input[name="var-NAME"]').value = 'x';
            document.querySelector('.extra-key').value = 'COLOUR';
            document.querySelector('.extra-value').value = 'blue';
            document.getElementById('submit-form').requestSubmit();""")
        browser.wait_for("document.querySelector('#tasks tbody tr[id^=\"task-\"]') !== null")
    assert server.client.get("/task/?type=hello")[0]["environment"]["COLOUR"] == "blue"


def test_types_schedules_and_workers_each_have_a_url(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"parked": PARKED})
    with Browser(tmp_path / "chromium") as browser:
        for part, section in (("workers", "workers-section"), ("types", "types-section"),
                              ("schedules", "schedules-section")):
            browser.open(f"{server.url}/#/{part}")
            # the script has applied the route once the header marks it
            browser.wait_for(f"document.getElementById('nav-{part}')?.classList"
                             ".contains('current')")
            shown = browser.evaluate("""[...document.querySelectorAll('#view-home section')]
                .filter(s => !s.hidden && s.id !== 'submit-section' && s.id !== 'log-section')
                .map(s => s.id)""")
            assert shown == [section], (part, shown)


def test_a_running_tasks_log_is_followed_and_can_be_paused(make_server, tmp_path):
    require_chromium()
    ticking = ('command = "for i in $(seq 1 40); do echo tick $i; sleep 0.25; done"\n'
               'tags = ["unix"]\n')
    server = make_server(types={"ticking": ticking})
    make_server.worker(server, tags="unix")
    task = server.client.post("/task/", {"type": "ticking"})
    wait_until(lambda: server.client.get(f"/task/{task['id']}")["state"] == "RUNNING")
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{server.url}/#/task/{task['id']}")
        browser.wait_for("document.getElementById('t-log')?.textContent.includes('tick 2')")
        assert not browser.evaluate("document.getElementById('t-log-pause').hidden")
        browser.evaluate("document.getElementById('t-log-pause').click()")
        paused = browser.evaluate("document.getElementById('t-log').textContent")
        time.sleep(1)
        assert browser.evaluate("document.getElementById('t-log').textContent") == paused
        assert browser.evaluate("document.getElementById('t-log-pause').textContent") == "Follow"
        browser.evaluate("document.getElementById('t-log-pause').click()")
        browser.wait_for("document.getElementById('t-log').textContent.length > "
                         f"{len(paused)}", timeout=20)
    server.client.post(f"/task/{task['id']}/stop")
