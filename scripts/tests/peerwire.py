"""The member protocol (include/knbd/peer_proto.h) for the Python tests.

Constants are parsed from the module's header (KNBD_PEER_X -> P.X,
KNBD_HELLO_F_X -> P.HELLO_F_X), so the tests cannot drift from it.  Member
speaks the connecting side of a member link: HELLO with a fresh nonce, the
server's HELLO and MAC checked, AUTH with ours (HMAC-SHA256 over the same
transcript as drivers/knbd/proto.c knbd_peer_auth_transcript()), then BIND,
IO and LOAD frames.  Tests use it as a legitimate member (the positive
control) and as every kind of stranger.

    from peerwire import P, Member
    m = Member("192.0.2.1", 10810, source="192.0.2.2")
    m.handshake(node_id=2, group_id=7, key=bytes.fromhex(...))
    m.bind(0, "v1"); data = m.read(0, 0, 4096, epoch=..., checksum=...)
"""

import hashlib
import hmac
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdwire import parse_defines  # noqa: E402

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "include", "knbd", "peer_proto.h")


class _Defs:
    def __init__(self, defs):
        self.__dict__.update(defs)


# KNBD_PEER_X -> X, KNBD_HELLO_F_X -> HELLO_F_X, KNBD_LOAD_F_X -> LOAD_F_X
P = _Defs(parse_defines(HEADER, "KNBD_PEER_|KNBD_HELLO_F_|KNBD_LOAD_F_",
                        lambda p: "" if p == "KNBD_PEER_" else p[len("KNBD_"):]))

HDR = struct.Struct(">IHHI")                    # magic, version, type, len
HELLO = struct.Struct(">IIII%ds%ds" % (P.NONCE_LEN, P.MAC_LEN))
IO = struct.Struct(">QQIHHQII")                 # cookie epoch checksum cmd flags offset len handle
IO_REPLY = struct.Struct(">QIIQII")             # cookie error status epoch checksum reserved
BIND = struct.Struct(">IHH")
LOAD = struct.Struct(">IIQII")                  # node_id seq load connections flags
LABEL_LEN = P.AUTH_LABEL_LEN


class Closed(Exception):
    """The server closed the connection (or reset it)."""


def frame(ftype, body=b"", version=None, length=None):
    return HDR.pack(P.MAGIC, P.VERSION if version is None else version, ftype,
                    len(body) if length is None else length) + body


def transcript(server, client_id, server_id, group_id, flags, cnonce, snonce):
    label = (b"knbd3 server" if server else b"knbd3 client").ljust(LABEL_LEN, b"\0")
    return label + struct.pack(">IIII", client_id, server_id, group_id, flags) + cnonce + snonce


def mac(key, *args):
    if key is None:
        return bytes(P.MAC_LEN)
    return hmac.new(key, transcript(*args), hashlib.sha256).digest()


class Member:
    def __init__(self, host, port, source=None, timeout=10.0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.s = socket.socket(fam, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        if source:
            self.s.bind((source, 0))
        self.s.connect((host, port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server_hello = None

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send(self, data):
        try:
            self.s.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.s.recv(n - len(buf))
            except ConnectionResetError as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("EOF after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return buf

    def closed_within(self, secs):
        """True if the server closes (EOF/reset) within secs, reading and dropping anything."""
        self.s.settimeout(secs)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def got_nothing_then_closed(self, secs):
        """The server sends not one byte and closes within secs."""
        self.s.settimeout(secs)
        try:
            data = self.s.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return data == b""

    def recv_frame(self):
        magic, ver, ftype, length = HDR.unpack(self.recv_exact(HDR.size))
        if magic != P.MAGIC:
            raise ValueError("bad magic %#x" % magic)
        return ftype, self.recv_exact(length)

    def hello(self, node_id, group_id, key=None, flags=None, nonce=None):
        """Send our HELLO; read and check the server's. Returns its fields."""
        if flags is None:
            flags = 0 if key is not None else P.HELLO_F_INSECURE
        self.node_id, self.group_id, self.key, self.flags = node_id, group_id, key, flags
        self.cnonce = nonce if nonce is not None else os.urandom(P.NONCE_LEN)
        self.send(frame(P.HELLO, HELLO.pack(node_id, group_id, flags, 0, self.cnonce,
                                            bytes(P.MAC_LEN))))
        ftype, body = self.recv_frame()
        if ftype != P.HELLO or len(body) != HELLO.size:
            raise ValueError("server answered type %d len %d, not HELLO" % (ftype, len(body)))
        sid, sgroup, sflags, _, snonce, smac = HELLO.unpack(body)
        self.server_id, self.snonce = sid, snonce
        self.server_hello = dict(node_id=sid, group_id=sgroup, flags=sflags, nonce=snonce,
                                 mac=smac)
        want = mac(key, True, node_id, sid, group_id, flags, self.cnonce, snonce)
        self.server_proved = hmac.compare_digest(want, smac)
        return self.server_hello

    def auth(self, key=None, raw=None):
        """Send AUTH: our proof with key (default: the HELLO's), or raw bytes."""
        if raw is None:
            k = self.key if key is None else key
            raw = mac(k, False, self.node_id, self.server_id, self.group_id, self.flags,
                      self.cnonce, self.snonce)
        self.send(frame(P.AUTH, raw))

    def handshake(self, node_id, group_id, key=None):
        self.hello(node_id, group_id, key)
        if not self.server_proved:
            raise ValueError("the server's MAC does not check with our key")
        self.auth()

    def bind(self, handle, name):
        n = name.encode()
        self.send(frame(P.BIND, BIND.pack(handle, len(n), 0) + n))

    def load(self, node_id, seq, load, conns, flags=0):
        self.send(frame(P.LOAD, LOAD.pack(node_id, seq, load, conns, flags)))

    def io(self, cookie, cmd, offset, length, handle, epoch=0, checksum=0, data=b"",
           flags=0):
        self.send(frame(P.IO, IO.pack(cookie, epoch, checksum, cmd, flags, offset, length,
                                      handle) + data))

    def reply(self):
        """One IO_REPLY: (cookie, error, status, epoch, checksum, data)."""
        ftype, body = self.recv_frame()
        if ftype != P.IO_REPLY or len(body) < IO_REPLY.size:
            raise ValueError("not an IO_REPLY: type %d len %d" % (ftype, len(body)))
        cookie, err, status, epoch, csum, _ = IO_REPLY.unpack(body[:IO_REPLY.size])
        return cookie, err, status, epoch, csum, body[IO_REPLY.size:]
