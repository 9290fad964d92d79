"""The web page's workflows through a real server, workers and headless Chromium: the
workflows view lists each file with its problems and a form that starts a run; a run's page
draws its steps as a graph (columns by depth, arrows for `after`) whose states follow the run
without a reload; a failed run is rerun and a running one stopped from its page."""

from __future__ import annotations

import json

from tests.conftest import wait_until
from tests.e2e.test_web import Browser, require_chromium
from tests.e2e.test_workflows import start_wide_run

GOOD = '''
description = "Greets <b id='injected'>everyone</b>"
required = ["WHO"]
[environment]
GREETING = "hello"

[steps.say]
command = "echo {{ GREETING }} {{ WHO }}"

[steps.after-say]
command = "true"
after = ["say"]
'''

BROKEN = '''
[steps.a]
command = "true"
after = ["nowhere"]
'''

# b and c wait for a file the test makes, so the page is seen while they run.
DIAMOND = '''
description = "a, then b and c side by side, then d"
required = ["WHO"]

[steps.a]
command = "true"

[steps.b]
command = "while [ ! -f GATE ]; do sleep 0.05; done"
after = ["a"]

[steps.c]
command = "while [ ! -f GATE ]; do sleep 0.05; done"
after = ["a"]

[steps.d]
command = "true"
after = ["b", "c"]
'''

FLAKY = '''
[steps.a]
command = "true"
[steps.b]
command = "test -f MARKER"
after = ["a"]
[steps.c]
command = "true"
after = ["a"]
[steps.d]
command = "true"
after = ["b", "c"]
'''

BOX = "document.querySelector('#r-graph g.step[data-step=\"{}\"]')"


def box_states(browser) -> dict[str, str]:
    """Each box of the graph: its step and the state its class names."""
    return browser.evaluate("""Object.fromEntries([...document.querySelectorAll(
        '#r-graph g.step')].map(g => [g.dataset.step,
        [...g.classList].find(c => c.startsWith('state-')).slice(6)]))""")


def run_ended(server, run_id: int) -> dict:
    return wait_until(lambda: (lambda r: r if r["state"] != "running" else None)(
        server.client.get(f"/run/{run_id}")), timeout=60)


def test_the_workflows_view_lists_each_file_with_its_problems_and_a_run_form(make_server,
                                                                            tmp_path):
    require_chromium()
    server = make_server(start=False)
    server.write_workflow("good", GOOD)
    server.write_workflow("broken", BROKEN)
    server.start()
    listed = {w["name"]: w for w in server.client.get("/workflow/")}
    problem = listed["broken"]["problems"][0]
    assert listed["broken"]["definition"] is None and problem["line"]
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.getElementById('nav-workflows') !== null")
        browser.evaluate("document.getElementById('nav-workflows').click()")
        card = "document.querySelector('section.workflow[data-workflow=\"{}\"]')"
        browser.wait_for(f"{card.format('good')}?.querySelector('form') != null")
        browser.wait_for(f"{card.format('broken')} !== null")
        assert browser.evaluate("document.getElementById('nav-workflows').classList"
                                ".contains('current')")
        good = browser.evaluate(f"{card.format('good')}.textContent")
        assert "Greets <b id='injected'>everyone</b>" in good  # as text, not markup
        assert browser.evaluate("document.getElementById('injected') === null")
        assert "2 steps" in good and listed["good"]["version"][:12] in good
        assert "It has not run yet." in good
        fields = browser.evaluate(f"""Object.fromEntries([...{card.format('good')}
            .querySelectorAll('form input')].map(i => [i.name, [i.value, i.required]]))""")
        assert fields == {"var-WHO": ["", True], "var-GREETING": ["hello", False]}
        broken = browser.evaluate(f"{card.format('broken')}.textContent")
        line = f"{problem['file']}:{problem['line']}: {problem['message']}"
        assert line in broken and "nowhere" in broken
        assert browser.evaluate(f"{card.format('broken')}.querySelector('form') === null")
        assert browser.evaluate(f"{card.format('broken')}.classList.contains('has-problem')")
        # a value typed in the form outlives the view's refreshes
        browser.evaluate(f"""{card.format('good')}.querySelector('input[name="var-WHO"]')
            .value = 'typed'""")
        browser.evaluate("(() => { const f = window.fetch; window.fetchCount = 0; window.fetch"
                         " = (...a) => { window.fetchCount++; return f(...a); }; })()")
        browser.wait_for("window.fetchCount >= 6")  # two refreshes at least
        assert browser.evaluate(f"""{card.format('good')}
            .querySelector('input[name="var-WHO"]').value""") == "typed"
        # a run started elsewhere shows in the card's latest runs, linking to its page
        run = server.client.post("/workflow/good/run", {"environment": {"WHO": "api"}})
        browser.wait_for(f"""{card.format('good')}
            .querySelector('.runs a[href="#/run/{run['id']}"]') !== null""")
        assert browser.evaluate(f"""{card.format('good')}
            .querySelector('input[name="var-WHO"]').value""") == "typed"


