#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host-side unit tests of tools/knbdctl against a fake configfs tree of
plain files (no kernel, no VM):

  python3 scripts/tests/knbdctl_unit.py [-v]

The fake tree (FakeConfigfs) creates a node's, peer's or volume's attribute
files on mkdir, like configfs; it refuses writes to frozen attributes of an
enabled object (EBUSY), keeps group_key write-only, logs every write and
mkdir in order, and fails a write named in .fail with the errno given.
"""

import contextlib
import errno
import io
import json
import os
import shutil
import stat
import sys
import tempfile
import unittest
import importlib.util
from importlib.machinery import SourceFileLoader

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
_loader = SourceFileLoader("knbdctl", os.path.join(REPO, "tools", "knbdctl"))
knbdctl = importlib.util.module_from_spec(importlib.util.spec_from_loader("knbdctl", _loader))
_loader.exec_module(knbdctl)

NODE_DEFAULTS = {
    "listen_addr": "0.0.0.0", "listen_port": "10809", "peer_port": "10810", "node_id": "1",
    "group_id": "1", "insecure_peers": "0", "max_connections": "64",
    "max_conns_per_host": "0", "list": "1", "queue_depth": "128", "io_timeout": "30",
    "handshake_timeout": "60", "idle_timeout": "0", "max_inflight_mb": "1024",
    "load_tick_ms": "200", "balance_threshold_pct": "130", "balance_clear_pct": "110",
    "balance_hold_ms": "1000", "balance_interval_ms": "1000", "balance_min_load": "20",
    "balance_clients": "safe", "balance": "0", "enable": "0", "peer_auth": "none (member links refused)",
    "stats": "node 1 load 0.000 connections 0 tick_ms 200\n", "clients": "",
}
PEER_DEFAULTS = {"addr": "0.0.0.0", "port": "10810", "node_id": "0", "state": "state down\n"}
VOL_DEFAULTS = {
    "backing_path": "", "size": "0", "block_size": "512", "readonly": "0",
    "description": "", "direct_io": "auto", "extent_size": "1048576", "routing": "",
    "allowed_hosts": "", "enable": "0",
    "stats": "reads 0\nwrites 0\nread_bytes 0\nwrite_bytes 0\nio_path -\n",
}
NODE_FROZEN = {"listen_addr", "listen_port", "max_connections", "peer_port", "node_id",
               "group_id", "group_key", "insecure_peers"}
VOL_FROZEN = {"backing_path", "size", "block_size", "readonly", "direct_io", "extent_size"}


class FakeConfigfs(knbdctl.Configfs):
    def __init__(self, root):
        super().__init__(root)
        os.makedirs(self.path("nodes"), exist_ok=True)
        self.log = []		# ("mkdir"|"rmdir"|"write", rel[, value])
        self.fail = {}		# rel -> errno for the next write
        self.keys = {}

    def _kind(self, rel):
        p = rel.split("/")
        if len(p) == 2:
            return "node"
        return {"peers": "peer", "volumes": "volume"}[p[2]]

    def _err(self, rel, code):
        raise knbdctl.oserror(self.path(rel), OSError(code, os.strerror(code)))

    def mkdir(self, rel):
        super().mkdir(rel)
        self.log.append(("mkdir", rel))
        kind = self._kind(rel)
        defaults = {"node": NODE_DEFAULTS, "peer": PEER_DEFAULTS, "volume": VOL_DEFAULTS}[kind]
        for k, v in defaults.items():
            with open(self.path(rel, k), "w") as f:
                f.write(v if v.endswith("\n") or k in ("clients",) else v + "\n")
        if kind == "node":
            os.mkdir(self.path(rel, "peers"))
            os.mkdir(self.path(rel, "volumes"))
            for k in ("group_key", "drain"):
                open(self.path(rel, k), "w").close()
        if kind == "volume":
            open(self.path(rel, "routing_force"), "w").close()

    def rmdir(self, rel):
        full = self.path(rel)
        subs = [e for e in os.listdir(full) if os.path.isdir(os.path.join(full, e))]
        if any(os.listdir(os.path.join(full, s)) for s in subs):
            self._err(rel, errno.ENOTEMPTY)
        if self.fail.get(rel) is not None:
            self._err(rel, self.fail.pop(rel))
        self.log.append(("rmdir", rel))
        shutil.rmtree(full)

    def read(self, rel):
        if rel.endswith("/group_key") or rel.endswith("/drain") or rel.endswith("/routing_force"):
            return None
        if rel.endswith("/peer_auth"):
            node = rel.split("/")[1]
            if node in self.keys:
                return "hmac-sha256\n"
        return super().read(rel)

    def enabled(self, obj):
        return (super().read(obj + "/enable") or "").strip() == "1"

    def write(self, rel, value):
        obj, attr = os.path.split(rel)
        if not os.path.exists(self.path(rel)):
            self._err(rel, errno.ENOENT)
        if rel in self.fail:
            self._err(rel, self.fail.pop(rel))
        kind = self._kind(obj)
        node = "/".join(obj.split("/")[:2])
        frozen = (kind == "node" and attr in NODE_FROZEN and self.enabled(obj)) or \
                 (kind == "peer" and self.enabled(node)) or \
                 (kind == "volume" and attr in VOL_FROZEN and self.enabled(obj))
        if frozen:
            self._err(rel, errno.EBUSY)
        v = value.rstrip("\n")
        if attr in ("enable", "readonly", "balance", "list", "insecure_peers") and \
                v not in ("0", "1"):
            self._err(rel, errno.EINVAL)
        self.log.append(("write", rel, v))
        if attr == "group_key":
            if v:
                self.keys[obj.split("/")[1]] = v
            else:
                self.keys.pop(obj.split("/")[1], None)
            return
        if attr in ("size", "extent_size"):
            v = str(knbdctl.parse_size(v))	# the kernel shows bytes
        if attr in ("routing", "routing_force"):
            text = knbdctl.routing_norm(v)
            v = ("# checksum 0 extents 0\n" + text) if text else ""
            rel = obj + "/routing"
        with open(self.path(rel), "w") as f:
            f.write(v + "\n" if v and not v.endswith("\n") else v)

    def write_binary(self, rel, data):
        """routing_table: the whole table, outcome in routing_status."""
        obj = os.path.dirname(rel)
        self.log.append(("write", rel, "<%d bytes>" % len(data)))
        text = knbdctl.routing_norm(data.decode())
        status = self.fail.pop(rel, None) or ("ok epoch " + text.split()[1])
        if status.startswith("ok"):
            with open(self.path(rel), "w") as f:
                f.write("# checksum 0\n" + text)
        with open(self.path(obj, "routing_status"), "w") as f:
            f.write(status + "\n")

    def writes(self):
        return [e for e in self.log if e[0] == "write"]


KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def run(cfs, keys_dir, *argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = knbdctl.main(["--configfs", cfs.root, "--keys-dir", keys_dir] + list(argv), cfs=cfs)
    return rc, out.getvalue(), err.getvalue()


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="knbdctl-unit-")
        self.cfs = FakeConfigfs(os.path.join(self.tmp, "knbd"))
        self.keys = os.path.join(self.tmp, "keys")
        self.conf = os.path.join(self.tmp, "etc", "config.json")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def ctl(self, *argv):
        return run(self.cfs, self.keys, *argv)

    def ok(self, *argv):
        rc, out, err = self.ctl(*argv)
        self.assertEqual(rc, 0, "knbdctl %s: %s" % (" ".join(argv), err))
        return out

    def build_group(self):
        """Three members with peers, a key and two routed volumes."""
        for i in (1, 2, 3):
            self.ok("create", "node", "m%d" % i, "node_id=%d" % i, "group_id=7",
                    "listen_addr=127.0.0.1", "listen_port=%d" % (10840 + i),
                    "peer_port=%d" % (10850 + i), "balance_threshold_pct=105",
                    "balance_clear_pct=102")
            self.ok("set", "m%d" % i, "group_key=" + KEY)
            for j in (1, 2, 3):
                if j != i:
                    self.ok("create", "peer", "m%d/m%d" % (i, j), "addr=127.0.0.1",
                            "port=%d" % (10850 + j), "node_id=%d" % j)
            for v, rt in (("v1", "epoch 1; stripe 1 2 3"), ("v2", "epoch 2; 0-9 1; 10-19 2; 20-31 3")):
                self.ok("create", "volume", "m%d/%s" % (i, v), "backing_path=/tmp/%s-%d" % (v, i),
                        "size=32M", "allowed_hosts=10.0.0.0/8, 192.0.2.1",
                        "description=test volume", "routing=" + rt, "enable=1")
            self.ok("set", "m%d" % i, "enable=1")

    def dump(self):
        """Every configuration file of the fake tree (live ones left out)."""
        d = {}
        for root, _, files in os.walk(self.cfs.root):
            for f in files:
                if f in knbdctl.LIVE_FILES:
                    continue
                p = os.path.join(root, f)
                with open(p) as fh:
                    d[os.path.relpath(p, self.cfs.root)] = fh.read()
        return d


class TestArguments(Base):
    def test_unknown_attribute(self):
        rc, _, err = self.ctl("create", "node", "m1", "colour=red")
        self.assertEqual(rc, 2)
        self.assertIn("colour is not a writable node attribute", err)
        self.assertFalse(os.path.exists(self.cfs.path("nodes/m1")))

    def test_bad_values_refused_before_the_kernel(self):
        for a in ("listen_port=0x10", "enable=yes", "balance=2", "node_id=-1",
                  "balance_clients=some"):
            rc, _, err = self.ctl("create", "node", "m1", a)
            self.assertEqual(rc, 2, a)
        rc, _, err = self.ctl("create", "node", "m1")
        self.assertEqual(rc, 0)
        rc, _, err = self.ctl("create", "volume", "m1/v", "size=10X")
        self.assertEqual(rc, 2)
        rc, _, err = self.ctl("create", "volume", "m1/v", "backing_path=relative")
        self.assertEqual(rc, 2)
        rc, _, err = self.ctl("set", "m1", "group_key=abc")
        self.assertEqual(rc, 2)
        self.assertEqual(self.cfs.writes(), [])

    def test_bad_names_and_paths(self):
        for args in (("create", "node", "a/b"), ("create", "node", ".."),
                     ("create", "volume", "m1"), ("create", "peer", "m1/p/x"),
                     ("set", "m1", "noequals")):
            rc, _, _ = self.ctl(*args)
            self.assertEqual(rc, 2, args)

    def test_kernel_error_quotes_path_and_reason(self):
        self.ok("create", "node", "m1")
        self.cfs.fail["nodes/m1/listen_port"] = errno.EINVAL
        rc, _, err = self.ctl("set", "m1", "listen_port=70000")
        self.assertEqual(rc, 1)
        self.assertIn(self.cfs.path("nodes/m1/listen_port") + ": Invalid argument", err)

    def test_create_failure_removes_the_object(self):
        self.ok("create", "node", "m1")
        self.cfs.fail["nodes/m1/volumes/v/size"] = errno.EINVAL
        rc, _, err = self.ctl("create", "volume", "m1/v", "backing_path=/x", "size=1")
        self.assertEqual(rc, 1)
        self.assertIn("nodes/m1/volumes/v/size: Invalid argument", err)
        self.assertIn("not created", err)
        self.assertFalse(os.path.exists(self.cfs.path("nodes/m1/volumes/v")))

    def test_frozen_attribute_busy(self):
        self.ok("create", "node", "m1", "enable=1")
        rc, _, err = self.ctl("set", "m1", "listen_port=1234")
        self.assertEqual(rc, 1)
        self.assertIn("nodes/m1/listen_port: Device or resource busy", err)

    def test_set_resolves_volume_and_peer(self):
        self.ok("create", "node", "m1")
        self.ok("create", "volume", "m1/v")
        self.ok("create", "peer", "m1/p", "node_id=2")
        self.ok("set", "m1/v", "description=hello")
        self.ok("set", "m1/p", "port=999")
        self.ok("set", "m1/peers/p", "addr=10.0.0.2")
        self.assertEqual(self.cfs.read("nodes/m1/volumes/v/description"), "hello\n")
        self.assertEqual(self.cfs.read("nodes/m1/peers/p/port"), "999\n")
        rc, _, err = self.ctl("set", "m1/nothing", "port=1")
        self.assertEqual(rc, 1)

    def test_no_tree(self):
        cfs = knbdctl.Configfs(os.path.join(self.tmp, "missing"))
        rc, _, err = run(cfs, self.keys, "show")
        self.assertEqual(rc, 1)
        self.assertIn("no knbd configfs tree", err)
        rc, _, err = run(cfs, self.keys, "clear")
        self.assertEqual(rc, 0)


class TestPlan(Base):
    def parse(self, text, size, es):
        nr = -(-size // es)
        owner = [None] * nr
        epoch = None
        for line in knbdctl.routing_norm(text).splitlines():
            t = line.split()
            if t[0] == "epoch":
                epoch = int(t[1])
                continue
            a, _, b = t[0].partition("-")
            for i in range(int(a), int(b or a) + 1):
                self.assertIsNone(owner[i], "extent %d twice" % i)
                owner[i] = int(t[1])
        self.assertGreater(epoch, 0)
        self.assertNotIn(None, owner)
        return owner

    def check(self, members, size, es):
        out = self.ok("group", "plan", "--members", ",".join(map(str, members)),
                      "--size", str(size), "--extent-size", str(es))
        owner = self.parse(out, size, es)
        share = len(owner) / len(members)
        for m in members:
            n = owner.count(m)
            self.assertLessEqual(abs(n - share), 1, "member %d has %d of %d" % (m, n, len(owner)))
        # contiguous: each member's extents form one range
        for m in members:
            idx = [i for i, o in enumerate(owner) if o == m]
            self.assertEqual(idx, list(range(idx[0], idx[-1] + 1)))
        self.assertLess(len(knbdctl.routing_norm(out)), knbdctl.ROUTING_TEXT_MAX)

    def test_balanced(self):
        self.check([1, 2, 3], 10 << 30, 1 << 20)
        self.check([5, 9], (1 << 20) * 7 + 1, 1 << 20)
        self.check([1, 2, 3, 4, 5, 6, 7], 1 << 30, 64 << 10)
        self.check(list(range(1, 65)), 1 << 40, 1 << 30)

    def test_suffixes(self):
        out = self.ok("group", "plan", "--members", "1,2", "--size", "10G")
        self.assertIn("10240 extents", out)

    def test_refused(self):
        for args in (["--members", "1,1", "--size", "1G"], ["--members", "1,x", "--size", "1G"],
                     ["--members", "1,2", "--size", "1G", "--extent-size", "3M"],
                     ["--members", "1,2", "--size", "64K"],
                     ["--members", "1,2", "--size", "64T", "--extent-size", "64K"]):
            rc, _, _ = self.ctl("group", "plan", *args)
            self.assertEqual(rc, 2, args)


class TestFormat(Base):
    def write_conf(self, doc):
        os.makedirs(os.path.dirname(self.conf), exist_ok=True)
        with open(self.conf, "w") as f:
            json.dump(doc, f)

    def test_bad_documents(self):
        good = {"format": "knbd-config", "version": 1, "nodes": {"m1": {
            "attributes": {"node_id": "1"}, "enable": False, "peers": {}, "volumes": {}}}}
        cases = [
            ({"format": "nvmet", "version": 1, "nodes": {}}, "format"),
            ({"format": "knbd-config", "version": 2, "nodes": {}}, "version"),
            ({"format": "knbd-config", "version": 1, "nodes": []}, "nodes"),
            ({**good, "nodes": {"m1": {"attributes": {"stats": "x"}}}}, "nodes.m1.attributes.stats"),
            ({**good, "nodes": {"m1": {"attributes": {"listen_port": "ten"}}}},
             "nodes.m1.attributes.listen_port"),
            ({**good, "nodes": {"m1": {"group_key": "xyz"}}}, "nodes.m1.group_key"),
            ({**good, "nodes": {"m1": {"enable": "yes"}}}, "nodes.m1.enable"),
            ({**good, "nodes": {"m/1": {}}}, "nodes.m/1"),
            ({**good, "nodes": {"m1": {"volumes": {"v": {"routing": 5}}}}},
             "nodes.m1.volumes.v.routing"),
            ({**good, "nodes": {"m1": {"peers": {"p": {"attributes": {"state": "up"}}}}}},
             "nodes.m1.peers.p.attributes.state"),
            ({**good, "nodes": {"m1": {"colour": 1}}}, "nodes.m1.colour"),
        ]
        for doc, where in cases:
            self.write_conf(doc)
            rc, _, err = self.ctl("restore", self.conf)
            self.assertEqual(rc, 1, where)
            self.assertIn(where, err)
            self.assertEqual(self.cfs.log, [], "touched the tree for a bad file (%s)" % where)
        rc, _, err = self.ctl("restore", os.path.join(self.tmp, "nothere.json"))
        self.assertEqual(rc, 1)
        with open(self.conf, "w") as f:
            f.write("{not json")
        rc, _, err = self.ctl("restore", self.conf)
        self.assertEqual(rc, 1)
        self.assertIn("not JSON", err)
        self.write_conf(good)
        self.ok("restore", self.conf)

    def test_save_format_and_mode(self):
        self.build_group()
        self.ok("save", self.conf)
        st = os.stat(self.conf)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(self.conf) as f:
            doc = json.load(f)
        self.assertEqual((doc["format"], doc["version"]), ("knbd-config", 1))
        m1 = doc["nodes"]["m1"]
        self.assertEqual(m1["group_key"], KEY)
        self.assertTrue(m1["enable"])
        self.assertEqual(m1["attributes"]["listen_port"], "10841")
        self.assertNotIn("peer_auth", m1["attributes"])
        self.assertNotIn("stats", m1["attributes"])
        self.assertEqual(m1["peers"]["m2"]["attributes"]["node_id"], "2")
        self.assertEqual(m1["volumes"]["v2"]["routing"], "epoch 2\n0-9 1\n10-19 2\n20-31 3\n")
        # the stored keys: dir 0700, file 0600
        self.assertEqual(stat.S_IMODE(os.stat(self.keys).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.keys, "m1.key")).st_mode), 0o600)
        # no temporary left next to it
        self.assertEqual(os.listdir(os.path.dirname(self.conf)), ["config.json"])

    def test_unknown_key_warns(self):
        self.build_group()
        os.unlink(os.path.join(self.keys, "m2.key"))
        rc, _, err = self.ctl("save", self.conf)
        self.assertEqual(rc, 0)
        self.assertIn("node m2 has a group key that knbdctl does not know", err)
        with open(self.conf) as f:
            doc = json.load(f)
        self.assertNotIn("group_key", doc["nodes"]["m2"])
        self.assertIn("group_key", doc["nodes"]["m1"])

    def test_show_json_holds_the_saved_form(self):
        self.build_group()
        doc = json.loads(self.ok("show", "--json"))
        self.ok("save", self.conf)
        with open(self.conf) as f:
            saved = json.load(f)
        for n, node in saved["nodes"].items():
            live = doc["nodes"][n]
            self.assertEqual(node["attributes"], live["attributes"])
            self.assertEqual(node["enable"], live["enable"])
            for v, vol in node["volumes"].items():
                self.assertEqual(vol["routing"], live["volumes"][v]["routing"])
                self.assertEqual(vol["attributes"], live["volumes"][v]["attributes"])
            for p, peer in node["peers"].items():
                self.assertEqual(peer["attributes"], live["peers"][p]["attributes"])
        self.assertNotIn(KEY, json.dumps(doc))
        r = doc["nodes"]["m1"]["volumes"]["v2"]["live"]["routing"]
        self.assertEqual((r["epoch"], r["extents"]), (2, {"1": 10, "2": 10, "3": 12}))
        r = doc["nodes"]["m1"]["volumes"]["v1"]["live"]["routing"]
        self.assertEqual(r["extents"], {"1": 11, "2": 11, "3": 10})
        self.assertEqual(doc["nodes"]["m1"]["live"]["peer_auth"], "hmac-sha256")
        text = self.ok("show")
        self.assertIn("volume v2 [enabled]", text)


class TestRestore(Base):
    def saved(self):
        self.build_group()
        self.ok("save", self.conf)
        before = self.dump()
        self.ok("clear")
        self.assertEqual(os.listdir(self.cfs.path("nodes")), [])
        self.cfs.log.clear()
        self.cfs.keys.clear()
        return before

    def test_roundtrip_and_order(self):
        before = self.saved()
        self.ok("restore", self.conf)
        self.assertEqual(self.dump(), before)
        self.assertEqual(sorted(self.cfs.keys), ["m1", "m2", "m3"])
        log = self.cfs.log
        pos = {}
        for i, e in enumerate(log):
            pos.setdefault((e[0], e[1]), i)

        def first(pred):
            return min(i for i, e in enumerate(log) if pred(e))

        def last(pred):
            return max(i for i, e in enumerate(log) if pred(e))
        # node attributes, then peers, then volumes, routing, volume enable, node enable
        self.assertLess(last(lambda e: e[0] == "write" and e[1].count("/") == 2
                             and not e[1].endswith("/enable")),
                        first(lambda e: "/peers/" in e[1]))
        self.assertLess(last(lambda e: "/peers/" in e[1]), first(lambda e: "/volumes/" in e[1]))
        self.assertLess(last(lambda e: e[0] == "write" and "/volumes/" in e[1] and
                             e[1].rsplit("/", 1)[1] in knbdctl.VOLUME_ATTRS),
                        first(lambda e: e[1].endswith("/routing")))
        self.assertLess(last(lambda e: e[1].endswith("/routing")),
                        first(lambda e: e[0] == "write" and "/volumes/" in e[1]
                              and e[1].endswith("/enable")))
        self.assertLess(last(lambda e: "/volumes/" in e[1] and e[1].endswith("/enable")),
                        first(lambda e: e[0] == "write" and e[1].count("/") == 2
                              and e[1].endswith("/enable")))
        # threshold 105 < clear 110 in force: clear written first
        self.assertLess(pos[("write", "nodes/m1/balance_clear_pct")],
                        pos[("write", "nodes/m1/balance_threshold_pct")])

    def test_idempotent(self):
        before = self.saved()
        self.ok("restore", self.conf)
        self.cfs.log.clear()
        rc, _, err = self.ctl("restore", self.conf)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.cfs.log, [], "a second restore wrote: %s" % self.cfs.log[:5])
        self.assertIn("0 change(s)", err)
        self.assertEqual(self.dump(), before)

    def test_rollback_on_failure(self):
        self.saved()
        self.cfs.fail["nodes/m3/volumes/v2/size"] = errno.EINVAL
        rc, _, err = self.ctl("restore", self.conf)
        self.assertEqual(rc, 1)
        self.assertIn(self.cfs.path("nodes/m3/volumes/v2/size") + ": Invalid argument", err)
        self.assertIn("rolled back", err)
        self.assertEqual(os.listdir(self.cfs.path("nodes")), [])
        # removed in reverse order of creation
        made = [e[1] for e in self.cfs.log if e[0] == "mkdir"]
        gone = [e[1] for e in self.cfs.log if e[0] == "rmdir"]
        self.assertEqual(gone, made[::-1])

    def test_rollback_late_failure_disables(self):
        self.saved()
        self.cfs.fail["nodes/m3/enable"] = errno.EADDRINUSE
        rc, _, err = self.ctl("restore", self.conf)
        self.assertEqual(rc, 1)
        self.assertIn("nodes/m3/enable: Address already in use", err)
        self.assertEqual(os.listdir(self.cfs.path("nodes")), [])

    def test_rollback_restores_changed_attributes(self):
        self.saved()
        self.ok("create", "node", "m1", "node_id=1", "io_timeout=99")
        before = self.dump()
        self.cfs.fail["nodes/m2/peers/m3/port"] = errno.EINVAL
        rc, _, err = self.ctl("restore", self.conf)
        self.assertEqual(rc, 1)
        self.assertEqual(self.dump(), before)

    def test_key_from_keystore(self):
        self.saved()
        with open(self.conf) as f:
            doc = json.load(f)
        del doc["nodes"]["m1"]["group_key"]
        with open(self.conf, "w") as f:
            json.dump(doc, f)
        self.ok("restore", self.conf)
        self.assertEqual(self.cfs.keys["m1"], KEY)

    def test_null_key_ignores_keystore(self):
        # a node saved without a key gets none, even with a key file left over
        self.saved()
        with open(self.conf) as f:
            doc = json.load(f)
        doc["nodes"]["m1"]["group_key"] = None
        with open(self.conf, "w") as f:
            json.dump(doc, f)
        os.makedirs(self.keys, exist_ok=True)
        with open(os.path.join(self.keys, "m1.key"), "w") as f:
            f.write(KEY.upper() + "\n")
        self.ok("restore", self.conf)
        self.assertNotIn("m1", self.cfs.keys)
        self.assertIn("m2", self.cfs.keys)

    def test_clear_tolerates_missing_module(self):
        shutil.rmtree(self.cfs.root)
        rc, _, err = self.ctl("clear")
        self.assertEqual(rc, 0)


class TestLongTable(Base):
    def table(self, n=1000):
        return "epoch 4\n" + "".join("%d %d\n" % (i, 1 + i % 2) for i in range(n))

    def test_without_routing_table(self):
        self.ok("create", "node", "m1")
        self.ok("create", "volume", "m1/v", "size=1000M")
        path = os.path.join(self.tmp, "rt")
        with open(path, "w") as f:
            f.write(self.table())
        rc, _, err = self.ctl("set", "m1/v", "routing=@" + path)
        self.assertEqual(rc, 1)
        self.assertIn("nodes/m1/volumes/v/routing: the table is", err)
        self.assertIn("no routing_table attribute", err)

    def test_with_routing_table(self):
        self.ok("create", "node", "m1")
        self.ok("create", "volume", "m1/v", "size=1000M")
        for f in ("routing_table", "routing_status"):
            open(self.cfs.path("nodes/m1/volumes/v", f), "w").close()
        path = os.path.join(self.tmp, "rt")
        with open(path, "w") as f:
            f.write(self.table())
        self.ok("set", "m1/v", "routing=@" + path)
        self.assertIn(("write", "nodes/m1/volumes/v/routing_table",
                       "<%d bytes>" % len(self.table())), self.cfs.log)
        # save reads the whole table from routing_table
        self.ok("save", self.conf)
        with open(self.conf) as f:
            self.assertEqual(json.load(f)["nodes"]["m1"]["volumes"]["v"]["routing"], self.table())
        # a refusal is read from routing_status
        self.cfs.fail["nodes/m1/volumes/v/routing_table"] = "refused: extent ranges overlap (EINVAL)"
        rc, _, err = self.ctl("set", "m1/v", "routing=@" + path)
        self.assertEqual(rc, 1)
        self.assertIn("nodes/m1/volumes/v/routing_table: refused: extent ranges overlap (EINVAL)", err)

    def test_cut_routing_refused_by_save(self):
        self.ok("create", "node", "m1")
        self.ok("create", "volume", "m1/v")
        with open(self.cfs.path("nodes/m1/volumes/v/routing"), "w") as f:
            f.write("# checksum 0\nepoch 1\n0 1\n# ...\n")
        rc, _, err = self.ctl("save", self.conf)
        self.assertEqual(rc, 1)
        self.assertIn("longer than a page", err)
        self.assertFalse(os.path.exists(self.conf))


class TestTop(Base):
    def test_rates(self):
        a = {"reads": 10, "writes": 0, "read_bytes": 0, "write_bytes": 0,
             "lat_us_sum": 1000, "lat_ops": 10}
        b = {"reads": 30, "writes": 20, "read_bytes": 1 << 20, "write_bytes": 1 << 20,
             "lat_us_sum": 5000, "lat_ops": 50}
        iops, bps, lat = knbdctl.rates(a, b, 2.0)
        self.assertEqual((iops, bps, lat), (20.0, float(1 << 20), "100"))
        self.assertEqual(knbdctl.rates({"reads": 1}, {"reads": 2}, 1.0)[2], "-")

    def test_csv(self):
        self.build_group()
        out = self.ok("top", "--interval", "0.01", "--count", "2", "--csv", "--conns")
        lines = out.splitlines()
        self.assertEqual(lines[0], "time,kind,node,object,iops,mb_s,lat_us,load")
        self.assertEqual(len(lines), 1 + 2 * 9)
        for line in lines[1:]:
            self.assertEqual(len(line.split(",")), 8, line)

    def test_parse_node_stats(self):
        st = knbdctl.parse_node_stats(
            "node 1 load 128.153 connections 4 tick_ms 200\nserving_members load 40.500\n"
            "latency_us 2210 inflight 12 io_timeouts 0\n"
            "balance on state idle smoothed 120.410 moves 3\n"
            "peer 2 load 31.020 connections 2 age_ms 120 shedding\npeer 3 load unknown\n"
            "volume gv load 1.000\n")
        self.assertEqual(st["node"]["load"], 128.153)
        self.assertEqual(st["node"]["latency_us"], 2210)
        self.assertEqual(st["balance"]["state"], "idle")
        self.assertEqual(st["peers"][0], {"peer": 2, "load": 31.02, "connections": 2,
                                          "age_ms": 120, "shedding": True})
        self.assertEqual(st["peers"][1]["load"], "unknown")
        self.assertEqual(st["volumes"][0]["volume"], "gv")


class TestService(unittest.TestCase):
    UNIT = os.path.join(REPO, "systemd", "knbd.service")

    def test_unit(self):
        with open(self.UNIT) as f:
            text = f.read()
        lines = [l.strip() for l in text.splitlines()]
        self.assertIn("Type=oneshot", lines)
        self.assertIn("RemainAfterExit=yes", lines)
        self.assertIn("ExecStart=/usr/sbin/knbdctl restore /etc/knbd/config.json", lines)
        self.assertIn("ExecStop=/usr/sbin/knbdctl clear", lines)
        after = " ".join(l.split("=", 1)[1] for l in lines if l.startswith("After="))
        for u in ("network-online.target", "sys-kernel-config.mount"):
            self.assertIn(u, after.split())

    @unittest.skipUnless(shutil.which("systemd-analyze"), "no systemd-analyze")
    def test_systemd_analyze_verify(self):
        import subprocess
        with tempfile.TemporaryDirectory() as d:
            with open(self.UNIT) as f:
                text = f.read().replace("/usr/sbin/knbdctl", os.path.join(REPO, "tools", "knbdctl"))
            unit = os.path.join(d, "knbd.service")
            with open(unit, "w") as f:
                f.write(text)
            r = subprocess.run(["systemd-analyze", "verify", "--man=no", unit],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stderr.strip(), "")


if __name__ == "__main__":
    unittest.main()
