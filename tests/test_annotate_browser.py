"""End to end in a real headless Chromium: load the page, answer with the keyboard, undo,
review a conflict, and check what the store holds.

Drives Debian's ``chromium`` (apt) through Playwright's Python API with
``executable_path``: no browser download. Without chromium or playwright the
test is skipped with the reason, unless ``AAS_REQUIRE_BROWSER=1`` (set by
``.ci/run``), where it fails instead.
"""

import os
import shutil

import pytest

from _annotate import Server, make_run
from aas_core.annotate import AnnotationStore

pytestmark = pytest.mark.browser

REQUIRED = os.environ.get("AAS_REQUIRE_BROWSER") == "1"


def _chromium():
    exe = (
        os.environ.get("AAS_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    missing = None
    if exe is None:
        missing = "no chromium executable (apt-get install chromium, or set AAS_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "playwright is not installed (pip install '.[test]')"
    try:
        import flask  # noqa: F401
    except ImportError:
        missing = "the [web] extra is not installed"
    if missing:
        if REQUIRED:
            pytest.fail(f"AAS_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    return exe


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        problems = []
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: problems.append(str(e)))
        yield pg, problems
    finally:
        context.close()


def _shows(pg, pair_id):
    pg.wait_for_selector(f'main[data-state="ready"][data-pair-id="{pair_id}"]')


def test_answer_with_the_keyboard_undo_review_a_conflict_and_check_the_store(page, tmp_path):
    pg, problems = page
    # pairs 1..5: (0,1) (1,2) (0,2) (3,4) (5,6); image 6 is missing on disk
    store_path, images = make_run(
        tmp_path, pairs=[(0, 1), (1, 2), (0, 2), (3, 4), (5, 6)], missing=(6,)
    )
    shots = os.environ.get("AAS_SCREENSHOT_DIR") or str(tmp_path)
    with Server(store_path, images) as srv:
        pg.goto(srv.url)
        _shows(pg, 1)
        assert pg.evaluate("document.getElementById('img-a').naturalWidth") == 96
        assert pg.evaluate("document.getElementById('img-b').naturalWidth") == 96
        assert pg.inner_text("#caption-a") == "#0 ind0/img0.png"
        assert "0 / 5 pairs" in pg.inner_text("#counts")

        # zoom: wheel over an image, reset by double-click; + zooms both
        pg.hover("#frame-a")
        pg.mouse.wheel(0, -300)
        pg.wait_for_function("Number(document.getElementById('frame-a').dataset.zoom) > 1")
        pg.dblclick("#frame-a")
        assert pg.get_attribute("#frame-a", "data-zoom") == "1.00"
        pg.keyboard.press("+")
        assert float(pg.get_attribute("#frame-b", "data-zoom")) > 1
        pg.keyboard.press("0")

        pg.keyboard.press("s")  # (0,1) same
        _shows(pg, 2)
        assert pg.get_attribute("#frame-a", "data-zoom") == "1.00"  # a new pair starts unzoomed
        pg.keyboard.press("s")  # (1,2) same
        _shows(pg, 3)
        pg.keyboard.press("d")  # (0,2) different: contradicts 0~1~2
        _shows(pg, 4)
        banner = pg.locator("#banner")
        banner.wait_for(state="visible")
        assert "contradicts earlier answers" in banner.inner_text()
        assert "imply “same”" in banner.inner_text()
        assert pg.inner_text("#conflicts-button") == "⚠ 1 conflict"
        pg.screenshot(path=os.path.join(shots, "annotate-conflict.png"))

        # review: change the earlier (1,2) answer to "different"
        pg.click("#banner-review")
        pg.wait_for_selector("#review:not([hidden])")
        rows = pg.locator("#review-list .row")
        assert rows.count() == 3
        pg.screenshot(path=os.path.join(shots, "annotate-review.png"))
        pg.click('#review-list .row.because[data-pair-id="2"] button[data-answer="different"]')
        pg.wait_for_selector("#review-list >> text=No conflicting answers left.")
        pg.keyboard.press("Escape")
        pg.wait_for_selector("#review", state="hidden")
        assert pg.is_hidden("#banner") and pg.is_hidden("#conflicts-button")
        # the counts follow the changed answer, closed by Esc as by the button
        pg.wait_for_function(
            "document.getElementById('counts').innerText.includes('1 same · 2 different')"
        )

        pg.keyboard.press(" ")  # (3,4) skip
        _shows(pg, 5)
        # image 6 is missing: a placeholder with its path, and answering still works
        assert pg.is_visible("#missing-b") and pg.is_hidden("#img-b")
        assert pg.inner_text("#missing-path-b") == "ind3/img6.png"
        assert pg.inner_text("#missing-why-b") == f"missing from {images.resolve()}"
        assert pg.is_hidden("#btn-new")  # not a link question
        pg.screenshot(path=os.path.join(shots, "annotate-missing.png"))
        pg.keyboard.press("u")  # undo the skip
        _shows(pg, 4)
        pg.keyboard.press("d")  # (3,4) different
        _shows(pg, 5)
        pg.keyboard.press("s")  # (5,6) same
        pg.wait_for_selector('main[data-state="done"]')
        assert pg.is_visible("#done")
        assert "5 / 5 pairs" in pg.inner_text("#counts")
        pg.keyboard.press("Backspace")  # undo works from the end too
        _shows(pg, 5)
        pg.click("#btn-same")  # the buttons answer as the keys do
        pg.wait_for_selector('main[data-state="done"]')
    # the terminal said which photos cannot be shown, when the server started
    assert "1 of 8 photos cannot be shown: 'ind3/img6.png' (missing from" in srv.log.read_text()

    assert problems == []
    with AnnotationStore.open(store_path) as store:
        current = [(a["pair_id"], a["answer"]) for a in store.answers()]
        assert current == [
            (1, "same"),
            (3, "different"),
            (2, "different"),
            (4, "different"),
            (5, "same"),
        ]
        hist = [(h["pair_id"], h["answer"], h["undone"]) for h in store.answers(history=True)]
        assert hist == [
            (1, "same", False),
            (2, "same", False),  # replaced in the review, kept as history
            (3, "different", False),
            (2, "different", False),
            (4, "skip", True),
            (4, "different", False),
            (5, "same", True),
            (5, "same", False),
        ]
        assert all(h["annotator"] == "tester" for h in store.answers(history=True))
        c = store.constraints()
        assert c.is_consistent and len(c) == 5
        p = store.progress()
        assert (p["answered"], p["remaining"], p["conflicts"], p["undone"]) == (5, 0, 0, 2)


def test_two_tabs_never_overwrite_each_other(page, tmp_path):
    pg, problems = page
    store_path, images = make_run(tmp_path, pairs=[(0, 1), (2, 3), (4, 5)])
    with Server(store_path, images) as srv:
        pg.goto(srv.url)
        other = pg.context.new_page()
        other.set_default_timeout(15_000)
        other.goto(srv.url)
        _shows(pg, 1)
        _shows(other, 1)  # both tabs show the first pair
        pg.keyboard.press("s")
        _shows(pg, 2)
        other.keyboard.press("d")  # stale: pair 1 already has "same"
        _shows(other, 2)
        assert "already answered “same”" in other.inner_text("#status")
        other.keyboard.press("d")
        _shows(other, 3)
        pg.keyboard.press("s")  # the first tab is stale now, and is told so too
        _shows(pg, 3)
        assert "already answered “different”" in pg.inner_text("#status")
        other.close()
    # Chromium logs every 4xx as "Failed to load resource"; the 409 is the expected one
    assert [p for p in problems if "status of 409 (CONFLICT)" not in p] == []
    with AnnotationStore.open(store_path) as store:
        hist = [(h["pair_id"], h["answer"]) for h in store.answers(history=True)]
        assert hist == [(1, "same"), (2, "different")]


def test_cant_tell_by_key_and_button(page, tmp_path):
    pg, problems = page
    store_path, images = make_run(tmp_path, pairs=[(0, 1), (2, 3), (4, 5)])
    with Server(store_path, images) as srv:
        pg.goto(srv.url)
        _shows(pg, 1)
        pg.keyboard.press("c")
        _shows(pg, 2)
        assert "can’t tell" in pg.inner_text("#status")
        pg.click("#btn-cant-tell")
        _shows(pg, 3)
        pg.locator("#counts").filter(has_text="2 can’t tell").wait_for()
    assert problems == []
    with AnnotationStore.open(store_path) as store:
        assert [(a["pair_id"], a["answer"]) for a in store.answers()] == [
            (1, "cant_tell"),
            (2, "cant_tell"),
        ]
        assert len(store.constraints()) == 0


def test_catalogue_page_renames_splits_and_undoes_and_the_pair_shows_its_context(page, tmp_path):
    import csv

    import numpy as np

    import aas_core as aas
    from _annotate import write_photos

    pg, problems = page
    X, _ = aas.datasets.make_reid_blobs(40, d=16, seed=5)
    photos = tmp_path / "photos"
    paths = write_photos(photos, len(X))
    np.save(tmp_path / "X.npy", X)
    with open(tmp_path / "X.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )
    run = tmp_path / "run"
    argv = ["catalogue", str(photos), "--out", str(run), "--embeddings", str(tmp_path / "X.npy")]
    with Server(tmp_path / "log", photos, "--k1", "8", "--budget", "5", argv=argv) as srv:
        pg.goto(srv.url)
        pg.wait_for_selector('main[data-state="ready"]')
        pg.locator("#context-a").filter(has_text="now in NY-").wait_for()
        assert "camera cam" in pg.inner_text("#context-a")
        pg.keyboard.press("c")  # can't tell
        pg.locator("#status").filter(has_text="can’t tell").wait_for()
        # then what it did to the catalogue (nothing: it is no constraint)
        pg.locator("#status").filter(has_text="→ no change: not a constraint").wait_for()
        _, progress = srv.request("GET", "/api/progress")
        assert progress["cant_tell"] == 1 and progress["answered"] == 0
        pg.click("#catalogue-link")
        pg.wait_for_selector('#list[data-state="ready"]')
        assert "photos wrongly grouped: not known yet" in pg.inner_text("#estimate")
        assert pg.is_hidden("#regime")
        _, cat = srv.request("GET", "/api/catalogue")
        big = cat["identities"][0]
        card = f'section.identity[data-number="{big["number"]}"]'
        pg.fill(f"{card} input.name", "Zuri")
        pg.press(f"{card} input.name", "Enter")
        pg.locator("#status").filter(has_text="Zuri").wait_for()
        pg.wait_for_selector('#list[data-state="ready"]')  # drawn anew
        # thumbnails of 160 px; a click shows the photo large in the page: ← → step through
        # the identity's photos, Esc or a click beside it closes, the page's keys wait
        tile = pg.locator(f"{card} .sheet .thumb").first.bounding_box()
        assert tile["width"] == tile["height"] == 160
        viewer = pg.locator("#viewer")
        pg.click(f"{card} .sheet .enlarge >> nth=0")
        viewer.wait_for()
        pg.wait_for_function("document.getElementById('viewer-img').naturalWidth > 0")
        assert pg.evaluate("document.getElementById('viewer-img').naturalWidth") == 96
        assert pg.evaluate("document.getElementById('viewer-img').width") > 400  # fitted
        shown = big["images"]
        assert pg.inner_text("#viewer-path") == shown[0]["path"]
        assert pg.inner_text("#viewer-title").startswith(f"Zuri ({big['code']}) · photo 1 of")
        pg.keyboard.press("ArrowRight")
        assert pg.inner_text("#viewer-path") == shown[1]["path"]
        pg.check("#viewer-pick")  # selected to split out from the large view
        pg.keyboard.press("u")  # no undo behind the viewer
        pg.keyboard.press("Escape")
        viewer.wait_for(state="hidden")
        assert pg.evaluate("document.activeElement.className") == "enlarge"  # back where it was
        pg.click(f"{card} .sheet .enlarge >> nth=2")
        viewer.wait_for()
        assert pg.inner_text("#viewer-path") == shown[2]["path"]
        pg.mouse.click(8, 790)  # beside the photo
        viewer.wait_for(state="hidden")
        # the split: photos selected by their box, or in the large view
        assert pg.is_checked(f"{card} .sheet .pick >> nth=1")
        pg.check(f"{card} .sheet .pick >> nth=0")
        pg.click(f"{card} button.split")
        pg.locator("#status").filter(has_text="Split 2 images").wait_for()
        _, after = srv.request("GET", f"/api/catalogue/{big['number']}")
        assert after["size"] == big["size"] - 2 and after["name"] == "Zuri"
        assert {k["index"] for k in after["images"]}.isdisjoint(
            {shown[0]["index"], shown[1]["index"]}
        )
        pg.keyboard.press("u")
        pg.locator("#status").filter(has_text="Undone").wait_for()
        _, back = srv.request("GET", f"/api/catalogue/{big['number']}")
        assert back["size"] == big["size"]
        if len(cat["identities"]) > 1:
            other = cat["identities"][1]
        else:  # merge with a photo on its own
            other = {**cat["unsorted"]["images"][0], "size": 1}
        pg.fill(f"{card} input.into", other["code"])
        pg.click(f"{card} button.merge")
        pg.locator("#status").filter(has_text="Merged").wait_for()
        _, merged = srv.request("GET", f"/api/catalogue/{big['number']}")
        assert merged["size"] == big["size"] + other["size"] and merged["name"] == "Zuri"
        # the merge joined the two reference photos by an answer: two photos verified, the
        # rest shown as the clustering's proposal
        assert merged["status"] == "partly verified" and merged["verified"] == 2
        pg.wait_for_selector(f'{card}[data-status="partly verified"]')
        assert pg.locator(f"{card} .sheet img.verified").count() == 2
        assert "2 of" in pg.inner_text(f"{card} .evidence")
        pg.select_option("#show", "verified")  # no identity is verified through and through
        assert pg.locator(card).count() == 0

        # the pair page: the photos of an image's identity, larger, open large in the page
        pg.click(".nav-link")
        pg.wait_for_selector('main[data-state="ready"]')
        pair_id = pg.get_attribute("main", "data-pair-id")
        _, ctx = srv.request("GET", f"/api/context/{pair_id}")
        if ctx["a"]["identity"]["number"] != big["number"]:  # give image a others to show
            status_code, _ = srv.request(
                "POST",
                "/api/catalogue/merge",
                {"a": big["number"], "b": ctx["a"]["identity"]["number"], "annotator": "t"},
            )
            assert status_code == 200
            pg.reload()
        pg.locator("#context-a .strip .enlarge").first.wait_for()
        strip = pg.locator("#context-a .strip img").first.bounding_box()
        assert strip["width"] == strip["height"] == 96  # 12% of the window's 800 px
        _, ctx = srv.request("GET", f"/api/context/{pair_id}")
        pg.click("#context-a .strip .enlarge >> nth=1")
        viewer.wait_for()
        assert pg.inner_text("#viewer-path") == ctx["a"]["others"][1]["path"]
        assert pg.inner_text("#viewer-title").startswith("in Zuri · photo 2 of")
        pg.wait_for_function("document.getElementById('viewer-img').naturalWidth > 0")
        pg.keyboard.press("s")  # no answer behind the viewer
        pg.click("#viewer .viewer-close")
        viewer.wait_for(state="hidden")
        _, progress = srv.request("GET", "/api/progress")
        assert progress["same"] == 0 and pg.get_attribute("main", "data-pair-id") == pair_id
    assert problems == []
    # and the catalogue goes out as the page left it
    from aas_core.cli import main

    assert (
        main(
            [
                "catalogue",
                str(photos),
                "--out",
                str(run),
                "--export",
                str(tmp_path / "exp"),
                "--k1",
                "8",
            ]
        )
        == 0
    )
    rows = list(csv.reader((tmp_path / "exp" / "catalogue.csv").read_text().splitlines()))
    assert rows[0] == ["image_path", "identity", "identity_name", "verified", "photo_folder"]
    zuri = [r for r in rows if r[2] == "Zuri"]
    assert len(zuri) == big["size"] + other["size"]
    assert sum(r[3] == "true" for r in zuri) == 2


def test_a_link_question_answered_new_individual_by_key(page, tmp_path):
    pg, problems = page
    store_path, images = make_run(tmp_path, pairs=[(0, 1)])
    with AnnotationStore.open(store_path) as store:
        store.add_pairs([[2, 3]], sampler="season", cycle=1, kind=["link"], priority=1)
    with Server(store_path, images) as srv:
        pg.goto(srv.url)
        _shows(pg, 2)  # the link question comes first
        assert pg.is_visible("#btn-new")
        pg.keyboard.press("n")
        _shows(pg, 1)
        assert "#3 is a new individual" in pg.inner_text("#status")
        assert pg.is_hidden("#btn-new")
        pg.keyboard.press("n")  # not a link question: nothing happens
        pg.keyboard.press("u")
        _shows(pg, 2)
    assert problems == []
    with AnnotationStore.open(store_path) as store:
        hist = [(h["pair_id"], h["answer"], h["undone"]) for h in store.answers(history=True)]
        assert hist == [(2, "different", True)]
        assert store._read("SELECT kind FROM operations") == [("new_individual",)]


def test_the_pages_say_when_the_answers_show_the_embedding_does_not_separate_the_animals(
    page, tmp_path
):
    import csv

    import numpy as np

    from _annotate import write_photos
    from aas_core.cli import main
    from aas_core.loop import cluster_features

    pg, problems = page
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 16)).astype(np.float32)  # says nothing about who is who
    photos = tmp_path / "photos"
    paths = write_photos(photos, len(X), cameras=1)
    np.save(tmp_path / "X.npy", X)
    with open(tmp_path / "X.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )
    run = tmp_path / "run"
    common = ["--k1", "8"]
    emb = ["--embeddings", str(tmp_path / "X.npy")]
    assert main(["catalogue", str(photos), "--out", str(run), *emb, "--no-serve", *common]) == 0
    # a person said "different" to 20 pairs of nearest neighbours
    g = cluster_features(X, k1=8, n_threads=1).graph
    pairs = [[k, int(g.indices[k, 1])] for k in range(0, 40, 2)]
    with AnnotationStore.open(run / "run.sqlite") as s:
        s.add_pairs(pairs, sampler="t", cycle=0)
        for p in s.pairs():
            s.answer(p["pair_id"], "different")
    argv = ["catalogue", str(photos), "--out", str(run)]
    with Server(tmp_path / "log", photos, *common, "--budget", "5", argv=argv) as srv:
        pg.goto(srv.url)
        pg.wait_for_selector('main[data-state="ready"]')
        pg.locator("#regime").filter(has_text="does not separate these animals").wait_for()
        assert "--reembed --backbone" in pg.inner_text("#regime")
        pg.click("#catalogue-link")
        pg.wait_for_selector('#list[data-state="ready"]')
        assert "does not separate these animals" in pg.inner_text("#regime")
        log = srv.log.read_text()
    assert "warning: the embedding does not separate these animals" in log
    assert problems == []