def test_a_run_started_from_the_form_is_drawn_as_a_graph_that_follows_it(make_server,
                                                                         tmp_path):
    require_chromium()
    gate = tmp_path / "gate"
    server = make_server(start=False)
    server.write_workflow("diamond", DIAMOND.replace("GATE", str(gate)))
    server.start()
    make_server.worker(server, slots=2)
    who = "<b id='from-form'>the page</b>"
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/#/workflows")
        form = "document.querySelector('section.workflow[data-workflow=\"diamond\"] form')"
        browser.wait_for(f"{form} !== null")
        browser.evaluate(f"""{form}.querySelector('input[name="var-WHO"]').value =
            {json.dumps(who)}; {form}.requestSubmit()""")
        browser.wait_for("location.hash.startsWith('#/run/')")
        run_id = int(browser.evaluate("location.hash").removeprefix("#/run/"))
        browser.evaluate("window.notReloaded = true")
        # b and c run side by side (they wait for the gate); d waits for both
        browser.wait_for(f"{BOX.format('c')}?.classList.contains('state-running')", timeout=30)
        browser.wait_for(f"{BOX.format('b')}?.classList.contains('state-running')", timeout=30)
        assert box_states(browser) == {"a": "succeeded", "b": "running", "c": "running",
                                       "d": "pending"}
        columns = browser.evaluate("""Object.fromEntries([...document.querySelectorAll(
            '#r-graph g.step')].map(g => [g.dataset.step, Number(g.dataset.column)]))""")
        assert columns == {"a": 0, "b": 1, "c": 1, "d": 2}
        edges = browser.evaluate("""[...document.querySelectorAll('#r-graph path.edge')]
            .map(p => p.dataset.from + '>' + p.dataset.to).sort()""")
        assert edges == ["a>b", "a>c", "b>d", "c>d"]
        left = browser.evaluate("""Object.fromEntries([...document.querySelectorAll(
            '#r-graph g.step')].map(g => [g.dataset.step, g.getBoundingClientRect().left]))""")
        assert left["a"] < left["b"] == left["c"] < left["d"]
        assert "command" in browser.evaluate(f"{BOX.format('a')}.textContent")
        assert not browser.evaluate("document.getElementById('r-buttons').textContent"
                                    ".includes('Rerun')")
        assert browser.evaluate("document.getElementById('r-buttons').textContent") == "Stop"
        fields = browser.evaluate("document.getElementById('r-fields').textContent")
        assert f"WHO={who}" in fields and "diamond" in fields
        assert browser.evaluate("document.getElementById('from-form') === null")
        gate.write_text("")
        browser.wait_for("document.querySelectorAll('#r-graph g.step.state-succeeded')"
                         ".length === 4", timeout=30)
        browser.wait_for("document.querySelector('#r-state .state')?.textContent"
                         " === 'succeeded'")
        assert browser.evaluate("window.notReloaded") is True  # followed without a reload
        assert browser.evaluate("document.getElementById('r-buttons').textContent") == ""
        browser.evaluate(f"{BOX.format('d')}.dispatchEvent(new MouseEvent('click'))")
        browser.wait_for("document.querySelector('#r-step-tasks a') !== null")
        assert browser.evaluate(f"{BOX.format('d')}.classList.contains('selected')")
        link = browser.evaluate("document.querySelector('#r-step-tasks a').getAttribute('href')")
        # the task's own page links back to its run
        browser.evaluate("document.querySelector('#r-step-tasks a').click()")
        browser.wait_for(f"document.querySelector('#t-fields a[href=\"#/run/{run_id}\"]')"
                         " !== null")
        back = browser.evaluate(f"document.querySelector('#t-fields a[href=\"#/run/{run_id}\"]')"
                                ".textContent")
        assert back == f"run {run_id}, step d"
    run = server.client.get(f"/run/{run_id}")
    assert run["state"] == "succeeded" and run["environment"]["WHO"] == who
    steps = {s["name"]: s for s in run["steps"]}
    assert link == f"#/task/{steps['d']['tasks'][0]['id']}"


