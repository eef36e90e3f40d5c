"""The shipped workflows in the real ComfyUI frontend, served by the real host, in headless Chromium.

Each workflow is loaded as a user would drop it in; the page must know every node type, keep
every link, and show each widget's value under the input the schema names. The basic workflows
are then queued from the page on random weights until the result image arrives. Screenshots of
the graph and of the result go to .artifacts/screenshots/<host>/ (the README's pictures).
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from ipx2p_tools.layout import ARTIFACTS_DIR
from ipx2p_tools.workflow import load_ui, ui_to_api

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
GOLDEN_WORKFLOWS = Path(__file__).resolve().parent / "golden" / "workflows"
CHROMIUM = "/usr/bin/chromium"
EXTERNAL_NODES = {"ip2p_ipadapter.json": {"IPAdapter", "IPAdapterUnifiedLoader"}}  # IPAdapter_plus, not installed
RUNNABLE = ["ip2p_edit.json", "ip2p_custom_sampler.json"]



@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Flags for a closed network and a root user (the machine has no sandbox support).
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync",
        ])
        yield instance
        instance.close()


@pytest.fixture()
def page(browser, server):
    # A first visit opens the template gallery over the graph; a returning user has this set.
    requests.post(f"{server.url}/settings/Comfy.TutorialCompleted", json=True, timeout=30).raise_for_status()
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(server.url)
    tab.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
    tab.errors = errors
    yield tab
    context.close()


def close_dialogs(page) -> None:
    """Dismiss what the frontend opens over the graph (the missing-models list, which the
    workflows' properties.models fill with download links, and announcements)."""
    for _ in range(2):
        page.keyboard.press("Escape")
        page.wait_for_timeout(200)


def screenshot_path(host_name: str, name: str) -> Path:
    directory = ARTIFACTS_DIR / "screenshots" / host_name
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def load_in_page(page, workflow: dict) -> list[dict]:
    """Load a workflow as a drop would, once the page has finished opening its start-up graph
    (loading earlier races with that and can be overwritten)."""
    try:
        page.wait_for_function("() => window.app.graph._nodes.length > 0", timeout=20_000)
    except Exception:  # a frontend that starts with an empty graph
        pass
    wanted = sorted(node["type"] for node in workflow["nodes"])
    for _ in range(3):
        page.evaluate("async wf => { await window.app.loadGraphData(wf); }", workflow)
        page.wait_for_timeout(300)
        if sorted(page.evaluate("() => window.app.graph._nodes.map(n => n.type)")) == wanted:
            break
    # Zoom out so every node is on screen: the frontend draws (and fetches the images of) visible
    # nodes only, and the screenshots should show the whole graph.
    width = max(node["pos"][0] + node["size"][0] for node in workflow["nodes"]) + 40
    page.evaluate("""scale => { const ds = window.app.canvas.ds; ds.scale = scale;
                                ds.offset = [110 / scale, 150 / scale]; window.app.canvas.setDirty(true, true); }""",
                  max(0.65, min(1.0, 1750 / width)))  # below ~0.6 the frontend hides all text
    return page.evaluate("""() => window.app.graph._nodes.map(n => ({
        id: String(n.id), type: n.type, known: !!LiteGraph.registered_node_types[n.type],
        widgets: (n.widgets || []).map(w => [w.name, w.value]),
        inputs: (n.inputs || []).map(i => [i.name, i.link]),
    }))""")


def page_links(page) -> list[list]:
    return page.evaluate("""() => {
        const links = window.app.graph.links;
        const all = links instanceof Map ? [...links.values()] : Object.values(links);
        return all.filter(l => l).map(l => [l.id, String(l.origin_id), l.origin_slot, String(l.target_id), l.target_slot]);
    }""")


def workflow_files() -> list[Path]:
    """The shipped workflows, then each golden copy that differs from every file already listed
    (an unchanged file would load the same graph twice)."""
    files, seen = [], set()
    for path in sorted(WORKFLOWS.glob("*.json")) + sorted(GOLDEN_WORKFLOWS.glob("*/*.json")):
        content = path.read_bytes()
        if content not in seen:
            files.append(path)
            seen.add(content)
    return files


# On the floor host's older frontend: every workflow of the pack's own nodes (the composition
# ones add only core and third-party nodes to the basic edit).
FLOOR_WORKFLOWS = {"ip2p_edit.json", "ip2p_masked.json", "ip2p_paste_back.json", "ip2p_crop_stitch.json", "ip2p_sweep.json",
                   "ip2p_batch.json", "ip2p_iterative.json", "cosxl_edit.json", "sdxl_ip2p.json", "make_editable.json"}


def workflow_params() -> list:
    """Every shipped workflow and older release's copy loads on the full host; a set covering every
    node and widget on the floor host too."""
    return [pytest.param(path, marks=[pytest.mark.floor] if path.parent == WORKFLOWS and path.name in FLOOR_WORKFLOWS else [],
                         id=f"{path.parent.name}/{path.name}") for path in workflow_files()]


@pytest.mark.parametrize("path", workflow_params())
def test_workflow_loads_in_the_frontend(page, server, host_name, path):
    workflow = json.loads(path.read_text())
    nodes = load_in_page(page, workflow)
    close_dialogs(page)
    page.screenshot(path=str(screenshot_path(host_name, f"{path.parent.name}_{path.stem}_graph.png")))

    missing = {node["type"] for node in nodes if not node["known"]}
    assert missing == EXTERNAL_NODES.get(path.name, set())
    assert len(nodes) == len(workflow["nodes"])
    # every link of the file is in the page, between the same slots
    file_links = sorted([link[0], str(link[1]), link[2], str(link[3]), link[4]] for link in workflow["links"])
    assert sorted(page_links(page)) == file_links
    if missing:
        return
    # Widget values sit under the inputs the schema names: the page agrees with the API format
    # the host's node definitions give for the same file.
    expected = ui_to_api(load_ui(path), server.get_json("/object_info")).prompt
    for node in nodes:
        for name, value in node["widgets"]:
            if name in expected[node["id"]]["inputs"]:
                assert expected[node["id"]]["inputs"][name] == value, (node["type"], name)
    assert not page.errors, page.errors


@pytest.mark.parametrize("name", [pytest.param(RUNNABLE[0], marks=pytest.mark.floor), *RUNNABLE[1:]])
def test_workflow_queued_from_the_page_shows_the_result(page, server, host_name, ip2p_ckpt, tmp_path, name):
    picture = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (30, 140, 200)).save(picture)
    uploaded = server.upload_image(picture)
    load_in_page(page, json.loads((WORKFLOWS / name).read_text()))
    settings = {"ckpt_name": ip2p_ckpt.name, "image": uploaded, "resize": "keep", "steps": 2}
    page.evaluate("""settings => {
        for (const node of window.app.graph._nodes)
            for (const widget of node.widgets || [])
                if (widget.name in settings) widget.value = settings[widget.name];
    }""", settings)
    # The API prompt the frontend itself builds is what it sends to /prompt.
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert {n["class_type"] for n in prompt.values()} >= {"IPX2P_CheckpointLoader", "IPX2P_EncodeImage"}
    before = set(server.get_json("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + 600
    while not (set(server.get_json("/history")) - before):
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.5)
    prompt_id = (set(server.get_json("/history")) - before).pop()
    entry = server.wait_history(prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    image = entry["outputs"][save_id]["images"][0]
    with Image.open(io.BytesIO(server.view(image))) as result:
        assert result.size == (64, 48)
    # and the page shows it on the Save Image node
    page.wait_for_function("id => { const n = window.app.graph.getNodeById(Number(id)) || window.app.graph.getNodeById(id);"
                           " return n && n.imgs && n.imgs.length > 0 && n.imgs[0].complete; }", arg=save_id, timeout=60_000)
    close_dialogs(page)
    page.screenshot(path=str(screenshot_path(host_name, f"{Path(name).stem}_result.png")))
    assert not page.errors, page.errors


@pytest.mark.floor
def test_released_workflows_are_kept_as_golden_copies():
    # A saved workflow is a contract: each release's shipped files stay here and must keep loading
    # (the tests above load them in the frontend, test_graph_edit runs the current ones).
    releases = sorted(p.name for p in GOLDEN_WORKFLOWS.iterdir())
    assert releases, "no golden workflows"
    latest = GOLDEN_WORKFLOWS / releases[-1]
    for path in sorted(WORKFLOWS.glob("*.json")):
        assert (latest / path.name).exists(), f"{path.name} was never released as a golden copy"

