"""The drop-in against a real chatmem daemon: CHATMEM_URL, CHATMEM_ADMIN_TOKEN (and CHATMEM_TEST_BACKUP_DIR) from the test runner."""

import os
import socket
import threading
import time
import unittest
import uuid

from chatmem import ChatmemError, ChatmemUnavailable, MemoryStore

URL = os.environ.get("CHATMEM_URL")
ADMIN = os.environ.get("CHATMEM_ADMIN_TOKEN")
BACKUP_DIR = os.environ.get("CHATMEM_TEST_BACKUP_DIR")


def uid() -> str:
    return "62" + uuid.uuid4().hex[:10]


def backups() -> set:
    return {n for n in os.listdir(BACKUP_DIR) if not n.endswith(".meta.json")} if BACKUP_DIR and os.path.isdir(BACKUP_DIR) else set()


@unittest.skipUnless(URL and ADMIN, "needs a daemon: run through test/clients/python.test.ts")
class MemoryStoreTest(unittest.TestCase):
    def setUp(self):
        self.m = MemoryStore("data/storage/memory.json", True, 50, False)

    def tearDown(self):
        self.m.close()

    # -- core ---------------------------------------------------------------------------------------

    def test_get_creates_an_unknown_user_with_a_session_token(self):
        u = uid()
        r = self.m.get(u)
        self.assertEqual(r["user_id"], u)
        self.assertRegex(r["session_token"], r"^[0-9a-f]{16}$")
        self.assertIn("last_activity", r["flags"])
        self.assertEqual(r["history"], [])
        # A second read returns the same user (no second creation, same token).
        self.assertEqual(self.m.get(u)["session_token"], r["session_token"])

    def test_update_appends_history_and_sets_known_fields_only(self):
        u = uid()
        r = self.m.update(u, {"history": [{"role": "user", "text": "halo"}, {"role": "x"}, "junk"], "name": "Budi", "not_a_field": 1})
        self.assertEqual([h["text"] for h in r["history"]], ["halo"])
        self.assertEqual(r["name"], "Budi")
        self.assertNotIn("not_a_field", r)
        self.assertEqual(r["last_answer"], "halo")
        r = self.m.update(u, {"flags": {"a": 1}})
        r = self.m.update(u, {"flags": {"b": 2}})
        self.assertEqual(r["flags"], {"b": 2})  # the seed replaced the whole dict

    def test_stats(self):
        s = self.m.stats()
        self.assertEqual(set(s), {"total_users", "total_messages", "last_updated"})
        before = s["total_messages"]
        u = uid()
        self.m.append_history(u, "user", "satu")
        s = self.m.stats()
        self.assertEqual(s["total_messages"], before + 1)
        self.assertRegex(s["last_updated"], r"Z$")

    def test_clear_goes_through_the_guarded_delete_with_a_backup(self):
        u = uid()
        self.m.append_history(u, "user", "hapus saya")
        seen = backups()
        self.m.clear(u)
        self.assertEqual(len(backups() - seen), 1, "a delete writes one backup first")
        self.assertEqual(self.m.get(u)["history"], [])  # get creates it again, empty, as the seed would
        self.m.clear(uid())  # unknown user: a no-op, as the seed

    def test_clear_without_admin_token_is_refused_and_keeps_the_user(self):
        u = uid()
        self.m.append_history(u, "user", "tetap")
        m = MemoryStore(url=URL, admin_token="")
        with self.assertRaises(ChatmemError) as cm:
            m.clear(u)
        self.assertEqual(cm.exception.code, "E_ADMIN_TOKEN")
        self.assertEqual(self.m.get_history(u)[0]["text"], "tetap")

    def test_set_debug(self):
        self.m.set_debug(True)
        self.assertTrue(self.m.debug)
        self.m.set_debug(0)
        self.assertFalse(self.m.debug)

    # -- history ------------------------------------------------------------------------------------

    def test_append_history_strips_sets_last_answer_and_caps(self):
        u = uid()
        r = self.m.append_history(u, "user", "  modem saya mati  ", {"intent": "mati"})
        last = r["history"][-1]
        self.assertEqual((last["role"], last["text"], last["meta"]), ("user", "modem saya mati", {"intent": "mati"}))
        self.assertEqual(r["last_answer"], "modem saya mati")
        r = self.m.append_history(u, "assistant", "Baik, kami cek")
        self.assertEqual(r["last_answer"], "modem saya mati")  # only user turns set it
        for i in range(60):
            self.m.append_history(u, "user", f"m{i}")
        h = self.m.get_history(u)
        self.assertEqual(len(h), 50)
        self.assertEqual(h[-1]["text"], "m59")
        self.assertEqual(h[0]["text"], "m10")

    def test_get_chat_context_and_export(self):
        u = uid()
        self.assertEqual(self.m.get_chat_context(u), "(belum ada percakapan)")
        self.m.append_history(u, "user", "halo")
        self.m.append_history(u, "assistant", "hai kak")
        ctx = self.m.get_chat_context(u)
        lines = ctx.split("\n")
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\] User: halo$")
        self.assertTrue(lines[1].endswith("] Assistant: hai kak"))
        self.assertEqual(self.m.get_chat_context(u, 1).count("\n"), 0)
        exp = self.m.export_chat_history(u, 1)
        created = self.m.get(u)["created_at"]
        self.assertEqual(exp, [{"timestamp": exp[0]["timestamp"], "role": "assistant", "text": "hai kak", "user_id": u, "session_id": created}])

    def test_truncate_history_backs_up_what_it_drops(self):
        u = uid()
        for i in range(8):
            self.m.append_history(u, "user", f"t{i}")
        seen = backups()
        r = self.m.truncate_history(u, 3)
        self.assertEqual([h["text"] for h in r["history"]], ["t5", "t6", "t7"])
        new = backups() - seen
        self.assertEqual(len(new), 1, "the dropped turns are in a new backup")
        with open(os.path.join(BACKUP_DIR, new.pop()), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("t0", text)
        self.assertIn("t4", text)
        seen = backups()
        r = self.m.truncate_history(u, 0)  # history[-0:] keeps everything in the seed
        self.assertEqual(len(r["history"]), 3)
        self.assertEqual(backups(), seen, "nothing dropped, no backup")

    def test_flush_history_is_a_no_op(self):
        self.assertIsNone(self.m.flush_history(uid()))

    # -- context, identity, flags -------------------------------------------------------------------

    def test_add_context_entry_keeps_distinct_newest_and_infers_product(self):
        u = uid()
        self.assertEqual(self.m.add_context_entry(u, "   ")["summary_context"], [])
        for i in range(20):
            self.m.add_context_entry(u, f"c{i}")
        r = self.m.add_context_entry(u, "c19")
        self.assertEqual(r["summary_context"], [f"c{i}" for i in range(5, 20)])
        r = self.m.add_context_entry(u, "Pakai EAC seri F57A dan f90a", max_items=3)
        self.assertEqual(len(r["summary_context"]), 3)
        self.assertEqual(r["product"], "Electronic Air Cleaner")
        self.assertEqual(r["serial"], "F57A, F90A")

    def test_ensure_product_from_text(self):
        u = uid()
        self.assertIsNone(self.m.ensure_product_from_text(u, "tidak ada"))
        self.assertIsNone(self.m.get(u)["product"])
        self.m.ensure_product_from_text(u, "unit f90a")
        self.m.ensure_product_from_text(u, "electronic air cleaner F57A")
        r = self.m.get(u)
        self.assertEqual((r["product"], r["serial"]), ("Electronic Air Cleaner", "F57A, F90A"))

    def test_flags(self):
        u = uid()
        self.assertEqual(self.m.get_flag(u, "active_intent", "none"), "none")
        r = self.m.set_flag(u, "active_intent", {"name": "mati", "step": 2})
        self.assertEqual(r["flags"]["active_intent"], {"name": "mati", "step": 2})
        self.assertEqual(self.m.get_flag(u, "active_intent"), {"name": "mati", "step": 2})
        self.m.set_flag(u, "sop_pending", None)
        self.assertIsNone(self.m.get_flag(u, "sop_pending", "default"))  # a stored None is not the default
        r = self.m.clear_flag(u, "active_intent")
        self.assertNotIn("active_intent", r["flags"])
        self.assertIsNone(self.m.get_flag(u, "active_intent"))
        v = uid()
        self.assertNotIn("x", self.m.clear_flag(v, "x")["flags"])  # an unknown user is created, as the seed

    def test_identity(self):
        u = uid()
        self.assertEqual(self.m.set_name(u, "  siti NURHALIZA ")["name"], "Siti Nurhaliza")
        self.assertEqual(self.m.set_gender(u, "Female")["gender"], "female")
        self.assertEqual(self.m.set_product(u, " EAC ")["product"], "EAC")
        self.assertEqual(self.m.set_last_step(u, "ask_address")["last_step"], "ask_address")
        self.assertEqual(self.m.get_identity(u), {"name": "Siti Nurhaliza", "gender": "female", "product": "EAC", "address": None})

    # -- slots --------------------------------------------------------------------------------------

    def test_slots(self):
        u = uid()
        self.assertEqual(self.m.get_slots(u), {})
        self.assertEqual(self.m.get_slot(u, "kota", "?"), "?")
        self.m.set_slot(u, "kota", "Bandung")
        r = self.m.fill_slots(u, {"rt": "03", "rw": None})
        self.assertEqual(r["slots"], {"kota": "Bandung", "rt": "03", "rw": None})
        self.assertEqual(self.m.get_slot(u, "kota"), "Bandung")
        self.assertIsNone(self.m.get_slot(u, "rw", "default"))
        self.assertEqual(self.m.clear_slots(u)["slots"], {})
        self.assertEqual(self.m.get_slots(u), {})

    # -- last messages, token, search -----------------------------------------------------------------

    def test_last_bot_message_and_user_answer(self):
        u = uid()
        self.assertIsNone(self.m.get_last_bot_message(u))
        self.assertIsNone(self.m.get_last_user_answer(u))
        self.m.append_history(u, "assistant", "pertama")
        self.m.append_history(u, "user", "jawaban")
        self.m.append_history(u, "assistant", "")
        self.assertEqual(self.m.get_last_bot_message(u), "pertama")
        self.assertEqual(self.m.get_last_user_answer(u), "jawaban")

    def test_refresh_session_token(self):
        u = uid()
        old = self.m.get(u)["session_token"]
        new = self.m.refresh_session_token(u)
        self.assertRegex(new, r"^[0-9a-f]{16}$")
        self.assertNotEqual(new, old)
        self.assertEqual(self.m.get(u)["session_token"], new)

    def test_search_matches_product_summary_and_chat_only(self):
        tag = uuid.uuid4().hex[:8]
        a, b, c, d = uid(), uid(), uid(), uid()
        self.m.set_product(a, f"Produk-{tag}")
        self.m.add_context_entry(b, f"ringkasan {tag}")
        self.m.append_history(c, "user", f"pesan {tag.upper()}")
        self.m.set_name(d, f"Nama {tag}")  # names are not in the seed's search
        found = {r["user_id"] for r in self.m.search(f"  {tag.upper()} ")}
        self.assertEqual(found, {a, b, c})

    def test_user_ids_with_odd_characters(self):
        for u in ["62 812/345?x=1#y", "Zoë \"quoted\"", "1234567890@lid"]:
            self.m.set_flag(u, "k", u)
            self.assertEqual(self.m.get_flag(u, "k"), u)
            self.assertEqual(self.m.get(u)["user_id"], u)

    # -- retries and errors ---------------------------------------------------------------------------

    def test_a_retried_append_with_the_same_id_is_not_duplicated(self):
        u = uid()
        entry = {"role": "user", "text": "sekali", "id": "wamid.ABC123"}
        self.m._call("POST", self.m._user(u) + "/history", body=entry)
        r = self.m._call("POST", self.m._user(u) + "/history", body=entry)
        self.assertEqual([h["text"] for h in r["history"]], ["sekali"])
        r = self.m.update(u, {"history": [entry, {"role": "user", "text": "dua", "id": "wamid.2"}]})
        self.assertEqual([h["text"] for h in r["history"]], ["sekali", "dua"])

    def test_bad_input_gets_the_server_error_code(self):
        with self.assertRaises(ChatmemError) as cm:
            self.m.get("x" * 300)
        self.assertEqual((cm.exception.code, cm.exception.status), ("E_USER_ID", 400))
        with self.assertRaises(ChatmemError) as cm:
            self.m.append_history(uid(), "", "no role")
        self.assertEqual(cm.exception.code, "E_RECORD")

    def test_wrong_token(self):
        m = MemoryStore(url=URL, admin_token="wrong-token-wrong-token")
        with self.assertRaises(ChatmemError) as cm:
            m.reset_all()
        self.assertEqual((cm.exception.code, cm.exception.status), ("E_AUTH", 401))

    def test_max_history_must_match_the_daemon(self):
        m = MemoryStore(max_history=20, url=URL)
        with self.assertRaises(ValueError) as cm:
            m.get(uid())
        self.assertIn("50", str(cm.exception))

    def test_unreachable_daemon(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        m = MemoryStore(url=f"http://127.0.0.1:{port}", timeout=2)
        with self.assertRaises(ChatmemUnavailable) as cm:
            m.get(uid())
        self.assertEqual(cm.exception.code, "E_UNREACHABLE")

    def test_timeout(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        held = []
        threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
        m = MemoryStore(url=f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=0.5)
        t0 = time.monotonic()
        with self.assertRaises(ChatmemUnavailable) as cm:
            m.get(uid())
        self.assertEqual(cm.exception.code, "E_TIMEOUT")
        self.assertLess(time.monotonic() - t0, 5)
        srv.close()

    def test_connections_are_kept_alive(self):
        u = uid()
        self.m.get(u)
        conn = self.m._http._local.conn
        for _ in range(20):
            self.m.get_flag(u, "x")
        self.assertIs(self.m._http._local.conn, conn, "one connection serves every call of this thread")

    # -- a long scripted conversation -----------------------------------------------------------------

    def test_a_long_conversation(self):
        u = uid()
        self.m.set_name(u, "budi santoso")
        self.m.set_flag(u, "active_intent", "modem_mati")
        steps = ["tanya_lampu", "tanya_kabel", "restart", "cek_ulang", "eskalasi"]
        for turn in range(120):
            self.m.append_history(u, "user", f"user turn {turn}")
            self.m.append_history(u, "assistant", f"bot turn {turn}")
            if turn % 10 == 0:
                self.m.set_slot(u, "step", steps[(turn // 10) % len(steps)])
                self.m.add_context_entry(u, f"ringkasan {turn // 10}")
            if turn == 60:
                self.m.add_context_entry(u, "pelanggan pakai EAC F57A")
        r = self.m.get(u)
        self.assertEqual(len(r["history"]), 50)
        self.assertEqual(r["history"][-1]["text"], "bot turn 119")
        self.assertEqual(r["history"][0]["text"], "user turn 95")
        self.assertEqual(r["last_answer"], "user turn 119")
        self.assertEqual(r["name"], "Budi Santoso")
        self.assertEqual(r["flags"]["active_intent"], "modem_mati")
        self.assertEqual(r["slots"]["step"], steps[11 % 5])
        self.assertEqual(r["product"], "Electronic Air Cleaner")
        self.assertEqual(len(r["summary_context"]), 13)
        self.assertEqual(self.m.get_last_bot_message(u), "bot turn 119")
        self.assertEqual(len({h["id"] for h in r["history"]}), 50, "every turn has its own stable id")


@unittest.skipUnless(URL and ADMIN, "needs a daemon: run through test/clients/python.test.ts")
class ResetAllTest(unittest.TestCase):
    # Runs last (name order): it clears the store the other tests use.
    def test_zz_reset_all_backs_up_then_clears(self):
        m = MemoryStore()
        m.append_history(uid(), "user", "sebelum reset")
        seen = backups()
        m.reset_all()
        self.assertEqual(m.stats()["total_users"], 0)
        self.assertEqual(len(backups() - seen), 1, "a clear writes one full backup first")


if __name__ == "__main__":
    unittest.main()