def test_a_failed_run_is_rerun_from_its_page_by_a_signed_in_operator(make_server, tmp_path):
    require_chromium()
    marker = tmp_path / "b-may-succeed"
    server = make_server(start=False, env={"BLANKET_ANONYMOUS": "none"})
    server.write_workflow("flaky", FLAKY.replace("MARKER", str(marker)))
    server.start()
    make_server.worker(server, slots=2)
    run = server.client.post("/workflow/flaky/run", {})
    assert run_ended(server, run["id"])["state"] == "failed"
    token = server.token("web-operator", "operator")
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{server.url}/#/run/{run['id']}")
        browser.send("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 800, "deviceScaleFactor": 1, "mobile": True})
        browser.wait_for("document.getElementById('login')?.hidden === false")
        browser.evaluate(f"""document.getElementById('login-token').value = {json.dumps(token)};
            document.getElementById('login').requestSubmit()""")
        browser.wait_for(f"{BOX.format('d')} !== null")
        assert box_states(browser) == {"a": "succeeded", "b": "failed", "c": "succeeded",
                                       "d": "skipped"}
        assert browser.evaluate("document.getElementById('r-buttons').textContent"
                                ) == "Rerun failed steps"
        # a phone: the page does not scroll sideways; the graph scrolls inside its section
        assert browser.evaluate("document.documentElement.scrollWidth") <= 390
        assert browser.evaluate("document.getElementById('r-graph').scrollWidth > "
                                "document.getElementById('r-graph').clientWidth")
        # the boxes take the page's state colours, in either theme
        stroke = f"getComputedStyle({BOX.format('b')}.querySelector('rect.box')).stroke"
        light = browser.evaluate(stroke)
        assert light == browser.evaluate("getComputedStyle(document.querySelector("
                                         "'#r-state .state')).color")
        browser.evaluate("document.getElementById('theme').click()")
        assert browser.evaluate(stroke) != light
        # a box is chosen from the keyboard too, and keeps the focus
        browser.evaluate(f"""{BOX.format('b')}.focus(); {BOX.format('b')}.dispatchEvent(
            new KeyboardEvent('keydown', {{key: 'Enter', bubbles: true}}))""")
        browser.wait_for("!document.getElementById('r-step').hidden")
        assert browser.evaluate(f"document.activeElement === {BOX.format('b')}")
        assert "ended FAILED" in browser.evaluate(
            "document.getElementById('r-step-reason').textContent")
        assert browser.evaluate("document.querySelectorAll('#r-step-tasks tbody a').length") == 1
        marker.write_text("")
        browser.evaluate("[...document.querySelectorAll('#r-buttons button')]"
                         ".find(b => b.textContent === 'Rerun failed steps').click()")
        wait_until(lambda: server.client.get(f"/run/{run['id']}")["round"] == 2)
        browser.wait_for("document.querySelector('#r-state .state')?.textContent"
                         " === 'succeeded'", timeout=30)
        assert box_states(browser) == dict.fromkeys("abcd", "succeeded")
        # the chosen step stays chosen, now with both rounds' tasks
        browser.wait_for("document.querySelectorAll('#r-step-tasks tbody a').length === 2")
    assert run_ended(server, run["id"])["round"] == 2


def test_a_running_run_is_stopped_from_its_page(make_server, tmp_path):
    require_chromium()
    server = make_server(start=False)
    server.write_workflow("held", '[steps.wait]\ncommand = "sleep 600"\n'
                                  '[steps.then]\ncommand = "true"\nafter = ["wait"]\n')
    server.start()
    make_server.worker(server)
    run = server.client.post("/workflow/held/run", {})
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{server.url}/#/run/{run['id']}")
        browser.wait_for("document.getElementById('r-buttons')?.textContent === 'Stop'")
        browser.evaluate("window.confirm = () => true")
        browser.evaluate("document.querySelector('#r-buttons button').click()")
        wait_until(lambda: server.client.get(f"/run/{run['id']}")["state"] == "stopped")
        browser.wait_for("document.getElementById('r-buttons').textContent"
                         " === 'Rerun failed steps'")
        browser.wait_for("document.querySelector('#r-state .state')?.textContent === 'stopped'")
    wait_until(lambda: all(s["state"] in ("stopped", "skipped", "pending")
                           for s in server.client.get(f"/run/{run['id']}")["steps"]))


def test_an_arrow_that_passes_a_column_goes_between_its_boxes_never_under_one(make_server,
                                                                              tmp_path):
    require_chromium()
    server = make_server()
    # a -> b -> c -> d, and a -> d and b -> d: two arrows pass over columns that hold boxes
    steps = [{"name": "a", "after": []}, {"name": "b", "after": ["a"]},
             {"name": "c", "after": ["b"]}, {"name": "d", "after": ["a", "b", "c"]}]
    with Browser(tmp_path / "chromium") as browser:
        browser.open(server.url + "/")
        browser.wait_for("typeof layoutRun === 'function'")
        placed = browser.evaluate(f"""(() => {{
            const layout = layoutRun({json.dumps(steps)}, 65);
            return [...layout.items.values()].map(i => ({{id: i.id, box: Boolean(i.step),
                x: i.x, top: i.y, bottom: i.y + i.h}}));
        }})()""")
    boxes = [p for p in placed if p["box"]]
    lanes = [p for p in placed if not p["box"]]
    assert sorted(lane["id"] for lane in lanes) == ["a>d@1", "a>d@2", "b>d@2"]
    for lane in lanes:
        for box in boxes:
            if box["x"] == lane["x"]:  # the same column
                assert lane["bottom"] <= box["top"] or lane["top"] >= box["bottom"], (lane, box)
    assert [b["x"] for b in sorted(boxes, key=lambda b: b["id"])] == sorted(
        b["x"] for b in boxes) and len({b["x"] for b in boxes}) == 4


def test_a_wide_fan_out_is_counted_in_its_box_and_its_tasks_paged(make_server, tmp_path):
    require_chromium()
    server, run = start_wide_run(make_server, "fan")
    rows = "[...document.querySelectorAll('#r-step-tasks tbody tr')]"
    items = f"{rows}.map(r => Number(r.children[1].textContent))"
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{server.url}/#/run/{run['id']}")
        browser.wait_for(f"{BOX.format('fan')} !== null")
        text = browser.evaluate(f"{BOX.format('fan')}.textContent")
        assert "running · 250 items" in text and "250 queued" in text, text
        browser.evaluate(f"{BOX.format('fan')}.dispatchEvent(new MouseEvent('click'))")
        browser.wait_for(f"{rows}.length === 100")
        assert browser.evaluate("document.getElementById('r-step-of').textContent") == \
            "tasks 1\u2013100 of 250"
        assert browser.evaluate("document.getElementById('r-step-prev').disabled") is True
        browser.evaluate("document.getElementById('r-step-next').click()")
        browser.wait_for(f"{items}[0] === 100")
        assert browser.evaluate(items) == list(range(100, 200))
        browser.evaluate("document.getElementById('r-step-next').click()")
        browser.wait_for(f"{items}[0] === 200")
        assert browser.evaluate(items) == list(range(200, 250))
        assert browser.evaluate("document.getElementById('r-step-next').disabled") is True
        assert browser.evaluate("document.getElementById('r-step-of').textContent") == \
            "tasks 201\u2013250 of 250"
        # a later page follows the run too, though the run's own answer does not hold it:
        # it is fetched again at each refresh even when nothing in that answer changed
        browser.evaluate("""window.pages = 0; const fetched = window.fetch;
            window.fetch = (url, options) => {
              if (String(url).includes('/tasks?step=')) window.pages += 1;
              return fetched(url, options); }""")
        browser.wait_for("window.pages >= 2", timeout=10)
        last = server.client.get(f"/run/{run['id']}/tasks?step=fan&offset=249")["tasks"][0]
        server.client.delete(f"/task/{last['id']}")
        browser.wait_for(f"{rows}[49].textContent.includes('removed')", timeout=10)
        browser.evaluate("document.getElementById('r-step-prev').click()")
        browser.wait_for(f"{items}[0] === 100")
