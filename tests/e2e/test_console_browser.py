"""The whole console wizard in a real browser: headless Debian Chromium driven by Selenium, against
real Samba AD domains (the directory), Dovecot (mail) and Radicale (calendars and contacts):
servers -> directory -> two accounts into a batch -> plan -> run with live progress -> results ->
approve. A screenshot of each page goes to the test artifacts (``$MAILFERRY_TEST_ARTIFACTS`` or
``test-artifacts/`` in the repository, ``console/``).

Accessibility basics on every page: each form field has a label, status is never shown by colour
alone (each badge and status line holds words), and the whole wizard is walked with the
keyboard alone (Tab, shift-Tab, Enter, Space, arrows).

Skipped only when Chromium or chromedriver is missing and ``MAILFERRY_REQUIRE_SERVERS`` is unset
(CI sets it; ``scripts/setup`` installs ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import seed_sample
from test_directory_ad import build_directories

from mailferry.config.load import load_project
from mailferry.console.serve import Prepared, prepare
from mailferry.sandbox.dav_sample import seed_dav_sample
from mailferry.sandbox.dav_servers import RadicaleServer
from mailferry.state.ledger import SqliteLedger

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("MAILFERRY_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))

# Source logins are the source sAMAccountNames; on the target alice is alice.t and bob bob.t
# (the people the directory matches them to, by SID history and by X.500 address).
SOURCE_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}
TARGET_USERS = {"alice.t": "alicepw", "bob.t": "bobpw", "carol.t": "carolpw"}


def _browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if not missing:
        return
    reason = f"no browser for the console test ({', '.join(missing)}): apt-get install chromium chromium-driver"
    if os.environ.get("MAILFERRY_REQUIRE_SERVERS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[object]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mf-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)  # no selenium-manager download
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def console_server(tmp_path: Path) -> Iterator[Callable[[Path], Prepared]]:
    running: list[tuple[Prepared, threading.Thread]] = []

    def start(place: Path) -> Prepared:
        p = prepare(place, port=0)
        t = threading.Thread(target=p.run, daemon=True)
        t.start()
        for _ in range(200):
            if p.server.started:
                break
            time.sleep(0.05)
        running.append((p, t))
        return p

    yield start
    for p, t in running:
        p.console.runs.stop_all()
        p.server.should_exit = True
        t.join(10)


def test_the_whole_wizard_in_a_browser(browser, console_server, samba_factory, dovecot_factory, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d: WebDriver = browser  # type: ignore[assignment]
    shots = ARTIFACTS / "console"
    shots.mkdir(parents=True, exist_ok=True)

    # -- the organization: two AD domains, two Dovecot servers, two Radicale servers --------------
    ad_src, ad_tgt = build_directories(samba_factory)
    src = dovecot_factory(style="dotted", users=SOURCE_USERS, special_use=False)
    tgt = dovecot_factory(style="slash", users=TARGET_USERS)
    for u, pw in SOURCE_USERS.items():
        seed_sample(src, u, pw, messages=12)
    dav_src = RadicaleServer.start(tmp_path / "dav-src", users=SOURCE_USERS)
    dav_tgt = RadicaleServer.start(tmp_path / "dav-tgt", users=TARGET_USERS)
    try:
        for u, pw in SOURCE_USERS.items():
            seed_dav_sample(dav_src.url, u, pw, [x for x in SOURCE_USERS if x != u][:1])
        os.environ |= {
            "MF_BR_IMAP": "adminpw",
            "MF_BR_DAV": "adminpw",
            "MF_BR_AD_SRC": ad_src.admin_password,
            "MF_BR_AD_TGT": ad_tgt.admin_password,
        }
        place = tmp_path / "migration"
        place.mkdir()
        app = console_server(place)

        def wait(cond: Callable[[WebDriver], object], timeout: float = 60) -> object:
            return WebDriverWait(d, timeout).until(cond)

        def shot(name: str) -> None:
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(1280, max(800, min(int(height) + 40, 6000)))
            d.save_screenshot(str(shots / f"{name}.png"))
            d.set_window_size(1280, 1000)

        def accessible(page: str) -> None:
            unlabelled = d.execute_script(
                """
                return Array.from(document.querySelectorAll('input, select, textarea'))
                  .filter(e => e.type !== 'hidden')
                  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                  .map(e => e.outerHTML);
                """
            )
            assert unlabelled == [], (page, unlabelled)
            colour_only = d.execute_script(
                """
                return Array.from(document.querySelectorAll('.badge, .status, .error'))
                  .map(e => e.textContent.replace(/[✓✗!…ℹ]/g, '').trim())
                  .filter(t => t.length === 0);
                """
            )
            assert colour_only == [], (page, "a status shown by colour or icon alone")

        # Keyboard alone: every action below moves the focus with Tab / shift-Tab and presses
        # Enter, Space or arrow keys on the focused element (never a mouse click).
        def keys(*typed: str) -> None:
            """Keys to whatever has the focus, as a keyboard types them (an element's send_keys
            would take them for a path on a file input)."""
            chain = ActionChains(d)
            if typed[0] in (Keys.SHIFT, Keys.CONTROL):
                chain.key_down(typed[0]).send_keys(*typed[1:]).key_up(typed[0])
            else:
                chain.send_keys(*typed)
            chain.perform()

        def tab_to(target: object, limit: int = 120) -> None:
            el = d.find_element(By.CSS_SELECTOR, target) if isinstance(target, str) else target
            for _ in range(limit):
                active = d.switch_to.active_element
                ring = d.execute_script(
                    "const s = getComputedStyle(arguments[0]);"
                    " return arguments[0] === document.body || (s.outlineStyle !== 'none' && s.outlineWidth !== '0px')"
                    " ? '' : arguments[0].outerHTML.slice(0, 120);",
                    active,
                )
                assert not ring, ("the keyboard focus is not shown", ring)
                if active == el:
                    return
                # shift-Tab when the focus is already past the target (4: the target precedes it)
                behind = d.execute_script(
                    "return arguments[0] !== document.body"
                    " && !!(arguments[1].compareDocumentPosition(arguments[0]) & 4);",
                    active,
                    el,
                )
                keys(Keys.SHIFT, Keys.TAB) if behind else keys(Keys.TAB)
            raise AssertionError(f"the keyboard never reached {target}")

        def press(target: object, key: str = Keys.ENTER) -> None:
            tab_to(target)
            keys(key)

        def button(text: str) -> object:
            return d.find_element(By.XPATH, f"//button[normalize-space()={text!r}]")

        def nav(label: str) -> None:
            press(d.find_element(By.XPATH, f"//nav//a[contains(., '{label}')]"))

        # -- login: the printed URL; the token leaves the address bar -----------------------------
        d.get(app.url)
        wait(ec.title_contains("Servers"))
        assert "token=" not in d.current_url and d.current_url.endswith("/servers")
        cookie = d.get_cookie("mailferry_console")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # -- 1. Servers ---------------------------------------------------------------------------
        fields = {
            "src_imap": f"imap://127.0.0.1:{src.port}",
            "src_admin": "admin",
            "src_admin_password": "env:MF_BR_IMAP",
            "tgt_imap": f"imap://127.0.0.1:{tgt.port}",
            "tgt_admin": "admin",
            "tgt_admin_password": "env:MF_BR_IMAP",
            "src_dav": dav_src.url,
            "src_dav_admin": "admin",
            "src_dav_admin_password": "env:MF_BR_DAV",
            "tgt_dav": dav_tgt.url,
            "tgt_dav_admin": "admin",
            "tgt_dav_admin_password": "env:MF_BR_DAV",
            "src_ldap": f"ldap://{ad_src.ip}",
            "src_bind_dn": ad_src.admin_dn,
            "src_ldap_password": "env:MF_BR_AD_SRC",
            "tgt_ldap": f"ldap://{ad_tgt.ip}",
            "tgt_bind_dn": ad_tgt.admin_dn,
            "tgt_ldap_password": "env:MF_BR_AD_TGT",
            "target_container": f"CN=Users,{ad_tgt.base_dn}",
        }
        accessible("servers")
        # A literal password first: refused next to its field, nothing saved, not shown again.
        for name, value in fields.items():
            el = d.find_element(By.ID, f"f-{name}")
            el.clear()
            el.send_keys(value if name != "src_admin_password" else "hunter2-literal")
        # The accounts CSV as a file upload (the file input, as a person picks a file).
        csv_file = tmp_path / "accounts-upload.csv"
        csv_file.write_text("source_user,target_user\nalice,alice.t\nbob,bob.t\ncarol,carol.t\n")
        d.find_element(By.ID, "f-accounts_file").send_keys(str(csv_file))
        press(button("Save servers"))
        err = wait(ec.presence_of_element_located((By.ID, "e-src_admin_password")))
        assert "a password is never written here" in err.text  # type: ignore[attr-defined]
        assert "hunter2-literal" not in d.page_source
        assert not (place / "project.toml").exists()
        accessible("servers (refused)")
        shot("01-servers-refused")
        tab_to("#f-src_admin_password")
        keys("env:MF_BR_IMAP")
        press(button("Save servers"))
        wait(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "p.status.ok"), "Saved to the project file"))
        saved = load_project(place / "project.toml").accounts
        assert [(a.source_user, a.target_user) for a in saved] == [(u, f"{u}.t") for u in ("alice", "bob", "carol")]
        press(button("Test connection"))
        wait(ec.presence_of_element_located((By.ID, "check")), 90)
        shot("01-servers")
        check = d.find_element(By.ID, "check").text
        assert "ready" in check and "not ready" not in check, check
        assert "UIDPLUS yes" in check and "Calendars / address books 1 / 1" in check, check
        accessible("servers (tested)")

        # -- 2. Directory: the containers as a tree; read OU=Staff, create in OU=Staff ---------------
        nav("Directory")
        wait(ec.title_contains("Directory"))
        staff_src = d.find_element(By.CSS_SELECTOR, f"input[name=bases][value='OU=Staff,{ad_src.base_dn}']")
        label = d.find_element(By.CSS_SELECTOR, f"label[for='{staff_src.get_attribute('id')}']").text
        assert "7 users" in label, label
        press(staff_src, Keys.SPACE)
        assert staff_src.is_selected()
        # a radio group is one Tab stop (its checked radio); the arrow keys choose within it
        staff_tgt = d.find_element(By.CSS_SELECTOR, f"input[name=target_container][value='OU=Staff,{ad_tgt.base_dn}']")
        checked = d.find_elements(By.CSS_SELECTOR, "input[name=target_container]:checked")
        tab_to(checked[0] if checked else "input[name=target_container]")
        for _ in range(40):
            if staff_tgt.is_selected():
                break
            keys(Keys.ARROW_DOWN)
        assert staff_tgt.is_selected()
        accessible("directory")
        press(button("Save directory choices"))
        wait(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "p.status.ok"), "Saved the containers"))
        shot("02-directory")
        p = load_project(place / "project.toml")
        assert p.directory is not None and p.directory.source.bases == (f"OU=Staff,{ad_src.base_dn}",)

        # -- 3. People and accounts: outcomes with reasons; the batch made with the keyboard alone ---
        nav("People and accounts")
        wait(ec.title_contains("People"))
        body = d.find_element(By.TAG_NAME, "body").text
        for words in ("matched", "sid", "x500", "ambiguous", "conflict", "to_create", "contact_to_merge"):
            assert words in body, words
        accessible("people")

        tab_to("input[name=account][value=alice]")
        keys(Keys.SPACE)
        tab_to("input[name=account][value=bob]")
        keys(Keys.SPACE)
        tab_to("#f-batch")
        keys("wave 1", Keys.ENTER)
        wait(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "p.status.ok"), "Saved the batch"))
        assert dict(load_project(place / "project.toml").batches) == {"wave 1": ("alice", "bob")}
        shot("03-people")

        # -- 4. Plan ---------------------------------------------------------------------------------
        nav("Plan")
        wait(ec.title_contains("Plan"))
        tab_to("#pick-batch")
        for key in [Keys.HOME] + [Keys.ARROW_DOWN] * 10:
            if Select(d.find_element(By.ID, "pick-batch")).first_selected_option.get_attribute("value") == "wave 1":
                break
            keys(key)
        assert Select(d.find_element(By.ID, "pick-batch")).first_selected_option.get_attribute("value") == "wave 1"
        press(button("Show"))
        summary = wait(ec.presence_of_element_located((By.ID, "plan-summary")), 90)
        assert "messages to copy" in summary.text  # type: ignore[attr-defined]
        assert "Folders of alice" in d.page_source and "Calendars and contacts of bob" in d.page_source
        accessible("plan")
        shot("04-plan")

        # -- 5. Run: live progress pushed by server-sent events, then a reload rebuilds it ------------
        nav("Run")
        wait(ec.title_contains("Run"))
        press(button("Start wave 1"))
        wait(ec.presence_of_element_located((By.CSS_SELECTOR, "table.progress tbody tr")), 60)
        shot("05-run-live")
        wait(ec.presence_of_element_located((By.CSS_SELECTOR, "section[data-state=finished]")), 180)
        row = d.find_element(By.CSS_SELECTOR, "table.progress tr[data-account=alice]")
        heads = [th.text for th in d.find_elements(By.CSS_SELECTOR, "table.progress thead th")]
        assert heads[2].startswith("Items") and not any(h.startswith("Messages") for h in heads), heads
        bar = row.find_element(By.TAG_NAME, "progress").get_attribute("aria-label") or ""
        assert bar.startswith("alice: items copied"), bar
        assert int(row.get_attribute("data-copied") or 0) > 0, row.text
        state = d.find_element(By.CSS_SELECTOR, ".run-state").text
        assert "finished, exit code 0" in state, state
        d.refresh()
        wait(ec.presence_of_element_located((By.CSS_SELECTOR, "table.progress tr[data-account=bob]")), 30)
        assert "finished, exit code 0" in d.find_element(By.CSS_SELECTOR, ".run-state").text
        accessible("run")
        shot("05-run")

        # -- 6. Results, then the approval ------------------------------------------------------------
        # Verified clean; the run's findings (a folder name mapped for the target's separator, the
        # sharing the admin route can't read on Radicale) are open until the admin acknowledges them.
        press(d.find_element(By.LINK_TEXT, "Results of wave 1"))
        verdict = wait(ec.presence_of_element_located((By.ID, "verdict")), 120)
        assert verdict.get_attribute("data-verdict") == "acknowledge", verdict.text  # type: ignore[attr-defined]
        assert "verified clean, 4 findings open" in verdict.text  # type: ignore[attr-defined]
        body = d.find_element(By.TAG_NAME, "body").text
        assert "folder-name" in body and "sharing-unknown" in body
        accessible("results")
        shot("06-results")
        tab_to("#f-approved_by")
        keys(Keys.CONTROL, "a")
        keys(Keys.DELETE, "Ada Admin")
        approve = "//button[contains(., 'Approve batch wave 1')]"
        press(d.find_element(By.XPATH, approve))
        err = wait(ec.presence_of_element_located((By.ID, "e-acknowledge")), 120)
        assert "acknowledge the 4 open findings" in err.text  # type: ignore[attr-defined]
        accessible("results (not acknowledged)")
        press("#f-acknowledge", Keys.SPACE)
        press(d.find_element(By.XPATH, approve))
        wait(ec.presence_of_element_located((By.ID, "approvals")), 120)
        assert "Ada Admin" in d.find_element(By.ID, "approvals").text
        assert "4 findings acknowledged" in d.find_element(By.ID, "approvals").text
        accessible("results (approved)")
        shot("06-results-approved")
        ledger = SqliteLedger(load_project(place / "project.toml").ledger_path, readonly=True)
        try:
            (approval,) = ledger.approvals("wave 1")
        finally:
            ledger.close()
        assert approval["approved_by"] == "Ada Admin" and approval["accounts"] == ["alice", "bob"]
        assert approval["verdict"]["state"] == "acknowledge" and approval["acknowledged"] == 4
        for secret in ("adminpw", ad_src.admin_password, ad_tgt.admin_password):
            assert secret not in d.page_source
    finally:
        dav_src.close()
        dav_tgt.close()
