"""Tests for websockify.py, through real sockets, and of the demo behind `make demo`.

    python3 -m unittest test_websockify          # stdlib only; other clients are skipped
    make test                                    # installs them; WEBSOCKIFY_REQUIRE_ALL=1
    make check                                   # the socket-free tests alone, in seconds
    python3 -m unittest test_websockify.TestWebServer    # one TestCase

`make check` sets WEBSOCKIFY_CHECK=1: the load_tests hook then keeps only the
TestCases derived from SocketFreeTestCase (no socket, no process).

Servers listen on 127.0.0.1 / ::1 port 0 or on Unix sockets in a temporary folder, are
ready once bound and are stopped by addCleanup. Clients we did not write (Python
`websockets`, `websocket-client`, `trustme`, Playwright, Node `ws`) and tools
(in.telnetd, Chromium, openssl, make) are imported or probed only by the tests that use
them; a missing one skips its test unless WEBSOCKIFY_REQUIRE_ALL is set, in which case
it fails. Everything else uses WSClient, the raw-socket client below (plain or TLS,
HyBi or Hixie framing), which sends whatever bytes a test asks for, including the ones
no library would send; the proxy runs in this process (start_proxy) or as a program
(ProxyProcess, run_cli).

The file: the helpers every section shares (targets, clients, the proxy in this
process or as a program), then one group of TestCases per section of websockify.py,
in its order, each under a banner naming the section, its socket-free TestCases
first: Protocol, Connection, Pump, Static web server, Targets, Token plugins, Auth
plugins, Program wrapping, Recording, Server and command line. TestCases are named
Test<Section><Behaviour>. Then interoperability: the demo (web/demo.py) and the
pages of web/ in a browser. Last, Upstream's Python API: programs written for upstream
websockify (nova, zstack, emscripten, plugins), run against websockify.py and, in a
subTest, against upstream 0.13 in build/upstream-venv ($WEBSOCKIFY_UPSTREAM_VENV).
"""

import _thread
import ast
import asyncio
import base64
import contextlib
import email.utils
import gc
import hashlib
import hmac
import http.server
import importlib
import importlib.util
import io
import itertools
import json
import logging
import os
import queue
import random
import re
import select
import selectors
import shutil
import signal
import socket
import socketserver
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
import unittest
import unittest.mock
import urllib.parse
import urllib.request
import weakref
from collections import namedtuple

import websockify

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'websockify.py')
#: The LD_PRELOAD shim for wrapped programs (`make rebind.so`).
REBIND = os.path.join(HERE, 'rebind.so')
#: The pages --web serves in the browser tests and the demo.
WEB_DIR = os.path.join(HERE, 'web')
#: The demo behind `make demo`: its services and its entry point.
DEMO = os.path.join(WEB_DIR, 'demo.py')
#: Screenshots of the browser tests.
ARTIFACTS = os.path.join(HERE, 'build', 'test-artifacts')
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
#: Node's ws package: NODE_PATH (as `make test` sets it) or build/node next to this file.
NODE_MODULES = (os.environ.get('NODE_PATH')
                or os.path.join(HERE, 'build', 'node', 'node_modules'))
REQUIRE_ALL = bool(os.environ.get('WEBSOCKIFY_REQUIRE_ALL'))


def _load_demo():
    spec = importlib.util.spec_from_file_location('websockify_demo', DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: web/demo.py, whose line service the demo and browser tests talk to.
web_demo = _load_demo()

#: Seconds any single wait may take (a socket operation, a join, a process exit).
TIMEOUT = 10.0
#: Seconds a bulk transfer may take on a slow machine.
LONG_TIMEOUT = 120.0
#: Seconds a wait on websockify.py run as a program (and on what it wraps) may take.
PROCESS_TIMEOUT = 20.0

KiB = 1024
MiB = 1024 * KiB

#: RFC 6455 §1.3 example key, and the GUID of §4.2.2.
KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

#: Message sizes every interop transfer must include (length encodings and their edges).
EDGE_SIZES = (1, 125, 126, 65535, 65536, MiB)

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def setUpModule():
    # Most tests run the proxy in this process; the client mistakes they make on
    # purpose would print warnings. A NullHandler keeps them off the test output
    # (the 'last resort' handler only prints when a logger has no handler at all);
    # assertLogs still sees every record.
    logging.getLogger('websockify').addHandler(_NULL_HANDLER)


def tearDownModule():
    logging.getLogger('websockify').removeHandler(_NULL_HANDLER)
    if _pki is not None:
        _pki.close()            # the TLS tests' certificates


_NULL_HANDLER = logging.NullHandler()


class SocketFreeTestCase(unittest.TestCase):
    """A TestCase whose tests open no socket and start no process: `make check`
    (WEBSOCKIFY_CHECK=1) runs these alone, in seconds."""


def load_tests(loader, tests, pattern):
    """unittest's hook: every test, or with WEBSOCKIFY_CHECK set only the
    SocketFreeTestCase classes, in file order."""
    if not os.environ.get('WEBSOCKIFY_CHECK'):
        return tests
    suite = unittest.TestSuite()
    for value in list(globals().values()):
        if (isinstance(value, type) and issubclass(value, SocketFreeTestCase)
                and value is not SocketFreeTestCase):
            suite.addTests(loader.loadTestsFromTestCase(value))
    return suite

################################################################################
# Helpers: optional clients and tools, threads, byte streams
################################################################################

def require(what, available, how):
    """Skip (or, with WEBSOCKIFY_REQUIRE_ALL, fail) when an optional client or tool is
    missing. Raises, so it also works in setUpClass."""
    if available:
        return
    if REQUIRE_ALL:
        raise AssertionError('%s is missing but WEBSOCKIFY_REQUIRE_ALL is set (%s)'
                             % (what, how))
    raise unittest.SkipTest('%s is not installed (%s)' % (what, how))


def import_optional(module, how):
    """Import an optional client (skip, or fail under WEBSOCKIFY_REQUIRE_ALL, without it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        require(module, False, how)


try:                                 # property-based tests only (`make test`, `make fuzz`)
    import hypothesis
    from hypothesis import strategies as hst
except ImportError:
    hypothesis = hst = None

#: Examples per property: modest and seed-pinned in `make test`; `make fuzz` sets
#: WEBSOCKIFY_FUZZ_EXAMPLES higher (and WEBSOCKIFY_FUZZ_RANDOM=1 for fresh seeds).
FUZZ_EXAMPLES = int(os.environ.get('WEBSOCKIFY_FUZZ_EXAMPLES') or 150)


def fuzz(strategies):
    """Decorator: a hypothesis property over the keyword strategies that
    strategies(hst) returns, with the bounded settings above. Without hypothesis the
    test is left as is; FuzzTestCase.setUp then skips it."""
    def decorate(test):
        if hypothesis is None:
            return test
        settings = hypothesis.settings(
            max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
            derandomize=not os.environ.get('WEBSOCKIFY_FUZZ_RANDOM'),
            suppress_health_check=list(hypothesis.HealthCheck))
        return settings(hypothesis.given(**strategies(hst))(test))
    return decorate


class FuzzTestCase(SocketFreeTestCase):
    """Property-based tests (hypothesis): skipped without it, unless
    WEBSOCKIFY_REQUIRE_ALL is set."""

    def setUp(self):
        import_optional('hypothesis', 'pip install hypothesis')


def split_at(data, cuts):
    """data cut at the given fractions (0..1) of its length: the pieces, in order."""
    points = sorted({int(c * len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [data]


def feed_codec(codec, pieces):
    """Feed pieces to a codec as the pump does (leftovers kept, decode called until
    it stops making progress); returns (payload bytes, events, unconsumed bytes).
    Stops at a CloseReceived. ProtocolError propagates."""
    buf = bytearray()
    out, events = [], []
    for piece in pieces:
        buf += piece
        while buf:
            parts = []
            before = len(events)
            pos = codec.decode(buf, 0, len(buf), parts, events)
            out += [bytes(p) for p in parts]
            del parts               # views of buf
            del buf[:pos]
            if any(isinstance(e, websockify.CloseReceived) for e in events):
                return b''.join(out), events, bytes(buf)
            if pos == 0 and len(events) == before:
                break
    return b''.join(out), events, bytes(buf)


def websockets_asyncio():
    """The `websockets` package, with its asyncio client and exceptions imported."""
    import_optional('websockets.asyncio.client', 'pip install websockets')
    import_optional('websockets.exceptions', 'pip install websockets')
    return importlib.import_module('websockets')


def node_with_ws():
    """Path of the node binary, if Node and its ws package (build/node) are there."""
    node = shutil.which('node') or shutil.which('nodejs')
    require('Node.js with the ws package',
            node and os.path.isdir(os.path.join(NODE_MODULES, 'ws')),
            'npm install ws in build/node')
    return node


def telnetd_path():
    """Path of in.telnetd (Debian telnetd-ssl), for the tests that wrap or reach it."""
    path = shutil.which('in.telnetd') or '/usr/sbin/in.telnetd'
    require('in.telnetd', os.access(path, os.X_OK), 'apt-get install telnetd-ssl')
    return path


def _probe_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(('::1', 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = _probe_ipv6()


class Worker(threading.Thread):
    """Runs fn(*args) in a daemon thread; result() joins it with a timeout."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.value = self.error = None
        self.start()

    def run(self):
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:   # handed to result()
            self.error = exc

    def result(self, timeout=TIMEOUT):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError('%s still running after %s s' % (self.fn.__name__, timeout))
        if self.error is not None:
            raise self.error
        return self.value


def random_chunks(total, first=(), max_size=256 * KiB):
    """Random byte strings totalling `total`: the sizes in `first`, then random sizes."""
    rng = random.Random(total)
    remaining = total
    for n in itertools.chain(first, iter(lambda: rng.randint(1, max_size), None)):
        n = min(n, remaining)
        if n <= 0:
            return
        remaining -= n
        yield os.urandom(n)


def send_stream(send, chunks):
    """Send each chunk with send(); returns the SHA-256 of everything sent."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        send(chunk)
    return digest.hexdigest()


def sha256_of(chunks):
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def recv_chunks(sock, total):
    """Yields what sock receives until `total` bytes; fails on an early EOF."""
    left = total
    while left:
        chunk = sock.recv(min(left, 256 * KiB))
        if not chunk:
            raise AssertionError('EOF after %d of %d bytes' % (total - left, total))
        left -= len(chunk)
        yield chunk


def recv_exactly(sock, n):
    return b''.join(recv_chunks(sock, n))


def read_to_eof(sock):
    """Everything sock receives until EOF (a reset counts as EOF)."""
    data = bytearray()
    try:
        while True:
            chunk = sock.recv(256 * KiB)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def eof_digest(sock):
    """(SHA-256, length) of everything sock receives until EOF."""
    digest, count = hashlib.sha256(), 0
    while True:
        chunk = sock.recv(256 * KiB)
        if not chunk:
            return digest.hexdigest(), count
        digest.update(chunk)
        count += len(chunk)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (bound once, then
    released): for a target that must refuse, or a port a program must bind itself."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def hostport(address):
    """A (host, port, ...) tuple as the command line spells it."""
    host, port = address[:2]
    return '[%s]:%d' % (host, port) if ':' in host else '%s:%d' % (host, port)


def tcp_queues():
    """{(local, remote): (send queue, receive queue)} of every IPv4 TCP socket on the
    host, from /proc/net/tcp (Linux); None where that is not available."""
    def address(text):
        host, port = text.split(':')
        return socket.inet_ntoa(struct.pack('=I', int(host, 16))), int(port, 16)
    try:
        with open('/proc/net/tcp') as f:
            rows = [line.split() for line in f][1:]
    except OSError:
        return None
    return {(address(row[1]), address(row[2])): tuple(int(q, 16) for q in row[4].split(':'))
            for row in rows}


def socket_buffer_slack():
    """Most bytes the kernel can hold between the target and a client that does not
    read: the proxy's receive buffer (from the target) plus its send buffer (to the
    client), at their autotuning maxima, plus 1 MiB for our own small buffers."""
    def maximum(name, default):
        try:
            with open('/proc/sys/net/ipv4/' + name) as f:
                return int(f.read().split()[2])
        except (OSError, ValueError, IndexError):
            return default
    return maximum('tcp_rmem', 6 * MiB) + maximum('tcp_wmem', 4 * MiB) + MiB


def tcp_listening(port):
    """Whether some socket listens on TCP port (from /proc/net/tcp{,6}, no connection)."""
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == '0A' and int(fields[1].rsplit(':', 1)[1], 16) == port:
                return True
    return False


def drain(stream, each=None):
    """Read a text pipe to EOF in a daemon thread, handing each line to each(line) (or
    dropping it), so that the child never blocks on a full pipe; returns the thread."""
    def run():
        for line in iter(stream.readline, ''):
            if each is not None:
                each(line)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


################################################################################
# Helpers: targets
################################################################################

def echo(sock):
    """Target behaviour: send back everything, close after the peer's EOF."""
    while True:
        data = sock.recv(256 * KiB)
        if not data:
            return
        sock.sendall(data)


class TargetServer:
    """A target listening on port 0 (or a Unix socket path) in a thread.

    With a handler, every connection runs handler(sock) in its own thread, its socket
    timing out after conn_timeout. Without one, accepted sockets wait for the test to
    take them with accept(). Stopped in the test's cleanup (or, without a test case,
    by stop())."""

    def __init__(self, testcase, handler=None, host='127.0.0.1', unix_path=None,
                 conn_timeout=LONG_TIMEOUT):
        if unix_path:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(unix_path)
        else:
            family = socket.AF_INET6 if ':' in host else socket.AF_INET
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.bind((host, 0))
        self.listener.listen(256)
        #: (host, port[, flow, scope]) or the Unix path.
        self.address = self.listener.getsockname()
        self.handler = handler
        self.conn_timeout = conn_timeout
        self._accepted = queue.Queue()
        self._open = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        if testcase is not None:
            testcase.addCleanup(self.stop)

    @property
    def port(self):
        return self.address[1]

    @property
    def arg(self):
        """The target as websockify.py's command line spells it."""
        return hostport(self.address)

    def accept(self, timeout=TIMEOUT):
        """The next connection the proxy made (only without a handler)."""
        try:
            sock = self._accepted.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError('the proxy did not connect to the target in %s s' % timeout)
        sock.settimeout(TIMEOUT)
        return sock

    def _accept_loop(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._open.append(sock)
            if self.handler is None:
                self._accepted.put(sock)
            else:
                sock.settimeout(self.conn_timeout)
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        try:
            self.handler(sock)
        except OSError:
            pass
        finally:
            sock.close()

    def stop(self):
        for sock in [self.listener] + self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)   # wakes threads blocked on it
            sock.close()
        self._thread.join(TIMEOUT)


class Sink:
    """A TargetServer handler that reads and counts, sending nothing back."""

    def __init__(self):
        self.received = 0
        self.first_data = threading.Event()

    def __call__(self, sock):
        while True:
            data = sock.recv(65536)
            if not data:
                return
            self.received += len(data)
            self.first_data.set()


def say_bye(sock):
    """Target behaviour: send b'bye', end the sending side, then read to EOF."""
    sock.sendall(b'bye')
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass


def greet_then_echo(sock):
    """Target: says hello first (as a VNC server does), then echoes."""
    sock.sendall(b'RFB 003.008\n')
    echo(sock)


################################################################################
# Helpers: certificates (made once with openssl)
################################################################################

class PKI:
    """Two CAs and the certificates the tests need, made once with openssl."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='wsfy-tls-')
        self.ca = self._ca('ca', 'Test CA A')
        self.ca2 = self._ca('ca2', 'Test CA B')
        self.server = self._leaf('server', self.ca, 'localhost',
                                 'DNS:localhost,IP:127.0.0.1,IP:::1')
        self.server2 = self._leaf('server2', self.ca, 'localhost',
                                  'DNS:localhost,IP:127.0.0.1,IP:::1')
        self.other = self._leaf('other', self.ca, 'other.example', 'DNS:other.example')
        self.client = self._leaf('client', self.ca, 'client one', None, client=True)
        self.client2 = self._leaf('client2', self.ca2, 'client two', None, client=True)
        self.selfsigned = self._selfsigned('selfsigned', 'other.example')
        self.enc_key = self.path('enc.key')
        self._openssl('pkey', '-in', self.server[1], '-out', self.enc_key, '-aes256',
                      '-passout', 'pass:s3cret')

    def path(self, name):
        return os.path.join(self.dir, name)

    def _openssl(self, *args):
        subprocess.run(('openssl',) + args, check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _newkey(self, name):
        key = self.path(name + '.key')
        self._openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
                      '-out', key)
        return key

    def _ca(self, name, cn):
        key = self._newkey(name)
        cert = self.path(name + '.pem')
        self._openssl('req', '-x509', '-new', '-key', key, '-out', cert, '-days', '3',
                      '-subj', '/CN=' + cn,
                      '-addext', 'basicConstraints=critical,CA:TRUE',
                      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
                      '-addext', 'subjectKeyIdentifier=hash')
        return cert, key

    def _leaf(self, name, ca, cn, sans, client=False):
        key = self._newkey(name)
        csr = self.path(name + '.csr')
        cert = self.path(name + '.pem')
        ext = self.path(name + '.ext')
        with open(ext, 'w') as f:
            f.write('basicConstraints=critical,CA:FALSE\n'
                    'keyUsage=critical,digitalSignature\n'
                    'extendedKeyUsage=%s\n'
                    'subjectKeyIdentifier=hash\n'
                    'authorityKeyIdentifier=keyid\n' % ('clientAuth' if client else 'serverAuth'))
            if sans:
                f.write('subjectAltName=%s\n' % sans)
        self._openssl('req', '-new', '-key', key, '-out', csr, '-subj', '/CN=' + cn)
        self._openssl('x509', '-req', '-in', csr, '-CA', ca[0], '-CAkey', ca[1],
                      '-set_serial', str(int.from_bytes(os.urandom(8), 'big')),
                      '-out', cert, '-days', '2', '-extfile', ext)
        return cert, key

    def _selfsigned(self, name, host):
        key = self._newkey(name)
        cert = self.path(name + '.pem')
        self._openssl('req', '-x509', '-new', '-key', key, '-out', cert, '-days', '2',
                      '-subj', '/CN=' + host, '-addext', 'subjectAltName=DNS:' + host)
        return cert, key

    def der(self, pair):
        with open(pair[0]) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


_pki = None
_pki_error = None


def get_pki():
    global _pki, _pki_error
    if _pki is None and _pki_error is None:
        if shutil.which('openssl') is None:
            _pki_error = 'the openssl command'
        else:
            _pki = PKI()
    require(_pki_error or 'openssl', _pki is not None, 'apt-get install openssl')
    return _pki


def client_context(pki, cert=None, max_version=None):
    ctx = ssl.create_default_context(cafile=pki.ca[0])
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


################################################################################
# Helpers: raw HTTP, and WSClient, the WebSocket test client
################################################################################

Frame = namedtuple('Frame', 'fin opcode payload')


def mask_bytes(data, key):
    """data XOR the repeated 4-byte key: our own masking, independent of websockify."""
    n = len(data)
    if not n:
        return b''
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, 'little') ^ int.from_bytes(pad, 'little')).to_bytes(n, 'little')


def encode_frame(opcode, payload=b'', fin=True, rsv=0, masked=True, length=None, key=None):
    """A client frame; `length` overrides the encoded payload length; `key` is the
    mask (random when None)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, bit | n))
    elif n < 65536:
        head = struct.pack('!BBH', b0, bit | 126, n)
    else:
        head = struct.pack('!BBQ', b0, bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + mask_bytes(payload, key)


def close_body(code, reason=b''):
    return struct.pack('!H', code) + reason


def upgrade_request(method='GET', path='/', version='HTTP/1.1', replace=None, drop=(),
                    extra=()):
    """A HyBi 13 upgrade request. `replace` maps header names to new values, `drop`
    removes headers, `extra` appends (name, value) pairs or raw header lines."""
    replace = replace or {}
    headers = [('Host', 'localhost'), ('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
               ('Sec-WebSocket-Key', KEY), ('Sec-WebSocket-Version', '13')]
    lines = ['%s %s %s' % (method, path, version)]
    lines += ['%s: %s' % (name, replace.get(name, value))
              for name, value in headers if name not in drop]
    lines += [h if isinstance(h, str) else '%s: %s' % h for h in extra]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


class Response:
    """A parsed HTTP response head (and, once read, its body; raw: all its bytes)."""

    def __init__(self, status, headers):
        self.status = status
        #: (lower-case name, value) pairs.
        self.headers = headers
        self.body = b''
        self.raw = b''

    def header(self, name):
        values = [v for n, v in self.headers if n == name.lower()]
        return ', '.join(values) if values else None

    def __repr__(self):
        return '<Response %d %r %r>' % (self.status, self.headers, self.body[:200])


def parse_response_head(head):
    """The Response of a status line and header lines (the bytes before CRLF CRLF)."""
    lines = head.decode('latin-1').split('\r\n')
    parts = lines[0].split(' ')
    if len(parts) < 2 or not parts[0].startswith('HTTP/1.') or not parts[1].isdigit():
        raise AssertionError('bad status line %r' % lines[0])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(':')
        headers.append((name.strip().lower(), value.strip()))
    return Response(int(parts[1]), headers)


def http_request(port, target, method='GET', headers=(), host='127.0.0.1'):
    """Send one request with a raw target (bytes or str), read the response to EOF;
    returns its Response, with body and raw."""
    if isinstance(target, str):
        target = target.encode('latin-1')
    lines = [method.encode() + b' ' + target + b' HTTP/1.1',
             b'Host: %s:%d' % (host.encode(), port)]
    lines.extend(('%s: %s' % h).encode('latin-1') for h in headers)
    with socket.create_connection((host, port), TIMEOUT) as sock:
        sock.sendall(b'\r\n'.join(lines) + b'\r\n\r\n')
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b''.join(chunks)
    head, _, body = raw.partition(b'\r\n\r\n')
    response = parse_response_head(head)
    response.body, response.raw = body, raw
    return response


def http_exchange(port, request, context=None, host='localhost'):
    """Send raw bytes, return everything the server answers before closing."""
    sock = socket.create_connection(('127.0.0.1', port), TIMEOUT)
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.sendall(request)
        data = b''
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:     # closed with our bytes unread
                return data
            except ssl.SSLError as exc:      # Python 3.6: TCP closed without close_notify
                if 'EOF' not in str(exc).upper():
                    raise
                return data
            if not chunk:
                return data
            data += chunk
    finally:
        sock.close()


#: An upgrade request offering the binary subprotocol.
UPGRADE = upgrade_request(path='/x', extra=[('Sec-WebSocket-Protocol', 'binary')])


class WSClient:
    """The WebSocket test client, over a raw socket, for tests that need exact bytes.

    address: (host, port), a port on 127.0.0.1, or a Unix socket path. With an
    SSLContext as `context` it speaks TLS (wss://, server_hostname as SNI). Bytes:
    send(), send_slowly(), read_exactly(), read_until(), read_until_eof(), quiet().
    HTTP: read_response(), handshake(). HyBi frames: send_frame(), recv_frame(),
    recv_data(), recv_base64() (the base64 subprotocol), expect_close(), exchange().
    Legacy framing: hixie_handshake() (draft 75 or 76), send_hixie(),
    recv_hixie_frame(), recv_hixie_data(), expect_hixie_end().

    One thread may send while another receives (not over TLS: exchange() does both
    in one thread); answering pings from recv_data() sends too, so tests that send
    from a second thread use no heartbeat. The socket is closed in the test's cleanup."""

    def __init__(self, testcase, address, timeout=TIMEOUT, rcvbuf=None, context=None,
                 server_hostname='localhost', read_size=256 * KiB):
        if isinstance(address, int):
            address = ('127.0.0.1', address)
        if isinstance(address, str):
            family = socket.AF_UNIX
        else:
            family = socket.AF_INET6 if ':' in address[0] else socket.AF_INET
            address = address[:2]
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        testcase.addCleanup(self.close)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.timeout = timeout
        self.read_size = read_size
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        if family != socket.AF_UNIX:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.buffer = bytearray()
        #: The data recv_until() has received so far.
        self.received = b''

    def close(self):
        self.sock.close()

    # -- bytes ------------------------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def send_slowly(self, data, pause=0.001):
        """One byte per send, paced so that the proxy sees them in separate reads."""
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(pause)

    def _fill(self, deadline=None):
        """Receive once into the buffer; False at EOF. With a deadline, waiting past it
        fails the test."""
        if deadline is None:
            chunk = self.sock.recv(self.read_size)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError('timed out waiting for the server')
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(self.read_size)
            except socket.timeout:
                raise AssertionError('timed out waiting for the server') from None
            finally:
                self.sock.settimeout(self.timeout)
        self.buffer += chunk
        return bool(chunk)

    @staticmethod
    def _deadline(timeout):
        return None if timeout is None else time.monotonic() + timeout

    def read_exactly(self, n, timeout=None):
        """The next n bytes; EOFError if the connection ends first."""
        deadline = self._deadline(timeout)
        while len(self.buffer) < n:
            if not self._fill(deadline):
                raise EOFError('EOF while waiting for %d bytes (have %d)' % (n, len(self.buffer)))
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_until(self, marker, timeout=None):
        """The bytes up to and including marker; EOFError if the connection ends first."""
        deadline = self._deadline(timeout)
        while marker not in self.buffer:
            if not self._fill(deadline):
                raise EOFError('EOF while waiting for %r (have %r)'
                               % (marker, bytes(self.buffer[:200])))
        i = self.buffer.index(marker) + len(marker)
        data = bytes(self.buffer[:i])
        del self.buffer[:i]
        return data

    def read_until_eof(self, timeout=None):
        """What is left of the connection (a reset counts as EOF); fails if it is
        not closed in time."""
        deadline = self._deadline(timeout)
        try:
            while self._fill(deadline):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            raise AssertionError('the connection was not closed (have %r)'
                                 % bytes(self.buffer[:200])) from None
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def quiet(self, seconds):
        """True when nothing arrives for `seconds` (the server is waiting for us)."""
        if self.buffer:
            return False
        readable, _, _ = select.select([self.sock], [], [], seconds)
        return not readable

    # -- HTTP ---------------------------------------------------------------------

    def read_response(self):
        """The response head (raw: its bytes); ConnectionError if the server closes first."""
        while b'\r\n\r\n' not in self.buffer:
            if not self._fill():
                raise ConnectionError('closed before a complete response: %r'
                                      % bytes(self.buffer[:200]))
        head, _, rest = bytes(self.buffer).partition(b'\r\n\r\n')
        self.buffer = bytearray(rest)
        response = parse_response_head(head)
        response.raw = head + b'\r\n\r\n'
        return response

    def handshake(self, path='/', protocols=(), key=None, extra=()):
        """Upgrade (HyBi 13); checks the 101 and its accept key; returns the Response."""
        key = key or base64.b64encode(os.urandom(16)).decode()
        protocol_headers = [('Sec-WebSocket-Protocol', p) for p in protocols]
        self.send(upgrade_request(path=path, replace={'Sec-WebSocket-Key': key},
                                  extra=protocol_headers + list(extra)))
        response = self.read_response()
        if response.status != 101:
            raise AssertionError('handshake refused: %r %r' % (response, self.read_until_eof()))
        check_upgrade_response(response, key)
        return response

    # -- HyBi frames --------------------------------------------------------------

    def send_frame(self, opcode, payload=b'', **options):
        self.send(encode_frame(opcode, payload, **options))

    def send_close(self, code=None, reason=b''):
        self.send_frame(CLOSE, b'' if code is None else close_body(code, reason))

    def _parse_frame(self):
        """The next server frame if the buffer holds all of it (taken out), else None."""
        buf = self.buffer
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b1 & 0x80:
            raise AssertionError('the server sent a masked frame')
        if b0 & 0x70:
            raise AssertionError('the server set RSV bits: %#x' % b0)
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = struct.unpack_from('!H', buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = struct.unpack_from('!Q', buf, 2)[0], 10
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload)

    def recv_frame(self, timeout=None):
        """The next server frame: Frame(fin, opcode, payload)."""
        deadline = self._deadline(timeout)
        while True:
            frame = self._parse_frame()
            if frame is not None:
                return frame
            if not self._fill(deadline):
                raise EOFError('EOF inside a frame (have %d bytes)' % len(self.buffer))

    def iter_data(self, total, opcode=BINARY):
        """Yields data frame payloads until `total` bytes; pings are answered.

        Every message must start with `opcode`; a close frame before the end fails."""
        left = total
        while left > 0:
            frame = self.recv_frame()
            if frame.opcode == PING:
                self.send_frame(PONG, frame.payload)
            elif frame.opcode == PONG:
                pass
            elif frame.opcode == CLOSE:
                raise AssertionError('close %s after %d of %d bytes'
                                     % (describe_close(frame.payload), total - left, total))
            elif frame.opcode not in (opcode, CONT):
                raise AssertionError('opcode %d, expected %d' % (frame.opcode, opcode))
            else:
                left -= len(frame.payload)
                yield frame.payload
        if left < 0:
            raise AssertionError('%d bytes more than the %d expected' % (-left, total))

    def recv_data(self, total, opcode=BINARY):
        return b''.join(self.iter_data(total, opcode))

    def recv_base64(self, n, timeout=TIMEOUT):
        """The base64 subprotocol: text frames, each decoded on its own, until n bytes."""
        data = b''
        while len(data) < n:
            _, opcode, payload = self.recv_frame(timeout)
            if opcode != TEXT:
                raise AssertionError('expected a text frame, got opcode %d %r' % (opcode, payload))
            data += base64.b64decode(payload, validate=True)
        return data

    def recv_until(self, needle):
        """Read data frames (pings answered) until needle has arrived in what this
        method received; returns all of that."""
        while needle not in self.received:
            frame = self.recv_frame()
            if frame.opcode == PING:
                self.send_frame(PONG, frame.payload)
            elif frame.opcode == CLOSE:
                raise AssertionError('close %s before %r arrived; got %r'
                                     % (describe_close(frame.payload), needle, self.received))
            elif frame.opcode in (TEXT, BINARY, CONT):
                self.received += frame.payload
        return self.received

    def echo(self, payload, opcode=BINARY):
        """Send one message and read back as many bytes (the target is an echo)."""
        self.send_frame(opcode, payload)
        return self.recv_data(len(payload))

    def expect_close(self, code=None):
        """Read to the server's close frame (data before it is dropped), answer it,
        then expect EOF. Returns (code or None, reason bytes)."""
        while True:
            frame = self.recv_frame()
            if frame.opcode == CLOSE:
                break
        payload = frame.payload
        got = struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else None
        with contextlib.suppress(OSError):
            self.send_frame(CLOSE, payload[:2])
        rest = self.read_until_eof()
        self.sock.close()                 # as clients do once the server has closed (§7.1.1)
        if rest:
            raise AssertionError('bytes after the close frame: %r' % rest[:200])
        if code is not None and got != code:
            raise AssertionError('close %s, expected %d' % (describe_close(payload), code))
        return got, payload[2:]

    def exchange(self, payloads, total, lazy=False):
        """Send the payloads as binary frames while receiving total payload bytes of
        binary frames, in this one thread (an SSL socket must not be read and written
        from two threads at once). lazy: read only when sending is blocked, so that
        every buffer fills up."""
        out = memoryview(b''.join(encode_frame(BINARY, data) for data in payloads))
        sent, got, received = 0, [], 0
        sock = self.sock
        sock.setblocking(False)
        deadline = time.monotonic() + 60
        try:
            while received < total:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError('%d of %d bytes received' % (received, total))
                writable = [sock] if sent < len(out) else []
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    select.select([sock], writable, [], remaining)
                if sent < len(out):
                    try:
                        sent += sock.send(out[sent:sent + 65536])
                        if lazy:
                            continue
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        pass
                try:
                    chunk = sock.recv(self.read_size)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                if not chunk:
                    raise ConnectionError('closed after %d bytes' % received)
                self.buffer += chunk
                while True:
                    frame = self._parse_frame()
                    if frame is None:
                        break
                    if frame.opcode != BINARY:
                        raise ConnectionError('unexpected opcode %d' % frame.opcode)
                    got.append(frame.payload)
                    received += len(frame.payload)
        finally:
            sock.settimeout(self.timeout)
        return b''.join(got)

    # -- legacy framing: Hixie-75/76 (draft-hixie-thewebsocketprotocol-76) ----------

    def hixie_handshake(self, draft=76, rng=None, **request):
        """The client's handshake of draft 75 or 76 (hixie_request(**request)); checks
        the reply's fixed first 85 bytes and, for draft 76, the challenge answer.
        Returns the reply head."""
        rng = rng or random.Random()
        expected = keys = None
        key3 = b''
        if draft == 76:
            key1, number1 = hixie76_client_key(rng)
            key2, number2 = hixie76_client_key(rng)
            key3 = bytes(rng.getrandbits(8) for _ in range(8))           # 8 random bytes
            keys = (key1, key2)
            expected = hashlib.md5(struct.pack('>II', number1, number2) + key3).digest()
        self.send(hixie_request(draft, keys=keys, **request) + key3)
        head = self.read_until(b'\r\n\r\n', TIMEOUT)
        # draft-75 §4.1: the first 85 bytes must match exactly.
        if not head.startswith(b'HTTP/1.1 101 Web Socket Protocol Handshake\r\n'
                               b'Upgrade: WebSocket\r\nConnection: Upgrade\r\n'):
            raise AssertionError('bad reply %r' % head)
        if draft == 76:
            challenge = self.read_exactly(16, TIMEOUT)
            if challenge != expected:
                raise AssertionError('challenge response %r != %r' % (challenge, expected))
        return head

    def send_hixie(self, data):
        """One frame: 0x00, data in base64, 0xFF."""
        self.send(hixie_frame(data))

    def recv_hixie_frame(self, timeout=TIMEOUT):
        """The bytes of the next frame (each decoded on its own), or None for 0xFF 0x00."""
        kind = self.read_exactly(1, timeout)
        if kind == b'\xff':
            if self.read_exactly(1, timeout) != b'\x00':
                raise AssertionError('length-prefixed frame from the server')
            return None
        if kind != b'\x00':
            raise AssertionError('unexpected frame type %r' % kind)
        return base64.b64decode(self.read_until(b'\xff', timeout)[:-1], validate=True)

    def recv_hixie_data(self, n, timeout=TIMEOUT):
        """Frames until n decoded bytes; the closing handshake before them fails."""
        data = b''
        deadline = time.monotonic() + timeout
        while len(data) < n:
            frame = self.recv_hixie_frame(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise AssertionError('closed after %d of %d bytes' % (len(data), n))
            data += frame
        return data

    def expect_hixie_end(self):
        """After the server's closing handshake: no byte follows it; then close, as
        the peer does once the closing handshake is done."""
        rest = self.read_until_eof(TIMEOUT)
        if rest:
            raise AssertionError('bytes after the closing handshake: %r' % rest[:100])
        self.close()


def open_session(testcase, address, path='/', protocols=(), **options):
    """A WSClient (options: TLS context, timeouts, ...) that has completed the handshake."""
    client = WSClient(testcase, address, **options)
    client.handshake(path=path, protocols=protocols)
    return client


def describe_close(payload):
    if len(payload) < 2:
        return 'without a code (%r)' % payload
    return '%d %r' % (struct.unpack('!H', payload[:2])[0], payload[2:])


def check_upgrade_response(response, key):
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    if response.header('sec-websocket-accept') != expected:
        raise AssertionError('bad accept key in %r' % response)
    if (response.header('upgrade') or '').lower() != 'websocket':
        raise AssertionError('no Upgrade: websocket in %r' % response)
    if 'upgrade' not in (response.header('connection') or '').lower():
        raise AssertionError('no Connection: Upgrade in %r' % response)


_KEY_NOISE = [chr(c) for c in list(range(0x21, 0x30)) + list(range(0x3A, 0x7F))]


def hixie76_client_key(rng):
    """(key, number) for one key, as the client's handshake in draft-76 §4.1 makes it."""
    spaces = rng.randint(1, 12)                          # 1 to 12 spaces
    maximum = 4294967295 // spaces                       # so that number * spaces < 2**32
    number = rng.randint(0, maximum)
    key = list(str(number * spaces))                     # the product in decimal
    for _ in range(rng.randint(1, 12)):                  # 1 to 12 non-digit characters
        key.insert(rng.randint(0, len(key)), rng.choice(_KEY_NOISE))
    for _ in range(spaces):                              # the spaces, not at either end
        key.insert(rng.randint(1, len(key) - 1), ' ')
    return ''.join(key), number


def hixie_request(draft, host='example.com', path='/demo', origin='http://example.com',
                  protocol=None, keys=None, extra=()):
    """The client's handshake lines (draft-76 §4.1), then `extra` (name, value)
    pairs, ending in CRLF CRLF."""
    lines = ['GET %s HTTP/1.1' % path, 'Upgrade: WebSocket', 'Connection: Upgrade',
             'Host: ' + host]
    if origin is not None:
        lines.append('Origin: ' + origin)
    if draft == 76:
        lines += ['Sec-WebSocket-Key1: ' + keys[0], 'Sec-WebSocket-Key2: ' + keys[1]]
        if protocol:
            lines.append('Sec-WebSocket-Protocol: ' + protocol)
    elif protocol:
        lines.append('WebSocket-Protocol: ' + protocol)
    lines += ['%s: %s' % h for h in extra]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


def hixie_frame(data):
    """A Hixie frame: 0x00, data in base64, 0xFF."""
    return b'\x00' + base64.b64encode(data) + b'\xff'


def basic(user_password):
    return 'Basic ' + base64.b64encode(user_password.encode('utf-8')).decode('ascii')


################################################################################
# Helpers: the proxy, in this process or as a program
################################################################################

def start_proxy(testcase, *argv, settings=None, accept_in_threads=False, thread_class=None):
    """websockify in this process (for argv, or these Settings): make_server,
    serve_forever in a thread; returns the server. The cleanup stops it, asking its
    live sessions to close first. accept_in_threads and thread_class set the
    server's before it starts (main() sets the first)."""
    settings = settings or websockify.parse_args([str(a) for a in argv])
    server = websockify.make_server(settings)
    server.accept_in_threads = accept_in_threads
    if thread_class is not None:
        server.thread_class = thread_class
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.close_sessions(2.0)
        server.server_close()
        thread.join(TIMEOUT)
    testcase.addCleanup(stop)
    return server


class LogWatch(logging.Handler):
    """Collects the INFO lines of the 'websockify' logger (the proxy in this process)
    until the test's cleanup. The server may log a line just after the client saw
    what caused it, so both waits wait (bounded) for lines to appear."""

    def __init__(self, testcase):
        super().__init__(logging.INFO)
        self.output = []
        self._cond = threading.Condition()
        log = logging.getLogger('websockify')
        testcase.addCleanup(log.setLevel, log.level)
        testcase.addCleanup(log.removeHandler, self)
        log.addHandler(self)
        log.setLevel(logging.INFO)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def emit(self, record):
        with self._cond:
            self.output.append(record.getMessage())
            self._cond.notify_all()

    def wait_for(self, text, count=1, timeout=TIMEOUT):
        """The lines containing text once there are count of them (or the timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: len([r for r in self.output if text in r]) >= count,
                                timeout)
            return [r for r in self.output if text in r]

    def wait_line(self, *fragments, timeout=TIMEOUT):
        """The first line containing every fragment, once there is one; else None."""
        def found():
            return next((line for line in self.output
                         if all(f in line for f in fragments)), None)
        with self._cond:
            self._cond.wait_for(found, timeout)
            return found()


#: The line main() logs at start; groups give the address it listens on.
LISTENING = re.compile(r'listening on (?:unix:(?P<path>[^\s,]+)'
                       r'|\[(?P<host6>[^\]]*)\]:(?P<port6>\d+)'
                       r'|(?P<host>[^\s\[\],]*):(?P<port>\d+))')


class ThreadMarks:
    """Which of the threads that called mark() still run. Each keeps a token in a
    thread-local, dropped when its thread ends; unlike _thread._count(), threads
    that other tests left behind, ending meanwhile, do not count."""

    class _Token:
        pass

    def __init__(self):
        self._local = threading.local()
        self._refs = []
        self._lock = threading.Lock()

    def mark(self):
        if getattr(self._local, 'token', None) is None:
            token = self._local.token = self._Token()
            with self._lock:
                self._refs.append(weakref.ref(token))

    def alive(self):
        with self._lock:
            return sum(ref() is not None for ref in self._refs)


class ProxyProcess:
    """websockify.py run as a program (script), often wrapping one (`-- PROGRAM`).

    With ready (the default), the constructor waits for its 'listening on' line and
    `address` says where to connect. Its stderr lines are collected: `stderr`,
    wait_log(). stop() signals it and returns its status; kill() kills it. The
    cleanup kills it, or, when it wraps a program, sends SIGTERM so that it stops
    the program, and kills their groups only if it hangs."""

    def __init__(self, testcase, *args, cwd=None, env=None, script=SCRIPT, ready=True):
        self.test = testcase
        args = [str(a) for a in args]
        #: Whether it wraps a program, which a SIGTERM makes it stop.
        self.wraps = '--' in args
        # faulthandler: a websockify that hangs dumps its threads on SIGABRT (stop()).
        env = dict(os.environ if env is None else env, PYTHONUNBUFFERED='1',
                   PYTHONFAULTHANDLER='1')
        self.proc = subprocess.Popen([sys.executable, script] + args,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, cwd=cwd or HERE, env=env)
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        testcase.addCleanup(self.cleanup)
        #: The 'listening on' match (with ready).
        self.match = None
        if ready:
            self.match = self._search(LISTENING, 1, TIMEOUT)
            if self.match is None:
                testcase.fail('no "listening on" line from websockify.py %s:\n%s'
                              % (' '.join(args), self.stderr))

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.decode('utf-8', 'replace'))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    @property
    def stderr(self):
        with self.cond:
            return ''.join(self.lines)

    @property
    def address(self):
        """Where to connect: the Unix path, or (host, port) with wildcards made local."""
        m = self.match
        if m.group('path'):
            return m.group('path')
        if m.group('port6'):
            host = m.group('host6')
            return ('::1' if host in ('', '::') else host, int(m.group('port6')))
        host = m.group('host')
        return ('127.0.0.1' if host in ('', '0.0.0.0', '*') else host, int(m.group('port')))

    def _search(self, regex, count, timeout):
        """The count-th stderr line matching regex, waiting for it; None at the timeout
        or EOF."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in map(regex.search, self.lines) if m]
                if len(found) >= count:
                    return found[count - 1]
                left = end - time.monotonic()
                if left <= 0 or self.eof:
                    return None
                self.cond.wait(left)

    def wait_log(self, pattern, timeout=PROCESS_TIMEOUT, count=1):
        """Wait for the count-th stderr line matching pattern; return its match."""
        match = self._search(re.compile(pattern), count, timeout)
        if match is None:
            self.test.fail('no %r in the log (%s):\n%s' % (
                pattern, 'EOF' if self.eof else 'timeout', self.stderr))
        return match

    def wait_eof(self, timeout=PROCESS_TIMEOUT):
        end = time.monotonic() + timeout
        with self.cond:
            while not self.eof and time.monotonic() < end:
                self.cond.wait(end - time.monotonic())
            return self.eof

    def wait(self, timeout=TIMEOUT):
        """Its exit status, once it exits by itself."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('websockify.py still running after %s s:\n%s'
                                 % (timeout, self.stderr)) from None

    def stop(self, signum=signal.SIGTERM):
        """Send signum and return the exit status; fail with the log if it hangs."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.wait_eof(5.0)
            self.test.fail('websockify did not stop on signal %d:\n%s' % (signum, self.stderr))

    def kill(self):
        """SIGKILL, if it still runs; then its stderr is read to the end and closed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        self.proc.stderr.close()

    def pgids(self):
        """Process groups websockify started (one per run of the program)."""
        regex = re.compile(r'started \S+ \(pid (\d+)\)')
        with self.cond:
            return [int(m.group(1)) for m in map(regex.search, self.lines) if m]

    def cleanup(self):
        """Stop websockify, and its programs if it could not."""
        if not self.wraps:
            self.kill()
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(PROCESS_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(PROCESS_TIMEOUT)
                for pgid in self.pgids():
                    with contextlib.suppress(OSError):
                        os.killpg(pgid, signal.SIGKILL)
        if self.wait_eof(5.0):
            self.proc.stderr.close()


def run_cli(*args, cwd=None, env=None):
    """websockify.py run to completion; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, SCRIPT] + [str(a) for a in args],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=TIMEOUT, cwd=cwd or HERE, env=env)


def wait_for_log(test, logs, predicate, timeout=TIMEOUT):
    """The first message captured by test.assertLogs matching predicate, waiting
    for it up to timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for record in list(logs.records):
            message = record.getMessage()
            if predicate(message):
                return message
        if time.monotonic() > deadline:
            test.fail('no such log line in %r' % [r.getMessage() for r in logs.records])
        time.sleep(0.02)


def check_usage_error(test, result, text):
    """A run_cli result that is a usage error: exit 2, one stderr line naming text."""
    test.assertEqual(result.returncode, 2, result)
    test.assertIn(text, result.stderr)
    test.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
    test.assertNotIn('Traceback', result.stderr)


def wait_until_gone(probe, timeout):
    """Poll probe (os.kill or os.killpg with signal 0) until the process or group is
    gone; True if it went within timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            probe()
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def wait_group_gone(test, pgid, timeout=PROCESS_TIMEOUT):
    """Wait (bounded) until no process of group pgid is left."""
    if not wait_until_gone(lambda: os.killpg(pgid, 0), timeout):
        test.fail('process group %d still has processes' % pgid)


class ProxyTestCase(unittest.TestCase):
    """Targets, the proxy and clients, all stopped in cleanup."""

    def proxy(self, *argv):
        """Start websockify in-process; returns its listening address."""
        return start_proxy(self, *argv).server_address

    def echo_proxy(self, *options):
        """An echo target with the proxy in front of it; returns the proxy's address."""
        target = TargetServer(self, echo)
        return self.proxy(*options, '127.0.0.1:0', target.arg)

    def tempdir(self):
        path = tempfile.mkdtemp(prefix='wsfy-')
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def refused(self, address, request, status):
        """Send a raw request; expect `status` with Connection: close, then EOF."""
        client = WSClient(self, address)
        client.send(request)
        response = client.read_response()
        self.assertEqual(response.status, status, response)
        self.assertEqual((response.header('connection') or '').lower(), 'close', response)
        response.body = client.read_until_eof()
        return response

    def wait_for_log(self, logs, predicate, timeout=TIMEOUT):
        """The first captured message (assertLogs) matching predicate, waiting for it."""
        return wait_for_log(self, logs, predicate, timeout)

    def echo_once(self, address, payload):
        """One whole session: handshake, one echo, a clean close answered by 1000."""
        client = open_session(self, address)
        self.assertEqual(client.echo(payload), payload)
        client.send_close(1000)
        self.assertEqual(client.expect_close()[0], 1000)


################################################################################
# Constants and errors
################################################################################

class TestConstantsControlCharacters(SocketFreeTestCase):
    """has_control_characters is the one check of text we use or send (no sockets)."""

    def test_the_rule(self):
        for text in ('a\x00', 'a\tb', '\r\n', 'x\x1f', 'del\x7f'):
            self.assertTrue(websockify.has_control_characters(text), repr(text))
        for text in ('', 'plain text', 'caf\u00e9', '\u00a0', '\x80', 'a b'):
            self.assertFalse(websockify.has_control_characters(text), repr(text))

    def test_its_users(self):
        headers = websockify._plugin_headers({'X-Ok': 'fine', 'X-Bad': 'a\x7fb',
                                              'X-Split': 'a\r\nSet-Cookie: x'})
        self.assertEqual(headers, [('X-Ok', 'fine')])
        folder = tempfile.mkdtemp(prefix='control-')
        self.addCleanup(shutil.rmtree, folder)
        plugin = websockify.UnixDomainSocketDirectory(folder)
        self.assertIsNone(plugin.lookup('absent'))
        for token in ('vm\n', 'vm\x00', 'vm\x7f'):
            with self.subTest(token=token), self.assertRaises(websockify.HTTPError) as caught:
                plugin.lookup(token)
            self.assertEqual(caught.exception.status, 400)
        with self.assertRaisesRegex(ValueError, 'control characters'):
            websockify.make_target('unix_socket', '/run/a\nb')


################################################################################
# Protocol (Sans-I/O): request parsing, HyBi and Hixie handshakes, frames, base64, the session
################################################################################

#: The handshake example of draft-hixie-thewebsocketprotocol-76 (§1.3, §5.2): the keys,
#: key3, the answer, and the reply to its request.
KEY1 = '18x 6]8vM;54 *(5:  {   U1]8  z [  8'
KEY2 = '1_ tx7X d  <  nw  334J702) 7]o}` 0'
KEY3 = b'Tm[K T2u'
ANSWER = b'fQJ,fN/4F4!~K~MH'
PREFIX_85 = (b'HTTP/1.1 101 Web Socket Protocol Handshake\r\n'
             b'Upgrade: WebSocket\r\nConnection: Upgrade\r\n')
VECTOR_REPLY = (PREFIX_85 + b'Sec-WebSocket-Origin: http://example.com\r\n'
                b'Sec-WebSocket-Location: ws://example.com/demo\r\n'
                b'Sec-WebSocket-Protocol: sample\r\n\r\n' + ANSWER)
FLASH_POLICY = (b'<?xml version="1.0"?>\n'
                b'<!DOCTYPE cross-domain-policy SYSTEM '
                b'"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">\n'
                b'<cross-domain-policy>\n'
                b'<allow-access-from domain="*" to-ports="*" />\n'
                b'</cross-domain-policy>\n\x00')


def _request(text):
    head = text.replace('\n', '\r\n').encode('latin-1') + b'\r\n'
    return websockify.parse_request(head)


def _decode_all(codec, data, chunk=None):
    """Feed data to a codec like the pump does (leftovers moved to the front);
    returns (bytes out, events, unconsumed)."""
    buf = bytearray()
    out, events = [], []
    step = chunk or max(1, len(data))
    for i in range(0, len(data), step):
        buf += data[i:i + step]
        parts = []
        pos = codec.decode(buf, 0, len(buf), parts, events)
        out += [bytes(p) for p in parts]
        del buf[:pos]
        if events and isinstance(events[-1], websockify.CloseReceived):
            buf += data[i + step:]
            break
    return b''.join(out), events, bytes(buf)


# -- the rules of the Protocol section on byte strings: every input whole, split at
# every position, one byte at a time and with trailing bytes, fed as the pump does

HTTPError = websockify.HTTPError
ProtocolError = websockify.ProtocolError
PingReceived = websockify.PingReceived
PongReceived = websockify.PongReceived
CloseReceived = websockify.CloseReceived
RELAY, FINISH, DROP = websockify.RELAY, websockify.FINISH, websockify.DROP

#: RFC 6455 §5.7: the mask of its masked examples.
MASK = bytes((0x37, 0xfa, 0x21, 0x3d))
#: RFC 6455 §5.7: a single-frame masked text message containing "Hello".
MASKED_HELLO = bytes((0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58))
#: RFC 6455 §5.7: a masked Pong containing "Hello".
MASKED_PONG_HELLO = bytes((0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51,
                           0x58))
#: RFC 6455 §1.3: the sample key and its Sec-WebSocket-Accept.
RFC_KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
RFC_ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
#: draft-hixie-thewebsocketprotocol-76: keys, key3 and the 16-byte answer.
#: draft-76 §1.3: the opening handshake example.
EXAMPLE_KEY1 = '4 @1  46546xW%0l 1 5'
EXAMPLE_KEY2 = '12998 5 Y3 1  .P00'
EXAMPLE_KEY3 = b'^n:ds[4U'
EXAMPLE_ANSWER = b"8jKS'y:G*Co,Wxa-"

VALID_CODES = set(itertools.chain((1000, 1001, 1002, 1003), range(1007, 1015),
                                  range(3000, 5000)))


# -- helpers ----------------------------------------------------------------------

def frame(opcode, payload=b'', fin=True, rsv=0, mask=MASK, masked=True, length=None):
    """A client frame (RFC 6455 §5.2) with the fixed mask of RFC 6455 §5.7."""
    return encode_frame(opcode, payload, fin, rsv, masked, length, key=mask)


def splits(data):
    """data whole, in two reads split at every position, and one byte at a time."""
    yield 'whole', [data]
    for i in range(1, len(data)):
        yield 'split at %d' % i, [data[:i], data[i:]]
    yield 'bytewise', [data[i:i + 1] for i in range(len(data))]


def feed_codec(codec, chunks):
    """Feed chunks to codec.decode like the pump: one fixed bytearray, leftovers
    moved to its front. Stops decoding after a close event. Returns (payload
    bytes, events, bytes not consumed)."""
    buf = bytearray(max(1, sum(len(c) for c in chunks)))
    end = 0
    payload = bytearray()
    events = []
    for chunk in chunks:
        buf[end:end + len(chunk)] = chunk
        end += len(chunk)
        if events and isinstance(events[-1], CloseReceived):
            continue
        out = []
        pos = codec.decode(buf, 0, end, out, events)
        payload += b''.join(out)
        del out             # the views into buf go before buf is reused
        rest = end - pos
        buf[:rest] = buf[pos:end]
        end = rest
    return bytes(payload), events, bytes(buf[:end])


def feed_session(session, chunks):
    """Feed chunks to session.receive_client like the pump, while it reads the
    client. Returns (payload bytes, bytes not consumed)."""
    buf = bytearray(max(1, sum(len(c) for c in chunks)))
    end = 0
    payload = bytearray()
    for chunk in chunks:
        buf[end:end + len(chunk)] = chunk
        end += len(chunk)
        if not session.reads_client():
            continue
        pos, out = session.receive_client(buf, end)
        payload += b''.join(out)
        del out
        rest = end - pos
        buf[:rest] = buf[pos:end]
        end = rest
    return bytes(payload), bytes(buf[:end])


def server_frames(data):
    """Split unmasked server frames into (fin, opcode, payload) triples."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        if b1 & 0x80:
            raise AssertionError('server frame is masked')
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            n, pos = struct.unpack_from('!H', data, pos)[0], pos + 2
        elif n == 127:
            n, pos = struct.unpack_from('!Q', data, pos)[0], pos + 8
        frames.append((bool(b0 & 0x80), b0 & 0x0F, bytes(data[pos:pos + n])))
        pos += n
    return frames


def parse_close(data):
    """(code, reason) of one server close frame; (None, '') if it has no body."""
    [(fin, opcode, body)] = server_frames(data)
    if not fin or opcode != CLOSE:
        raise AssertionError('not a close frame: %r' % (data,))
    if not body:
        return None, ''
    return struct.unpack('!H', body[:2])[0], body[2:].decode('utf-8')


class Clock:
    """A clock the test moves: session.clock()."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def head_bytes(text):
    """Request head bytes from lines separated by '\\n', CRLF line ends."""
    return (text.replace('\n', '\r\n') + '\r\n\r\n').encode('latin-1')


def parsed_request(text):
    return websockify.parse_request(head_bytes(text))


def hybi_text(method='GET', target='/', version='HTTP/1.1', drop=(), replace=None,
              extra=()):
    """An RFC 6455 §1.3 upgrade request as text, with headers dropped, replaced
    or added."""
    headers = [('Host', 'server.example.com'), ('Upgrade', 'websocket'),
               ('Connection', 'Upgrade'), ('Sec-WebSocket-Key', RFC_KEY),
               ('Origin', 'http://example.com'), ('Sec-WebSocket-Version', '13')]
    replace = replace or {}
    lines = ['%s %s %s' % (method, target, version)]
    for name, value in headers:
        if name not in drop:
            lines.append('%s: %s' % (name, replace.get(name, value)))
    lines.extend('%s: %s' % h for h in extra)
    return '\n'.join(lines)


def hybi_request(**kw):
    return parsed_request(hybi_text(**kw))


def hixie76_text(key1=KEY1, key2=KEY2, extra=()):
    lines = ['GET /demo HTTP/1.1', 'Host: example.com', 'Connection: Upgrade',
             'Sec-WebSocket-Key2: ' + key2, 'Sec-WebSocket-Protocol: sample',
             'Upgrade: WebSocket', 'Sec-WebSocket-Key1: ' + key1,
             'Origin: http://example.com']
    lines.extend(extra)
    return '\n'.join(lines)


def hixie75_text(extra=()):
    lines = ['GET /demo HTTP/1.1', 'Upgrade: WebSocket', 'Connection: Upgrade',
             'Host: example.com', 'Origin: http://example.com']
    lines.extend(extra)
    return '\n'.join(lines)


# -- request heads ------------------------------------------------------------------

class TestProtocolRequestParsing(SocketFreeTestCase):

    GOOD = ('GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\n'
            'Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n'
            'X-Twice: a\r\nx-twice:  b \t\r\nEmpty:\r\n\r\n').encode('latin-1')

    def check_good(self, req):
        self.assertEqual((req.method, req.target, req.path, req.version),
                         ('GET', '/chat?x=1', '/chat?x=1', (1, 1)))
        self.assertEqual(req.headers, {'host': ['server.example.com'],
                                       'upgrade': ['websocket'],
                                       'connection': ['keep-alive, Upgrade'],
                                       'x-twice': ['a', 'b'], 'empty': ['']})
        self.assertEqual(req.header('x-twice'), 'a, b')
        self.assertEqual(req.header('HOST'.lower()), 'server.example.com')
        self.assertIsNone(req.header('missing'))
        self.assertEqual(req.header('missing', 'dflt'), 'dflt')
        self.assertEqual(req.tokens('connection'), ['keep-alive', 'upgrade'])
        self.assertEqual(req.tokens('missing'), [])

    def test_good_head_with_crlf_lf_and_mixed_line_ends(self):
        self.check_good(websockify.parse_request(self.GOOD))
        self.check_good(websockify.parse_request(self.GOOD.replace(b'\r\n', b'\n')))
        mixed = self.GOOD.replace(b'\r\nHost', b'\nHost').replace(b'\r\nX-Twice', b'\nX-Twice')
        self.check_good(websockify.parse_request(mixed))

    def test_version_and_other_methods_are_parsed(self):
        req = websockify.parse_request(b'OPTIONS * HTTP/1.0\r\n\r\n')
        self.assertEqual((req.method, req.target, req.version, req.headers),
                         ('OPTIONS', '*', (1, 0), {}))
        self.assertEqual(websockify.parse_request(b'GET / HTTP/2.7\n\n').version, (2, 7))

    def test_header_values_are_latin_1(self):
        req = websockify.parse_request(b'GET / HTTP/1.1\r\nX-A: caf\xe9\r\n\r\n')
        self.assertEqual(req.header('x-a'), 'caf\u00e9')

    def refused(self, data, status):
        with self.assertRaises(HTTPError) as cm:
            websockify.parse_request(data)
        self.assertEqual(cm.exception.status, status, data[:80])
        self.assertTrue(cm.exception.reason.strip(), data[:80])
        self.assertNotIn('\n', cm.exception.reason)
        return cm.exception

    def test_malformed_heads_get_400_with_a_reason(self):
        cases = {
            'empty': b'\r\n\r\n',
            'nothing': b'',
            'one word': b'GARBAGE\r\n\r\n',
            'two parts': b'GET /\r\n\r\n',
            'four parts': b'GET / HTTP/1.1 x\r\n\r\n',
            'two spaces': b'GET  / HTTP/1.1\r\n\r\n',
            'empty target': b'GET  HTTP/1.1\r\n\r\n',
            'method not a token': b'G(T / HTTP/1.1\r\n\r\n',
            'lower-case version': b'GET / http/1.1\r\n\r\n',
            'version 11': b'GET / HTTP/11\r\n\r\n',
            'version 1.1.1': b'GET / HTTP/1.1.1\r\n\r\n',
            'version 10.0': b'GET / HTTP/10.0\r\n\r\n',
            'no colon': b'GET / HTTP/1.1\r\nHost example.com\r\n\r\n',
            'space before colon': b'GET / HTTP/1.1\r\nHost : x\r\n\r\n',
            'empty name': b'GET / HTTP/1.1\r\n: x\r\n\r\n',
            'obs-fold': b'GET / HTTP/1.1\r\nX-A: a\r\n  folded: b\r\n\r\n',
            'name with slash': b'GET / HTTP/1.1\r\nX/A: b\r\n\r\n',
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.refused(data, 400)

    def test_request_line_limit_414(self):
        limit = websockify.MAX_REQUEST_LINE
        line = 'GET /%s HTTP/1.1' % ('a' * (limit - 15))      # limit - 1 bytes
        self.assertEqual(len(line), limit - 1)
        websockify.parse_request((line + '\r\n\r\n').encode())
        longer = line.replace('/', '/a', 1)                     # limit bytes
        websockify.parse_request((longer + '\n\n').encode())
        self.refused((longer.replace('/', '/a', 1) + '\n\n').encode(), 414)
        self.refused((longer.replace('/', '/a', 1) + '\r\n\r\n').encode(), 414)
        # While the head is still arriving: no line end yet.
        websockify.check_head_size(b'a' * limit)
        with self.assertRaises(HTTPError) as cm:
            websockify.check_head_size(b'a' * (limit + 1))
        self.assertEqual(cm.exception.status, 414)

    def test_request_line_of_exactly_the_limit_with_crlf_is_accepted(self):
        # The CR of CRLF is no part of the line: the limit is the same with LF.
        limit = websockify.MAX_REQUEST_LINE
        line = 'GET /%s HTTP/1.1' % ('a' * (limit - 14))
        self.assertEqual(len(line), limit)
        websockify.parse_request((line + '\r\n\r\n').encode())

    def test_header_bytes_limit_431(self):
        limit = websockify.MAX_HEADER_BYTES
        # Everything after the request line counts, the blank line included.
        fill = limit - len('X: \r\n\r\n')
        ok = b'GET / HTTP/1.1\r\nX: ' + b'v' * fill + b'\r\n\r\n'
        self.assertEqual(len(ok) - len(b'GET / HTTP/1.1\r\n'), limit)
        self.assertEqual(websockify.parse_request(ok).header('x'), 'v' * fill)
        self.refused(b'GET / HTTP/1.1\r\nX: ' + b'v' * (fill + 1) + b'\r\n\r\n', 431)
        # While the head is still arriving.
        websockify.check_head_size(b'GET / HTTP/1.1\r\n' + b'v' * limit)
        with self.assertRaises(HTTPError) as cm:
            websockify.check_head_size(b'GET / HTTP/1.1\r\n' + b'v' * (limit + 1))
        self.assertEqual(cm.exception.status, 431)

    def test_header_count_limit_431(self):
        n = websockify.MAX_HEADERS
        lines = ['GET / HTTP/1.1'] + ['X-%d: v' % i for i in range(n)]
        req = websockify.parse_request(('\r\n'.join(lines) + '\r\n\r\n').encode())
        self.assertEqual(len(req.headers), n)
        lines.append('X-last: v')
        self.refused(('\r\n'.join(lines) + '\r\n\r\n').encode(), 431)

    def test_find_header_end_whole_and_at_every_split(self):
        tail = b'\x81\x85trailing frame'
        for name, data in (('crlf', self.GOOD), ('lf', self.GOOD.replace(b'\r\n', b'\n')),
                           ('crlf lines, lf blank', self.GOOD[:-2] + b'\n')):
            whole = data + tail
            self.assertEqual(websockify.find_header_end(whole), len(data), name)
            self.assertEqual(websockify.find_header_end(data[:-1]), -1, name)
            # Received in two pieces, searched like Connection.read_head does:
            # from 3 bytes before the end of what was already scanned.
            for i in range(len(whole) + 1):
                first = websockify.find_header_end(whole[:i])
                if i < len(data):
                    self.assertEqual(first, -1, (name, i))
                    found = websockify.find_header_end(whole, max(0, i - 3))
                else:
                    found = first
                self.assertEqual(found, len(data), (name, i))

    def test_find_header_end_takes_the_first_blank_line(self):
        self.assertEqual(websockify.find_header_end(b'A\n\nB\r\n\r\n'), 3)
        self.assertEqual(websockify.find_header_end(b'A\r\n\r\nB\n\n'), 5)
        self.assertEqual(websockify.find_header_end(b'\n\n'), 2)
        self.assertEqual(websockify.find_header_end(b'\r\n\r\n'), 4)
        self.assertEqual(websockify.find_header_end(b'A\r\nB\r\n'), -1)
        self.assertEqual(websockify.find_header_end(b''), -1)
        self.assertEqual(websockify.find_header_end(b'A\n\nB\n\n', 3), 6)

    def test_find_header_end_lf_lines_then_crlf_blank_line(self):
        # parse_request accepts LF line ends and drops a CR before the LF, so
        # "X: y\n\r\n" is a complete head (RFC 9112 §2.2): its end must be found.
        data = b'GET / HTTP/1.1\nHost: h\n\r\n'
        self.assertEqual(websockify.parse_request(data).header('host'), 'h')
        self.assertEqual(websockify.find_header_end(data), len(data))


# -- the session ---------------------------------------------------------------------

CLOSE_TIMEOUT = websockify.CLOSE_TIMEOUT


def new_session(codec=None, heartbeat=0, now=1000.0):
    clock = Clock(now)
    return clock, websockify.Session(codec or websockify.HybiCodec(), heartbeat, clock)


def closes(frames):
    """(code, reason) of every close frame among the frames sent to the client."""
    return [parse_close(f) for f in frames if f[:1] == b'\x88']


class TestProtocolSession(SocketFreeTestCase):

    def ends(self, s):
        return s.client_end, s.target_end

    def test_a_new_session_is_open_and_quiet(self):
        clock, s = new_session()
        self.assertEqual((s.state, self.ends(s), s.close_code, s.close_reason, s.close_sent),
                         (websockify.OPEN, (RELAY, RELAY), None, '', False))
        self.assertEqual((s.to_client, s.changed, s.deadline, s.next_ping, s.next_wakeup()),
                         ([], False, None, None, None))
        self.assertEqual((s.finished, s.reads_client(), s.reads_target()), (False, True, True))
        s.tick()
        self.assertEqual((s.to_client, s.changed), ([], False))
        self.assertEqual(websockify.Session(websockify.HybiCodec()).clock,
                         websockify.time.monotonic)

    def test_data_is_returned_and_nothing_else_changes(self):
        clock, s = new_session()
        self.assertEqual(feed_session(s, [MASKED_HELLO + frame(BINARY, b'!') + b'\x82']),
                         (b'Hello!', b'\x82'))
        self.assertEqual((s.to_client, s.changed, s.state), ([], False, websockify.OPEN))
        parts = s.receive_target(memoryview(b'abc'))
        self.assertEqual(b''.join(bytes(p) for p in parts), b'\x82\x03abc')
        self.assertEqual((s.to_client, s.changed), ([], False))

    def test_ping_is_answered_with_a_pong_of_the_same_payload(self):
        for payload in (b'', b'Hello', bytes(range(125))):
            clock, s = new_session()
            feed_session(s, [frame(PING, payload)])
            self.assertEqual(s.to_client, [bytes((0x8a, len(payload))) + payload])
            self.assertEqual(server_frames(s.to_client[0]), [(True, PONG, payload)])
            self.assertEqual((s.changed, s.state, self.ends(s), s.deadline, s.close_code),
                             (True, websockify.OPEN, (RELAY, RELAY), None, None))

    def test_unsolicited_pong_needs_no_answer(self):
        clock, s = new_session()
        feed_session(s, [MASKED_PONG_HELLO])
        self.assertEqual((s.to_client, s.changed, s.state), ([], False, websockify.OPEN))

    def test_no_pong_once_our_close_is_sent(self):
        clock, s = new_session()
        s.close(1001, 'server shutting down')
        s.to_client.clear()
        s.changed = False
        self.assertEqual(feed_session(s, [frame(PING, b'late') + frame(BINARY, b'x')]),
                         (b'x', b''))
        self.assertEqual((s.to_client, s.changed), ([], False))

    def test_received_close_is_echoed_and_both_ends_finish(self):
        for code, reason in ((1000, 'bye'), (1001, ''), (1003, 'x'), (1011, 'oops'),
                             (3000, ''), (4999, 'tr\u00e8s bien'), (None, '')):
            with self.subTest(code=code):
                clock, s = new_session(now=50.0)
                body = b'' if code is None else close_body(code, reason.encode('utf-8'))
                self.assertEqual(feed_session(s, [frame(CLOSE, body) + b'after']),
                                 (b'', b'after'))
                self.assertEqual(len(s.to_client), 1)
                self.assertEqual(parse_close(s.to_client[0]), (code, ''))
                self.assertEqual((s.close_code, s.close_reason),
                                 (1005 if code is None else code, reason))
                self.assertEqual((self.ends(s), s.state, s.close_sent, s.changed),
                                 ((FINISH, FINISH), websockify.CLOSING, True, True))
                self.assertEqual((s.deadline, s.next_wakeup()),
                                 (50.0 + CLOSE_TIMEOUT, 50.0 + CLOSE_TIMEOUT))
                self.assertEqual((s.finished, s.reads_client(), s.reads_target()),
                                 (False, False, False))

    def test_hixie_closing_handshake(self):
        clock, s = new_session(websockify.HixieCodec('hixie-76'))
        self.assertEqual(feed_session(s, [b'\x00QUJD\xff\xff\x00\x00QUJD\xff']),
                         (b'ABC', b'\x00QUJD\xff'))
        self.assertEqual((s.to_client, s.close_code, self.ends(s)),
                         ([b'\xff\x00'], 1005, (FINISH, FINISH)))
        clock, s = new_session(websockify.HixieCodec('hixie-75'))
        s.target_eof()
        self.assertEqual((s.to_client, s.close_code, self.ends(s)),
                         ([b'\xff\x00'], 1000, (RELAY, FINISH)))

    def test_closing_deadline(self):
        clock, s = new_session(now=10.0)
        feed_session(s, [frame(CLOSE, close_body(1000, b'done'))])
        deadline = 10.0 + CLOSE_TIMEOUT
        clock.now = 11.0
        s.client_eof()                          # the deadline is armed once
        self.assertEqual((s.deadline, self.ends(s)), (deadline, (DROP, FINISH)))
        s.changed = False
        clock.now = deadline - 0.001
        s.tick()
        self.assertEqual((self.ends(s), s.changed, s.finished), ((DROP, FINISH), False, False))
        clock.now = deadline
        s.tick()
        self.assertEqual((self.ends(s), s.changed, s.finished, s.state),
                         ((DROP, DROP), True, True, websockify.CLOSED))
        self.assertEqual((s.close_code, s.close_reason), (1000, 'done'))
        self.assertEqual(len(s.to_client), 1)               # the echo only

    def test_timeout_code_only_when_none_was_set(self):
        # Every public way of arming the deadline also sets a code, so arm it by hand.
        clock, s = new_session()
        s.deadline = clock.now + 1
        clock.now += 1
        s.tick()
        self.assertEqual((s.close_code, s.close_reason, self.ends(s)),
                         (1006, 'closing handshake timed out', (DROP, DROP)))
        self.assertEqual(s.to_client, [])
        clock, s = new_session()
        s.close(1001, 'server shutting down')
        clock.now += CLOSE_TIMEOUT
        s.tick()
        self.assertEqual((s.close_code, s.close_reason, s.state),
                         (1001, 'server shutting down', websockify.CLOSED))

    def test_protocol_error_closes_once_with_its_code(self):
        cases = [(frame(BINARY, b'x', rsv=4), 1002, 'reserved bits set without an extension'),
                 (frame(BINARY, b'x', masked=False), 1002, 'client frame is not masked'),
                 (frame(TEXT, b'\xff'), 1007, 'invalid UTF-8 in a text message'),
                 (frame(CLOSE, close_body(1005)), 1002, 'invalid close code 1005'),
                 (frame(PING, b'p', fin=False), 1002, 'fragmented control frame')]
        for bad, code, reason in cases:
            with self.subTest(reason):
                clock, s = new_session(now=7.0)
                data = frame(BINARY, b'before') + bad + frame(BINARY, b'after')
                buf = bytearray(data)
                pos, out = s.receive_client(buf, len(buf))
                self.assertEqual((pos, b''.join(out)), (len(buf), b'before'))
                self.assertEqual(closes(s.to_client), [(code, reason)])
                self.assertEqual(len(s.to_client), 1)
                self.assertEqual((s.close_code, s.close_reason), (code, reason))
                self.assertEqual((self.ends(s), s.state, s.deadline, s.changed),
                                 ((FINISH, FINISH), websockify.CLOSING, 7.0 + CLOSE_TIMEOUT,
                                  True))

    def test_base64_error_closes_with_1007_after_the_good_part(self):
        clock, s = new_session(websockify.HybiBase64Codec())
        buf = bytearray(frame(TEXT, b'QUJD') + frame(TEXT, b'QU*D'))
        pos, out = s.receive_client(buf, len(buf))
        self.assertEqual((pos, out), (len(buf), [b'ABC']))
        self.assertEqual(closes(s.to_client), [(1007, 'invalid base64 in a message')])

    def test_target_eof_closes_with_1000_and_awaits_the_client(self):
        clock, s = new_session(now=3.0)
        s.target_eof()
        self.assertEqual(closes(s.to_client), [(1000, 'target closed the connection')])
        self.assertEqual((s.close_code, self.ends(s), s.state, s.deadline, s.reads_client()),
                         (1000, (RELAY, FINISH), websockify.CLOSING, 3.0 + CLOSE_TIMEOUT,
                          True))
        self.assertEqual(feed_session(s, [frame(BINARY, b'late') + frame(CLOSE, close_body(1000))]),
                         (b'late', b''))
        self.assertEqual((self.ends(s), len(s.to_client), s.close_code),
                         ((FINISH, FINISH), 1, 1000))
        s.client_eof()
        self.assertEqual(self.ends(s), (DROP, FINISH))
        s.target_eof()
        self.assertEqual((self.ends(s), s.finished, s.state, s.close_code),
                         ((DROP, DROP), True, websockify.CLOSED, 1000))
        self.assertEqual(len(s.to_client), 1)

    def test_client_eof_without_a_close_frame(self):
        clock, s = new_session()
        s.client_eof()
        self.assertEqual((s.close_code, s.close_reason, self.ends(s), s.to_client, s.close_sent),
                         (1006, 'client closed without a close frame', (DROP, FINISH), [],
                          False))
        self.assertEqual((s.state, s.changed, s.deadline), (websockify.CLOSING, True,
                                                            clock.now + CLOSE_TIMEOUT))
        s.target_eof()
        self.assertEqual((self.ends(s), s.state, s.to_client), ((DROP, DROP), websockify.CLOSED,
                                                                []))

    def test_client_lost(self):
        clock, s = new_session()
        s.client_lost('ECONNRESET')
        self.assertEqual((s.close_code, s.close_reason, self.ends(s), s.to_client),
                         (1006, 'client connection lost (ECONNRESET)', (DROP, FINISH), []))

    def test_target_lost_closes_the_client_with_1011(self):
        clock, s = new_session()
        s.target_lost('ECONNRESET')
        self.assertEqual(closes(s.to_client), [(1011, 'target connection lost (ECONNRESET)')])
        self.assertEqual((s.close_code, self.ends(s), s.reads_client()),
                         (1011, (RELAY, DROP), True))
        feed_session(s, [frame(CLOSE, close_body(1011))])
        self.assertEqual((self.ends(s), len(s.to_client)), ((FINISH, DROP), 1))

    def test_close_when_the_server_stops(self):
        clock, s = new_session()
        s.close(1001, 'server shutting down')
        self.assertEqual(closes(s.to_client), [(1001, 'server shutting down')])
        self.assertEqual((s.close_code, self.ends(s), s.close_sent), (1001, (RELAY, FINISH), True))
        s.close(1001, 'server shutting down')
        self.assertEqual(len(s.to_client), 1)
        feed_session(s, [frame(CLOSE, close_body(1001))])
        self.assertEqual((self.ends(s), len(s.to_client), s.close_code),
                         ((FINISH, FINISH), 1, 1001))
        # After the client is gone no close frame is sent.
        clock, s = new_session()
        s.client_eof()
        s.close(1001, 'server shutting down')
        self.assertEqual((s.to_client, self.ends(s), s.close_code), ([], (DROP, FINISH), 1006))

    def test_fail_keeps_the_first_error_code(self):
        clock, s = new_session()
        s.fail(1002, 'first')
        s.fail(1007, 'second')
        s.fail(1000, 'third')
        self.assertEqual((s.close_code, s.close_reason), (1002, 'first'))
        self.assertEqual(closes(s.to_client), [(1002, 'first')])
        clock, s = new_session()
        s.fail(1011, 'first')
        s.fail(1002, 'lower')
        self.assertEqual((s.close_code, s.close_reason), (1011, 'first'))
        clock, s = new_session()
        feed_session(s, [frame(CLOSE, b'')])           # 1005 is no error of ours
        s.fail(1002, 'after')
        self.assertEqual(s.close_code, 1005)

    def test_fail_overwrites_1000_and_1001_without_a_second_close(self):
        for code, start in ((1000, lambda s: s.target_eof()),
                            (1001, lambda s: s.close(1001, 'server shutting down'))):
            clock, s = new_session()
            start(s)
            s.fail(1002, 'bad frame')
            self.assertEqual((s.close_code, s.close_reason), (1002, 'bad frame'))
            self.assertEqual([c for c, r in closes(s.to_client)], [code])
            self.assertEqual(self.ends(s), (FINISH, FINISH))

    def test_invalid_utf8_from_the_target_fails_with_1011(self):
        clock, s = new_session(websockify.HybiCodec(text_frames=True))
        self.assertEqual(s.receive_target(memoryview(b'\xc0\xaf')), [])
        self.assertEqual(closes(s.to_client), [(1011, 'target sent invalid UTF-8 for a text frame')])
        self.assertEqual((s.close_code, self.ends(s)), (1011, (FINISH, FINISH)))

    def test_heartbeat_pings(self):
        clock, s = new_session(heartbeat=5, now=100.0)
        self.assertEqual((s.next_ping, s.next_wakeup()), (105.0, 105.0))
        clock.now = 104.999
        s.tick()
        self.assertEqual((s.to_client, s.changed), ([], False))
        clock.now = 105.0
        s.tick()
        self.assertEqual((s.to_client, s.changed, s.next_wakeup()), ([b'\x89\x00'], True, 110.0))
        clock.now = 112.5                       # a late wakeup: the next ping is 5 s on
        s.tick()
        self.assertEqual((s.to_client, s.next_ping), ([b'\x89\x00'] * 2, 117.5))
        feed_session(s, [frame(PONG, b'')])     # the answer needs nothing
        self.assertEqual(len(s.to_client), 2)
        # Once our close is sent: no more pings, only the deadline wakes us.
        s.target_eof()
        self.assertEqual(s.next_wakeup(), 112.5 + CLOSE_TIMEOUT)
        clock.now = 117.5
        s.tick()
        self.assertEqual(len(s.to_client), 3)
        self.assertEqual(server_frames(s.to_client[2])[0][1], CLOSE)

    def test_next_wakeup_ignores_the_ping_once_our_close_is_sent(self):
        clock, s = new_session(heartbeat=1, now=0.0)
        s.close(1001, 'server shutting down')
        self.assertEqual(s.next_wakeup(), CLOSE_TIMEOUT)
        clock.now = 1.0
        s.tick()
        self.assertEqual(len(s.to_client), 1)

    def test_no_heartbeat_ping_to_a_client_that_is_not_read(self):
        clock, s = new_session(heartbeat=10, now=0.0)
        s.client_eof()
        self.assertEqual(s.next_wakeup(), CLOSE_TIMEOUT)      # the deadline comes first
        clock.now = 10.0
        s.tick()
        self.assertEqual(s.to_client, [])
        self.assertEqual(s.finished, True)

    def test_hixie_has_no_heartbeat_ping(self):
        clock, s = new_session(websockify.HixieCodec('hixie-76'), heartbeat=2, now=0.0)
        self.assertEqual(s.next_wakeup(), 2.0)
        s.changed = False
        clock.now = 2.0
        s.tick()
        self.assertEqual((s.to_client, s.changed, s.next_ping), ([], False, 4.0))
        feed_session(s, [b'\x00QUJD\xff'])
        self.assertEqual((s.to_client, s.changed), ([], False))

    def test_changed_is_set_when_there_is_something_to_do(self):
        clock, s = new_session()
        feed_session(s, [frame(BINARY, b'x') + frame(PONG, b'')])
        self.assertFalse(s.changed)
        feed_session(s, [frame(PING, b'')])
        self.assertTrue(s.changed)
        actions = {'client_eof': lambda s: s.client_eof(),
                   'target_eof': lambda s: s.target_eof(),
                   'client_lost': lambda s: s.client_lost('EPIPE'),
                   'target_lost': lambda s: s.target_lost('EPIPE'),
                   'close': lambda s: s.close(1001, 'x'), 'fail': lambda s: s.fail(1002, 'x')}
        for name, action in actions.items():
            clock, s = new_session()
            action(s)
            self.assertTrue(s.changed, name)
            s.changed = False
            action(s)
            # A second target EOF is the end of the target's drain: it drops it.
            self.assertEqual(s.changed, name == 'target_eof', name)

    def test_ends_never_move_backward(self):
        close = frame(CLOSE, close_body(1000))
        actions = {
            'client_eof': lambda s, c: s.client_eof(),
            'target_eof': lambda s, c: s.target_eof(),
            'client_lost': lambda s, c: s.client_lost('ECONNRESET'),
            'target_lost': lambda s, c: s.target_lost('ECONNRESET'),
            'close': lambda s, c: s.close(1001, 'server shutting down'),
            'fail': lambda s, c: s.fail(1002, 'bad'),
            'client close': lambda s, c: s.receive_client(bytearray(close), len(close)),
            'timeout': lambda s, c: (setattr(c, 'now', c.now + CLOSE_TIMEOUT), s.tick()),
        }
        for order in itertools.permutations(actions, 5):
            clock, s = new_session()
            before = (RELAY, RELAY)
            for name in order:
                actions[name](s, clock)
                now = self.ends(s)
                self.assertTrue(now[0] >= before[0] and now[1] >= before[1], (order, name))
                if now != (RELAY, RELAY) or s.close_sent:
                    self.assertIsNotNone(s.close_code, (order, name))
                    self.assertIsNotNone(s.deadline, (order, name))
                self.assertLessEqual(len(closes(s.to_client)), 1, (order, name))
                self.assertEqual(s.state == websockify.CLOSED, now == (DROP, DROP))
                expected = (websockify.CLOSED if now == (DROP, DROP) else
                            websockify.OPEN if now == (RELAY, RELAY) and not s.close_sent
                            else websockify.CLOSING)
                self.assertEqual(s.state, expected, (order, name))
                before = now

    def test_any_split_of_ping_data_and_close_gives_the_same_result(self):
        data = (frame(PING, b'p1') + frame(TEXT, b'caf\xc3', fin=False) + frame(PONG, b'')
                + frame(CONT, b'\xa9') + frame(BINARY, bytes(range(200)))
                + frame(CLOSE, close_body(1000, b'done')))
        trailing = frame(BINARY, b'never relayed')
        for name, chunks in splits(data + trailing):
            with self.subTest(name):
                clock, s = new_session()
                self.assertEqual(feed_session(s, chunks),
                                 (b'caf\xc3\xa9' + bytes(range(200)), trailing))
                self.assertEqual(s.to_client, [b'\x8a\x02p1', b'\x88\x02\x03\xe8'])
                self.assertEqual((s.close_code, s.close_reason, self.ends(s)),
                                 (1000, 'done', (FINISH, FINISH)))


# -- accept() ---------------------------------------------------------------------------

class TestProtocolAccept(SocketFreeTestCase):

    def refusal(self, req, status, **kw):
        result = websockify.accept(req, **kw)
        self.assertIsInstance(result, HTTPError)
        self.assertEqual(result.status, status, result.reason)
        self.assertTrue(result.reason.strip())
        self.assertNotIn('\n', result.reason)
        return result

    def test_rfc6455_section_1_3_handshake(self):
        req = hybi_request(extra=[('Sec-WebSocket-Protocol', 'chat, superchat')])
        acc = websockify.accept(req)
        self.assertIsInstance(acc, websockify.Acceptance)
        self.assertEqual((acc.family, acc.protocol, acc.extra_needed), ('hybi', 'chat', 0))
        self.assertEqual(acc.reply(), b'HTTP/1.1 101 Switching Protocols\r\n'
                                      b'Upgrade: websocket\r\nConnection: Upgrade\r\n'
                                      b'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n'
                                      b'Sec-WebSocket-Protocol: chat\r\n\r\n')
        self.assertIsInstance(acc.session, websockify.Session)
        self.assertIs(type(acc.session.codec), websockify.HybiCodec)
        self.assertEqual(acc.session.codec.mode, 'binary')
        self.assertEqual((acc.session.client_end, acc.session.target_end), (RELAY, RELAY))

    def test_accept_key(self):
        self.assertEqual(websockify.accept_key(RFC_KEY), RFC_ACCEPT)
        key = base64.b64encode(bytes(range(16))).decode()
        expected = base64.b64encode(hashlib.sha1(
            (key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
        self.assertEqual(websockify.accept_key(key), expected)

    def test_versions_13_8_7_and_case_insensitive_tokens(self):
        for version in ('13', '8', '7'):
            acc = websockify.accept(hybi_request(replace={'Sec-WebSocket-Version': version}))
            self.assertEqual(acc.family, 'hybi', version)
        req = hybi_request(replace={'Upgrade': 'WebSocket', 'Connection': 'keep-alive, UPGRADE'})
        self.assertEqual(websockify.accept(req).family, 'hybi')
        text = hybi_text().replace('Sec-WebSocket-Key', 'sec-websocket-KEY')
        self.assertIn(b'Sec-WebSocket-Accept: %s\r\n' % RFC_ACCEPT.encode(),
                      websockify.accept(parsed_request(text)).reply())

    def test_plain_request_without_web_is_426_with_upgrade_header(self):
        r = self.refusal(parsed_request('GET / HTTP/1.1\nHost: h'), 426)
        self.assertEqual(r.headers, (('Upgrade', 'websocket'),))
        r = self.refusal(parsed_request('GET /index.html HTTP/1.0'), 426)
        self.assertEqual(r.headers, (('Upgrade', 'websocket'),))

    def test_plain_non_get_without_web_is_405_allowing_get(self):
        for method in ('POST', 'HEAD', 'PUT'):
            r = self.refusal(parsed_request('%s / HTTP/1.1\nHost: h' % method), 405)
            self.assertEqual(r.headers, (('Allow', 'GET'),))

    def test_plain_requests_go_to_the_web_server(self):
        for text in ('GET / HTTP/1.1\nHost: h', 'POST /x HTTP/1.0',
                     'GET / HTTP/1.1\nHost: h\nUpgrade: h2c\nConnection: Upgrade'):
            self.assertIsNone(websockify.accept(parsed_request(text), serve_web=True), text)
        # An upgrade is never answered by the web server.
        self.assertEqual(websockify.accept(hybi_request(), serve_web=True).family, 'hybi')
        self.refusal(hybi_request(drop=('Sec-WebSocket-Key',)), 400, serve_web=True)

    def test_other_upgrade_token_is_400(self):
        for token in ('h2c', 'h2c, foo', 'websockets'):
            r = self.refusal(hybi_request(replace={'Upgrade': token}), 400)
            self.assertEqual(r.headers, ())

    def test_upgrade_with_another_method_is_405_allowing_get(self):
        for method in ('POST', 'PUT', 'CONNECT'):
            r = self.refusal(hybi_request(method=method), 405)
            self.assertEqual(r.headers, (('Allow', 'GET'),))
        r = self.refusal(parsed_request(hixie76_text().replace('GET', 'POST')), 405)
        self.assertEqual(r.headers, (('Allow', 'GET'),))

    def test_http_1_0_no_host_no_connection_upgrade_are_400(self):
        cases = {
            'HTTP/1.0': hybi_request(version='HTTP/1.0'),
            'HTTP/0.9': hybi_request(version='HTTP/0.9'),
            'no Host': hybi_request(drop=('Host',)),
            'empty Host': hybi_request(replace={'Host': ''}),
            'no Connection': hybi_request(drop=('Connection',)),
            'Connection: keep-alive': hybi_request(replace={'Connection': 'keep-alive'}),
            'Connection: upgraded': hybi_request(replace={'Connection': 'upgraded'}),
            'no Connection, no key': hybi_request(drop=('Connection', 'Sec-WebSocket-Key')),
            'hixie-76 HTTP/1.0': parsed_request(hixie76_text().replace('HTTP/1.1', 'HTTP/1.0')),
            'hixie-76 no Host': parsed_request(hixie76_text().replace('Host: example.com\n', '')),
        }
        for name, req in cases.items():
            with self.subTest(name):
                self.assertEqual(self.refusal(req, 400).headers, ())

    def test_bad_or_missing_version_is_426_listing_13_8_7(self):
        for version in (None, '', '12', '14', '6', '13, 8', 'thirteen'):
            with self.subTest(version=version):
                if version is None:
                    req = hybi_request(drop=('Sec-WebSocket-Version',))
                else:
                    req = hybi_request(replace={'Sec-WebSocket-Version': version})
                r = self.refusal(req, 426)
                self.assertEqual(r.headers, (('Sec-WebSocket-Version', '13, 8, 7'),))
        # No key, no version, no Connection: Upgrade: still checked as HyBi.
        req = parsed_request('GET / HTTP/1.1\nHost: h\nUpgrade: websocket\n'
                      'Sec-WebSocket-Version: 12\nConnection: Upgrade')
        self.assertEqual(self.refusal(req, 426).headers,
                         (('Sec-WebSocket-Version', '13, 8, 7'),))
        # No key and no version but Connection: Upgrade is draft-75.
        req = hybi_request(drop=('Sec-WebSocket-Version', 'Sec-WebSocket-Key'))
        self.assertEqual(websockify.accept(req).family, 'hixie-75')

    def test_bad_or_missing_key_is_400(self):
        keys = {'15 bytes': base64.b64encode(b'x' * 15).decode(),
                '17 bytes': base64.b64encode(b'x' * 17).decode(),
                'not base64': 'not base64 at all!!!!!==',
                'no padding': RFC_KEY.rstrip('='),
                'non-ASCII': 'dGhlIHNhbXBsZSBub25jZQ\u00e9=',
                'empty': ''}
        for name, key in keys.items():
            with self.subTest(name):
                self.refusal(hybi_request(replace={'Sec-WebSocket-Key': key}), 400)
        self.refusal(hybi_request(drop=('Sec-WebSocket-Key',)), 400)
        twice = hybi_request(extra=[('Sec-WebSocket-Key', RFC_KEY)])
        self.refusal(twice, 400)

    def test_subprotocol_choice(self):
        cases = [((), None), (('binary',), 'binary'), (('base64',), 'base64'),
                 (('base64, binary',), 'binary'), (('base64', 'binary'), 'binary'),
                 (('chat, base64',), 'base64'), (('chat', 'superchat'), 'chat'),
                 ((' chat ,, superchat',), 'chat'), (('Binary, x',), 'Binary')]
        for lines, expected in cases:
            with self.subTest(lines=lines):
                req = hybi_request(extra=[('Sec-WebSocket-Protocol', v) for v in lines])
                acc = websockify.accept(req)
                self.assertEqual(acc.protocol, expected)
                reply = acc.reply()
                if expected is None:
                    self.assertNotIn(b'Sec-WebSocket-Protocol', reply)
                else:
                    self.assertTrue(reply.endswith(
                        b'\r\nSec-WebSocket-Protocol: %s\r\n\r\n' % expected.encode()))
        self.assertEqual(websockify.choose_subprotocol([]), None)
        self.assertEqual(websockify.choose_subprotocol(['a', 'base64', 'binary']), 'binary')

    def test_codec_choice(self):
        def codec(protocols=(), **kw):
            extra = [('Sec-WebSocket-Protocol', p) for p in protocols]
            return websockify.accept(hybi_request(extra=extra), **kw).session.codec
        c = codec()
        self.assertEqual((type(c), c.mode, c.family), (websockify.HybiCodec, 'binary', 'hybi'))
        c = codec(['binary'], text_frames=True)
        self.assertEqual((type(c), c.mode), (websockify.HybiCodec, 'text'))
        self.assertEqual(bytes(c.encode(memoryview(b'A'))[0]), b'\x81\x01')
        c = codec(['base64'])
        self.assertEqual((type(c), c.mode), (websockify.HybiBase64Codec, 'base64'))
        c = codec(['base64'], text_frames=True)
        self.assertEqual((type(c), c.mode), (websockify.HybiBase64Codec, 'base64'))
        for text, family in ((hixie76_text(), 'hixie-76'), (hixie75_text(), 'hixie-75')):
            c = websockify.accept(parsed_request(text), text_frames=True).session.codec
            self.assertEqual((type(c), c.mode, c.family),
                             (websockify.HixieCodec, 'base64', family))

    def test_heartbeat_reaches_the_session(self):
        self.assertEqual(websockify.accept(hybi_request(), heartbeat=7).session.heartbeat, 7)
        acc = websockify.accept(parsed_request(hixie75_text()), heartbeat=3)
        self.assertEqual(acc.session.heartbeat, 3)
        self.assertIsNone(websockify.accept(hybi_request()).session.next_ping)

    def test_hixie_75_reply(self):
        acc = websockify.accept(parsed_request(hixie75_text(['WebSocket-Protocol: sample'])))
        self.assertEqual((acc.family, acc.protocol, acc.extra_needed), ('hixie-75', 'sample', 0))
        expected = (b'HTTP/1.1 101 Web Socket Protocol Handshake\r\n'
                    b'Upgrade: WebSocket\r\nConnection: Upgrade\r\n'
                    b'WebSocket-Origin: http://example.com\r\n'
                    b'WebSocket-Location: ws://example.com/demo\r\n'
                    b'WebSocket-Protocol: sample\r\n\r\n')
        self.assertEqual(acc.reply(), expected)
        self.assertEqual(acc.reply(b'ignored'), expected)
        # Draft-75 clients compare the first 85 bytes literally.
        self.assertEqual(len(b'HTTP/1.1 101 Web Socket Protocol Handshake\r\n'
                             b'Upgrade: WebSocket\r\nConnection: Upgrade\r\n'), 85)
        acc = websockify.accept(parsed_request(hixie75_text()), secure=True)
        self.assertIsNone(acc.protocol)
        self.assertIn(b'\r\nWebSocket-Location: wss://example.com/demo\r\n', acc.reply())

    def test_hixie_76_reply_with_the_draft_vector(self):
        acc = websockify.accept(parsed_request(hixie76_text()))
        self.assertEqual((acc.family, acc.protocol, acc.extra_needed),
                         ('hixie-76', 'sample', 8))
        reply = acc.reply(KEY3)
        self.assertTrue(reply.endswith(b'\r\n\r\n' + ANSWER), reply)
        self.assertEqual(reply, b'HTTP/1.1 101 Web Socket Protocol Handshake\r\n'
                                b'Upgrade: WebSocket\r\nConnection: Upgrade\r\n'
                                b'Sec-WebSocket-Origin: http://example.com\r\n'
                                b'Sec-WebSocket-Location: ws://example.com/demo\r\n'
                                b'Sec-WebSocket-Protocol: sample\r\n\r\n' + ANSWER)
        acc = websockify.accept(parsed_request(hixie76_text(EXAMPLE_KEY1, EXAMPLE_KEY2)),
                                secure=True)
        reply = acc.reply(EXAMPLE_KEY3)
        self.assertTrue(reply.endswith(b'\r\n\r\n' + EXAMPLE_ANSWER), reply)
        self.assertIn(b'\r\nSec-WebSocket-Location: wss://example.com/demo\r\n', reply)
        self.assertEqual(websockify.hixie76_answer(KEY1, KEY2, KEY3), ANSWER)
        self.assertEqual(websockify.hixie76_key_number(KEY1), 155712099)
        self.assertEqual(websockify.hixie76_key_number(KEY2), 173347027)

    def test_invalid_draft_76_keys_are_400_before_key3(self):
        bad = {'no spaces': '123456', 'no digits': 'a b c', 'not a multiple': '1 2 3',
               'over 32 bits': '8589934590 ', 'too many digits': '1' * 21 + ' ' * 3,
               'zero digits, spaces only': '   '}
        for name, key in bad.items():
            for which in ('key1', 'key2'):
                with self.subTest(name, which=which):
                    text = (hixie76_text(key1=key) if which == 'key1'
                            else hixie76_text(key2=key))
                    r = self.refusal(parsed_request(text), 400)
                    self.assertIn('Sec-WebSocket-Key%s' % which[-1], r.reason)
        self.assertEqual(websockify.hixie76_key_number('4294967295 '), 0xFFFFFFFF)
        self.assertEqual(websockify.hixie76_key_number('0 '), 0)

    def test_half_a_draft_76_request_is_400(self):
        for name in ('Sec-WebSocket-Key1', 'Sec-WebSocket-Key2'):
            lines = [line for line in hixie76_text().split('\n')
                     if not line.startswith(name + ':')]
            with self.subTest(missing=name):
                self.refusal(parsed_request('\n'.join(lines)), 400)

    def test_control_characters_echoed_by_hixie_are_400(self):
        cases = {
            'Host': hixie75_text().replace('Host: example.com', 'Host: exa\rmple.com'),
            'path': hixie75_text().replace('GET /demo', 'GET /de\x01mo'),
            'Origin': hixie75_text().replace('Origin: http://', 'Origin: http://\x7f'),
            'WebSocket-Protocol': hixie75_text(['WebSocket-Protocol: a\x00b']),
            '76 Sec-WebSocket-Protocol': hixie76_text().replace(': sample', ': sam\x1bple'),
            '76 Origin': hixie76_text().replace('Origin: http://', 'Origin: http://\r'),
        }
        for name, text in cases.items():
            with self.subTest(name):
                # The request parser refuses them first; accept() would too.
                with self.assertRaises(HTTPError) as cm:
                    parsed_request(text)
                self.assertEqual(cm.exception.status, 400)
                with self.assertRaises(HTTPError) as cm:
                    websockify.check_hixie_request(websockify.Request(
                        'GET', '/de\x01mo', (1, 1), {'host': ['h'], 'upgrade': ['WebSocket'],
                                                      'connection': ['Upgrade']}))
                self.assertEqual(cm.exception.status, 400)

    def test_handshake_kind(self):
        kind = websockify.handshake_kind
        self.assertEqual(kind(hybi_request()), 'hybi')
        self.assertEqual(kind(parsed_request(hixie76_text())), 'hixie-76')
        self.assertEqual(kind(parsed_request(hixie75_text())), 'hixie-75')
        self.assertEqual(kind(parsed_request(hixie76_text(extra=['Sec-WebSocket-Key: ' + RFC_KEY]))),
                         'hybi')
        self.assertEqual(kind(hybi_request(drop=('Sec-WebSocket-Key',))), 'hybi')
        self.assertEqual(kind(parsed_request('GET / HTTP/1.1\nHost: h\nUpgrade: websocket')), 'hybi')


# -- HyBi frames ---------------------------------------------------------------------

class TestProtocolHybiRules(SocketFreeTestCase):

    def decodes(self, data, payload, events=(), codec=None, trailing=b'\x82\xff'):
        """data decodes to payload and events whole, at every split, one byte at a
        time, and leaves trailing bytes (an incomplete header) unconsumed."""
        for name, chunks in splits(data + trailing):
            with self.subTest(name):
                c = codec() if codec else websockify.HybiCodec()
                got = feed_codec(c, chunks)
                self.assertEqual(got, (payload, list(events), trailing))

    def fails(self, data, code, codec=websockify.HybiCodec, every_split=True):
        """data raises ProtocolError(code) fed whole, at every split and bytewise."""
        cases = splits(data) if every_split else [('whole', [data])]
        for name, chunks in cases:
            with self.subTest(name, code=code):
                with self.assertRaises(ProtocolError) as cm:
                    feed_codec(codec(), chunks)
                self.assertEqual(cm.exception.code, code, cm.exception.reason)
                self.assertTrue(cm.exception.reason)

    # -- RFC 6455 §5.7 examples ------------------------------------------------------

    def test_rfc6455_masked_hello(self):
        self.assertEqual(frame(TEXT, b'Hello'), MASKED_HELLO)
        self.decodes(MASKED_HELLO, b'Hello')

    def test_rfc6455_fragmented_text(self):
        data = frame(TEXT, b'Hel', fin=False) + frame(CONT, b'lo')
        self.decodes(data, b'Hello')

    def test_rfc6455_ping_and_masked_pong(self):
        self.decodes(frame(PING, b'Hello'), b'', [PingReceived(b'Hello')])
        self.decodes(MASKED_PONG_HELLO, b'', [PongReceived(b'Hello')])

    def test_rfc6455_256_bytes_with_a_16_bit_length(self):
        payload = bytes(range(256))
        data = frame(BINARY, payload)
        self.assertEqual(data[:4], bytes((0x82, 0xFE, 0x01, 0x00)))
        self.decodes(data, payload)

    def test_rfc6455_64_kib_with_a_64_bit_length(self):
        payload = bytes(range(256)) * 256
        data = frame(BINARY, payload, mask=b'\x01\x02\x03\x04')
        self.assertEqual(data[:10], bytes((0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0)))
        trailing = b'\x82'
        # Every split in the header and the first and last bytes, then a stride
        # (every position would take seconds: each split unmasks 64 KiB).
        positions = sorted(set(itertools.chain(range(1, 40), range(len(data) - 40, len(data)),
                                               range(40, len(data) - 40, 997))))
        for i in positions:
            with self.subTest(split=i):
                got = feed_codec(websockify.HybiCodec(), [data[:i], data[i:] + trailing])
                self.assertEqual(got, (payload, [], trailing))
        got = feed_codec(websockify.HybiCodec(), [data + trailing])
        self.assertEqual(got, (payload, [], trailing))
        reads = [data[i:i + 1000] for i in range(0, len(data), 1000)]
        self.assertEqual(feed_codec(websockify.HybiCodec(), reads), (payload, [], b''))

    def test_many_frames_in_one_read_and_empty_frames(self):
        data = (frame(BINARY, b'') + frame(TEXT, b'') + frame(BINARY, b'a')
                + frame(TEXT, b'', fin=False) + frame(PING, b'') + frame(CONT, b'', fin=False)
                + frame(CONT, b'bc') + frame(BINARY, b'd' * 125, fin=False)
                + frame(PONG, b'x' * 125) + frame(CONT, b'e' * 126))
        self.decodes(data, b'abc' + b'd' * 125 + b'e' * 126,
                     [PingReceived(b''), PongReceived(b'x' * 125)])

    def test_control_frames_inside_a_fragmented_message(self):
        data = (frame(TEXT, b'caf\xc3', fin=False) + frame(PING, b'1')
                + frame(CONT, b'\xa9 ', fin=False) + frame(PONG, b'2')
                + frame(CONT, b'ok'))
        self.decodes(data, b'caf\xc3\xa9 ok', [PingReceived(b'1'), PongReceived(b'2')])

    def test_close_ends_decoding_and_leaves_the_rest(self):
        data = frame(BINARY, b'abc') + frame(CLOSE, close_body(1000, b'bye'))
        after = frame(BINARY, b'never')
        for name, chunks in splits(data + after):
            with self.subTest(name):
                got = feed_codec(websockify.HybiCodec(), chunks)
                self.assertEqual(got, (b'abc', [CloseReceived(1000, 'bye')], after))
        buf = bytearray(data + after)
        out, events = [], []
        pos = websockify.HybiCodec().decode(buf, 0, len(buf), out, events)
        self.assertEqual(pos, len(data))
        self.assertEqual(events, [CloseReceived(1000, 'bye')])

    def test_decode_returns_the_consumed_position(self):
        codec = websockify.HybiCodec()
        data = frame(BINARY, b'0123456789')
        buf = bytearray(data)
        out = []
        # A partial header is not consumed; partial payload is forwarded at once.
        self.assertEqual(codec.decode(buf, 0, 1, out, []), 0)
        self.assertEqual(codec.decode(buf, 0, 5, out, []), 0)
        self.assertEqual(codec.decode(buf, 0, 9, out, []), 9)
        self.assertEqual([bytes(p) for p in out], [b'012'])
        self.assertEqual(codec.decode(buf, 9, len(buf), out, []), len(buf))
        self.assertEqual(b''.join(bytes(p) for p in out), b'0123456789')
        # A control frame is used only whole.
        codec = websockify.HybiCodec()
        ping = bytearray(frame(PING, b'abc'))
        events = []
        self.assertEqual(codec.decode(ping, 0, len(ping) - 1, [], events), 0)
        self.assertEqual(events, [])
        # Decoding starts at pos.
        buf = bytearray(b'junk' + MASKED_HELLO)
        out = []
        self.assertEqual(websockify.HybiCodec().decode(buf, 4, len(buf), out, []), len(buf))
        self.assertEqual(b''.join(out), b'Hello')

    def test_text_split_inside_a_character_across_frames_and_reads(self):
        text = 'caf\u00e9 \u20ac \U0001d11e!'.encode('utf-8')
        for cut in range(len(text) + 1):
            data = frame(TEXT, text[:cut], fin=False) + frame(CONT, text[cut:])
            for i in range(len(data) + 1):
                with self.subTest(cut=cut, split=i):
                    got = feed_codec(websockify.HybiCodec(), [data[:i], data[i:]])
                    self.assertEqual(got, (text, [], b''))

    # -- errors ------------------------------------------------------------------------

    def test_reserved_bits_1002(self):
        for rsv in range(1, 8):
            self.fails(frame(BINARY, b'abc', rsv=rsv), 1002)
            self.fails(frame(PING, b'', rsv=rsv), 1002)

    def test_unmasked_1002(self):
        self.fails(bytes((0x81, 0x05)) + b'Hello', 1002)      # RFC 6455 §5.7, unmasked
        self.fails(frame(PING, b'x', masked=False), 1002)
        self.fails(frame(BINARY, b'', masked=False), 1002)

    def test_unknown_opcodes_1002(self):
        for opcode in itertools.chain(range(3, 8), range(0xB, 0x10)):
            with self.subTest(opcode=opcode):
                self.fails(frame(opcode, b'abc'), 1002)
                self.fails(frame(opcode, b'', fin=False), 1002)
                self.fails(frame(TEXT, b'a', fin=False) + frame(opcode, b'b'), 1002)

    def test_fragmented_control_1002(self):
        for opcode in (CLOSE, PING, PONG):
            self.fails(frame(opcode, b'', fin=False), 1002)
            self.fails(frame(opcode, b'ab', fin=False) + frame(CONT, b'c'), 1002)

    def test_control_longer_than_125_1002(self):
        for opcode in (CLOSE, PING, PONG):
            self.fails(frame(opcode, close_body(1000, b'x' * 124)), 1002)
            self.fails(frame(opcode, b'x' * 65536), 1002, every_split=False)
            # The length alone decides: no payload needs to arrive.
            self.fails(frame(opcode, length=126)[:8], 1002)
            self.fails(frame(opcode, length=1 << 20)[:14], 1002)
        self.decodes(frame(PING, b'p' * 125), b'', [PingReceived(b'p' * 125)])

    def test_continuation_without_a_message_1002(self):
        self.fails(frame(CONT, b'abc'), 1002)
        self.fails(frame(CONT, b''), 1002)
        self.fails(frame(BINARY, b'whole') + frame(CONT, b'abc'), 1002)

    def test_new_message_inside_a_fragmented_one_1002(self):
        for first, second in ((TEXT, TEXT), (TEXT, BINARY), (BINARY, TEXT),
                              (BINARY, BINARY)):
            self.fails(frame(first, b'a', fin=False) + frame(second, b'b'), 1002)
            self.fails(frame(first, b'a', fin=False) + frame(CONT, b'', fin=False)
                       + frame(second, b'b', fin=False), 1002)

    def test_64_bit_length_with_the_top_bit_1002(self):
        head = frame(BINARY, length=(1 << 63) | 5)[:14]
        self.fails(head + b'abcde', 1002)
        self.fails(head, 1002)
        # The largest allowed length is only a length: the header is accepted.
        codec = websockify.HybiCodec()
        got = feed_codec(codec, [frame(BINARY, length=(1 << 63) - 1)[:14] + b'abc'])
        self.assertEqual(len(got[0]), 3)

    def test_invalid_utf8_in_text_1007(self):
        cases = {'invalid byte': frame(TEXT, b'ok \xff'),
                 'surrogate': frame(TEXT, b'\xed\xa0\x80'),
                 'overlong': frame(TEXT, b'\xc0\xaf'),
                 'over U+10FFFF': frame(TEXT, b'\xf4\x90\x80\x80'),
                 'lone continuation': frame(TEXT, b'\x80'),
                 'ends inside a character': frame(TEXT, b'caf\xc3'),
                 'message ends inside a character': frame(TEXT, b'caf\xc3', fin=False)
                                                    + frame(CONT, b''),
                 'bad continuation across fragments': frame(TEXT, b'caf\xc3', fin=False)
                                                      + frame(CONT, b'('),
                 'second message': frame(TEXT, b'ok') + frame(TEXT, b'\xfe')}
        for name, data in cases.items():
            with self.subTest(name):
                self.fails(data, 1007)
        # Binary messages are not text.
        self.decodes(frame(BINARY, b'\xff\xc3'), b'\xff\xc3')

    def test_payload_before_an_error_is_in_out(self):
        buf = bytearray(frame(BINARY, b'good') + frame(TEXT, b'ab\xff'))
        out = []
        with self.assertRaises(ProtocolError) as cm:
            websockify.HybiCodec().decode(buf, 0, len(buf), out, [])
        self.assertEqual(cm.exception.code, 1007)
        self.assertEqual(bytes(out[0]), b'good')

    def test_close_frame_bodies(self):
        self.decodes(frame(CLOSE, b''), b'', [CloseReceived(1005, '')], trailing=b'x')
        self.decodes(frame(CLOSE, close_body(1000)), b'', [CloseReceived(1000, '')],
                     trailing=b'x')
        reason = 'tr\u00e8s bien'.encode('utf-8')
        self.decodes(frame(CLOSE, close_body(4999, reason)), b'',
                     [CloseReceived(4999, 'tr\u00e8s bien')], trailing=b'x')
        self.fails(frame(CLOSE, b'\x03'), 1002)
        self.fails(frame(CLOSE, close_body(1000, b'bye \xff')), 1007)
        self.fails(frame(CLOSE, close_body(1000, b'\xc3')), 1007)

    def test_close_codes(self):
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535):
            self.fails(frame(CLOSE, close_body(code, b'r')), 1002)
        self.assertEqual(websockify.VALID_CLOSE_CODES, VALID_CODES)
        for code in range(65536):
            buf = bytearray(frame(CLOSE, close_body(code)))
            events = []
            try:
                websockify.HybiCodec().decode(buf, 0, len(buf), [], events)
            except ProtocolError as exc:
                self.assertEqual((code in VALID_CODES, exc.code), (False, 1002), code)
            else:
                self.assertEqual((code in VALID_CODES, events),
                                 (True, [CloseReceived(code, '')]), code)

    # -- target -> client -------------------------------------------------------------

    def test_encode_header_lengths(self):
        cases = {0: b'\x82\x00', 1: b'\x82\x01', 125: b'\x82\x7d',
                 126: b'\x82\x7e\x00\x7e', 65535: b'\x82\x7e\xff\xff',
                 65536: b'\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00'}
        for n, header in cases.items():
            with self.subTest(length=n):
                data = memoryview(b'z' * n)
                parts = websockify.HybiCodec().encode(data)
                self.assertEqual(len(parts), 2)
                self.assertEqual(bytes(parts[0]), header)
                self.assertIs(parts[1], data)       # the payload is not copied
                text = websockify.HybiCodec(text_frames=True).encode(data)
                if n:
                    self.assertEqual(bytes(text[0]), bytes((0x81,)) + header[1:])
                    self.assertEqual(bytes(text[1]), bytes(data))
                else:                                   # no empty text frame
                    self.assertEqual(text, [])
                self.assertEqual(server_frames(b''.join(bytes(p) for p in parts)),
                                 [(True, BINARY, bytes(data))])

    def test_encode_rfc6455_unmasked_examples(self):
        codec = websockify.HybiCodec(text_frames=True)
        self.assertEqual(b''.join(bytes(p) for p in codec.encode(memoryview(b'Hello'))),
                         bytes((0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f)))
        self.assertEqual(codec.control(websockify.OP_PING, b'Hello'),
                         bytes((0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f)))
        self.assertEqual(codec.control(websockify.OP_PONG, b'Hello'),
                         bytes((0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f)))

    def test_close_frame(self):
        codec = websockify.HybiCodec()
        self.assertEqual(codec.close_frame(None), b'\x88\x00')
        self.assertEqual(codec.close_frame(1000), b'\x88\x02\x03\xe8')
        self.assertEqual(codec.close_frame(1011, 'oops'), b'\x88\x06\x03\xf3oops')
        # A long reason is cut to 123 bytes, never inside a character.
        long = codec.close_frame(1001, '\u00e9' * 100)
        self.assertEqual(parse_close(long), (1001, '\u00e9' * 61))
        self.assertEqual(len(long), 2 + 2 + 122)
        self.assertEqual(parse_close(codec.close_frame(1001, 'x' * 200)), (1001, 'x' * 123))

    def test_round_trip_through_the_decoder(self):
        # What we encode is what a client-side decoder (masking added) reads back.
        for n in (0, 5, 125, 126, 65535, 65536):
            data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
            [(fin, opcode, payload)] = server_frames(
                b''.join(bytes(p) for p in websockify.HybiCodec().encode(memoryview(data))))
            got = feed_codec(websockify.HybiCodec(), [frame(opcode, payload)])
            self.assertEqual(got, (data, [], b''), n)

    def test_text_frames_hold_back_a_split_character(self):
        text = 'caf\u00e9 \u20ac \U0001d11e!'.encode('utf-8')
        for cut in range(len(text) + 1):
            with self.subTest(cut=cut):
                codec = websockify.HybiCodec(text_frames=True)
                sent = []
                for piece in (text[:cut], text[cut:]):
                    parts = codec.encode(memoryview(piece))
                    frames = server_frames(b''.join(bytes(p) for p in parts))
                    for fin, opcode, payload in frames:
                        self.assertEqual((fin, opcode), (True, TEXT))
                        payload.decode('utf-8')              # each frame is whole text
                        sent.append(payload)
                self.assertEqual(b''.join(sent), text)
        codec = websockify.HybiCodec(text_frames=True)
        self.assertEqual(codec.encode(memoryview(b'\xf0\x9d')), [])
        self.assertEqual(codec.encode(memoryview(b'\x84')), [])
        parts = codec.encode(memoryview(b'\x9e'))
        self.assertEqual(b''.join(bytes(p) for p in parts), b'\x81\x04\xf0\x9d\x84\x9e')

    def test_text_frames_invalid_utf8_from_the_target_1011(self):
        for data in (b'ok \xff ok', b'\xc0\xaf!', b'\xed\xa0\x80!', b'\x80', b'a\x80\x80\x80\x80'):
            with self.subTest(data=data):
                with self.assertRaises(ProtocolError) as cm:
                    websockify.HybiCodec(text_frames=True).encode(memoryview(data))
                self.assertEqual(cm.exception.code, 1011)
        codec = websockify.HybiCodec(text_frames=True)
        codec.encode(memoryview(b'ok \xc3'))
        with self.assertRaises(ProtocolError) as cm:
            codec.encode(memoryview(b'('))
        self.assertEqual(cm.exception.code, 1011)

    def test_text_frames_byte_that_starts_no_character_is_refused_at_once(self):
        # 0xF8-0xFF can never start a UTF-8 character: refused at once, not held
        # back (it would be dropped silently if the target then closed).
        with self.assertRaises(ProtocolError):
            websockify.HybiCodec(text_frames=True).encode(memoryview(b'ok\xff'))

    def test_binary_mode_relays_any_bytes(self):
        parts = websockify.HybiCodec().encode(memoryview(b'\xff\xc3'))
        self.assertEqual(b''.join(bytes(p) for p in parts), b'\x82\x02\xff\xc3')


# -- base64 and Hixie -------------------------------------------------------------------

class TestProtocolBase64AndHixie(SocketFreeTestCase):

    def stream(self, pieces):
        b64 = websockify.Base64Stream()
        return b''.join(b64.feed(p) for p in pieces)

    def test_base64_stream_at_every_split(self):
        for n in range(12):
            data = bytes(range(200, 200 + n))
            text = base64.b64encode(data)
            for name, chunks in splits(text):
                self.assertEqual(self.stream(chunks), data, (n, name))
            for i in range(len(text) + 1):          # every pair of cuts
                for j in range(i, len(text) + 1):
                    self.assertEqual(self.stream([text[:i], text[i:j], text[j:]]), data)

    def test_base64_stream_padded_groups_back_to_back(self):
        text = b'YQ==' + b'YmM=' + b'ZGVm' + b'Zw==' + b'Zw=='
        for name, chunks in splits(text):
            self.assertEqual(self.stream(chunks), b'abcdefgg', name)
        b64 = websockify.Base64Stream()
        self.assertEqual(b64.feed(b'QQ=='), b'A')
        self.assertEqual(b64.feed(memoryview(b'Qk')), b'')
        self.assertEqual(b64.feed(bytearray(b'M=QUJD')), b'BCABC')
        self.assertEqual(b64.feed(b''), b'')

    def test_base64_stream_invalid(self):
        for bad in (b'Q===', b'====', b'QQ=Q', b'=QQQ', b'Q=Q=', b'QQ Q', b'QQ\nQ',
                    b'QQ-Q', b'QQ_Q', b'QQ\x00Q', b'QQ\xffQ', b'QQ==Q===', b'QUJDQ*==',
                    'Q\u00e9Q'.encode('utf-8')):
            for name, chunks in splits(bad):
                with self.subTest(bad=bad, split=name):
                    with self.assertRaises(ValueError):
                        self.stream(chunks)
        # An incomplete group waits: nothing is decided before it is whole.
        b64 = websockify.Base64Stream()
        self.assertEqual(b64.feed(b'QUJDQ*'), b'ABC')
        with self.assertRaises(ValueError):
            b64.feed(b'QQ')

    def test_hybi_base64_codec_at_every_split(self):
        data = (frame(TEXT, b'aGVs', fin=False) + frame(PING, b'p') + frame(CONT, b'bG8')
                + frame(TEXT, b'=QQ==') + frame(BINARY, b'QkM=') + frame(TEXT, b'')
                + frame(CLOSE, close_body(1000)))
        for name, chunks in splits(data + b'rest'):
            with self.subTest(name):
                got = feed_codec(websockify.HybiBase64Codec(), chunks)
                self.assertEqual(got, (b'helloABC', [PingReceived(b'p'),
                                                     CloseReceived(1000, '')], b'rest'))

    def test_hybi_base64_codec_errors(self):
        for data, code in ((frame(TEXT, b'QUJD') + frame(TEXT, b'QU*D'), 1007),
                           (frame(TEXT, b'QQ=Q'), 1007),
                           (frame(TEXT, b'QUJD') + frame(TEXT, b'QUJD', rsv=4), 1002),
                           (frame(TEXT, b'QUJD\xff'), 1007)):
            for name, chunks in splits(data):
                with self.subTest(data=data, split=name):
                    with self.assertRaises(ProtocolError) as cm:
                        feed_codec(websockify.HybiBase64Codec(), chunks)
                    self.assertEqual(cm.exception.code, code)
        # What came before a frame error is decoded and kept.
        buf = bytearray(frame(TEXT, b'QUJD') + frame(TEXT, b'x', rsv=2))
        out = []
        with self.assertRaises(ProtocolError) as cm:
            websockify.HybiBase64Codec().decode(buf, 0, len(buf), out, [])
        self.assertEqual((cm.exception.code, out), (1002, [b'ABC']))

    def test_hybi_base64_encode(self):
        codec = websockify.HybiBase64Codec()
        self.assertEqual((codec.family, codec.mode), ('hybi', 'base64'))
        for data in (b'', b'\x01', b'\x01\x02', b'\x00\xff\xfe', bytes(range(256)) * 300):
            text = base64.b64encode(data)
            self.assertEqual(server_frames(b''.join(bytes(p) for p in
                                                    codec.encode(memoryview(data)))),
                             [(True, TEXT, text)])

    HIXIE = (b'\x00' + base64.b64encode(b'hello') + b'\xff' + b'\x00\xff'
             + b'\x00QU' + b'\xff' + b'\x00JD\xff' + b'\xff\x00')

    def test_hixie_decode_at_every_split(self):
        for family in ('hixie-76', 'hixie-75'):
            for name, chunks in splits(self.HIXIE + b'\x00after'):
                with self.subTest(family, split=name):
                    got = feed_codec(websockify.HixieCodec(family), chunks)
                    self.assertEqual(got, (b'helloABC', [CloseReceived(1005, '')],
                                           b'\x00after'))

    def test_hixie_decode_positions(self):
        codec = websockify.HixieCodec('hixie-76')
        buf = bytearray(b'\x00QUJD')
        out = []
        self.assertEqual(codec.decode(buf, 0, len(buf), out, []), 5)   # streamed
        self.assertEqual(out, [b'ABC'])
        self.assertEqual(codec.decode(bytearray(b'\xff'), 0, 1, out, []), 1)   # frame end
        self.assertEqual(out, [b'ABC'])
        buf = bytearray(b'\xff')                   # half a closing handshake waits
        events = []
        self.assertEqual(codec.decode(buf, 0, 1, [], events), 0)
        self.assertEqual(events, [])
        buf = bytearray(b'\xff\x00')
        self.assertEqual(codec.decode(buf, 0, 2, [], events), 2)
        self.assertEqual(events, [CloseReceived(1005, '')])

    def test_hixie_decode_errors(self):
        cases = [(b'\x80\x05hello', 1002), (b'\xff\x05hello', 1002), (b'\x01abc\xff', 1002),
                 (b'\x7f', 1002), (b'\x00QUJD\xff\x05', 1002),
                 (b'\x00QQ@=\xff', 1007), (b'\x00QQ==\xff\x00Q\n==\xff', 1007),
                 (b'\x00Q===\xff', 1007)]
        for data, code in cases:
            for name, chunks in splits(data):
                with self.subTest(data=data, split=name):
                    with self.assertRaises(ProtocolError) as cm:
                        feed_codec(websockify.HixieCodec('hixie-76'), chunks)
                    self.assertEqual(cm.exception.code, code)
                    self.assertTrue(cm.exception.reason)

    def test_hixie_frame_bound_1009(self):
        limit = websockify.HIXIE_MAX_FRAME
        self.assertEqual(limit, 1 << 22)
        at_limit = b'\x00' + b'AAAA' * (limit // 4) + b'\xff'
        payload, events, rest = feed_codec(websockify.HixieCodec('hixie-76'), [at_limit])
        self.assertEqual((len(payload), events, rest), (limit // 4 * 3, [], b''))
        over = b'\x00' + b'AAAA' * (limit // 4) + b'A'
        for chunks in ([over], [over[:limit], over[limit:]], [over[:5], over[5:]]):
            with self.assertRaises(ProtocolError) as cm:
                feed_codec(websockify.HixieCodec('hixie-76'), chunks)
            self.assertEqual(cm.exception.code, 1009)
        # The bound is per frame: two frames just under it are fine.
        two = at_limit[:-1] + b'\xff\x00QUJD\xff'
        self.assertEqual(len(feed_codec(websockify.HixieCodec('hixie-75'), [two])[0]),
                         limit // 4 * 3 + 3)

    def test_hixie_encode_control_and_close(self):
        codec = websockify.HixieCodec('hixie-75')
        self.assertEqual((codec.family, codec.mode), ('hixie-75', 'base64'))
        self.assertEqual(b''.join(codec.encode(memoryview(b'\x00\xffab'))),
                         b'\x00AP9hYg==\xff')
        self.assertEqual(b''.join(codec.encode(memoryview(b''))), b'\x00\xff')
        self.assertEqual(codec.control(websockify.OP_PING), b'')
        self.assertEqual(codec.control(websockify.OP_PONG, b'x'), b'')
        self.assertEqual(codec.close_frame(1000, 'bye'), b'\xff\x00')
        self.assertEqual(codec.close_frame(None), b'\xff\x00')


# -- replies ----------------------------------------------------------------------------

class TestProtocolResponses(SocketFreeTestCase):

    def test_response_head(self):
        self.assertEqual(websockify.response_head(101, [('Upgrade', 'websocket'),
                                                        ('Connection', 'Upgrade')]),
                         b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                         b'Connection: Upgrade\r\n\r\n')
        self.assertEqual(websockify.response_head(404), b'HTTP/1.1 404 Not Found\r\n\r\n')
        self.assertEqual(websockify.response_head(431),
                         b'HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n')
        self.assertEqual(websockify.response_head(426),
                         b'HTTP/1.1 426 Upgrade Required\r\n\r\n')
        self.assertEqual(websockify.response_head(410), b'HTTP/1.1 410 Gone\r\n\r\n')
        self.assertEqual(websockify.response_head(599), b'HTTP/1.1 599 Error\r\n\r\n')
        self.assertEqual(websockify.response_head(200, [('X', 'caf\u00e9')], 'Fine'),
                         b'HTTP/1.1 200 Fine\r\nX: caf\xe9\r\n\r\n')

    def test_http_response(self):
        server = 'Server: websockify.py/%s' % websockify.__version__
        self.assertEqual(websockify.SERVER_NAME, 'websockify.py/' + websockify.__version__)
        self.assertEqual(
            websockify.http_response(426, 'caf\u00e9\n', [('Upgrade', 'websocket')]),
            ('HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\n'
             'Content-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\n'
             'Connection: close\r\n%s\r\n\r\ncaf\u00e9\n' % server).encode('utf-8'))
        self.assertEqual(
            websockify.http_response(200, b'\x00\x01', content_type='application/x'),
            ('HTTP/1.1 200 OK\r\nContent-Type: application/x\r\nContent-Length: 2\r\n'
             'Connection: close\r\n%s\r\n\r\n' % server).encode() + b'\x00\x01')
        self.assertEqual(
            websockify.http_response(204),
            ('HTTP/1.1 204 No Content\r\nContent-Type: text/plain; charset=utf-8\r\n'
             'Content-Length: 0\r\nConnection: close\r\n%s\r\n\r\n' % server).encode())

    def test_hybi_response(self):
        self.assertEqual(websockify.hybi_response(RFC_KEY, None),
                         b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                         b'Connection: Upgrade\r\nSec-WebSocket-Accept: '
                         b's3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n')
        self.assertEqual(websockify.hybi_response(RFC_KEY, 'base64'),
                         b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                         b'Connection: Upgrade\r\nSec-WebSocket-Accept: '
                         b's3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: base64'
                         b'\r\n\r\n')

    def test_hixie_response_without_origin(self):
        req = parsed_request('GET /a?b=c HTTP/1.1\nHost: example.com:8080\nUpgrade: WebSocket\n'
                      'Connection: Upgrade')
        self.assertEqual(websockify.hixie_response('hixie-75', req, False),
                         b'HTTP/1.1 101 Web Socket Protocol Handshake\r\n'
                         b'Upgrade: WebSocket\r\nConnection: Upgrade\r\n'
                         b'WebSocket-Location: ws://example.com:8080/a?b=c\r\n\r\n')


if __name__ == '__main__':
    unittest.main()


class TestProtocolHybiCodec(SocketFreeTestCase):

    def test_accept_key_matches_rfc6455_section_1_3(self):
        self.assertEqual(websockify.accept_key('dGhlIHNhbXBsZSBub25jZQ=='),
                         's3pPLMBiTxaQ9kYGzzhZRbK+xOo=')

    def test_accept_key_is_base64_of_sha1_of_key_and_guid(self):
        for _ in range(5):
            key = base64.b64encode(os.urandom(16)).decode()
            expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            self.assertEqual(websockify.accept_key(key), expected)

    def test_unmask_rfc6455_section_5_7_hello(self):
        self.assertEqual(bytes(websockify.unmask(bytes.fromhex('7f9f4d5158'),
                                                 bytes.fromhex('37fa213d'))), b'Hello')

    def test_unmask_matches_bytewise_xor_and_round_trips_at_every_length(self):
        for n in (0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 125, 126, 127, 1023, 65535, 65536,
                  65537, 262147):
            with self.subTest(length=n):
                data, key = os.urandom(n), os.urandom(4)
                expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
                masked = bytes(websockify.unmask(data, key))
                self.assertEqual(masked, expected)
                self.assertEqual(bytes(websockify.unmask(masked, key)), data)

    def test_unmask_with_a_zero_mask_changes_nothing(self):
        data = os.urandom(1001)
        self.assertEqual(bytes(websockify.unmask(data, b'\0\0\0\0')), data)


class TestProtocolLegacyCodec(SocketFreeTestCase):
    """Sans-I/O: keys, handshakes, detection, Hixie framing, base64 streams."""

    def test_draft76_vector(self):
        self.assertEqual(websockify.hixie76_answer(KEY1, KEY2, KEY3), ANSWER)
        # The opening example of draft-76 §1.3.
        self.assertEqual(websockify.hixie76_answer('4 @1  46546xW%0l 1 5',
                                                   '12998 5 Y3 1  .P00', b'^n:ds[4U'),
                         b"8jKS'y:G*Co,Wxa-")

    def test_client_keys_from_the_draft_algorithm(self):
        rng = random.Random(76)
        for _ in range(200):
            key, number = hixie76_client_key(rng)
            self.assertEqual(websockify.hixie76_key_number(key), number)

    def test_bad_keys(self):
        for key in ('12345', '1 2 3', '12  5', 'abc de', '1' * 30 + ' ',
                    '8589934590 '):           # 2**33 - 2 with one space: over 32 bits
            with self.assertRaises(websockify.HTTPError) as cm:
                websockify.hixie76_key_number(key)
            self.assertEqual(cm.exception.status, 400, key)

    def test_detection(self):
        base = 'GET / HTTP/1.1\nHost: h\nUpgrade: WebSocket\nConnection: Upgrade\n'
        kind = websockify.handshake_kind
        self.assertEqual(kind(_request(base + 'Sec-WebSocket-Key: x\n')), 'hybi')
        self.assertEqual(kind(_request(base + 'Sec-WebSocket-Key: x\nSec-WebSocket-Key1: 1 '
                                       '\nSec-WebSocket-Key2: 1 \n')), 'hybi')
        self.assertEqual(kind(_request(base + 'Sec-WebSocket-Key1: 1 \n'
                                       'Sec-WebSocket-Key2: 1 \n')), 'hixie-76')
        self.assertEqual(kind(_request(base)), 'hixie-75')
        self.assertEqual(kind(_request(base + 'Sec-WebSocket-Version: 13\n')), 'hybi')
        self.assertEqual(kind(_request('GET / HTTP/1.1\nHost: h\nUpgrade: websocket\n')),
                         'hybi')
        with self.assertRaises(websockify.HTTPError) as cm:
            kind(_request(base + 'Sec-WebSocket-Key1: 1 \n'))
        self.assertEqual(cm.exception.status, 400)

    def test_replies(self):
        req = _request('GET /demo HTTP/1.1\nHost: example.com\nUpgrade: WebSocket\n'
                       'Connection: Upgrade\nOrigin: http://example.com\n'
                       'Sec-WebSocket-Protocol: sample\nSec-WebSocket-Key1: %s\n'
                       'Sec-WebSocket-Key2: %s\n' % (KEY1, KEY2))
        self.assertEqual(websockify.hixie_response('hixie-76', req, False, ANSWER),
                         VECTOR_REPLY)
        secure = websockify.hixie_response('hixie-76', req, True, ANSWER)
        self.assertIn(b'\r\nSec-WebSocket-Location: wss://example.com/demo\r\n', secure)
        req = _request('GET /a?b=c HTTP/1.1\nHost: example.com:8080\nUpgrade: WebSocket\n'
                       'Connection: Upgrade\n')
        self.assertEqual(websockify.hixie_response('hixie-75', req, False),
                         PREFIX_85 + b'WebSocket-Location: ws://example.com:8080/a?b=c'
                                     b'\r\n\r\n')
        self.assertEqual(len(PREFIX_85), 85)

    def test_echoed_values_refuse_control_characters(self):
        req = _request('GET / HTTP/1.1\nHost: a\tb\nUpgrade: WebSocket\nConnection: Upgrade\n')
        with self.assertRaises(websockify.HTTPError) as cm:
            websockify.check_hixie_request(req)
        self.assertEqual(cm.exception.status, 400)

    def test_base64_stream(self):
        data = os.urandom(3001)
        text = base64.b64encode(data)
        for size in (1, 2, 3, 5, 4096):
            stream = websockify.Base64Stream()
            got = b''.join(stream.feed(text[i:i + size]) for i in range(0, len(text), size))
            self.assertEqual(got, data, size)
        # Messages padded one by one decode back to back.
        stream = websockify.Base64Stream()
        self.assertEqual(stream.feed(b'QQ==Qk') + stream.feed(b'M=QUJD'), b'ABCABC')
        for bad in (b'Q===', b'QQ=Q', b'Q=Q=', b'QQ\nQ', b'====', b'QQ-Q', b'QQ Q',
                    'Q\u00e9QQ'.encode('utf-8')):
            with self.assertRaises(ValueError, msg=bad):
                websockify.Base64Stream().feed(bad)

    def test_hixie_decode_whole_bytewise_and_trailing(self):
        frames = (b'\x00' + base64.b64encode(b'hello') + b'\xff\x00\xff\x00QU'
                  b'\xff\x00JD\xff\xff\x00')
        for chunk in (None, 1, 3):
            codec = websockify.HixieCodec('hixie-76')
            data, events, rest = _decode_all(codec, frames + b'\x00trailing', chunk)
            self.assertEqual(data, b'helloABC')
            self.assertEqual(events, [websockify.CloseReceived(1005, '')])
            self.assertEqual(rest, b'\x00trailing')

    def test_hixie_decode_errors(self):
        cases = [(b'\x80\x05hello', 1002), (b'\xff\x05hello', 1002), (b'\x01abc\xff', 1002),
                 (b'\x00QQ@=\xff', 1007), (b'\x00QQ==\xff\x00Q\n==\xff', 1007)]
        for data, code in cases:
            codec = websockify.HixieCodec('hixie-76')
            with self.assertRaises(websockify.ProtocolError, msg=data) as cm:
                _decode_all(codec, data)
            self.assertEqual(cm.exception.code, code)
            self.assertTrue(cm.exception.reason)

    def test_hixie_frame_bound(self):
        codec = websockify.HixieCodec('hixie-76')
        buf = bytearray(b'\x00' + b'AAAA' * 65536)
        out = []
        total = 0
        with self.assertRaises(websockify.ProtocolError) as cm:
            for _ in range(websockify.HIXIE_MAX_FRAME // (len(buf) - 1) + 2):
                out.clear()
                pos = codec.decode(buf, 0, len(buf), out, [])
                total += sum(len(p) for p in out)
                self.assertEqual(pos, len(buf))     # nothing held back: streamed
                buf = bytearray(b'AAAA' * 65536)
        self.assertEqual(cm.exception.code, 1009)
        self.assertGreater(total, 0)

    def test_hixie_encode_and_control(self):
        codec = websockify.HixieCodec('hixie-75')
        self.assertEqual(b''.join(codec.encode(memoryview(b'\x00\xffab'))),
                         b'\x00AP9hYg==\xff')
        self.assertEqual(codec.control(websockify.OP_PING), b'')
        self.assertEqual(codec.control(websockify.OP_PONG, b'x'), b'')
        self.assertEqual(codec.close_frame(1000, 'bye'), b'\xff\x00')
        self.assertEqual((codec.family, codec.mode), ('hixie-75', 'base64'))

    def test_hybi_base64_codec(self):
        codec = websockify.HybiBase64Codec()
        self.assertEqual((codec.family, codec.mode), ('hybi', 'base64'))
        frames = (encode_frame(1, b'aGVs', fin=False) + encode_frame(0, b'bG8')
                  + encode_frame(9, b'p') + encode_frame(1, b'=QQ==') + encode_frame(2, b'QkM='))
        for chunk in (None, 1, 7):
            codec = websockify.HybiBase64Codec()
            data, events, rest = _decode_all(codec, frames, chunk)
            self.assertEqual((data, events, rest),
                             (b'helloABC', [websockify.PingReceived(b'p')], b''))
        parts = codec.encode(memoryview(b'\x01\x02'))
        self.assertEqual(b''.join(parts), b'\x81\x04AQI=')
        codec = websockify.HybiBase64Codec()
        with self.assertRaises(websockify.ProtocolError) as cm:
            _decode_all(codec, encode_frame(1, b'QUJD') + encode_frame(1, b'QU*D'))
        self.assertEqual(cm.exception.code, 1007)


class TestProtocolStrictHeaders(SocketFreeTestCase):
    """Header rules that keep client text out of our answers (RFC 9110/9112)."""

    UPGRADE = ('GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
               'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n')

    def refused(self, head):
        with self.assertRaises(websockify.HTTPError) as cm:
            websockify.parse_request(head.encode('latin-1'))
        self.assertEqual(cm.exception.status, 400)
        return cm.exception.reason

    def test_control_characters_in_values_and_target(self):
        for bad in ('\x00', '\r', '\x1b[31m', '\x7f', '\x08'):
            with self.subTest(bad=bad):
                self.assertIn('control characters',
                              self.refused(self.UPGRADE + 'Origin: a%sb\r\n\r\n' % bad))
                self.assertIn('control characters',
                              self.refused('GET /a%sb HTTP/1.1\r\nHost: h\r\n\r\n' % bad))
        # A tab inside a value is allowed (RFC 9110 §5.5), and kept.
        request = websockify.parse_request(b'GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\t2\r\n\r\n')
        self.assertEqual(request.header('x-a'), '1\t2')

    def test_obs_fold_refused(self):
        for fold in (' more', '\tmore'):
            self.assertIn('obs-fold', self.refused(self.UPGRADE + 'X-A: one\r\n%s\r\n\r\n' % fold))

    def test_duplicate_host_refused(self):
        self.assertIn('Host', self.refused('GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'))
        self.assertIn('Host', self.refused('GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n'))

    def test_subprotocol_echoed_only_if_token(self):
        for offered in ('a b', 'chat/1', 'x"y', 'a;b', '{x}'):
            with self.subTest(offered=offered):
                head = self.UPGRADE + 'Sec-WebSocket-Protocol: %s\r\n\r\n' % offered
                decision = websockify.accept(websockify.parse_request(head.encode('latin-1')))
                self.assertIsInstance(decision, websockify.HTTPError)
                self.assertEqual(decision.status, 400)
        head = self.UPGRADE + 'Sec-WebSocket-Protocol: v1.chat+x, base64\r\n\r\n'
        decision = websockify.accept(websockify.parse_request(head.encode('latin-1')))
        self.assertEqual(decision.protocol, 'base64')
        head = self.UPGRADE + 'Sec-WebSocket-Protocol: v1.chat+x\r\n\r\n'
        decision = websockify.accept(websockify.parse_request(head.encode('latin-1')))
        self.assertIn(b'\r\nSec-WebSocket-Protocol: v1.chat+x\r\n', decision.reply())


def masked_frame(opcode, payload, fin=True, mask=b'\x01\x02\x03\x04'):
    return encode_frame(opcode, payload, fin, key=mask)


class TestProtocolSessionBounds(SocketFreeTestCase):
    """What one read of RECV_MAX bytes may cost, whatever the frames in it."""

    def feed(self, frame_bytes, count=None):
        """One read of about RECV_MAX bytes of repeated frames into a fresh session;
        returns (session, pieces for the target, payload bytes, traced peak)."""
        count = count or websockify.RECV_MAX // len(frame_bytes)
        buf = bytearray(frame_bytes * count)
        session = websockify.Session(websockify.HybiCodec())
        tracemalloc.start()
        try:
            pos, parts = session.receive_client(buf, len(buf))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertEqual(pos, len(buf))
        return session, parts, b''.join(bytes(p) for p in parts), peak

    def test_one_byte_frames(self):
        session, parts, data, peak = self.feed(masked_frame(websockify.OP_BINARY, b'z'))
        self.assertEqual(data, b'z' * (websockify.RECV_MAX // 7))
        self.assertLessEqual(len(parts), 2)
        self.assertLess(peak, 64 * 1024)
        self.assertEqual(session.to_client, [])

    def test_fragments_of_one_byte(self):
        frames = (masked_frame(websockify.OP_BINARY, b'a', fin=False)
                  + masked_frame(websockify.OP_CONT, b'b', fin=False) * 1000
                  + masked_frame(websockify.OP_CONT, b'c'))
        session, parts, data, peak = self.feed(frames, count=30)
        self.assertEqual(data, (b'a' + b'b' * 1000 + b'c') * 30)
        self.assertLessEqual(len(parts), 2)
        self.assertLess(peak, 64 * 1024)

    def test_text_frames_of_one_character(self):
        session, parts, data, peak = self.feed(masked_frame(websockify.OP_TEXT, b'\xc3\xa9'))
        self.assertLessEqual(len(parts), 2)
        self.assertLess(peak, 64 * 1024)

    def test_ping_floods_cost_one_pong(self):
        for payload in (b'', b'p' * 125):
            with self.subTest(size=len(payload)):
                session, parts, data, peak = self.feed(masked_frame(websockify.OP_PING, payload))
                self.assertEqual(parts, [])
                self.assertEqual(session.to_client,
                                 [websockify.frame_header(websockify.OP_PONG, len(payload))
                                  + payload])
                self.assertLess(peak, 64 * 1024)

    def test_pings_answered_before_a_close(self):
        buf = bytearray(masked_frame(websockify.OP_PING, b'1') + masked_frame(websockify.OP_PING, b'2')
                        + masked_frame(websockify.OP_CLOSE, struct.pack('!H', 1000)))
        session = websockify.Session(websockify.HybiCodec())
        session.receive_client(buf, len(buf))
        self.assertEqual(session.to_client, [b'\x8a\x012', b'\x88\x02\x03\xe8'])

    def test_large_frames_zero_copy(self):
        payload = os.urandom(65536)
        session, parts, data, peak = self.feed(masked_frame(websockify.OP_BINARY, payload), count=4)
        self.assertEqual(data, payload * 4)
        self.assertEqual(len(parts), 4)
        self.assertLess(peak, 64 * 1024)


#: Close codes a codec or the session may end a session with (RFC 6455 §7.4.1).
PROTOCOL_ERROR_CODES = {1002, 1003, 1007, 1009}
#: Statuses parse_request and accept may answer with.
REQUEST_ERROR_STATUSES = {400, 403, 405, 414, 426, 431}


def hybi_frames(st):
    """Strategy: lists of (opcode, payload, fin) a client may validly send: binary
    and text messages (text cut at character boundaries), fragmented or not, with
    pings and pongs between frames."""
    control = st.tuples(st.sampled_from([0x9, 0xA]), st.binary(max_size=125), st.just(True))
    binary = st.lists(st.binary(max_size=300), min_size=1, max_size=4).map(
        lambda parts: [(0x2 if i == 0 else 0x0, p, i == len(parts) - 1)
                       for i, p in enumerate(parts)])
    text = st.lists(st.text(max_size=60), min_size=1, max_size=4).map(
        lambda parts: [(0x1 if i == 0 else 0x0, p.encode('utf-8'), i == len(parts) - 1)
                       for i, p in enumerate(parts)])
    message = st.tuples(st.one_of(binary, text), st.lists(control, max_size=2)).map(
        lambda m: m[0][:1] + m[1] + m[0][1:])
    return st.lists(message, max_size=6).map(lambda ms: [f for m in ms for f in m])


class TestProtocolFuzz(FuzzTestCase):
    """Property-based: any bytes, cut anywhere, give only the documented errors;
    valid input decodes the same however it is cut."""

    def check_request_refusal(self, exc):
        self.assertIsInstance(exc.status, int)
        self.assertIn(exc.status, REQUEST_ERROR_STATUSES)

    @fuzz(lambda st: dict(head=st.binary(max_size=600)))
    def test_parse_request_any_bytes(self, head):
        try:
            request = websockify.parse_request(head + b'\r\n\r\n')
        except websockify.HTTPError as exc:
            self.check_request_refusal(exc)
            return
        result = websockify.accept(request)
        if isinstance(result, websockify.HTTPError):
            self.check_request_refusal(result)

    @fuzz(lambda st: dict(
        method=st.sampled_from(['GET', 'POST', 'G\xc9T']),
        path=st.text(max_size=40).map(lambda t: '/' + t.replace(' ', '')),
        headers=st.lists(st.tuples(
            st.sampled_from(['Host', 'Upgrade', 'Connection', 'Sec-WebSocket-Key',
                             'Sec-WebSocket-Version', 'Sec-WebSocket-Protocol', 'Origin',
                             'Sec-WebSocket-Key1', 'Sec-WebSocket-Key2', 'WebSocket-Protocol',
                             'Sec-WebSocket-Extensions']),
            st.one_of(st.sampled_from(['websocket', 'Upgrade', '13', '8', KEY, 'base64',
                                       'binary, base64', 'x', KEY1, KEY2, '']),
                      st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255),
                              max_size=30))), max_size=8),
        secure=st.booleans(), web=st.booleans()))
    def test_accept_any_request(self, method, path, headers, secure, web):
        head = '%s %s HTTP/1.1\r\n' % (method, path) + ''.join(
            '%s: %s\r\n' % h for h in headers) + '\r\n'
        try:
            request = websockify.parse_request(head.encode('utf-8'))
        except websockify.HTTPError as exc:
            self.check_request_refusal(exc)
            return
        result = websockify.accept(request, secure=secure, serve_web=web)
        if isinstance(result, websockify.HTTPError):
            self.check_request_refusal(result)
        elif result is not None:
            self.assertIsInstance(result.reply(b'12345678' if result.extra_needed else b''),
                                  bytes)

    @fuzz(lambda st: dict(head=st.binary(max_size=300), cuts=st.lists(
        st.floats(0, 1), max_size=5)))
    def test_request_head_found_however_it_is_cut(self, head, cuts):
        data = upgrade_request() + head
        found = [websockify.find_header_end(data)]
        received = b''
        for piece in split_at(data, cuts):
            received += piece
            end = websockify.find_header_end(received)
            if end >= 0:
                break
        self.assertEqual(end, found[0])
        self.assertEqual(websockify.parse_request(received[:end]).path,
                         websockify.parse_request(data[:found[0]]).path)

    @fuzz(lambda st: dict(data=st.binary(max_size=400), cuts=st.lists(
        st.floats(0, 1), max_size=6), text=st.booleans(), b64=st.booleans()))
    def test_hybi_decode_any_bytes(self, data, cuts, text, b64):
        codec = websockify.HybiBase64Codec() if b64 else websockify.HybiCodec(text)
        try:
            feed_codec(codec, split_at(data, cuts))
        except websockify.ProtocolError as exc:
            self.assertIn(exc.code, PROTOCOL_ERROR_CODES)

    @fuzz(lambda st: dict(frames=hybi_frames(st), cuts=st.lists(st.floats(0, 1),
                                                                  max_size=8)))
    def test_hybi_valid_frames_decode_the_same_however_cut(self, frames, cuts):
        data = b''.join(encode_frame(op, payload, fin=fin) for op, payload, fin in frames)
        whole = feed_codec(websockify.HybiCodec(), [data])
        split = feed_codec(websockify.HybiCodec(), split_at(data, cuts))
        self.assertEqual(whole, split)
        self.assertEqual(whole[0], b''.join(p for op, p, _ in frames if op < 0x8))
        self.assertEqual([e.payload for e in whole[1]],
                         [p for op, p, _ in frames if op >= 0x8])
        self.assertEqual(whole[2], b'')

    @fuzz(lambda st: dict(messages=st.lists(st.binary(max_size=200), max_size=6),
                          cuts=st.lists(st.floats(0, 1), max_size=8)))
    def test_hybi_base64_decodes_the_same_however_cut(self, messages, cuts):
        data = b''.join(encode_frame(0x1, base64.b64encode(m)) for m in messages)
        whole = feed_codec(websockify.HybiBase64Codec(), [data])
        self.assertEqual(whole[0], b''.join(messages))
        self.assertEqual(feed_codec(websockify.HybiBase64Codec(), split_at(data, cuts)), whole)

    @fuzz(lambda st: dict(data=st.binary(max_size=400), cuts=st.lists(
        st.floats(0, 1), max_size=6), family=st.sampled_from(['hixie-75', 'hixie-76'])))
    def test_hixie_decode_any_bytes(self, data, cuts, family):
        try:
            feed_codec(websockify.HixieCodec(family), split_at(data, cuts))
        except websockify.ProtocolError as exc:
            self.assertIn(exc.code, PROTOCOL_ERROR_CODES)

    @fuzz(lambda st: dict(messages=st.lists(st.binary(max_size=200), max_size=6),
                          cuts=st.lists(st.floats(0, 1), max_size=8), end=st.booleans()))
    def test_hixie_valid_frames_decode_the_same_however_cut(self, messages, cuts, end):
        data = b''.join(hixie_frame(m) for m in messages) + (b'\xff\x00' if end else b'')
        whole = feed_codec(websockify.HixieCodec('hixie-76'), [data])
        self.assertEqual(whole[0], b''.join(messages))
        self.assertEqual(len(whole[1]), 1 if end else 0)
        self.assertEqual(feed_codec(websockify.HixieCodec('hixie-76'), split_at(data, cuts)),
                         whole)

    @fuzz(lambda st: dict(messages=st.lists(st.binary(max_size=100), max_size=6),
                          cuts=st.lists(st.floats(0, 1), max_size=8)))
    def test_base64_stream_however_cut(self, messages, cuts):
        text = b''.join(base64.b64encode(m) for m in messages)
        stream = websockify.Base64Stream()
        self.assertEqual(b''.join(stream.feed(p) for p in split_at(text, cuts)),
                         b''.join(messages))

    @fuzz(lambda st: dict(data=st.binary(max_size=200), cuts=st.lists(
        st.floats(0, 1), max_size=6)))
    def test_base64_stream_any_bytes(self, data, cuts):
        stream = websockify.Base64Stream()
        try:
            for piece in split_at(data, cuts):
                self.assertIsInstance(stream.feed(piece), bytes)
        except ValueError:
            pass

    @fuzz(lambda st: dict(
        frames=hybi_frames(st),
        close=st.one_of(st.none(), st.binary(max_size=125)),
        junk=st.binary(max_size=60), cuts=st.lists(st.floats(0, 1), max_size=6),
        actions=st.lists(st.sampled_from(['client_eof', 'target_eof', 'close', 'tick',
                                          'client_lost', 'target_lost']), max_size=3)))
    def test_session_close_handling(self, frames, close, junk, cuts, actions):
        clock = [0.0]
        session = websockify.Session(websockify.HybiCodec(), heartbeat=1,
                                     clock=lambda: clock[0])
        data = b''.join(encode_frame(op, payload, fin=fin) for op, payload, fin in frames)
        if close is not None:
            data += encode_frame(0x8, close)
        data += junk
        relayed = []
        buf = bytearray()
        for piece in split_at(data, cuts):
            buf += piece
            if not session.reads_client():
                break
            consumed, out = session.receive_client(buf, len(buf))
            relayed += [bytes(p) for p in out]
            del out                 # views of buf
            del buf[:consumed]
        for action in actions:
            clock[0] += 2.0
            method = getattr(session, action)
            if action == 'close':
                method(1001, 'going away')
            elif action in ('client_lost', 'target_lost'):
                method('ECONNRESET')
            else:
                method()
        self.assertIn(session.state, (websockify.OPEN, websockify.CLOSING,
                                      websockify.CLOSED))
        self.assertTrue(session.close_code is None or isinstance(session.close_code, int))
        self.assertLessEqual(sum(1 for f in session.to_client
                                 if bytes(f)[:1] == b'\x88'), 1)
        if close is not None and session.close_code is not None:
            valid = (len(close) == 0 or (len(close) >= 2 and
                     struct.unpack('!H', close[:2])[0] in websockify.VALID_CLOSE_CODES))
            if valid and session.close_code not in PROTOCOL_ERROR_CODES:
                self.assertTrue(session.close_sent)
        if (close is None or not close) and not junk and not actions:
            # Valid frames only: everything was relayed and the session is open.
            self.assertEqual(b''.join(relayed),
                             b''.join(p for op, p, _ in frames if op < 0x8))


class TestProtocolHandshake(ProxyTestCase):

    def setUp(self):
        self.address = self.echo_proxy()

    # -- accepted ---------------------------------------------------------------

    def test_versions_13_8_and_7_are_upgraded_without_a_protocol_header(self):
        for version in ('13', '8', '7'):
            with self.subTest(version=version):
                client = WSClient(self, self.address)
                client.send(upgrade_request(replace={'Sec-WebSocket-Version': version}))
                response = client.read_response()
                self.assertEqual(response.status, 101, response)
                check_upgrade_response(response, KEY)
                self.assertIsNone(response.header('sec-websocket-protocol'))
                self.assertEqual(client.echo(b'hello'), b'hello')

    def test_header_names_and_tokens_are_case_insensitive_comma_lists(self):
        client = WSClient(self, self.address)
        client.send(b'GET /x HTTP/1.1\r\nhost: localhost\r\nUPGRADE: WebSocket\r\n'
                    b'connection: keep-alive, Upgrade\r\nsec-websocket-key: ' + KEY.encode()
                    + b'\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n')
        response = client.read_response()
        self.assertEqual(response.status, 101, response)
        self.assertEqual(client.echo(b'case'), b'case')

    def test_handshake_delivered_one_byte_at_a_time(self):
        client = WSClient(self, self.address)
        client.send_slowly(upgrade_request())
        response = client.read_response()
        self.assertEqual(response.status, 101, response)
        check_upgrade_response(response, KEY)
        self.assertEqual(client.echo(b'slow'), b'slow')

    def test_frame_sent_with_the_handshake_is_relayed(self):
        client = WSClient(self, self.address)
        client.send(upgrade_request() + encode_frame(BINARY, b'eager')
                    + encode_frame(BINARY, b' frames'))
        self.assertEqual(client.read_response().status, 101)
        self.assertEqual(client.recv_data(12), b'eager frames')

    def test_request_just_within_the_limits_is_upgraded(self):
        path = '/' + 'p' * 8000
        extra = [('X-Filler-%d' % i, 'v' * 100) for i in range(90)]
        client = WSClient(self, self.address)
        client.send(upgrade_request(path=path, extra=extra))
        self.assertEqual(client.read_response().status, 101)
        self.assertEqual(client.echo(b'big head'), b'big head')

    # -- refused ------------------------------------------------------------------

    def test_malformed_requests_get_400_with_a_one_line_reason(self):
        short_key = base64.b64encode(os.urandom(15)).decode()
        long_key = base64.b64encode(os.urandom(17)).decode()
        cases = {
            'garbage request line': b'GARBAGE\r\n\r\n',
            'request line with four parts': b'GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n',
            'header line without colon': upgrade_request(extra=['NoColonHere']),
            'HTTP/1.0 upgrade': upgrade_request(version='HTTP/1.0'),
            'missing Host': upgrade_request(drop=('Host',)),
            'Upgrade without websocket': upgrade_request(replace={'Upgrade': 'h2c, foo'}),
            'Connection without upgrade': upgrade_request(replace={'Connection': 'keep-alive'}),
            'missing key': upgrade_request(drop=('Sec-WebSocket-Key',)),
            'key not base64': upgrade_request(replace={'Sec-WebSocket-Key': 'not base64 !!'}),
            'key of 15 bytes': upgrade_request(replace={'Sec-WebSocket-Key': short_key}),
            'key of 17 bytes': upgrade_request(replace={'Sec-WebSocket-Key': long_key}),
            # Strict header rules (RFC 9110 §5.5, RFC 9112 §5.2 and §3.2).
            'two Host headers': upgrade_request(extra=[('Host', 'elsewhere')]),
            'obs-fold': upgrade_request(extra=[('X-A', 'one'), ' folded']),
            'NUL in a value': upgrade_request(extra=[('Origin', 'http://a\x00b')]),
            'ESC in a value': upgrade_request(extra=[('X-A', '\x1b[31mred')]),
            'subprotocol not a token': upgrade_request(
                extra=[('Sec-WebSocket-Protocol', 'a\x1b[2Jb')]),
            'subprotocol with a slash': upgrade_request(
                extra=[('Sec-WebSocket-Protocol', 'chat/1')]),
        }
        for name, request in cases.items():
            with self.subTest(name):
                response = self.refused(self.address, request, 400)
                reason = response.body.decode('utf-8').strip()
                self.assertTrue(reason, response)
                self.assertNotIn('\n', reason)
                self.assertFalse(websockify.has_control_characters(response.raw.decode('latin-1'),
                                                                   allow_line_ends=True))
                self.assertNotIn(b'Sec-WebSocket-Protocol', response.raw)

    def test_missing_or_unknown_version_gets_426_listing_13_8_7(self):
        cases = {'missing': upgrade_request(drop=('Sec-WebSocket-Version',)),
                 '12': upgrade_request(replace={'Sec-WebSocket-Version': '12'}),
                 '14': upgrade_request(replace={'Sec-WebSocket-Version': '14'})}
        for name, request in cases.items():
            with self.subTest(version=name):
                response = self.refused(self.address, request, 426)
                offered = [v.strip() for v in response.header('sec-websocket-version').split(',')]
                self.assertEqual(offered, ['13', '8', '7'])

    def test_plain_get_gets_426_with_a_short_text(self):
        response = self.refused(self.address, b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n', 426)
        self.assertTrue(0 < len(response.body.strip()) < 500, response)

    def test_other_methods_get_405_allowing_get(self):
        for method in ('POST', 'PUT', 'DELETE'):
            with self.subTest(method):
                response = self.refused(self.address, upgrade_request(method=method), 405)
                self.assertIn('GET', response.header('allow') or '', response)

    def test_request_line_over_8_kib_gets_414(self):
        self.refused(self.address, upgrade_request(path='/' + 'a' * 9000), 414)

    def test_header_block_over_16_kib_gets_431(self):
        extra = [('X-Filler-%d' % i, 'v' * 1000) for i in range(18)]
        self.refused(self.address, upgrade_request(extra=extra), 431)

    def test_more_than_100_header_lines_get_431(self):
        extra = [('X-%d' % i, 'v') for i in range(101)]
        self.refused(self.address, upgrade_request(extra=extra), 431)

    # -- subprotocols -------------------------------------------------------------

    def test_subprotocol_choice(self):
        # (Sec-WebSocket-Protocol header lines offered, protocol expected back)
        cases = [
            (['base64, binary'], 'binary'),
            (['binary, base64'], 'binary'),
            (['binary'], 'binary'),
            ([], None),
            (['sip'], 'sip'),
            (['sip, mqtt'], 'sip'),
            (['mqtt, binary'], 'binary'),
            (['base64', 'binary'], 'binary'),          # spread over two header lines
            (['sip', 'mqtt'], 'sip'),
            (['  base64 ,binary  '], 'binary'),         # odd spacing
            (['base64,\tbinary'], 'binary'),
            ([' sip ,  mqtt ,'], 'sip'),
        ]
        for offered, expected in cases:
            with self.subTest(offered=offered):
                client = WSClient(self, self.address)
                response = client.handshake(protocols=offered)
                self.assertEqual(response.header('sec-websocket-protocol'), expected, response)
                self.assertEqual(client.echo(b'\x00raw\xff'), b'\x00raw\xff')

    # -- handshake timeout --------------------------------------------------------

    def timeout_proxy(self):
        return self.echo_proxy('--handshake-timeout', '0.5')

    def test_partial_request_gets_408_after_the_handshake_timeout(self):
        client = WSClient(self, self.timeout_proxy())
        started = time.monotonic()
        client.send(b'GET / HTTP/1.1\r\nHost: localhost\r\n')
        response = client.read_response()
        response.body = client.read_until_eof()
        elapsed = time.monotonic() - started
        self.assertEqual(response.status, 408, response)
        self.assertTrue(0.3 < elapsed < 3.0, elapsed)

    def test_request_dribbled_slower_than_the_timeout_is_cut_off(self):
        client = WSClient(self, self.timeout_proxy())
        request = upgrade_request()
        started = time.monotonic()
        for i in range(len(request)):
            if select.select([client.sock], [], [], 0.1)[0]:
                break                            # an answer or EOF: cut off
            try:
                client.send(request[i:i + 1])
            except OSError:
                break
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 3.0)
        data = client.read_until_eof()
        self.assertTrue(data == b'' or data.startswith(b'HTTP/1.1 408'), data[:100])

    def test_silent_connection_is_closed_quietly(self):
        client = WSClient(self, self.timeout_proxy())
        started = time.monotonic()
        self.assertEqual(client.read_until_eof(), b'')
        self.assertLess(time.monotonic() - started, 3.0)


class TestProtocolFrames(ProxyTestCase):

    def setUp(self):
        self.target = TargetServer(self)
        self.address = self.proxy('127.0.0.1:0', self.target.arg)

    def open(self):
        """A session and the target's end of it."""
        client = open_session(self, self.address)
        return client, self.target.accept()

    def expect_close_for(self, frames, code):
        """Send frames on a fresh session; expect close `code` and the target's EOF."""
        client, conn = self.open()
        client.send(frames)
        client.expect_close(code)
        read_to_eof(conn)
        conn.close()

    # -- data ---------------------------------------------------------------------

    def test_binary_frames_of_each_length_encoding_reach_the_target(self):
        client, conn = self.open()
        for n in (1, 125, 126, 65535, 65536, 70000):
            with self.subTest(length=n):
                data = os.urandom(n)
                client.send_frame(BINARY, data)
                self.assertEqual(recv_exactly(conn, n), data)

    def test_thousands_of_tiny_frames_in_one_read_all_reach_the_target(self):
        # One read of the client can hold more frames than sendmsg takes buffers
        # (IOV_MAX, 1024): noVNC's input events are such tiny frames.
        client, conn = self.open()
        data = bytes(i % 251 for i in range(4000))
        client.send(b''.join(encode_frame(BINARY, data[i:i + 1]) for i in range(len(data))))
        self.assertEqual(recv_exactly(conn, len(data)), data)
        conn.sendall(b'still open')
        self.assertEqual(client.recv_data(10), b'still open')

    def test_target_data_arrives_in_binary_frames(self):
        client, conn = self.open()
        conn.sendall(b'from the target')
        frame = client.recv_frame()
        self.assertEqual(frame.opcode, BINARY)
        self.assertEqual(frame.payload, b'from the target')

    def test_empty_frames_are_accepted(self):
        client, conn = self.open()
        client.send_frame(BINARY, b'')
        client.send_frame(TEXT, b'')
        client.send_frame(BINARY, b'x')
        self.assertEqual(recv_exactly(conn, 1), b'x')

    def test_text_frames_are_relayed_as_their_utf8_bytes(self):
        client, conn = self.open()
        client.send_frame(TEXT, 'grüße, 世界 🙂'.encode())
        self.assertEqual(recv_exactly(conn, len('grüße, 世界 🙂'.encode())),
                         'grüße, 世界 🙂'.encode())

    def test_fragmented_message_with_a_character_split_across_fragments_is_relayed(self):
        client, conn = self.open()
        client.send_frame(TEXT, b'caf\xc3', fin=False)
        client.send_frame(CONT, b'\xa9 ', fin=False)
        client.send_frame(CONT, b'ok')
        self.assertEqual(recv_exactly(conn, 8), 'café ok'.encode())

    def test_frames_delivered_one_byte_at_a_time(self):
        client, conn = self.open()
        payload = os.urandom(300)
        client.send_slowly(encode_frame(BINARY, payload) + encode_frame(PING, b'slow ping'))
        big = os.urandom(70000)
        frame = encode_frame(BINARY, big)
        client.send_slowly(frame[:14])               # 64-bit length header and mask
        client.send(frame[14:])
        self.assertEqual(recv_exactly(conn, 300 + 70000), payload + big)
        self.assertEqual(client.recv_frame(), Frame(True, PONG, b'slow ping'))

    # -- control frames -----------------------------------------------------------

    def test_ping_is_answered_with_a_pong_carrying_the_same_payload(self):
        client, _ = self.open()
        for payload in (b'', b'x', os.urandom(125)):
            with self.subTest(length=len(payload)):
                client.send_frame(PING, payload)
                self.assertEqual(client.recv_frame(), Frame(True, PONG, payload))

    def test_ping_inside_a_fragmented_message_is_answered_and_the_message_relayed(self):
        client, conn = self.open()
        client.send_frame(BINARY, b'abc', fin=False)
        client.send_frame(PING, b'mid-message')
        client.send_frame(CONT, b'def', fin=False)
        client.send_frame(CONT, b'ghi')
        self.assertEqual(client.recv_frame(), Frame(True, PONG, b'mid-message'))
        self.assertEqual(recv_exactly(conn, 9), b'abcdefghi')

    def test_unsolicited_pong_is_ignored(self):
        client, conn = self.open()
        client.send_frame(PONG, b'unasked')
        client.send_frame(BINARY, b'after')
        self.assertEqual(recv_exactly(conn, 5), b'after')

    # -- protocol errors ----------------------------------------------------------

    def test_protocol_errors_close_with_1002(self):
        cases = {
            'unmasked frame': encode_frame(BINARY, b'abc', masked=False),
            'RSV1': encode_frame(BINARY, b'abc', rsv=4),
            'RSV2': encode_frame(BINARY, b'abc', rsv=2),
            'RSV3': encode_frame(BINARY, b'abc', rsv=1),
            'opcode 3': encode_frame(3, b'abc'),
            'opcode 7': encode_frame(7, b'abc'),
            'opcode 0xB': encode_frame(0xB, b'abc'),
            'opcode 0xF': encode_frame(0xF, b''),
            'fragmented ping': encode_frame(PING, b'abc', fin=False),
            'fragmented close': encode_frame(CLOSE, close_body(1000), fin=False),
            'ping of 126 bytes': encode_frame(PING, b'p' * 126),
            'pong of 126 bytes': encode_frame(PONG, b'p' * 126),
            'continuation without a start': encode_frame(CONT, b'abc'),
            'binary inside a fragmented message':
                encode_frame(TEXT, b'abc', fin=False) + encode_frame(BINARY, b'def'),
            'text inside a fragmented message':
                encode_frame(BINARY, b'abc', fin=False) + encode_frame(TEXT, b'def'),
            '64-bit length with the top bit set':
                encode_frame(BINARY, length=(1 << 63) | 5)[:14] + b'abcde',
            'close with a 1-byte payload': encode_frame(CLOSE, b'\x03'),
        }
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
            cases['close code %d' % code] = encode_frame(CLOSE, close_body(code))
        for name, frames in cases.items():
            with self.subTest(name):
                self.expect_close_for(frames, 1002)

    def test_invalid_utf8_in_text_closes_with_1007(self):
        cases = {
            'invalid byte': encode_frame(TEXT, b'ok \xff'),
            'surrogate': encode_frame(TEXT, b'\xed\xa0\x80'),
            'overlong': encode_frame(TEXT, b'\xc0\xaf'),
            'across fragments': encode_frame(TEXT, b'caf\xc3', fin=False)
                                + encode_frame(CONT, b'('),
            'message ends inside a character': encode_frame(TEXT, b'caf\xc3'),
            'invalid close reason': encode_frame(CLOSE, close_body(1000, b'bye \xff')),
        }
        for name, frames in cases.items():
            with self.subTest(name):
                self.expect_close_for(frames, 1007)

    # -- closing handshake --------------------------------------------------------

    def test_valid_close_codes_are_echoed_and_tcp_closed(self):
        for code in (1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999):
            with self.subTest(code=code):
                client, conn = self.open()
                client.send_close(code, 'très bien'.encode())
                client.expect_close(code)
                self.assertEqual(read_to_eof(conn), b'')

    def test_close_without_a_code_is_answered(self):
        client, conn = self.open()
        client.send_close()
        code, _ = client.expect_close()
        self.assertIn(code, (None, 1000))
        self.assertEqual(read_to_eof(conn), b'')


class TestProtocolLegacySessions(unittest.TestCase):
    """Through real sockets: an in-process proxy and echo/sink targets."""

    def setUp(self):
        self.target = TargetServer(self, echo)
        self.log = LogWatch(self)
        self.port = start_proxy(self, '127.0.0.1:0', self.target.arg).server_address[1]

    def _vector_session(self, delivery):
        client = WSClient(self, self.port)
        request = hixie_request(76, protocol='sample', keys=(KEY1, KEY2))
        if delivery == 'same':
            client.send(request + KEY3)
        else:
            client.send(request)
            self.assertTrue(client.quiet(0.3), 'replied before key3')
            if delivery == 'separate':
                client.send(KEY3)
            else:
                for i in range(8):
                    self.assertTrue(client.quiet(0.02 if i else 0.0), 'replied early')
                    client.send(KEY3[i:i + 1])
        self.assertEqual(client.read_exactly(len(VECTOR_REPLY)), VECTOR_REPLY)
        client.send(b'\x00' + base64.b64encode(b'ping me') + b'\xff')
        self.assertEqual(client.read_until(b'\xff'),
                         b'\x00' + base64.b64encode(b'ping me') + b'\xff')
        client.send(b'\xff\x00')
        self.assertEqual(client.read_until_eof(), b'\xff\x00')
        client.close()   # the peer closes after the closing handshake
        self.assertTrue(self.log.wait_line('session open', 'hixie-76/base64',
                                          'protocol sample'))
        self.assertTrue(self.log.wait_line('session closed', 'close 1005'))

    def test_draft76_vector_key3_same_segment(self):
        self._vector_session('same')

    def test_draft76_vector_key3_separate_segment(self):
        self._vector_session('separate')

    def test_draft76_vector_key3_byte_by_byte(self):
        self._vector_session('bytewise')

    def test_draft76_client_closing_before_key3_is_logged_and_target_not_opened(self):
        client = WSClient(self, self.port)
        client.send(hixie_request(76, keys=(KEY1, KEY2)) + KEY3[:5])
        client.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(client.read_until_eof(), b'')
        self.assertTrue(self.log.wait_line('closed before sending the draft-76 key3'))
        self.assertEqual(self.target._open, [])       # no target connection was made

    def test_draft76_first_frame_with_key3(self):
        client = WSClient(self, self.port)
        frame = b'\x00' + base64.b64encode(b'eager') + b'\xff'
        client.send(hixie_request(76, keys=(KEY1, KEY2), protocol='sample') + KEY3 + frame)
        self.assertEqual(client.read_exactly(len(VECTOR_REPLY)), VECTOR_REPLY)
        self.assertEqual(client.read_until(b'\xff'), frame)

    def test_85_byte_prefix_and_draft76_client(self):
        client = WSClient(self, self.port)
        head = client.hixie_handshake(76, path='/x?token=1', host='example.com:6080',
                                      origin=None)
        self.assertEqual(head[:85], PREFIX_85)
        self.assertIn(b'\r\nSec-WebSocket-Location: ws://example.com:6080/x?token=1\r\n',
                      head)
        self.assertNotIn(b'Origin', head)
        client.send_hixie(b'\x00\x01\xfe\xff')
        self.assertEqual(client.recv_hixie_data(4), b'\x00\x01\xfe\xff')

    def test_draft75_session(self):
        client = WSClient(self, self.port)
        client.send(hixie_request(75, protocol='sample'))
        expected = (PREFIX_85 + b'WebSocket-Origin: http://example.com\r\n'
                    b'WebSocket-Location: ws://example.com/demo\r\n'
                    b'WebSocket-Protocol: sample\r\n\r\n')
        self.assertEqual(client.read_exactly(len(expected)), expected)
        client.send(b'\x00aGVsbG8=\xff')
        self.assertEqual(client.read_until(b'\xff'), b'\x00aGVsbG8=\xff')
        for message in (bytes(range(256)), b'', b'!'):
            client.send(b'\x00' + base64.b64encode(message) + b'\xff')
        got = b''
        while len(got) < 257:
            got += base64.b64decode(client.read_until(b'\xff')[1:-1], validate=True)
        self.assertEqual(got, bytes(range(256)) + b'!')
        client.sock.shutdown(socket.SHUT_WR)       # draft-75 has no closing handshake
        self.assertIn(client.read_until_eof(), (b'', b'\xff\x00'))
        self.assertTrue(self.log.wait_line('session open', 'hixie-75/base64'))
        self.assertTrue(self.log.wait_line('session closed'))

    def test_hixie_1mib_both_ways(self):
        client = WSClient(self, self.port)
        client.hixie_handshake(76)
        total = 1 << 20
        data = os.urandom(total)
        sizes = [1, 2, 3, 1000, 65536, 300000]

        def writer():
            i = n = 0
            while n < total:
                size = min(sizes[i % len(sizes)], total - n)
                client.send_hixie(data[n:n + size])
                n += size
                i += 1
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        got = client.recv_hixie_data(total, timeout=30)
        thread.join(TIMEOUT)
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())
        client.sock.sendall(b'\xff\x00')
        self.assertIsNone(client.recv_hixie_frame())

    def test_hybi_base64_1mib_both_ways_websockets(self):
        websockets = websockets_asyncio()
        from websockets.asyncio.client import connect
        total = 1 << 20
        data = os.urandom(total)

        async def run():
            async with connect('ws://127.0.0.1:%d/' % self.port, subprotocols=['base64'],
                               max_size=None) as ws:
                self.assertEqual(ws.subprotocol, 'base64')
                received = []

                async def reader():
                    n = 0
                    while n < total:
                        message = await ws.recv()
                        self.assertIsInstance(message, str)
                        chunk = base64.b64decode(message, validate=True)
                        received.append(chunk)
                        n += len(chunk)
                task = asyncio.ensure_future(reader())
                sizes = [1, 2, 3, 125, 4096, 65536, 200000]
                i = n = 0
                while n < total:
                    size = min(sizes[i % len(sizes)], total - n)
                    await ws.send(base64.b64encode(data[n:n + size]).decode('ascii'))
                    n += size
                    i += 1
                await asyncio.wait_for(task, 30)
                return b''.join(received)
        got = asyncio.run(asyncio.wait_for(run(), 60))
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertTrue(self.log.wait_line('session open', 'hybi/base64', 'protocol base64'))
        del websockets

    def test_hybi_invalid_base64_websockets(self):
        websockets = websockets_asyncio()
        from websockets.asyncio.client import connect

        async def run():
            async with connect('ws://127.0.0.1:%d/' % self.port,
                               subprotocols=['base64']) as ws:
                await ws.send('QUJD')
                self.assertEqual(base64.b64decode(await ws.recv()), b'ABC')
                await ws.send('QU$D')
                with self.assertRaises(websockets.exceptions.ConnectionClosedError) as cm:
                    await ws.recv()
                return cm.exception.rcvd
        rcvd = asyncio.run(asyncio.wait_for(run(), TIMEOUT))
        self.assertEqual(rcvd.code, 1007)
        self.assertIn('base64', rcvd.reason)

    def test_hybi_base64_groups_split_across_frames_and_reads(self):
        client = WSClient(self, self.port)
        head = client.handshake(protocols=['base64']).raw
        self.assertIn(b'\r\nSec-WebSocket-Protocol: base64\r\n', head)
        message = b'hello, split base64 world!'
        text = base64.b64encode(message)
        pieces = [text[0:1], text[1:6], text[6:7], text[7:]]
        frames = (encode_frame(1, pieces[0]) + encode_frame(1, pieces[1], fin=False)
                  + encode_frame(0, pieces[2]) + encode_frame(1, pieces[3]))
        for i in range(len(frames)):           # one byte per TCP segment
            client.send(frames[i:i + 1])
        self.assertEqual(client.recv_base64(len(message)), message)
        client.send(encode_frame(1, b'QQ==') + encode_frame(1, b'Qg=='))
        self.assertEqual(client.recv_base64(2), b'AB')
        client.send(encode_frame(8, struct.pack('!H', 1000)))
        self.assertEqual(client.recv_frame()[1:], (8, struct.pack('!H', 1000)))

    def test_hybi_invalid_base64(self):
        client = WSClient(self, self.port)
        client.handshake(protocols=['base64'])
        client.send(encode_frame(1, b'QU') + encode_frame(1, b'JD'))
        self.assertEqual(client.recv_base64(3), b'ABC')
        client.send(encode_frame(1, b'QQ=x'))
        _, opcode, payload = client.recv_frame()
        self.assertEqual(opcode, 8)
        self.assertEqual(struct.unpack('!H', payload[:2])[0], 1007)
        self.assertIn(b'base64', payload[2:])
        client.send(encode_frame(8, payload[:2]))
        self.assertEqual(client.read_until_eof(), b'')
        client.close()   # the peer closes after the closing handshake
        self.assertTrue(self.log.wait_line('session closed', 'close 1007', 'base64'))

    def test_hixie_groups_split_across_frames_and_invalid_base64(self):
        client = WSClient(self, self.port)
        client.hixie_handshake(76)
        text = base64.b64encode(b'split groups')
        data = b'\x00' + text[:3] + b'\xff\x00' + text[3:5] + b'\xff\x00' + text[5:] + b'\xff'
        for i in range(len(data)):
            client.sock.sendall(data[i:i + 1])
        self.assertEqual(client.recv_hixie_data(12), b'split groups')
        client.sock.sendall(b'\x00QQ=*\xff')
        self.assertIsNone(client.recv_hixie_frame())
        client.expect_hixie_end()
        self.assertTrue(self.log.wait_line('session closed', 'invalid base64'))

    def test_hixie_length_prefixed_frame_ends_session(self):
        client = WSClient(self, self.port)
        client.hixie_handshake(76)
        client.sock.sendall(b'\x80\x05hello')
        self.assertIsNone(client.recv_hixie_frame())
        client.expect_hixie_end()
        self.assertTrue(self.log.wait_line('session closed', 'length-prefixed'))

    def test_hixie_target_close_sends_closing_handshake(self):
        target = TargetServer(self, say_bye)
        log = LogWatch(self)
        port = start_proxy(self, '127.0.0.1:0', target.arg).server_address[1]
        client = WSClient(self, port)
        client.hixie_handshake(76)
        self.assertEqual(client.recv_hixie_frame(), b'bye')
        self.assertIsNone(client.recv_hixie_frame())
        client.sock.sendall(b'\xff\x00')
        client.expect_hixie_end()
        self.assertTrue(log.wait_line('session closed', 'target closed'))

    def test_hixie_heartbeat_sends_nothing_invalid(self):
        port = start_proxy(self, '127.0.0.1:0', self.target.arg,
                           '--heartbeat', '0.1').server_address[1]
        client = WSClient(self, port)
        client.hixie_handshake(76)
        self.assertTrue(client.quiet(0.5), 'heartbeat sent bytes to a Hixie client')
        client.send_hixie(b'still alive')
        self.assertEqual(client.recv_hixie_data(11), b'still alive')

    def test_subprotocol_choice(self):
        for offered, chosen, opcode in (('base64, binary', b'binary', 2),
                                        ('binary, base64', b'binary', 2),
                                        ('base64', b'base64', 1)):
            client = WSClient(self, self.port)
            head = client.handshake(protocols=[offered]).raw
            self.assertIn(b'\r\nSec-WebSocket-Protocol: ' + chosen + b'\r\n', head)
            payload = b'QUJD'
            client.send(encode_frame(opcode, payload))
            expected = b'ABC' if chosen == b'base64' else payload
            got = client.recv_base64(3) if opcode == 1 else client.recv_frame().payload
            self.assertEqual(got, expected, offered)
        self.assertTrue(self.log.wait_line('session open', 'hybi/binary', 'protocol binary'))
        self.assertTrue(self.log.wait_line('session open', 'hybi/base64', 'protocol base64'))

    def test_flash_policy(self):
        for pieces in ([b'<policy-file-request/>\x00'],
                       [b'<policy-', b'file-request/>', b'\x00']):
            client = WSClient(self, self.port)
            for i, piece in enumerate(pieces):
                if i:
                    self.assertTrue(client.quiet(0.05))
                client.send(piece)
            self.assertEqual(client.read_until_eof(), FLASH_POLICY)
        self.assertTrue(self.log.wait_line('Flash socket policy served'))

    def test_not_a_policy_request(self):
        client = WSClient(self, self.port)
        client.send(b'<hello/>\x00')
        self.assertEqual(client.read_until_eof(), b'')
        self.assertTrue(self.log.wait_line('neither HTTP nor a Flash policy request'))

    def _status(self, request):
        client = WSClient(self, self.port)
        client.send(request)
        return client.read_until_eof()

    def test_bad_hixie_keys_get_400(self):
        for key1 in ('12345', '1 2 3', 'no digits '):
            reply = self._status(hixie_request(76, keys=(key1, KEY2)) + KEY3)
            self.assertTrue(reply.startswith(b'HTTP/1.1 400 '), reply)
        reply = self._status(b'GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n'
                             b'Connection: Upgrade\r\nSec-WebSocket-Key1: 1 2\r\n\r\n')
        self.assertTrue(reply.startswith(b'HTTP/1.1 400 '), reply)
        self.assertTrue(self.log.wait_line('400', 'spaces'))

    def test_hybi_without_version_still_426(self):
        reply = self._status(b'GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n'
                             b'Connection: Upgrade\r\n'
                             b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
        self.assertTrue(reply.startswith(b'HTTP/1.1 426 '), reply)
        self.assertIn(b'Sec-WebSocket-Version: 13, 8, 7', reply)

    def test_key3_that_never_comes(self):
        log = LogWatch(self)
        port = start_proxy(self, '127.0.0.1:0', self.target.arg,
                           '--handshake-timeout', '1').server_address[1]
        client = WSClient(self, port)
        start = time.monotonic()
        client.send(hixie_request(76, keys=(KEY1, KEY2)) + KEY3[:5])
        reply = client.read_until_eof(timeout=5)
        self.assertTrue(reply.startswith(b'HTTP/1.1 408 '), reply)
        self.assertLess(time.monotonic() - start, 4.0)
        self.assertTrue(log.wait_line('408', 'did not arrive in time'))

    def test_frame_that_never_ends(self):
        sink = Sink()
        log = LogWatch(self)
        port = start_proxy(self, '127.0.0.1:0', TargetServer(self, sink).arg).server_address[1]
        client = WSClient(self, port)
        client.hixie_handshake(76)
        chunk = b'AAAA' * 16384
        sent = [0]

        def writer():
            try:
                client.sock.sendall(b'\x00')
                while sent[0] <= websockify.HIXIE_MAX_FRAME + len(chunk):
                    client.sock.sendall(chunk)
                    sent[0] += len(chunk)
                client.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        self.assertTrue(sink.first_data.wait(TIMEOUT), 'payload not streamed to the target')
        self.assertIsNone(client.recv_hixie_frame(timeout=20))
        self.assertEqual(client.read_until_eof(timeout=20), b'')
        thread.join(TIMEOUT)
        self.assertTrue(log.wait_line('session closed', 'longer than'))
        self.assertLessEqual(sink.received, websockify.HIXIE_MAX_FRAME * 3 // 4)


################################################################################
# Connection: first byte, request head, TLS
################################################################################

class TestConnectionWaits(unittest.TestCase):
    """A plain client socket is non-blocking from the first peek and waits only
    when a call would block: bytes still on the way, a peer that reads slowly."""

    def setUp(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)
        self.peer = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        self.addCleanup(self.peer.close)
        sock = listener.accept()[0]
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.conn = websockify.Connection(sock)

    def test_bytes_on_the_way_are_waited_for(self):
        request = b'GET / HTTP/1.1\r\nHost: x\r\n\r\nrest'
        self.peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def dribble():
            for i in range(len(request)):
                self.peer.sendall(request[i:i + 1])
        sender = threading.Thread(target=dribble)
        sender.start()
        self.addCleanup(sender.join, TIMEOUT)
        self.assertEqual(self.conn.peek_first_byte(TIMEOUT), b'G')
        head = self.conn.read_head(time.monotonic() + TIMEOUT)
        sender.join(TIMEOUT)
        extra = self.conn.read_extra(4, time.monotonic() + TIMEOUT)
        self.assertEqual((head, extra), (request[:-4], b'rest'))
        self.assertEqual(self.conn.sock.gettimeout(), 0.0)

    def test_silence_ends_at_the_deadline(self):
        started = time.monotonic()
        self.assertIsNone(self.conn.peek_first_byte(0.2))
        with self.assertRaises(websockify.HTTPError) as caught:
            self.conn.read_head(time.monotonic() + 0.2)
        self.assertEqual(caught.exception.status, 408)
        self.assertTrue(0.35 <= time.monotonic() - started < TIMEOUT)

    def test_a_slow_reader_gets_every_byte(self):
        data = bytes(range(256)) * 16384         # 4 MiB: far beyond the socket buffers
        received = bytearray()

        def read_slowly():
            while len(received) < len(data):
                chunk = self.peer.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)
        reader = threading.Thread(target=read_slowly)
        reader.start()
        self.conn.send_all(data, TIMEOUT)
        reader.join(TIMEOUT)
        self.assertEqual(bytes(received), data)

    def test_a_peer_that_never_reads_times_out(self):
        started = time.monotonic()
        with self.assertRaises(socket.timeout):
            self.conn.send_all(b'x' * (8 << 20), 0.3)
        self.assertTrue(0.3 <= time.monotonic() - started < TIMEOUT)


class TestConnectionTLS(unittest.TestCase):
    """wss:// by sniffing, next to ws:// on the same port."""

    def setUp(self):
        self.pki = get_pki()
        self.echo = TargetServer(self, echo)

    def proxy(self, *args, cert=None):
        cert = cert or self.pki.server
        server = start_proxy(self, '--cert', cert[0], '--key', cert[1], *args,
                             '127.0.0.1:0', '127.0.0.1:%d' % self.echo.port)
        return server.server_address[1]

    def test_wss_websockets_client_16mib(self):
        connect = import_optional('websockets.asyncio.client', 'pip install websockets').connect
        port = self.proxy()
        ctx = client_context(self.pki)
        total = 16 << 20

        async def run():
            async with connect('wss://127.0.0.1:%d/' % port, ssl=ctx, server_hostname='localhost',
                               subprotocols=['binary'], max_size=None) as ws:
                sent, got = hashlib.sha256(), hashlib.sha256()

                async def reader():
                    n = 0
                    while n < total:
                        m = await ws.recv()
                        got.update(m)
                        n += len(m)
                task = asyncio.ensure_future(reader())
                n, sizes = 0, (1, 125, 126, 20000, 65536, 1 << 20)
                for i in range(1 << 20):
                    if n >= total:
                        break
                    data = os.urandom(min(sizes[i % len(sizes)], total - n))
                    sent.update(data)
                    n += len(data)
                    await ws.send(data)
                await asyncio.wait_for(task, 60)
                return ws.subprotocol, sent.digest() == got.digest()
        self.assertEqual(asyncio.run(run()), ('binary', True))

    def test_wss_node_ws_16mib(self):
        node = node_with_ws()
        port = self.proxy()
        script = r'''
const WebSocket = require('ws'), fs = require('fs'), crypto = require('crypto');
const total = 16 << 20, chunk = 1 << 20;
const ws = new WebSocket('wss://localhost:' + process.argv[1] + '/', ['binary'],
                         {ca: fs.readFileSync(process.argv[2])});
const sent = crypto.createHash('sha256'), got = crypto.createHash('sha256');
let received = 0;
ws.on('open', () => {
  for (let n = 0; n < total; n += chunk) {
    const data = crypto.randomBytes(chunk); sent.update(data); ws.send(data);
  }
});
ws.on('message', (data) => {
  got.update(data); received += data.length;
  if (received >= total) {
    console.log(received === total && sent.digest('hex') === got.digest('hex') ? 'equal' : 'DIFFERENT');
    ws.close();
  }
});
ws.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
'''
        proc = subprocess.run([node, '-e', script, str(port), self.pki.ca[0]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                              env=dict(os.environ, NODE_PATH=NODE_MODULES))
        self.assertEqual(proc.stdout.decode().strip(), 'equal', proc.stderr.decode())

    def test_slow_tls_client_gets_every_byte(self):
        # A small receive window and small reads: the proxy's TLS sends to the
        # client keep meeting a full kernel buffer (SSLWantWrite) and are retried
        # from the queue.
        port = self.proxy()
        ws = open_session(self, port, protocols=['binary'], context=client_context(self.pki),
                          rcvbuf=4096, read_size=1000)
        total = 4 << 20
        data = os.urandom(total)
        got = ws.exchange([data[pos:pos + 300000] for pos in range(0, total, 300000)], total,
                          lazy=True)
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())

    def test_plain_and_tls_on_one_port_at_once(self):
        port = self.proxy()
        with LogWatch(self) as logs:
            plain = open_session(self, port, protocols=['binary'])
            secure = open_session(self, port, protocols=['binary'],
                                  context=client_context(self.pki))
            secure.send_frame(BINARY, b'over tls')
            plain.send_frame(BINARY, b'in clear')
            self.assertEqual(plain.recv_data(8), b'in clear')
            self.assertEqual(secure.recv_data(8), b'over tls')
            answer = http_exchange(port, b'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
                                   client_context(self.pki))
            self.assertTrue(answer.startswith(b'HTTP/1.1 426 '), answer)
        opened = logs.wait_for('session open', 2)
        self.assertEqual(len(opened), 2)
        self.assertEqual(sum('TLSv1.3' in r for r in opened), 1)

    def test_no_certificate_plain_works_and_tls_logged(self):
        settings = websockify.parse_args(['127.0.0.1:0', '127.0.0.1:%d' % self.echo.port])
        settings = settings.replace(cert=self.pki.path('self.pem'))
        with LogWatch(self) as logs:
            server = start_proxy(self, settings=settings)
            port = server.server_address[1]
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                open_session(self, port, protocols=['binary'], context=client_context(self.pki))
            ws = open_session(self, port, protocols=['binary'])
            ws.send_frame(BINARY, b'plain')
            self.assertEqual(ws.recv_data(5), b'plain')
        refused = logs.wait_for('TLS handshake refused')
        self.assertEqual(len(refused), 1, logs.output)
        self.assertIn('no certificate', refused[0])

    def test_handshake_garbage_and_wrong_protocol_log_one_line(self):
        port = self.proxy()
        with LogWatch(self) as logs:
            answer = http_exchange(port, b'\x16\x03\x01\x00\x05hello garbage\r\n\r\n')
            self.assertNotIn(b'HTTP', answer)
            answer = http_exchange(port, b'\x80\x00garbage')
            ws = open_session(self, port, protocols=['binary'],     # the server still works
                              context=client_context(self.pki))
            ws.send_frame(BINARY, b'ok')
            self.assertEqual(ws.recv_data(2), b'ok')
        failed = logs.wait_for('TLS handshake failed', 2)
        self.assertEqual(len(failed), 2, logs.output)
        self.assertFalse([r for r in logs.output if 'Traceback' in r or 'internal' in r])

    def test_stalled_tls_handshake_is_bounded(self):
        port = self.proxy('--handshake-timeout', '0.5')
        with LogWatch(self) as logs:
            start = time.monotonic()
            answer = http_exchange(port, b'\x16\x03\x01')    # a record header, then nothing
            self.assertLess(time.monotonic() - start, 3.0)
        self.assertEqual(answer, b'')
        self.assertTrue(logs.wait_for('TLS handshake failed: timed out'), logs.output)

    def test_ssl_only_refuses_plain_with_an_answer(self):
        port = self.proxy('--ssl-only')
        answer = http_exchange(port, b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
        self.assertTrue(answer.startswith(b'HTTP/1.1 403 '), answer)
        self.assertIn(b'wss://', answer)
        answer = http_exchange(port, UPGRADE)
        self.assertTrue(answer.startswith(b'HTTP/1.1 403 '), answer)
        ws = open_session(self, port, protocols=['binary'], context=client_context(self.pki))
        ws.send_frame(BINARY, b'secure')
        self.assertEqual(ws.recv_data(6), b'secure')

    def test_client_certificates(self):
        p = self.pki
        port = self.proxy('--verify-client', '--cafile', p.ca[0])
        with LogWatch(self) as logs:
            ws = open_session(self, port, protocols=['binary'],
                              context=client_context(p, cert=p.client))
            ws.send_frame(BINARY, b'trusted')
            self.assertEqual(ws.recv_data(7), b'trusted')
            self.assertTrue(logs.wait_for('client client one'), logs.output)
            for cert in (None, p.client2):
                with self.subTest(cert=cert):
                    with self.assertRaises((ssl.SSLError, ConnectionError)):
                        open_session(self, port, protocols=['binary'],
                                     context=client_context(p, cert=cert)).close()
            answer = http_exchange(port, UPGRADE)      # --verify-client implies --ssl-only
            self.assertTrue(answer.startswith(b'HTTP/1.1 403 '), answer)
        failed = logs.wait_for('TLS handshake failed', 2)
        self.assertEqual(len(failed), 2, logs.output)
        self.assertIn('certificate', failed[0])

    @unittest.skipUnless(hasattr(ssl, 'TLSVersion'), 'TLS versions need Python 3.7+')
    def test_minimum_version_enforced(self):
        port = self.proxy('--ssl-version', 'tlsv1_3')
        with LogWatch(self) as logs:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                open_session(self, port, protocols=['binary'],
                             context=client_context(self.pki,
                                                    max_version=ssl.TLSVersion.TLSv1_2))
            ws = open_session(self, port, protocols=['binary'], context=client_context(self.pki))
            self.assertEqual(ws.sock.version(), 'TLSv1.3')
        failed = logs.wait_for('TLS handshake failed')
        self.assertEqual(len(failed), 1, logs.output)
        self.assertIn('protocol', failed[0])

    @unittest.skipUnless(hasattr(ssl, 'TLSVersion'), 'TLS versions need Python 3.7+')
    def test_tls12_works_by_default(self):
        port = self.proxy('--ssl-ciphers', 'ECDHE+AESGCM')
        ws = open_session(self, port, protocols=['binary'],
                          context=client_context(self.pki, max_version=ssl.TLSVersion.TLSv1_2))
        self.assertEqual(ws.sock.version(), 'TLSv1.2')
        self.assertIn('ECDHE', ws.sock.cipher()[0])
        ws.send_frame(BINARY, b'1.2')
        self.assertEqual(ws.recv_data(3), b'1.2')

    def served_certificate(self, port):
        with socket.create_connection(('127.0.0.1', port), TIMEOUT) as sock:
            with client_context(self.pki).wrap_socket(sock, server_hostname='localhost') as tls:
                return tls.getpeercert(binary_form=True)

    def wait_for_certificate(self, port, der):
        deadline = time.monotonic() + 5 * websockify.TLS_RELOAD_INTERVAL + 2
        seen = None
        while time.monotonic() < deadline:
            seen = self.served_certificate(port)
            if seen == der:
                return
            time.sleep(0.1)   # the reload is rate-limited by time, not by an event
        self.assertEqual(seen, der, 'the renewed certificate was not served')

    def test_certificate_renewal_without_restart(self):
        p = self.pki
        cert, key = p.path('live.pem'), p.path('live.key')
        shutil.copy(p.server[0], cert)
        shutil.copy(p.server[1], key)
        port = self.proxy(cert=(cert, key))
        self.assertEqual(self.served_certificate(port), p.der(p.server))
        with LogWatch(self) as logs:
            # A renewal: both files replaced (certbot and most tools write new files).
            shutil.copy(p.server2[0], cert + '.new')
            shutil.copy(p.server2[1], key + '.new')
            os.replace(key + '.new', key)
            os.replace(cert + '.new', cert)
            self.wait_for_certificate(port, p.der(p.server2))
            ws = open_session(self, port, protocols=['binary'], context=client_context(p))
            ws.send_frame(BINARY, b'renewed')
            self.assertEqual(ws.recv_data(7), b'renewed')
            # A broken renewal keeps the previous certificate and says why, once.
            with open(cert, 'w') as f:
                f.write('-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n')
            deadline = time.monotonic() + 5 * websockify.TLS_RELOAD_INTERVAL + 2
            while not any('not loaded' in r for r in logs.output):
                self.assertLess(time.monotonic(), deadline, logs.output)
                self.assertEqual(self.served_certificate(port), p.der(p.server2))
                time.sleep(0.1)
            for _ in range(3):
                self.assertEqual(self.served_certificate(port), p.der(p.server2))
            time.sleep(websockify.TLS_RELOAD_INTERVAL + 0.1)
            self.assertEqual(self.served_certificate(port), p.der(p.server2))
        self.assertEqual(len([r for r in logs.output if 'not loaded' in r]), 1, logs.output)
        self.assertEqual(len([r for r in logs.output if '(re)loaded' in r]), 1, logs.output)


################################################################################
# Pump: relaying, back-pressure, closing
################################################################################

NODE_RELAY = r"""
'use strict';
// Sends a file through a WebSocket in messages of the given sizes; writes what comes back.
const fs = require('fs');
const WebSocket = require('ws');
const [url, inPath, sizesPath, outPath, timeoutMs] = process.argv.slice(2);
const data = fs.readFileSync(inPath);
const sizes = JSON.parse(fs.readFileSync(sizesPath, 'utf8'));
const fail = (why) => { console.error(why); process.exit(2); };
setTimeout(() => fail('timed out'), Number(timeoutMs)).unref();
const ws = new WebSocket(url, ['binary']);
const received = [];
let count = 0;
ws.on('open', () => {
  let offset = 0;
  for (const n of sizes) { ws.send(data.subarray(offset, offset + n), { binary: true }); offset += n; }
});
ws.on('message', (message, isBinary) => {
  if (!isBinary) fail('a text message from the proxy');
  received.push(message);
  count += message.length;
  if (count >= data.length) { fs.writeFileSync(outPath, Buffer.concat(received)); ws.close(1000); }
});
ws.on('close', (code) => {
  console.log(JSON.stringify({ code: code, protocol: ws.protocol, count: count }));
  process.exit(0);
});
ws.on('error', (err) => fail(String(err)));
"""


class TestPumpRelay(ProxyTestCase):

    # -- clients we did not write -------------------------------------------------

    def test_websockets_library_relays_16_mib_both_ways_byte_exact(self):
        client = import_optional('websockets.sync.client', 'pip install websockets')
        address = self.echo_proxy()
        total = 16 * MiB
        with client.connect('ws://127.0.0.1:%d/' % address[1], subprotocols=['binary'],
                            max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
            self.assertEqual(ws.subprotocol, 'binary')
            sender = Worker(send_stream, ws.send, random_chunks(total, EDGE_SIZES, 512 * KiB))
            digest, count = hashlib.sha256(), 0
            while count < total:
                message = ws.recv(timeout=LONG_TIMEOUT)
                self.assertIsInstance(message, bytes)
                digest.update(message)
                count += len(message)
            self.assertEqual(count, total)
            self.assertEqual(digest.hexdigest(), sender.result(LONG_TIMEOUT))

    def test_node_ws_relays_16_mib_both_ways_byte_exact(self):
        node = node_with_ws()
        address = self.echo_proxy()
        folder = self.tempdir()
        paths = {name: os.path.join(folder, name) for name in ('relay.js', 'in', 'sizes', 'out')}
        chunks = list(random_chunks(16 * MiB, EDGE_SIZES, 512 * KiB))
        with open(paths['relay.js'], 'w') as f:
            f.write(NODE_RELAY)
        with open(paths['in'], 'wb') as f:
            f.write(b''.join(chunks))
        with open(paths['sizes'], 'w') as f:
            json.dump([len(c) for c in chunks], f)
        result = subprocess.run(
            [node, paths['relay.js'], 'ws://127.0.0.1:%d/' % address[1], paths['in'],
             paths['sizes'], paths['out'], str(int(LONG_TIMEOUT * 1000))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=LONG_TIMEOUT + 10,
            env=dict(os.environ, NODE_PATH=NODE_MODULES))
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual((report['code'], report['protocol']), (1000, 'binary'), report)
        with open(paths['out'], 'rb') as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha256_of(chunks))

    def test_websocket_client_library_text_binary_and_ping(self):
        websocket = import_optional('websocket', 'pip install websocket-client')
        address = self.echo_proxy()
        ws = websocket.create_connection('ws://127.0.0.1:%d/' % address[1],
                                         subprotocols=['binary'], timeout=TIMEOUT)
        self.addCleanup(ws.close)
        self.assertEqual(ws.getsubprotocol(), 'binary')

        def echoed(n):
            data = b''
            while len(data) < n:
                opcode, payload = ws.recv_data()
                self.assertEqual(opcode, websocket.ABNF.OPCODE_BINARY)
                data += payload
            return data
        ws.send('héllo')                       # a text frame comes back as bytes
        self.assertEqual(echoed(6), 'héllo'.encode())
        blob = os.urandom(100000)
        ws.send_binary(blob)
        self.assertEqual(echoed(len(blob)), blob)
        ws.ping(b'are you there')
        opcode, frame = ws.recv_data_frame(True)
        self.assertEqual((opcode, frame.data), (websocket.ABNF.OPCODE_PONG, b'are you there'))
        ws.close()

    # -- back-pressure ------------------------------------------------------------

    def test_both_directions_carry_64_mib_at_once_byte_exact(self):
        target = TargetServer(self)
        address = self.proxy('127.0.0.1:0', target.arg)
        client = open_session(self, address, timeout=LONG_TIMEOUT)
        conn = target.accept()
        conn.settimeout(LONG_TIMEOUT)
        total = 64 * MiB
        target_sends = Worker(send_stream, conn.sendall, random_chunks(total))
        target_reads = Worker(lambda: sha256_of(recv_chunks(conn, total)))
        client_sends = Worker(send_stream, lambda c: client.send_frame(BINARY, c),
                              random_chunks(total))
        self.assertEqual(sha256_of(client.iter_data(total)), target_sends.result(LONG_TIMEOUT))
        self.assertEqual(target_reads.result(LONG_TIMEOUT), client_sends.result(LONG_TIMEOUT))

    def test_client_not_reading_stalls_only_target_to_client_with_bounded_memory(self):
        target = TargetServer(self)
        address = self.proxy('127.0.0.1:0', target.arg)
        client = open_session(self, address, timeout=LONG_TIMEOUT, rcvbuf=64 * KiB)
        conn = target.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KiB)
        conn.settimeout(LONG_TIMEOUT)
        bound = websockify.PUMP_HIGH_WATER + socket_buffer_slack()
        total = bound + 4 * MiB
        sent = [0]

        def source():
            digest = hashlib.sha256()
            for chunk in random_chunks(total, max_size=64 * KiB):
                conn.sendall(chunk)
                digest.update(chunk)
                sent[0] += len(chunk)
            return digest.hexdigest()
        target_sends = Worker(source)

        # The target's sends must stop (the proxy stops reading it) before `bound`.
        last, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 60
        while time.monotonic() - quiet_since < 1.0:
            self.assertLess(sent[0], bound, 'the proxy buffered without bound')
            self.assertLess(time.monotonic(), deadline, 'the target never stalled')
            if sent[0] != last:
                last, quiet_since = sent[0], time.monotonic()
            time.sleep(0.05)
        self.assertTrue(target_sends.is_alive())
        queues = tcp_queues()
        if queues is not None:
            # What the target sent minus what the kernel holds is what the proxy holds.
            target_end, proxy_end = conn.getsockname(), conn.getpeername()
            client_end, listen_end = client.sock.getsockname(), address[:2]
            in_kernel = (queues[target_end, proxy_end][0] + queues[proxy_end, target_end][1]
                         + queues[listen_end, client_end][0] + queues[client_end, listen_end][1])
            self.assertLessEqual(sent[0] - in_kernel, websockify.PUMP_HIGH_WATER + 64 * KiB)

        # Client -> target still flows while target -> client is stalled.
        upstream = 8 * MiB
        target_reads = Worker(lambda: sha256_of(recv_chunks(conn, upstream)))
        digest = send_stream(lambda c: client.send_frame(BINARY, c), random_chunks(upstream))
        self.assertEqual(target_reads.result(LONG_TIMEOUT), digest)

        # Once the client reads, everything the target sent arrives in order.
        self.assertEqual(sha256_of(client.iter_data(total)), target_sends.result(LONG_TIMEOUT))

    # -- many sessions ------------------------------------------------------------

    def test_200_concurrent_sessions_relay_checksummed_data(self):
        address = self.echo_proxy()
        count = 200
        barrier = threading.Barrier(count, timeout=LONG_TIMEOUT)

        def one_session(i):
            try:
                client = WSClient(self, address, timeout=LONG_TIMEOUT)
                client.handshake(path='/session/%d' % i)
                barrier.wait()                 # all open at once before any data
                data = os.urandom(32 * KiB + i)
                for part in (data[:100], data[100:20000], data[20000:]):
                    client.send_frame(BINARY, part)
                echoed = sha256_of(client.iter_data(len(data)))
                client.send_close(1000)
                client.expect_close(1000)
                return echoed == hashlib.sha256(data).hexdigest()
            except BaseException:
                barrier.abort()
                raise
        started = time.monotonic()
        workers = [Worker(one_session, i) for i in range(count)]
        results = [w.result(max(1.0, started + LONG_TIMEOUT - time.monotonic()))
                   for w in workers]
        self.assertEqual(results, [True] * count)
        self.assertLess(time.monotonic() - started, 60)

    # -- heartbeat ----------------------------------------------------------------

    def test_heartbeat_sends_pings(self):
        client = open_session(self, self.echo_proxy('--heartbeat', '1'), timeout=5)
        started = time.monotonic()
        frame = client.recv_frame()
        self.assertEqual(frame.opcode, PING)
        self.assertLess(time.monotonic() - started, 3)
        client.send_frame(PONG, frame.payload)
        self.assertEqual(client.echo(b'still here'), b'still here')

    # -- --text-frames --------------------------------------------------------------

    def text_session(self):
        target = TargetServer(self)
        client = open_session(self, self.proxy('--text-frames', '127.0.0.1:0', target.arg))
        return client, target.accept()

    def recv_text(self, client, expected):
        """Text frames until `expected` bytes; each must be valid UTF-8 by itself."""
        got = b''
        while len(got) < len(expected):
            frame = client.recv_frame()
            self.assertEqual(frame.opcode, TEXT)
            frame.payload.decode('utf-8')
            got += frame.payload
        self.assertEqual(got, expected)

    def test_text_frames_option_sends_target_data_in_text_frames(self):
        client, conn = self.text_session()
        conn.sendall('grüße 🙂'.encode())
        self.recv_text(client, 'grüße 🙂'.encode())
        client.send_frame(BINARY, b'client to target still works')
        self.assertEqual(recv_exactly(conn, 28), b'client to target still works')

    def test_text_frames_hold_back_a_character_split_across_two_target_writes(self):
        client, conn = self.text_session()
        conn.sendall(b'caf\xc3')
        self.recv_text(client, b'caf')
        conn.sendall(b'\xa9!')
        self.recv_text(client, b'\xc3\xa9!')

    def test_text_frames_end_the_session_with_1011_on_invalid_utf8_from_target(self):
        with self.assertLogs('websockify', 'INFO') as logs:
            client, conn = self.text_session()
            conn.sendall(b'fine, then \xff\xfe')
            client.expect_close(1011)
            read_to_eof(conn)
            conn.close()
            self.wait_for_log(logs, lambda m: 'utf-8' in m.lower() or '1011' in m)


class TestPumpClosing(ProxyTestCase):

    def setUp(self):
        self.target = TargetServer(self)
        self.address = self.proxy('127.0.0.1:0', self.target.arg)

    def test_target_data_sent_right_before_it_closes_all_arrives_then_close_1000(self):
        client = open_session(self, self.address, timeout=LONG_TIMEOUT)
        conn = self.target.accept()
        data = os.urandom(4 * MiB)

        def send_and_close():
            conn.sendall(data)
            conn.close()
        sender = Worker(send_and_close)
        sender.join(2.0)       # the client reads only once the target is done, if buffers allow
        self.assertEqual(client.recv_data(len(data)), data)
        client.expect_close(1000)
        sender.result()

    def test_client_data_sent_right_before_close_all_reaches_target_then_eof(self):
        client = open_session(self, self.address, timeout=LONG_TIMEOUT)
        conn = self.target.accept()
        conn.settimeout(LONG_TIMEOUT)

        def send_and_close():
            digest = send_stream(lambda c: client.send_frame(BINARY, c), random_chunks(4 * MiB))
            client.send_close(1000)
            return digest
        sender = Worker(send_and_close)
        sender.join(2.0)       # the target reads only once the client is done, if buffers allow
        target_reads = Worker(eof_digest, conn)
        client.expect_close(1000)
        self.assertEqual(target_reads.result(), (sender.result(), 4 * MiB))

    def test_client_vanishing_without_close_ends_the_target_connection(self):
        client = open_session(self, self.address)
        conn = self.target.accept()
        client.send_frame(BINARY, b'last words')
        self.assertEqual(recv_exactly(conn, 10), b'last words')
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        client.sock.close()                        # a reset, no close frame
        self.assertEqual(read_to_eof(conn), b'')

    def test_target_reset_ends_the_client_session(self):
        client = open_session(self, self.address)
        conn = self.target.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        conn.close()
        with contextlib.suppress(EOFError, ConnectionResetError):
            code, _ = client.expect_close()
            self.assertIn(code, (1000, 1011))


#: A target for many idle sessions: one thread, selectors, echoes what it gets.
_SELECT_ECHO = r"""
import selectors, socket, sys
ls = socket.socket(); ls.bind(('127.0.0.1', 0)); ls.listen(4096); ls.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
print(ls.getsockname()[1], flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is ls:
            try:
                c, _ = ls.accept()
            except BlockingIOError:
                continue
            c.setblocking(False); sel.register(c, selectors.EVENT_READ)
        else:
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b''
            if data:
                key.fileobj.send(data)
            else:
                sel.unregister(key.fileobj); key.fileobj.close()
"""


def pss_kb(pid):
    """Proportional set size of a process, in kB (Linux smaps_rollup)."""
    with open('/proc/%d/smaps_rollup' % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith('Pss:'))


class TestPumpFairness(unittest.TestCase):
    """A large client read is decoded under FAIR_LOCK in FAIR_SLICE pieces, pausing
    between them only while another session is active; the payload is the same
    however it is cut (issue: 6 tiny-frame floods made a quiet echo take 0.3 s)."""

    def setUp(self):
        self.client, self.client_peer = socket.socketpair()
        self.target, self.target_peer = socket.socketpair()
        for sock in (self.client, self.client_peer, self.target, self.target_peer):
            self.addCleanup(sock.close)
        self.target_peer.settimeout(TIMEOUT)
        self.client_peer.settimeout(TIMEOUT)
        saved = (websockify.WAKES.last, websockify.WAKES.last_at, websockify.WAKES.other_at)

        def restore():
            websockify.WAKES.last, websockify.WAKES.last_at, websockify.WAKES.other_at = saved
        self.addCleanup(restore)
        # Every slice counts as a burst, so that a pause is due after each one.
        patcher = unittest.mock.patch.object(websockify, 'FAIR_BURST', 0.0)
        patcher.start()
        self.addCleanup(patcher.stop)

    def stream(self):
        """Client bytes over 100 KiB: 1-byte frames, pings, a fragmented message of
        1-byte fragments and frames crossing slice boundaries; and their payload."""
        rng = random.Random(7)
        frames, payload = [], bytearray()
        while sum(map(len, frames)) < 100 * 1024:
            kind = rng.randrange(6)
            if kind == 0:
                frames.append(encode_frame(0x9, b'p' * rng.randrange(126)))
                continue
            if kind == 1:
                data = os.urandom(rng.randrange(1, 12000))
                frames.append(encode_frame(0x2, data))
            elif kind == 2:
                data = os.urandom(5)
                frames.append(encode_frame(0x2, data[:1], fin=False))
                frames += [encode_frame(0x0, data[i:i + 1], fin=i == 4) for i in range(1, 5)]
            else:
                data = os.urandom(1)
                frames.append(encode_frame(0x2, data))
            payload += data
        return b''.join(frames), bytes(payload)

    def relay(self, data, length):
        """Run a Pump whose client sent `data` at once (its first read); returns
        the first `length` bytes the target gets and the pauses taken."""
        session = websockify.Session(websockify.HybiCodec())
        pump = websockify.Pump(self.client, self.target, session, initial=data)
        pauses = []
        real_sleep = time.sleep

        def sleep(seconds):
            if threading.current_thread() is thread:
                pauses.append(seconds)
            real_sleep(seconds)
        thread = threading.Thread(target=pump.run, daemon=True)
        with unittest.mock.patch.object(websockify.time, 'sleep', sleep):
            thread.start()
            got = recv_exactly(self.target_peer, length)
            self.client_peer.sendall(encode_frame(0x8, struct.pack('!H', 1000)))
            self.client_peer.shutdown(socket.SHUT_WR)
            self.target_peer.shutdown(socket.SHUT_WR)
            thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive(), 'the pump did not end')
        return got, pauses

    def test_alone_a_large_read_is_decoded_without_a_pause(self):
        data, payload = self.stream()
        websockify.WAKES.last = None                      # nobody woke yet
        websockify.WAKES.last_at = websockify.WAKES.other_at = float('-inf')
        got, pauses = self.relay(data, len(payload))
        self.assertEqual(got, payload)
        self.assertEqual(pauses, [])

    def test_with_another_session_active_it_pauses_between_slices(self):
        data, payload = self.stream()
        websockify.WAKES.note(self, time.monotonic())      # another session woke just now
        got, pauses = self.relay(data, len(payload))
        self.assertEqual(got, payload)
        slices = len(data) // websockify.FAIR_SLICE
        self.assertGreaterEqual(len(pauses), slices - 2)
        self.assertLessEqual(len(pauses), slices + 1)
        self.assertTrue(all(p == websockify.FAIR_PAUSE for p in pauses))

    def test_a_session_active_long_ago_causes_no_pause(self):
        data, payload = self.stream()
        websockify.WAKES.note(self, time.monotonic() - 2 * websockify.FAIR_WINDOW)
        got, pauses = self.relay(data, len(payload))
        self.assertEqual(got, payload)
        self.assertEqual(pauses, [])

    def test_one_bulk_decoder_at_a_time(self):
        data, payload = self.stream()
        websockify.FAIR_LOCK.acquire()
        try:
            session = websockify.Session(websockify.HybiCodec())
            pump = websockify.Pump(self.client, self.target, session, initial=data)
            thread = threading.Thread(target=pump.run, daemon=True)
            thread.start()
            # While another session holds the lock, nothing of this read moves.
            self.target_peer.settimeout(0.3)
            with self.assertRaises(socket.timeout):
                self.target_peer.recv(1)
        finally:
            websockify.FAIR_LOCK.release()
        self.target_peer.settimeout(TIMEOUT)
        self.assertEqual(recv_exactly(self.target_peer, len(payload)), payload)
        self.client_peer.sendall(encode_frame(0x8, struct.pack('!H', 1000)))
        self.client_peer.shutdown(socket.SHUT_WR)
        self.target_peer.shutdown(socket.SHUT_WR)
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive(), 'the pump did not end')


class _RecordingPoll:
    """select.poll that reports each poll() timeout to a queue, so a test can see
    what wake-up a pump scheduled before it went to sleep."""

    def __init__(self, timeouts):
        self._poll = select.poll()
        self._timeouts = timeouts
        self.register, self.unregister = self._poll.register, self._poll.unregister

    def poll(self, timeout=None):
        self._timeouts.put(timeout)
        return self._poll.poll(timeout)


class TestPumpBuffers(unittest.TestCase):
    """A read that leaves a RECV_MIN buffer empty gives it back at once, so a
    session between messages holds no buffer and schedules no wake-up (thousands
    of sessions woke together a second after a burst); a grown buffer stays for
    the traffic that grew it until BUFFER_RELEASE_IDLE seconds of silence."""

    def setUp(self):
        self.client, self.client_peer = socket.socketpair()
        self.target, self.target_peer = socket.socketpair()
        for sock in (self.client, self.client_peer, self.target, self.target_peer):
            self.addCleanup(sock.close)
            sock.settimeout(TIMEOUT)
        self.timeouts = queue.Queue()
        self.pump = websockify.Pump(self.client, self.target,
                                    websockify.Session(websockify.HybiCodec()))
        self.pump._poll = _RecordingPoll(self.timeouts)
        self.thread = threading.Thread(target=self.pump.run, daemon=True)
        self.addCleanup(self.stop)

    def stop(self):
        if self.thread.is_alive():
            self.client_peer.close()
            self.target_peer.close()
            self.thread.join(TIMEOUT)
        self.assertFalse(self.thread.is_alive(), 'the pump did not end')

    def next_sleep(self):
        """The timeout of the next poll() the pump waits in (not a poll(0))."""
        while True:
            timeout = self.timeouts.get(timeout=TIMEOUT)
            if timeout != 0:
                return timeout

    def echo(self, payload):
        self.client_peer.sendall(encode_frame(0x2, payload))
        self.assertEqual(recv_exactly(self.target_peer, len(payload)), payload)
        self.target_peer.sendall(payload)
        header = 2 if len(payload) < 126 else 4
        self.assertEqual(recv_exactly(self.client_peer, header + len(payload))[header:], payload)

    def test_small_messages_leave_no_buffer_and_no_timer(self):
        self.thread.start()
        self.assertIsNone(self.next_sleep())
        for size in (1, 100, websockify.RECV_MIN // 2):
            with self.subTest(size=size):
                self.echo(os.urandom(size))
                self.assertIsNone(self.next_sleep())        # after the client's frame
                self.assertIsNone(self.next_sleep())        # after the target's answer
        self.assertTrue(self.pump.client.buf is None, 'the client buffer was kept')
        self.assertTrue(self.pump.target.buf is None, 'the target buffer was kept')

    def test_grown_buffer_kept_until_idle_then_released(self):
        with unittest.mock.patch.object(websockify, 'BUFFER_RELEASE_IDLE', 0.2):
            self.thread.start()
            self.assertIsNone(self.next_sleep())
            payload = os.urandom(4 * websockify.RECV_MIN)
            self.client_peer.sendall(encode_frame(0x2, payload))
            self.assertEqual(recv_exactly(self.target_peer, len(payload)), payload)
            # Each read of the frame's pieces schedules the release again; once it
            # is done, the pump sleeps without a timeout.
            timeouts = [self.next_sleep()]
            while timeouts[-1] is not None or not any(timeouts):
                timeouts.append(self.next_sleep())
            scheduled = [t for t in timeouts if t is not None]
            self.assertTrue(all(0 < t <= 201 for t in scheduled), timeouts)
        self.assertTrue(self.pump.client.buf is None, 'the client buffer was kept')


@unittest.skipUnless(os.path.exists('/proc/self/smaps_rollup'), 'needs Linux /proc')
class TestPumpManyIdleSessions(ProxyTestCase):
    """Thread stacks and lazy buffers: ten thousand idle sessions fit in little memory."""

    #: Bound on the proportional memory of one idle session, in kB (20 measured
    #: on CPython 3.11; 3.6 nests the C stack once per Python call: 32).
    MAX_PSS_PER_SESSION_KB = 30 if sys.version_info >= (3, 11) else 45

    def test_ten_thousand_idle_sessions_each_echo_and_cost_little_memory(self):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = hard if hard != resource.RLIM_INFINITY else 65536
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        # The proxy holds two descriptors per session; where the hard limit is
        # below 20,000 plus a few, open as many sessions as fit.
        count = min(10000, (limit - 64) // 2)
        if count < 1000:
            self.skipTest('RLIMIT_NOFILE hard limit %d leaves room for %d sessions only'
                          % (hard, count))
        target = subprocess.Popen([sys.executable, '-c', _SELECT_ECHO],
                                  stdout=subprocess.PIPE, universal_newlines=True)
        self.addCleanup(target.stdout.close)
        self.addCleanup(target.wait, TIMEOUT)
        self.addCleanup(target.kill)
        port = int(target.stdout.readline())
        proxy = ProxyProcess(self, '127.0.0.1:0', '127.0.0.1:%d' % port)
        idle_pss = pss_kb(proxy.proc.pid)
        request = upgrade_request()
        frame = bytes((0x82, 0x81, 1, 2, 3, 4, ord('E') ^ 1))
        clients = []
        self.addCleanup(lambda: [c.close() for c in clients])
        deadline = time.monotonic() + LONG_TIMEOUT
        for _ in range(count):
            sock = socket.create_connection(proxy.address, timeout=TIMEOUT)
            clients.append(sock)
            sock.sendall(request)
            head = b''
            while b'\r\n\r\n' not in head:
                chunk = sock.recv(4096)
                self.assertTrue(chunk, 'proxy closed session %d during the handshake'
                                % len(clients))
                head += chunk
            self.assertTrue(head.startswith(b'HTTP/1.1 101'), head[:100])
            self.assertLess(time.monotonic(), deadline, 'opening sessions took too long')
        # Every session echoes, checked in batches: a burst on thousands of
        # threads at once only measures the GIL convoy (seconds for 5,000).
        for first in range(0, count, 500):
            batch = clients[first:first + 500]
            for sock in batch:
                sock.sendall(frame)
            for sock in batch:
                sock.settimeout(LONG_TIMEOUT)     # a loaded machine may be slow, not lossy
                got = b''
                while len(got) < 3:
                    chunk = sock.recv(16)
                    self.assertTrue(chunk, 'session closed before its echo')
                    got += chunk
                self.assertEqual(got, b'\x82\x01E')
        per_session = (pss_kb(proxy.proc.pid) - idle_pss) / count
        sys.stderr.write('\n  %d idle sessions: %.1f kB PSS each ... ' % (count, per_session))
        self.assertLess(per_session, self.MAX_PSS_PER_SESSION_KB)


################################################################################
# Static web server
################################################################################

class TestWebOptions(SocketFreeTestCase):
    """Parsing --web, --web-listing, --file-only and --web-auth."""

    def parse(self, argv):
        return websockify.parse_args(argv)

    def fails(self, argv, text):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as cm:
            websockify.parse_args(argv)
        self.assertEqual(cm.exception.code, 2)
        self.assertIn(text, err.getvalue())

    def test_web_is_absolute(self):
        tmp = tempfile.mkdtemp(prefix='wsweb-')
        self.addCleanup(shutil.rmtree, tmp, True)
        cwd = os.getcwd()
        os.chdir(tmp)
        self.addCleanup(os.chdir, cwd)
        os.mkdir('site')
        s = self.parse(['--web', 'site', '6080', 'h:1'])
        self.assertEqual(s.web, os.path.join(os.getcwd(), 'site'))
        self.assertFalse(s.web_listing)
        self.assertIsNone(self.parse(['6080', 'h:1']).web)

    def test_missing_directory(self):
        self.fails(['--web', '/nonexistent/dir', '6080', 'h:1'], 'not a directory')
        self.fails(['--web', SCRIPT, '6080', 'h:1'], 'not a directory')

    def test_listing_options(self):
        web = tempfile.mkdtemp(prefix='wsweb-')
        self.addCleanup(shutil.rmtree, web, True)
        self.assertTrue(self.parse(['--web', web, '--web-listing', '6080', 'h:1']).web_listing)
        self.assertFalse(self.parse(['--web', web, '--file-only', '6080', 'h:1']).web_listing)
        self.parse(['--file-only', '6080', 'h:1'])
        self.fails(['--web', web, '--file-only', '--web-listing', '6080', 'h:1'], 'contradict')
        self.assertEqual(self.parse(['--web-listing', '6080', 'h:1']).notices,
                         ('--web-listing has no effect without --web DIR: ignored',))
        self.fails(['--web', web, '--web-auth', '6080', 'h:1'], 'needs --auth-plugin')


SECRET = b'TOP-SECRET-' + os.urandom(8).hex().encode()


class TestWebPathSegments(SocketFreeTestCase):
    """The path rules of --web, before the file system is touched."""

    def test_segments(self):
        seg = websockify.web_path_segments
        self.assertEqual(seg('/'), [])
        self.assertEqual(seg('//a///b/?q=1#f'), ['a', 'b'])
        self.assertEqual(seg('/caf%C3%A9/%25'), ['caf\u00e9', '%'])
        self.assertEqual(seg('/%252e%252e'), ['%2e%2e'])          # decoded once

    def test_refusals(self):
        cases = {'x': 400, '*': 400, 'http://h/': 400, '/..': 403, '/a/./b': 403,
                 '/%2e%2e/x': 403, '/a%2fb': 403, '/a%5cb': 403, '/a\\b': 403,
                 '/%00': 403, '/%0d%0a': 403, '/%zz': 403, '/%': 403, '/%c0%ae': 403,
                 '/%ff': 403}
        for target, status in cases.items():
            with self.subTest(target=target), self.assertRaises(websockify.HTTPError) as cm:
                websockify.web_path_segments(target)
            self.assertEqual(cm.exception.status, status)


class TestWebFuzz(FuzzTestCase):
    """Property-based: web_path_segments answers any target with segments or a
    400/403, and decodes what quote() encoded."""

    @fuzz(lambda st: dict(target=st.text(st.characters(max_codepoint=255), max_size=80)))
    def test_any_target(self, target):
        # Request targets are latin-1 text (parse_request decodes the head so).
        try:
            segments = websockify.web_path_segments(target)
        except websockify.HTTPError as exc:
            self.assertIn(exc.status, (400, 403))
            return
        for segment in segments:
            self.assertNotIn(segment, ('', '.', '..'))
            self.assertFalse(set('/\\') & set(segment))
            self.assertFalse(websockify.has_control_characters(segment))

    @fuzz(lambda st: dict(segments=st.lists(st.text(
        alphabet=st.characters(blacklist_categories=('Cs', 'Cc')), min_size=1, max_size=12)
        .filter(lambda t: t not in ('.', '..') and '/' not in t and '\\' not in t),
        max_size=5), query=st.text(max_size=10)))
    def test_quoted_segments_round_trip(self, segments, query):
        target = '/' + '/'.join(urllib.parse.quote(s, safe='') for s in segments)
        if query:
            target += '?' + urllib.parse.quote(query)
        self.assertEqual(websockify.web_path_segments(target), segments)


class TestWebServer(unittest.TestCase):
    """--web DIR through real sockets: types, headers, 304, redirects, hostile paths."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='wsweb-')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # The secret lives next to the web root, including in a sibling whose
        # name shares the root's prefix (www-private vs www).
        with open(os.path.join(self.tmp, 'secret.txt'), 'wb') as f:
            f.write(SECRET)
        os.mkdir(os.path.join(self.tmp, 'www-private'))
        with open(os.path.join(self.tmp, 'www-private', 'secret.txt'), 'wb') as f:
            f.write(SECRET)
        self.root = root = os.path.join(self.tmp, 'www')
        os.mkdir(root)
        self.files = {
            'index.html': b'<!DOCTYPE html><title>index</title>root index\n',
            'app.js': b'console.log(1);\n', 'mod.mjs': b'export default 1;\n',
            'style.css': b'body{}\n', 'data.json': b'{"a": 1}\n', 'pic.svg': b'<svg/>\n',
            'pic.png': b'\x89PNG\r\n', 'pic.jpg': b'\xff\xd8\xff', 'pic.JPEG': b'\xff\xd8\xff',
            'pic.gif': b'GIF89a', 'favicon.ico': b'\x00\x00\x01\x00', 'mod.wasm': b'\x00asm',
            'font.woff': b'wOFF', 'font.woff2': b'wOF2', 'notes.txt': b'notes\n',
            'app.js.map': b'{}\n', 'feed.xml': b'<a/>\n', 'doc.pdf': b'%PDF-1.4',
            'pic.webp': b'RIFF', 'blob.bin': b'\x00\x01', 'README': b'no extension\n',
        }
        for name, data in self.files.items():
            with open(os.path.join(root, name), 'wb') as f:
                f.write(data)
        os.mkdir(os.path.join(root, 'sub'))
        with open(os.path.join(root, 'sub', 'index.html'), 'wb') as f:
            f.write(b'sub index\n')
        os.mkdir(os.path.join(root, 'docs'))               # no index.html
        with open(os.path.join(root, 'docs', '<b>&.txt'), 'wb') as f:
            f.write(b'escaped name\n')
        with open(os.path.join(root.encode(), b'docs', b'caf\xe9.txt'), 'wb') as f:
            f.write(b'latin-1 name\n')
        os.mkdir(os.path.join(root, 'evil.example'))       # for the //evil.example redirect
        os.mkdir(os.path.join(root, 'a%2e'))               # literal %2e in a name
        with open(os.path.join(root, 'a%2e', 'f.txt'), 'wb') as f:
            f.write(b'literal percent\n')
        os.symlink(os.path.join(self.tmp, 'secret.txt'), os.path.join(root, 'out.txt'))
        os.symlink(self.tmp, os.path.join(root, 'outdir'))
        os.symlink('../www-private', os.path.join(root, 'sibling'))
        os.symlink('app.js', os.path.join(root, 'alias.js'))  # inside: allowed
        os.mkdir(os.path.join(root, 'trap'))                   # index.html leading outside
        os.symlink(os.path.join(self.tmp, 'secret.txt'), os.path.join(root, 'trap', 'index.html'))
        os.mkfifo(os.path.join(root, 'fifo.txt'))
        self.port = start_proxy(self, '--web', root, '127.0.0.1:0',
                                '127.0.0.1:9').server_address[1]

    def get(self, target, method='GET', headers=(), port=None):
        response = http_request(port or self.port, target, method, headers)
        self.assertNotIn(SECRET, response.raw, 'secret leaked for %r' % (target,))
        return response

    def test_content_types(self):
        expected = {
            'index.html': 'text/html; charset=utf-8', 'app.js': 'text/javascript; charset=utf-8',
            'mod.mjs': 'text/javascript; charset=utf-8', 'style.css': 'text/css; charset=utf-8',
            'data.json': 'application/json; charset=utf-8',
            'pic.svg': 'image/svg+xml; charset=utf-8', 'pic.png': 'image/png',
            'pic.jpg': 'image/jpeg', 'pic.JPEG': 'image/jpeg', 'pic.gif': 'image/gif',
            'favicon.ico': 'image/vnd.microsoft.icon', 'mod.wasm': 'application/wasm',
            'font.woff': 'font/woff', 'font.woff2': 'font/woff2',
            'notes.txt': 'text/plain; charset=utf-8',
            'app.js.map': 'application/json; charset=utf-8',
            'feed.xml': 'application/xml; charset=utf-8', 'doc.pdf': 'application/pdf',
            'pic.webp': 'image/webp', 'blob.bin': 'application/octet-stream',
            'README': 'application/octet-stream',
            'alias.js': 'text/javascript; charset=utf-8',
        }
        for name, ctype in expected.items():
            with self.subTest(name=name):
                r = self.get('/' + name)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.header('content-type'), ctype)
                self.assertEqual(r.body, self.files[os.path.basename(name)
                                                    if name != 'alias.js' else 'app.js'])

    def test_get_headers(self):
        r = self.get('/app.js')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header('content-length'), str(len(self.files['app.js'])))
        self.assertEqual(r.header('x-content-type-options'), 'nosniff')
        self.assertEqual(r.header('cache-control'), 'no-cache')
        self.assertEqual(r.header('connection'), 'close')
        mtime = os.stat(os.path.join(self.root, 'app.js')).st_mtime
        self.assertEqual(r.header('last-modified'), email.utils.formatdate(mtime, usegmt=True))

    def test_head(self):
        get = self.get('/style.css')
        head = self.get('/style.css', 'HEAD')
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b'')
        for name in ('content-type', 'content-length', 'last-modified', 'cache-control'):
            self.assertEqual(head.header(name), get.header(name), name)
        self.assertEqual(self.get('/', 'HEAD').body, b'')

    def test_if_modified_since(self):
        path = os.path.join(self.root, 'notes.txt')
        os.utime(path, (1700000000, 1700000000))
        same = email.utils.formatdate(1700000000, usegmt=True)
        later = email.utils.formatdate(1700000100, usegmt=True)
        earlier = email.utils.formatdate(1699999999, usegmt=True)
        for value, status in ((same, 304), (later, 304), (earlier, 200), ('yesterday', 200),
                              ('Sun, 06 Nov 1994 08:49:37', 200)):
            with self.subTest(value=value):
                r = self.get('/notes.txt', headers=[('If-Modified-Since', value)])
                self.assertEqual(r.status, status)
                if status == 304:
                    self.assertEqual(r.body, b'')
                    self.assertEqual(r.header('last-modified'), same)
                    self.assertEqual(r.header('cache-control'), 'no-cache')
                else:
                    self.assertEqual(r.body, b'notes\n')
        r = self.get('/notes.txt', 'HEAD', headers=[('If-Modified-Since', same)])
        self.assertEqual(r.status, 304)

    def test_index_html_and_redirect(self):
        self.assertEqual(self.get('/').body, self.files['index.html'])
        self.assertEqual(self.get('/sub/').body, b'sub index\n')
        r = self.get('/sub')
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header('location'), '/sub/')
        r = self.get('/sub?host=x&port=1')
        self.assertEqual(r.header('location'), '/sub/?host=x&port=1')
        r = self.get('/sub', 'HEAD')
        self.assertEqual((r.status, r.header('location'), r.body), (301, '/sub/', b''))
        r = self.get('/a%252e')
        self.assertEqual(r.header('location'), '/a%252e/')
        self.assertEqual(self.get('/a%252e/f.txt').body, b'literal percent\n')

    def test_no_listing_by_default(self):
        r = self.get('/docs/')
        self.assertEqual(r.status, 404)
        self.assertNotIn(b'&.txt', r.body)

    def test_listing_when_asked(self):
        port = start_proxy(self, '--web', self.root, '--web-listing', '127.0.0.1:0',
                           '127.0.0.1:9').server_address[1]
        r = self.get('/docs/', port=port)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header('content-type'), 'text/html; charset=utf-8')
        self.assertIn(b'&lt;b&gt;&amp;.txt', r.body)
        self.assertIn(b'href="./%3Cb%3E&amp;.txt"', r.body)
        self.assertNotIn(b'<b>', r.body)
        # A name that is not UTF-8 is listed (escaped), and then refused as a path.
        self.assertIn(b'href="./caf%E9.txt"', r.body)
        self.assertEqual(self.get('/docs/caf%E9.txt', port=port).status, 403)
        # A directory with an index.html still gets it, not a listing.
        self.assertEqual(self.get('/sub/', port=port).body, b'sub index\n')
        # The listing of a directory names only what is inside it.
        self.assertEqual(self.get('/trap/', port=port).status, 200)
        self.assertEqual(self.get('/outdir/', port=port).status, 404)

    def test_other_methods_405(self):
        for method in ('POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT'):
            with self.subTest(method=method):
                r = self.get('/index.html', method)
                self.assertEqual(r.status, 405)
                self.assertEqual(r.header('allow'), 'GET, HEAD')
                self.assertNotIn(b'root index', r.body)

    def test_upgrade_never_answered_with_a_file(self):
        target = TargetServer(self, echo)
        port = start_proxy(self, '--web', self.root, '127.0.0.1:0',
                           target.arg).server_address[1]
        # A broken upgrade gets its error, not the file.
        r = self.get('/index.html', headers=[('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
                                            ('Sec-WebSocket-Version', '13')], port=port)
        self.assertEqual(r.status, 400)
        self.assertNotIn(b'root index', r.raw)
        # A good one on a file's path is a WebSocket to the target.
        ws = WSClient(self, ('127.0.0.1', port))
        ws.handshake(path='/index.html', protocols=['binary'])
        ws.send_frame(BINARY, b'ping through the file path')
        self.assertEqual(ws.recv_until(b'path'), b'ping through the file path')

    def test_other_upgrade_is_ignored(self):
        # curl --http2 on http:// offers h2c; the file server answers in HTTP/1.1.
        r = self.get('/app.js', headers=[('Connection', 'Upgrade, HTTP2-Settings'),
                                         ('Upgrade', 'h2c'), ('HTTP2-Settings', 'AAMAAABkAAQAAP__')])
        self.assertEqual((r.status, r.body), (200, self.files['app.js']))

    def test_without_web_plain_get_is_426(self):
        port = start_proxy(self, '127.0.0.1:0', '127.0.0.1:9').server_address[1]
        r = self.get('/index.html', port=port)
        self.assertEqual(r.status, 426)
        self.assertNotIn(b'root index', r.raw)

    #: (request target, expected status, expected Location or None). Each must
    #: never return the secret; 3xx Locations must stay on this host.
    HOSTILE = [
        ('/../secret.txt', 403, None),
        ('/../../../../../../etc/passwd', 403, None),
        ('/%2e%2e/secret.txt', 403, None),
        ('/%2E%2E/secret.txt', 403, None),
        ('/.%2e/secret.txt', 403, None),
        ('/%2e%2e%2fsecret.txt', 403, None),
        ('/..%2fsecret.txt', 403, None),
        ('/..%2Fsecret.txt', 403, None),
        ('/..%5csecret.txt', 403, None),
        ('/..\\secret.txt', 403, None),
        ('/sub/../../secret.txt', 403, None),
        ('/sub%2f..%2f..%2fsecret.txt', 403, None),
        ('/%252e%252e/secret.txt', 404, None),        # decoded once: a literal name
        ('/%252e%252e%252fsecret.txt', 404, None),
        ('/%c0%ae%c0%ae/secret.txt', 403, None),      # overlong UTF-8 '.'
        ('/%c0%af..%c0%afsecret.txt', 403, None),     # overlong UTF-8 '/'
        ('/%e0%80%ae%e0%80%ae/secret.txt', 403, None),
        ('/%ef%bc%8e%ef%bc%8e/secret.txt', 404, None),  # fullwidth dots: a name
        ('/..;/secret.txt', 404, None),
        ('/./index.html', 403, None),
        ('/index.html%00.txt', 403, None),
        ('/%00', 403, None),
        ('/index.html\x00', 400, None),
        ('/%0d%0aSet-Cookie:%20x=1', 403, None),
        ('/%zz', 403, None),
        ('/%', 403, None),
        ('/%2', 403, None),
        ('/out.txt', 404, None),                       # symlink to the secret
        ('/outdir/secret.txt', 404, None),             # symlinked directory outside
        ('/sibling/secret.txt', 404, None),            # www-private shares the prefix
        ('/trap/', 404, None),                         # index.html leads outside
        ('/fifo.txt', 404, None),                      # not a regular file: no hang
        ('//evil.example', 301, '/evil.example/'),
        ('///evil.example', 301, '/evil.example/'),
        ('//evil.example/%2e%2e', 403, None),
        ('/\\evil.example', 403, None),
        ('/%5cevil.example', 403, None),
        ('/%2fevil.example', 403, None),
        ('/%2F%2Fevil.example', 403, None),
        ('/\\/evil.example', 403, None),
        ('/sub?\rLocation:%20//evil', 400, None),
        ('/sub?//evil.example', 301, '/sub/?//evil.example'),
        ('/etc/passwd', 404, None),                    # absolute: relative to DIR
        ('/{tmp}/secret.txt', 404, None),               # the secret's absolute path
        ('http://evil.example/index.html', 400, None),  # absolute-form
        ('*', 400, None),
        ('/index.html?../../secret.txt', 200, None),   # the query is no path
        ('/index.html#../../secret.txt', 200, None),
        ('/index.html/', 404, None),
        ('/' + 'a' * 300, 404, None),                  # name too long for the OS
        ('/' + 'a/' * 2500, 404, None),                # path too long for the OS
        ('/' + '..%2f' * 1500 + 'secret.txt', 403, None),
        ('/' + 'a' * 9000, 414, None),                 # request line too long
    ]

    def test_hostile_paths(self):
        self.assertGreaterEqual(len(self.HOSTILE), 20)
        listing = start_proxy(self, '--web', self.root, '--web-listing', '127.0.0.1:0',
                              '127.0.0.1:9').server_address[1]
        for target, status, location in self.HOSTILE:
            target = target.replace('{tmp}', self.tmp.lstrip('/'))
            for port in (self.port, listing):
                if target == '/trap/' and port == listing:
                    continue    # a listing of trap/ names index.html, no more
                with self.subTest(target=target[:60], listing=port == listing):
                    r = self.get(target, port=port)
                    self.assertEqual(r.status, status, r.raw[:300])
                    self.assertEqual(r.header('location'), location)
                    head = r.raw.partition(b'\r\n\r\n')[0]
                    self.assertNotIn(b'\r\n\r\n', head)
                    self.assertEqual(head.count(b'\r'), head.count(b'\r\n'))
                    if location:
                        self.assertTrue(location.startswith('/'))
                        self.assertFalse(location.startswith(('//', '/\\')))

    def test_symlink_inside_is_served(self):
        self.assertEqual(self.get('/alias.js').body, self.files['app.js'])

    def test_client_gone_mid_file(self):
        """A client closing during a big file costs one log line; the server goes on."""
        with open(os.path.join(self.root, 'big.bin'), 'wb') as f:
            f.truncate(8 << 20)
        records = []
        got = threading.Event()

        class Catch(websockify.logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())
                if 'big.bin' in record.getMessage():
                    got.set()

        handler = Catch(websockify.logging.DEBUG)
        websockify.logger.addHandler(handler)
        old_level = websockify.logger.level
        websockify.logger.setLevel(websockify.logging.DEBUG)
        self.addCleanup(websockify.logger.removeHandler, handler)
        self.addCleanup(websockify.logger.setLevel, old_level)
        sock = socket.create_connection(('127.0.0.1', self.port), TIMEOUT)
        sock.sendall(b'GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n')
        self.assertTrue(sock.recv(65536))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        sock.close()            # a reset, with most of the file unsent
        self.assertTrue(got.wait(TIMEOUT + websockify.WEB_SEND_TIMEOUT))
        line = [m for m in records if 'big.bin' in m][0]
        self.assertRegex(line, r'200 GET /big\.bin, \d+ bytes: client lost')
        self.assertEqual(self.get('/notes.txt').body, b'notes\n')


class TestWebStreaming(unittest.TestCase):
    """Large files go out in bounded memory: sendfile on plain sockets, chunks on TLS."""

    SIZE = 50 << 20

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='wsweb-')
        cls.path = os.path.join(cls.tmp, 'big.bin')
        digest = hashlib.sha256()
        block = os.urandom(1 << 20)
        with open(cls.path, 'wb') as f:
            for i in range(cls.SIZE >> 20):
                chunk = bytes([i & 255]) + block[1:]
                digest.update(chunk)
                f.write(chunk)
        cls.digest = digest.hexdigest()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    @staticmethod
    def proc_status(pid):
        values = {}
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                name, _, value = line.partition(':')
                if name in ('VmRSS', 'VmHWM'):
                    values[name] = int(value.split()[0]) * 1024
        return values

    def fetch(self, port, path):
        """GET path reading it as it comes; returns (status line, length, sha256)."""
        digest = hashlib.sha256()
        with socket.create_connection(('127.0.0.1', port), TIMEOUT) as sock:
            sock.sendall(b'GET ' + path + b' HTTP/1.1\r\nHost: x\r\n\r\n')
            buf = bytearray(65536)
            head = b''
            while b'\r\n\r\n' not in head:
                n = sock.recv_into(buf)
                self.assertTrue(n, 'closed during the response head')
                head += bytes(buf[:n])
            head, _, rest = head.partition(b'\r\n\r\n')
            digest.update(rest)
            total = len(rest)
            view = memoryview(buf)
            while True:
                n = sock.recv_into(view)
                if not n:
                    break
                digest.update(view[:n])
                total += n
        return head.split(b'\r\n')[0], total, digest.hexdigest(), head

    @unittest.skipUnless(os.path.exists('/proc/self/status'), 'needs /proc')
    def test_50_mib_file_bounded_memory(self):
        proxy = ProxyProcess(self, '--web', self.tmp, '127.0.0.1:0', '127.0.0.1:9')
        port = proxy.address[1]
        before = self.proc_status(proxy.proc.pid)
        status, total, digest, head = self.fetch(port, b'/big.bin')
        after = self.proc_status(proxy.proc.pid)
        self.assertEqual(status, b'HTTP/1.1 200 OK')
        self.assertIn(b'Content-Length: %d' % self.SIZE, head)
        self.assertEqual(total, self.SIZE)
        self.assertEqual(digest, self.digest)
        growth = after['VmHWM'] - before['VmRSS']
        sys.stderr.write('\n  50 MiB file: proxy peak RSS grew by %.1f MiB (RSS %.1f -> %.1f MiB) '
                         % (growth / 2**20, before['VmRSS'] / 2**20, after['VmRSS'] / 2**20))
        self.assertLess(growth, 8 << 20)

    def test_chunked_loop_bounded_memory(self):
        """The read/send loop used for TLS sockets (a socket with a cipher())."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        class TLSLike:
            """Looks like an ssl.SSLSocket to send_file: the loop must be used."""
            def __init__(self, sock):
                self.sock = sock
                self.calls = 0

            def cipher(self):
                return ('TEST', 'TLSv1.3', 256)

            def sendall(self, data):
                self.calls += 1
                self.sock.sendall(data)

            def sendfile(self, *args):
                raise AssertionError('sendfile used on a TLS socket')

        result = {}

        def reader():
            digest, total = hashlib.sha256(), 0
            buf = bytearray(65536)
            while True:
                n = b.recv_into(buf)
                if not n:
                    break
                digest.update(memoryview(buf)[:n])
                total += n
            result.update(total=total, digest=digest.hexdigest())

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        sock = TLSLike(a)
        tracemalloc.start()
        try:
            with open(self.path, 'rb', buffering=0) as f:
                sent = websockify.send_file(sock, f, self.SIZE)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        a.shutdown(socket.SHUT_WR)
        thread.join(TIMEOUT * 3)
        self.assertEqual(sent, self.SIZE)
        self.assertEqual(result, {'total': self.SIZE, 'digest': self.digest})
        self.assertGreaterEqual(sock.calls, self.SIZE // websockify.WEB_CHUNK)
        self.assertLess(peak, 4 * websockify.WEB_CHUNK)


################################################################################
# Targets
################################################################################

class _StubRequest:
    """The three things request_token reads of a request: target, header(), headers."""

    def __init__(self, host=None, target='/websockify'):
        self.target = target
        self.headers = {'host': [host]} if host is not None else {}

    def header(self, name, default=None):
        values = self.headers.get(name)
        return ', '.join(values) if values else default


class TestTargetsHostPort(SocketFreeTestCase):
    """Every place that reads host:port text applies the same rules (no sockets)."""

    REFUSED_TARGETS = {
        'h:59_00': 'digits only', 'h: 5900': 'digits only', 'h:+5900': 'digits only',
        'h:5900 ': 'digits only', 'h:\u0665\u0669': 'digits only', 'h:0': 'not in 1-65535',
        'h:65536': 'not in 1-65535', 'h:' + '9' * 40: 'not in 1-65535', 'h:': 'no target port',
        'h': 'has no port', ':5900': 'has no host', '[]:5900': 'has no host',
        '[::1:5900': '"[" without "]"', '[::1]x:5900': 'only ":port"',
        'a[b]:5900': 'brackets', 'a b:5900': 'whitespace', 'a\tb:5900': 'control characters',
        'a\x7fb:5900': 'control characters', 'a\u200bb:5900': 'unprintable',
        'a\u00a0b:5900': 'whitespace',
    }

    def test_the_rules(self):
        parse = websockify.parse_host_port
        self.assertEqual(parse('example.com:5900'), ('example.com', 5900))
        self.assertEqual(parse('[::1]:5900'), ('::1', 5900))
        self.assertEqual(parse('fe80::1:5900'), ('fe80::1', 5900))
        self.assertEqual(parse('vnc_host-1.example:1'), ('vnc_host-1.example', 1))
        self.assertEqual(parse('h:65535'), ('h', 65535))
        self.assertEqual(parse('h:05900'), ('h', 5900))
        for text, problem in self.REFUSED_TARGETS.items():
            with self.subTest(text=text):
                with self.assertRaises(ValueError) as caught:
                    parse(text)
                self.assertIn(problem, str(caught.exception))

    def test_optional_parts(self):
        parse = websockify.parse_host_port
        self.assertEqual(parse('6080', 'listening', need_host=False, zero_port=True), ('', 6080))
        self.assertEqual(parse(':0', 'listening', need_host=False, zero_port=True), ('', 0))
        self.assertEqual(parse('[::]:0', 'listening', need_host=False, zero_port=True),
                         ('::', 0))
        self.assertEqual(parse('example.com', 'Host', need_port=False), ('example.com', None))
        self.assertEqual(parse('[::1]', 'Host', need_port=False), ('::1', None))
        with self.assertRaisesRegex(ValueError, 'invalid listening port 70000'):
            parse('70000', 'listening', need_host=False, zero_port=True)

    def test_ports_given_as_numbers(self):
        self.assertEqual(websockify.parse_port(5900), 5900)
        self.assertEqual(websockify.parse_port(0, 'listening', zero=True), 0)
        for port in (0, 65536, True, 5900.0, None, -1):
            with self.subTest(port=port), self.assertRaises(ValueError):
                websockify.parse_port(port)

    def refused_cli(self, *argv):
        with contextlib.redirect_stderr(io.StringIO()) as err, \
                self.assertRaises(SystemExit) as caught:
            websockify.parse_args(list(argv))
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(len(err.getvalue().strip().splitlines()), 1, err.getvalue())
        return err.getvalue()

    def test_command_line(self):
        settings = websockify.parse_args(['[::1]:0', '[::1]:5900'])
        self.assertEqual((settings.listen_host, settings.listen_port), ('::1', 0))
        self.assertEqual((settings.target_host, settings.target_port), ('::1', 5900))
        settings = websockify.parse_args(['6080', 'vnc_host:5900'])
        self.assertEqual((settings.listen_host, settings.target_host), ('', 'vnc_host'))
        for text, problem in self.REFUSED_TARGETS.items():
            with self.subTest(text=text):
                self.assertIn(problem, self.refused_cli('6080', text))
        self.assertIn('digits only', self.refused_cli('60_80', 'h:1'))
        self.assertIn('digits only', self.refused_cli('--syslog', 'h:5_14', '6080', 'h:1'))

    def token_file(self, lines):
        folder = tempfile.mkdtemp(prefix='host-port-')
        self.addCleanup(shutil.rmtree, folder)
        path = os.path.join(folder, 'tokens')
        with open(path, 'w') as f:
            f.write(''.join(line + '\n' for line in lines))
        return path

    def test_token_file_lines(self):
        good = {'six': ('[::1]:5900', ('::1', 5900)), 'under': ('a_b:1', ('a_b', 1)),
                'spaced': ('  h:5900  ', ('h', 5900)), 'unix': ('unix_socket:/run/s', None)}
        lines = ['%s: %s' % (token, text) for token, (text, _) in good.items()]
        # A tab ends the token; whitespace around the whole target is ignored.
        refused = ['t%d: %s' % (i, text) for i, text in enumerate(self.REFUSED_TARGETS)
                   if '\t' not in text and text == text.strip()]
        with self.assertLogs('websockify', 'WARNING') as logs:
            plugin = websockify.ReadOnlyTokenFile(self.token_file(lines + refused))
        self.assertEqual(len(logs.records), len(refused), logs.output)
        for token, (_, expected) in good.items():
            target = plugin.lookup(token)
            if expected is None:
                self.assertEqual(target.unix, '/run/s')
            else:
                self.assertEqual((target.host, target.port), expected)
        for line in refused:
            self.assertIsNone(plugin.lookup(line.partition(':')[0]), line)

    def test_redis_values(self):
        parse = websockify.TokenRedis.parse_value
        for value in (b'[::1]:5900', b'{"host": "[::1]:5900"}',
                      b'{"host": "[::1]", "port": 5900}', b'{"host": "::1", "port": "5900"}'):
            with self.subTest(value=value):
                target = parse(value)
                self.assertEqual((target.host, target.port), ('::1', 5900))
        for value in (b'h:59_00', b'h: 5900', b'{"host": "h", "port": "59_00"}',
                      b'{"host": "h:0"}', b'{"host": "a b", "port": 1}'):
            with self.subTest(value=value), self.assertRaises(ValueError):
                parse(value)

    def test_token_api_answers(self):
        text_api = websockify.BaseTokenAPI('http://127.0.0.1:9/%s')
        json_api = websockify.JSONTokenApi('http://127.0.0.1:9/%s')
        self.assertEqual(repr(text_api.parse_answer(b'[::1]:5900\n')), repr(
            websockify.Target('::1', 5900)))
        self.assertEqual(repr(json_api.parse_answer(b'{"host": "[::1]", "port": "5900"}')),
                         repr(websockify.Target('::1', 5900)))
        for api, body in ((text_api, b'h:59_00'), (text_api, b'h: 5900'),
                          (json_api, b'{"host": "h", "port": " 5900"}'),
                          (json_api, b'{"host": "h", "port": "59_00"}'),
                          (json_api, b'{"host": "h\\u0000", "port": 1}')):
            with self.subTest(body=body), self.assertRaises(ValueError):
                api.parse_answer(body)

    def test_plugin_results(self):
        class Plugin:
            def __init__(self, answer):
                self.answer = answer

            def lookup(self, token):
                return self.answer
        settings = websockify.parse_args(['--token-plugin', 'm.P', '6080'])
        request = _StubRequest(target='/?token=t')
        for answer, where in ((('[::1]', '5900'), '[::1]:5900'), ((b'h', b'1'), 'h:1'),
                              (('unix_socket', '/s'), 'unix:/s')):
            with self.subTest(answer=answer):
                target = websockify.resolve_target(request, settings, Plugin(answer))
                self.assertTrue(str(target).startswith(where + ' '), str(target))
        for answer in (('h', '59_00'), ('h', ' 1'), ('h', 0), ('h h', 1), ('h', True),
                       ('unix_socket', '/s\n'), (b'h\xff', 1)):
            with self.subTest(answer=answer), self.assertRaises(websockify.HTTPError) as caught:
                websockify.resolve_target(request, settings, Plugin(answer))
            self.assertEqual(caught.exception.status, 502)

    def test_host_token(self):
        settings = websockify.parse_args(['--target-config', 'tokens', '--host-token', '6080'])
        for host, token in (('vm1.example.com:6080', 'vm1.example.com'), ('vm_2', 'vm_2'),
                            ('[::1]:6080', '::1'), ('[fe80::1]', 'fe80::1')):
            with self.subTest(host=host):
                self.assertEqual(websockify.request_token(_StubRequest(host), settings), token)
        self.assertIsNone(websockify.request_token(_StubRequest(), settings))
        for host in ('vm:x', 'vm:60_80', 'vm:99999', '[::1', '[::1]x', 'a b:80'):
            with self.subTest(host=host), self.assertRaises(websockify.HTTPError) as caught:
                websockify.request_token(_StubRequest(host), settings)
            self.assertEqual(caught.exception.status, 400)


class TestTargets(ProxyTestCase):

    def test_unix_socket_target(self):
        path = os.path.join(self.tempdir(), 'target.sock')
        TargetServer(self, echo, unix_path=path)
        client = open_session(self, self.proxy('--unix-target', path, '127.0.0.1:0'))
        data = os.urandom(200000)
        self.assertEqual(client.echo(data), data)

    def test_ipv6_target(self):
        if not HAVE_IPV6:
            self.skipTest('no IPv6 on this host')
        target = TargetServer(self, echo, host='::1')
        client = open_session(self, self.proxy('127.0.0.1:0', target.arg))
        self.assertEqual(client.echo(b'over ::1'), b'over ::1')

    def test_unreachable_target_gets_502_and_a_log_line_naming_it(self):
        port = free_port()
        address = self.proxy('127.0.0.1:0', '127.0.0.1:%d' % port)
        with self.assertLogs('websockify', 'INFO') as logs:
            self.refused(address, upgrade_request(), 502)
            self.wait_for_log(logs, lambda m: '127.0.0.1:%d' % port in m)
            self.assertTrue(any('Connection refused' in line for line in logs.output),
                            logs.output)

    def test_target_connect_leaves_the_socket_as_the_pump_wants_it(self):
        target = TargetServer(self, echo)
        sock, where = websockify.open_target(websockify.Target('127.0.0.1', target.port))
        self.addCleanup(sock.close)
        self.assertEqual(sock.gettimeout(), 0.0)        # non-blocking, no switch to come
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
        self.assertEqual(sock.getpeername(), ('127.0.0.1', target.port))

    def test_target_that_never_answers_times_out(self):
        # A listener whose backlog is full drops further SYNs: their connect waits.
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(('127.0.0.1', 0))
        listener.listen(0)
        for _ in range(64):
            queued = socket.socket()
            self.addCleanup(queued.close)
            queued.setblocking(False)
            if queued.connect_ex(listener.getsockname()) != 0:
                break                   # this one waits: the backlog is full
        else:
            self.skipTest('the backlog never filled')
        started = time.monotonic()
        with unittest.mock.patch.object(websockify, 'CONNECT_TIMEOUT', 0.3), \
                self.assertRaises(websockify.HTTPError) as caught:
            websockify.open_target(websockify.Target('127.0.0.1', listener.getsockname()[1]))
        self.assertTrue(0.3 <= time.monotonic() - started < TIMEOUT)
        self.assertEqual(caught.exception.status, 502)
        self.assertIn('timed out', caught.exception.reason)


class TLSEchoServer(TargetServer):
    """A TLS echo target: the server side of TLS with `context`, then an echo (after
    `greeting`, when given). Records the SNI names asked for and the handshakes."""

    def __init__(self, testcase, context, greeting=None):
        self.context = context
        self.greeting = greeting
        self.server_names = []
        self.errors = []
        #: Set once a TLS handshake with the proxy has completed.
        self.handshake_done = threading.Event()
        if hasattr(context, 'sni_callback'):
            context.sni_callback = self._sni
        else:                                   # Python 3.6
            context.set_servername_callback(self._sni)
        super().__init__(testcase, self._serve_tls, conn_timeout=TIMEOUT)

    def _sni(self, sslobj, name, ctx):
        self.server_names.append(name)

    def _serve_tls(self, sock):
        try:
            with self.context.wrap_socket(sock, server_side=True) as conn:
                self._open.append(conn)            # stop() shuts it down too
                self.handshake_done.set()
                if self.greeting:
                    conn.sendall(self.greeting)
                echo(conn)
        except (OSError, ValueError) as exc:
            self.errors.append(exc)


class TestTargetsTLS(unittest.TestCase):
    """--ssl-target: verification, SNI, opt-out, and relaying through TLS."""

    def setUp(self):
        self.pki = get_pki()

    def tls_target(self, pair, greeting=None, minimum=None):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*pair)
        if minimum is not None:
            ctx.minimum_version = minimum
        return TLSEchoServer(self, ctx, greeting)

    def proxy(self, target, host, *args):
        server = start_proxy(self, '--ssl-target', *args,
                             '127.0.0.1:0', '%s:%d' % (host, target.port))
        return server.server_address[1]

    def test_verified_target_with_sni(self):
        target = self.tls_target(self.pki.server)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        ws = open_session(self, port, protocols=['binary'])
        ws.send_frame(BINARY, b'verified')
        self.assertEqual(ws.recv_data(8), b'verified')
        self.assertEqual(target.server_names, ['localhost'])

    def refused(self, port):
        with LogWatch(self) as logs:
            answer = http_exchange(port, UPGRADE)
        self.assertTrue(answer.startswith(b'HTTP/1.1 502 '), answer)
        return answer.decode('latin-1'), logs.output

    def test_wrong_ca_fails_clearly(self):
        target = self.tls_target(self.pki.server)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca2[0])
        answer, logs = self.refused(port)
        self.assertIn('certificate verify failed', answer)
        self.assertTrue(any('certificate verify failed' in r for r in logs), logs)

    def test_system_cas_by_default(self):
        target = self.tls_target(self.pki.server)
        answer, _ = self.refused(self.proxy(target, 'localhost'))
        self.assertIn('certificate verify failed', answer)

    def test_wrong_name_fails_clearly(self):
        target = self.tls_target(self.pki.other)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        answer, _ = self.refused(port)
        self.assertIn('certificate verify failed', answer)
        self.assertIn('localhost', answer)

    def test_insecure_opt_out(self):
        target = self.tls_target(self.pki.selfsigned)
        port = self.proxy(target, '127.0.0.1', '--ssl-target-insecure')
        ws = open_session(self, port, protocols=['binary'])
        ws.send_frame(BINARY, b'self-signed')
        self.assertEqual(ws.recv_data(11), b'self-signed')

    @unittest.skipUnless(hasattr(ssl, 'TLSVersion'), 'TLS versions need Python 3.7+')
    def test_tls13_target_that_waits_for_the_client(self):
        target = self.tls_target(self.pki.server, minimum=ssl.TLSVersion.TLSv1_3)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        ws = open_session(self, port, protocols=['binary'])
        # Neither side has sent data yet, yet the handshake must be complete.
        self.assertTrue(target.handshake_done.wait(TIMEOUT))
        ws.send_frame(BINARY, b'you first')
        self.assertEqual(ws.recv_data(9), b'you first')

    def test_decrypted_bytes_held_by_openssl_are_relayed(self):
        # One full 16 KiB TLS record; the proxy's first read takes half of it and
        # the kernel then has nothing more: only sock.pending() tells.
        greeting = os.urandom(16384)
        target = self.tls_target(self.pki.server, greeting=greeting)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        ws = open_session(self, port, protocols=['binary'])
        ws.sock.settimeout(3.0)      # the target waits 10 s before giving up on us
        self.assertEqual(ws.recv_data(len(greeting)), greeting)

    def test_4mib_both_ways_through_a_tls_target(self):
        target = self.tls_target(self.pki.server)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        ws = open_session(self, port, protocols=['binary'])
        total = 4 << 20
        data = os.urandom(total)
        result = {}

        def reader():
            try:
                result['got'] = ws.recv_data(total)
            except Exception as exc:
                result['error'] = exc
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        for pos in range(0, total, 100000):
            ws.send_frame(BINARY, data[pos:pos + 100000])
        thread.join(60)
        self.assertFalse(thread.is_alive())
        self.assertNotIn('error', result)
        self.assertEqual(hashlib.sha256(result['got']).digest(), hashlib.sha256(data).digest())


################################################################################
# Token plugins
################################################################################

class TestTokenOptions(SocketFreeTestCase):
    """parse_args: the token options into Settings."""

    def test_token_options_reach_settings(self):
        settings = websockify.parse_args(['--target-config', 'tokens', '--host-token', '6080'])
        self.assertEqual((settings.token_plugin, settings.token_source, settings.host_token),
                         ('TokenFile', os.path.abspath('tokens'), True))
        self.assertIsNone(settings.target_host)


class TestTokenFileFuzz(FuzzTestCase):
    """Property-based: the token-file parser takes any text (bad lines skipped,
    never an exception) and reads back the entries it is given."""

    def setUp(self):
        super().setUp()
        self.folder = tempfile.mkdtemp(prefix='wsfy-')
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.path = os.path.join(self.folder, 'tokens')

    def load(self, text):
        with open(self.path, 'w', encoding='utf-8', errors='surrogatepass') as f:
            f.write(text)
        logger = logging.getLogger('websockify')
        logger.addHandler(_NULL_HANDLER)
        propagate, logger.propagate = logger.propagate, False
        try:
            return websockify.ReadOnlyTokenFile(self.path)
        finally:
            logger.propagate = propagate
            logger.removeHandler(_NULL_HANDLER)

    @fuzz(lambda st: dict(text=st.text(
        alphabet=st.characters(blacklist_categories=('Cs',)), max_size=300)))
    def test_any_text(self, text):
        plugin = self.load(text)
        for token in text.split():
            target = plugin.lookup(token)
            self.assertTrue(target is None or isinstance(target, websockify.Target))

    @fuzz(lambda st: dict(entries=st.dictionaries(
        st.text(alphabet='abcdefghijklmnopqrstuvwxyz0123456789-_.~', min_size=1,
                max_size=12),
        st.tuples(st.sampled_from(['127.0.0.1', 'example.com', '[::1]', 'a-b.c']),
                  st.integers(1, 65535)), max_size=8),
        noise=st.lists(st.sampled_from(['# comment', '', '   ', 'no separator',
                                        'x:1:2', ': empty token']), max_size=4)))
    def test_entries_read_back(self, entries, noise):
        lines = ['%s: %s:%d' % (token, host, port) for token, (host, port) in entries.items()]
        plugin = self.load('\n'.join(noise + lines + noise))
        for token, (host, port) in entries.items():
            target = plugin.lookup(token)
            self.assertEqual((target.host, target.port), (host.strip('[]'), port))


def named_echo(name):
    """Target behaviour: send `name`, then echo."""
    def handler(sock):
        sock.sendall(name)
        echo(sock)
    return handler


def token_path(token):
    return '/websockify?token=' + urllib.parse.quote(token, safe='')


class TokenTestCase(ProxyTestCase):
    """Named echo targets and clients that check which one they reached."""

    def target(self, name, **options):
        return TargetServer(self, named_echo(name), **options)

    def token_file(self, lines, folder=None, name='tokens.cfg'):
        path = os.path.join(folder or self.tempdir(), name)
        with open(path, 'w') as f:
            f.write(''.join(line + '\n' for line in lines))
        return path

    def reaches(self, address, name, path='/', extra=()):
        """Handshake, expect the target's name, then one echo through it."""
        client = WSClient(self, address)
        client.handshake(path=path, extra=extra)
        self.assertEqual(client.recv_data(len(name)), name)
        self.assertEqual(client.echo(b'through ' + name), b'through ' + name)
        client.send_close(1000)
        client.expect_close()

    def refused_token(self, address, path, status, extra=()):
        return self.refused(address, upgrade_request(path=path, extra=extra), status)


class TestTokenFiles(TokenTestCase):

    def test_each_token_reaches_its_own_target(self):
        one, two = self.target(b'one'), self.target(b'two')
        unix = os.path.join(self.tempdir(), 'three.sock')
        self.target(b'three', unix_path=unix)
        lines = ['# targets', '', 'one: %s' % one.arg, 'two:\t%s' % two.arg,
                 '  three: unix_socket:%s  ' % unix, 'not a token line']
        with self.assertLogs('websockify', 'INFO') as logs:
            address = self.proxy('--target-config', self.token_file(lines), '127.0.0.1:0')
            self.reaches(address, b'one', token_path('one'))
            self.reaches(address, b'two', token_path('two'))
            self.reaches(address, b'three', token_path('three'))
            self.wait_for_log(logs, lambda m: 'session open' in m
                              and '%s (token one)' % one.arg in m)
        self.assertTrue(any('line 6' in r.getMessage() for r in logs.records), logs.output)

    def test_ipv6_target_in_brackets(self):
        try:
            target = self.target(b'six', host='::1')
        except OSError:
            self.skipTest('no IPv6 on this host')
        path = self.token_file(['six: [::1]:%d' % target.port])
        address = self.proxy('--token-plugin', 'ReadOnlyTokenFile', '--token-source', path,
                             '127.0.0.1:0')
        self.reaches(address, b'six', token_path('six'))

    def test_directory_of_token_files(self):
        one, two = self.target(b'one'), self.target(b'two')
        folder = self.tempdir()
        self.token_file(['one: %s' % one.arg], folder, 'a.conf')
        self.token_file(['two: %s' % two.arg], folder, 'b.conf')
        address = self.proxy('--token-plugin', 'websockify.token_plugins.TokenFile',
                             '--token-source', folder, '127.0.0.1:0')
        self.reaches(address, b'two', token_path('two'))
        self.reaches(address, b'one', token_path('one'))
        three = self.target(b'three')
        self.token_file(['three: %s' % three.arg], folder, 'c.conf')
        self.reaches(address, b'three', token_path('three'))

    def test_token_file_edit_takes_effect_without_restart(self):
        old, new = self.target(b'old'), self.target(b'new')
        path = self.token_file(['vm: %s' % old.arg])
        address = self.proxy('--token-plugin', 'TokenFile', '--token-source', path,
                             '127.0.0.1:0')
        self.reaches(address, b'old', token_path('vm'))
        self.token_file(['# moved', 'vm: %s' % new.arg], os.path.dirname(path))
        self.reaches(address, b'new', token_path('vm'))
        os.unlink(path)                     # a token file that is gone: the back end failed
        self.refused_token(address, token_path('vm'), 502)

    def test_unreachable_token_target_is_named_in_the_log_only(self):
        port = free_port()
        path = self.token_file(['dead: 127.0.0.1:%d' % port])
        address = self.proxy('--target-config', path, '127.0.0.1:0')
        with self.assertLogs('websockify', 'INFO') as logs:
            response = self.refused_token(address, token_path('dead'), 502)
            self.assertIn(b'cannot connect to the target of this token', response.body)
            self.assertNotIn(str(port).encode(), response.body)
            self.wait_for_log(logs, lambda m: '502' in m and '127.0.0.1:%d' % port in m
                              and 'token dead' in m)

    def test_a_malformed_request_url_is_answered_not_raised(self):
        target = self.target(b'odd')
        path = self.token_file(['a: %s' % target.arg])
        address = self.proxy('--target-config', path, '127.0.0.1:0')
        self.reaches(address, b'odd', '//[x?token=a')     # urlsplit would raise here
        self.refused_token(address, '//[x?token=b', 404)

    def test_read_only_token_file_keeps_what_it_read(self):
        old, new = self.target(b'old'), self.target(b'new')
        path = self.token_file(['vm: %s' % old.arg])
        address = self.proxy('--token-plugin', 'ReadOnlyTokenFile', '--token-source', path,
                             '127.0.0.1:0')
        self.token_file(['# moved', 'vm: %s' % new.arg, 'other: %s' % new.arg],
                        os.path.dirname(path))
        self.reaches(address, b'old', token_path('vm'))
        self.refused_token(address, token_path('other'), 404)

    def test_unknown_and_missing_tokens_get_404_and_a_log_line(self):
        target = self.target(b'one')
        address = self.proxy('--target-config', self.token_file(['one: %s' % target.arg]),
                             '127.0.0.1:0')
        with self.assertLogs('websockify', 'INFO') as logs:
            response = self.refused_token(address, token_path('no\nsuch'), 404)
            self.assertIn(b'unknown token', response.body)
            self.assertNotIn(b'no\nsuch', response.body)
            line = self.wait_for_log(logs, lambda m: 'unknown token' in m)
            self.assertIn('no\\nsuch', line)
            self.assertNotIn('\n', line)
            response = self.refused_token(address, '/websockify', 404)
            self.assertIn(b'token', response.body)
        self.assertEqual(len(target._open), 0, 'the target was connected to')

    def test_token_in_a_cookie(self):
        one, two = self.target(b'one'), self.target(b'two')
        address = self.proxy('--target-config', self.token_file(
            ['one: %s' % one.arg, 'two: %s' % two.arg]), '127.0.0.1:0')
        self.reaches(address, b'two', '/websockify', [('Cookie', 'theme=dark; token=two')])
        # The query parameter wins over the cookie.
        self.reaches(address, b'one', token_path('one'), [('Cookie', 'token=two')])

    def test_host_token(self):
        one, two = self.target(b'one'), self.target(b'two')
        address = self.proxy('--target-config', self.token_file(
            ['vm1.example.com: %s' % one.arg, 'vm2.example.com: %s' % two.arg]),
            '--host-token', '127.0.0.1:0')
        for host, name in (('vm1.example.com:6080', b'one'), ('vm2.example.com', b'two')):
            client = WSClient(self, address)
            client.send(upgrade_request(path=token_path('vm1.example.com'),
                                        replace={'Host': host}))
            self.assertEqual(client.read_response().status, 101)
            self.assertEqual(client.recv_data(len(name)), name)
        self.refused(address, upgrade_request(replace={'Host': 'vm3.example.com'}), 404)

    def test_hixie_75_client_reaches_its_token_target(self):
        target = self.target(b'old browser')
        address = self.proxy('--target-config', self.token_file(['h: %s' % target.arg]),
                             '127.0.0.1:0')
        client = WSClient(self, address)
        client.send(b'GET /websockify?token=h HTTP/1.1\r\nUpgrade: WebSocket\r\n'
                    b'Connection: Upgrade\r\nHost: localhost\r\nOrigin: http://localhost\r\n\r\n')
        self.assertEqual(client.read_response().status, 101)
        self.assertEqual(client.read_exactly(1), b'\x00')
        frame = client.read_until(b'\xff')
        self.assertEqual(base64.b64decode(frame[:-1]), b'old browser')

    def test_concurrent_sessions_each_reach_their_target(self):
        targets = [self.target(b'target %d' % i) for i in range(8)]
        address = self.proxy('--target-config', self.token_file(
            ['t%d: %s' % (i, t.arg) for i, t in enumerate(targets)]), '127.0.0.1:0')
        errors = queue.Queue()

        def run(i):
            try:
                self.reaches(address, b'target %d' % i, token_path('t%d' % i))
            except BaseException as exc:
                errors.put(exc)
        threads = [threading.Thread(target=run, args=(i % 8,)) for i in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        self.assertTrue(errors.empty(), errors.queue and errors.queue[0])

    def test_tls_client_and_tls_target_named_by_token(self):
        folder = self.tempdir()
        cert, key = os.path.join(folder, 'cert.pem'), os.path.join(folder, 'key.pem')
        made = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                               '-keyout', key, '-out', cert, '-days', '2', '-subj',
                               '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
        self.assertEqual(made.returncode, 0, made.stderr)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)

        def tls_echo(sock):
            with server_ctx.wrap_socket(sock, server_side=True) as tls:
                tls.sendall(b'secret')
                echo(tls)
        target = TargetServer(self, tls_echo)
        tokens = self.token_file(['vm: localhost:%d' % target.port])
        address = self.proxy('--cert', cert, '--key', key, '--ssl-target',
                             '--ssl-target-cafile', cert, '--target-config', tokens,
                             '127.0.0.1:0')
        client_ctx = ssl.create_default_context(cafile=cert)
        client = WSClient(self, address, context=client_ctx)
        client.handshake(path=token_path('vm'))
        self.assertEqual(client.recv_data(6), b'secret')
        self.assertEqual(client.echo(b'both ways'), b'both ways')

    def test_websockets_library_client_through_a_token(self):
        sync_client = import_optional('websockets.sync.client', 'pip install websockets')
        target = self.target(b'lib')
        address = self.proxy('--target-config', self.token_file(['lib: %s' % target.arg]),
                             '127.0.0.1:0')
        url = 'ws://127.0.0.1:%d/websockify?token=lib' % address[1]
        with sync_client.connect(url, subprotocols=['binary'], open_timeout=TIMEOUT) as ws:
            self.assertEqual(ws.recv(TIMEOUT), b'lib')
            ws.send(b'\x00\x01binary')
            self.assertEqual(ws.recv(TIMEOUT), b'\x00\x01binary')


class TestTokenUnixSocketDirectory(TokenTestCase):

    def test_token_names_a_socket_and_cannot_leave_the_directory(self):
        outer = self.tempdir()
        folder = os.path.join(outer, 'sockets')
        os.mkdir(folder)
        self.target(b'vm1', unix_path=os.path.join(folder, 'vm1'))
        self.target(b'outside', unix_path=os.path.join(outer, 'outside'))
        with open(os.path.join(folder, 'plain-file'), 'w'):
            pass
        address = self.proxy('--token-plugin', 'UnixDomainSocketDirectory',
                             '--token-source', folder, '127.0.0.1:0')
        self.reaches(address, b'vm1', token_path('vm1'))
        for token in ('../outside', '..', 'a/../../outside', 'vm1\0'):
            with self.subTest(token=token):
                self.refused_token(address, token_path(token), 400)
        self.refused_token(address, token_path('plain-file'), 404)
        self.refused_token(address, token_path('absent'), 404)


class ThreadingHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """http.server's threading server (its own class from Python 3.7 on)."""

    daemon_threads = True


class _ApiHandler(http.server.BaseHTTPRequestHandler):
    """GET /api/TOKEN: the table of the server, as JSON or as host:port text."""

    def do_GET(self):
        token = urllib.parse.unquote(self.path[len('/api/'):])
        self.server.asked.append(token)
        if token == 'broken':
            self.send_error(500)
            return
        if token == 'huge':
            body = b'x' * (websockify.TOKEN_ANSWER_MAX + 10)
        elif token not in self.server.table:
            self.send_error(404)
            return
        else:
            host, port = self.server.table[token]
            body = (json.dumps({'host': host, 'port': port}).encode() if self.server.as_json
                    else ('%s:%d' % (host, port)).encode())
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TestTokenApi(TokenTestCase):

    def api(self, table, as_json):
        server = ThreadingHTTPServer(('127.0.0.1', 0), _ApiHandler)
        server.table, server.as_json, server.asked = table, as_json, []
        thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                                  daemon=True)
        thread.start()

        def stop():
            server.shutdown()
            server.server_close()
            thread.join(TIMEOUT)
        self.addCleanup(stop)
        return server, 'http://127.0.0.1:%d/api/%%s' % server.server_address[1]

    def test_json_token_api(self):
        target = self.target(b'from api')
        server, url = self.api({'vm/1': ('127.0.0.1', target.port)}, as_json=True)
        address = self.proxy('--token-plugin', 'JSONTokenApi', '--token-source', url,
                             '127.0.0.1:0')
        self.reaches(address, b'from api', token_path('vm/1'))
        self.assertEqual(server.asked, ['vm/1'])      # quoted on the way: one path segment
        self.refused_token(address, token_path('unknown'), 404)
        with self.assertLogs('websockify', 'INFO') as logs:
            response = self.refused_token(address, token_path('broken'), 502)
            self.assertNotIn(url.encode()[:20], response.body)
            self.wait_for_log(logs, lambda m: '502' in m and 'answered 500' in m)
            self.refused_token(address, token_path('huge'), 502)

    def test_plain_token_api_and_api_down(self):
        target = self.target(b'plain')
        server, url = self.api({'vm': ('127.0.0.1', target.port)}, as_json=False)
        address = self.proxy('--token-plugin', 'BaseTokenAPI', '--token-source', url,
                             '127.0.0.1:0')
        self.reaches(address, b'plain', token_path('vm'))
        down = self.proxy('--token-plugin', 'JSONTokenApi', '--token-source',
                          'http://127.0.0.1:%d/%%s' % free_port(), '127.0.0.1:0')
        self.refused_token(down, token_path('vm'), 502)

    def test_password_in_the_api_url_stays_out_of_the_log(self):
        down = self.proxy('--token-plugin', 'JSONTokenApi', '--token-source',
                          'http://bob:hunter2@127.0.0.1:%d/%%s' % free_port(), '127.0.0.1:0')
        with self.assertLogs('websockify', 'INFO') as logs:
            self.refused_token(down, token_path('vm'), 502)
            self.wait_for_log(logs, lambda m: '502' in m and 'token API at 127.0.0.1:' in m)
        self.assertNotIn('hunter2', ' '.join(r.getMessage() for r in logs.records))
        self.assertNotIn('bob', ' '.join(r.getMessage() for r in logs.records))


def redis_call(port, *args, password=None, db=0):
    """Run one command on the test's redis-server (own RESP client); the reply line."""
    commands = ([('AUTH', password)] if password else []) + [('SELECT', str(db)), args]
    data = b''
    for command in commands:
        data += b'*%d\r\n' % len(command)
        for arg in command:
            arg = arg.encode() if isinstance(arg, str) else arg
            data += b'$%d\r\n%s\r\n' % (len(arg), arg)
    with socket.create_connection(('127.0.0.1', port), TIMEOUT) as sock:
        sock.sendall(data)
        reader = sock.makefile('rb')
        for _ in commands:
            line = reader.readline()
            if not line.startswith(b'+'):
                raise AssertionError('redis answered %r' % line)
    return line


class RedisServer:
    """redis-server on a free loopback port, with a password, stopped in cleanup."""

    PASSWORD = 'pa55'

    def __init__(self, testcase):
        program = shutil.which('redis-server')
        require('redis-server', program, 'apt-get install redis-server')
        folder = testcase.tempdir()
        for _ in range(3):
            with socket.socket() as probe:
                probe.bind(('127.0.0.1', 0))
                self.port = probe.getsockname()[1]
            self.proc = subprocess.Popen(
                [program, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
                 '--appendonly', 'no', '--dir', folder, '--requirepass', self.PASSWORD,
                 '--logfile', ''], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT)
            testcase.addCleanup(self.stop)
            ready = queue.Queue()
            threading.Thread(target=self._watch, args=(ready,), daemon=True).start()
            try:
                if ready.get(timeout=TIMEOUT):
                    return
            except queue.Empty:
                testcase.fail('redis-server did not start within %s s' % TIMEOUT)
            self.stop()                      # the port was taken meanwhile: another one
        testcase.fail('redis-server could not listen on a free port')

    def _watch(self, ready):
        for line in self.proc.stdout:
            if b'Ready to accept connections' in line:
                ready.put(True)
        ready.put(False)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        self.proc.stdout.close()

    def set(self, key, value, db=0):
        redis_call(self.port, 'SET', key, value, password=self.PASSWORD, db=db)


class TestTokenRedis(TokenTestCase):

    def test_json_and_plain_values_password_db_and_namespace(self):
        redis = RedisServer(self)
        one, two, three = self.target(b'one'), self.target(b'two'), self.target(b'three')
        redis.set('app:vnc:one', json.dumps({'host': '127.0.0.1', 'port': str(one.port)}),
                  db=3)
        redis.set('app:vnc:two', json.dumps({'host': '127.0.0.1:%d' % two.port}), db=3)
        redis.set('app:vnc:three', ' 127.0.0.1:%d\n' % three.port, db=3)
        redis.set('app:vnc:junk', '{"port": 1}', db=3)
        source = '127.0.0.1:%d:3:%s:app:vnc' % (redis.port, redis.PASSWORD)
        address = self.proxy('--token-plugin', 'TokenRedis', '--token-source', source,
                             '127.0.0.1:0')
        self.reaches(address, b'one', token_path('one'))
        self.reaches(address, b'two', token_path('two'))
        self.reaches(address, b'three', token_path('three'))
        self.refused_token(address, token_path('four'), 404)
        self.refused_token(address, token_path('junk'), 502)

    def test_wrong_password_and_redis_down_get_502_without_the_password(self):
        redis = RedisServer(self)
        redis.set('vm', '127.0.0.1:9')
        address = self.proxy('--token-plugin', 'TokenRedis', '--token-source',
                             '127.0.0.1:%d::wrong-secret' % redis.port, '127.0.0.1:0')
        with self.assertLogs('websockify', 'INFO') as logs:
            response = self.refused_token(address, token_path('vm'), 502)
            line = self.wait_for_log(logs, lambda m: '502' in m)
        self.assertNotIn(b'wrong-secret', response.body)
        self.assertNotIn('wrong-secret', line)
        self.assertIn('Redis at 127.0.0.1:%d' % redis.port, line)
        redis.stop()
        self.refused_token(address, token_path('vm'), 502)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def make_jwt(key, claims, alg='HS256'):
    """A JWS compact token (RFC 7515 §7.1), signed here independently of websockify."""
    head = b64url(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())
    body = b64url(json.dumps(claims).encode())
    digest = {'HS256': hashlib.sha256, 'HS384': hashlib.sha384,
              'HS512': hashlib.sha512}.get(alg, hashlib.sha256)
    signature = hmac.new(key, ('%s.%s' % (head, body)).encode(), digest).digest()
    return '%s.%s.%s' % (head, body, b64url(signature))


class TestTokenJWT(TokenTestCase):

    #: Upstream's key files hold the secret as a JWK "k" value (base64url).
    SECRET_TEXT = 'secret_sauce_secret_sauce_secret_sauce_secret_sauce'

    def setUp(self):
        self.key_file = os.path.join(self.tempdir(), 'jwt.key')
        with open(self.key_file, 'w') as f:
            f.write(self.SECRET_TEXT + '\n')
        self.key = base64.urlsafe_b64decode(self.SECRET_TEXT + '=')
        self.target_server = self.target(b'jwt')
        self.address = self.proxy('--token-plugin', 'JWTTokenApi', '--token-source',
                                  self.key_file, '127.0.0.1:0')

    def claims(self, **extra):
        claims = {'host': '127.0.0.1', 'port': self.target_server.port}
        claims.update(extra)
        return claims

    def test_valid_tokens(self):
        now = int(time.time())
        for alg in ('HS256', 'HS384', 'HS512'):
            with self.subTest(alg=alg):
                token = make_jwt(self.key, self.claims(nbf=now - 60, exp=now + 60), alg)
                self.reaches(self.address, b'jwt', token_path(token))

    def test_refused_tokens_get_403(self):
        now = int(time.time())
        good = make_jwt(self.key, self.claims())
        head, body, _ = good.split('.')
        cases = {
            'expired': (make_jwt(self.key, self.claims(exp=now - 5)), b'expired'),
            'not yet': (make_jwt(self.key, self.claims(nbf=now + 600)), b'not valid yet'),
            'bad signature': (make_jwt(b'another key', self.claims()), b'signature'),
            'claims changed': ('%s.%s.%s' % (head, b64url(json.dumps(self.claims(
                port=1)).encode()), good.split('.')[2]), b'signature'),
            'RS256': (make_jwt(self.key, self.claims(), 'RS256'), b'HMAC'),
            'not a JWT': ('plain-token', b'not a JWT'),
            'JWE': ('a.b.c.d.e', b'JWE'),
            'non-ASCII claims': ('%s.\u00e9t\u00e9.%s' % (head, good.split('.')[2]),
                                 b'not a JWT'),
            'alg not a string': ('%s.%s.%s' % (b64url(b'{"alg": []}'), body,
                                               good.split('.')[2]), b'HMAC'),
        }
        for name, (token, reason) in cases.items():
            with self.subTest(name):
                response = self.refused_token(self.address, token_path(token), 403)
                self.assertIn(reason, response.body)
                self.assertNotIn(self.SECRET_TEXT.encode(), response.body)

    def public_key_proxy(self, public_key):
        """A proxy whose JWTTokenApi key file holds this cryptography public key."""
        serialization = import_optional('cryptography.hazmat.primitives.serialization',
                                        'pip install cryptography')
        pem = os.path.join(self.tempdir(), 'public.pem')
        with open(pem, 'wb') as f:
            f.write(public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo))
        return self.proxy('--token-plugin', 'JWTTokenApi', '--token-source', pem,
                          '127.0.0.1:0')

    def test_public_keys_from_an_independent_signer(self):
        pyjwt = import_optional('jwt', 'pip install pyjwt cryptography')
        asym = import_optional('cryptography.hazmat.primitives.asymmetric',
                               'pip install cryptography')
        rsa_key = asym.rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_keys = {'ES256': asym.ec.generate_private_key(asym.ec.SECP256R1()),
                   'ES384': asym.ec.generate_private_key(asym.ec.SECP384R1())}
        cases = [(alg, rsa_key) for alg in ('RS256', 'RS512', 'PS256')] + list(ec_keys.items())
        for alg, key in cases:
            with self.subTest(alg=alg):
                address = self.public_key_proxy(key.public_key())
                token = pyjwt.encode(self.claims(exp=int(time.time()) + 60), key, algorithm=alg)
                self.reaches(address, b'jwt', token_path(token))
                # Another key's signature, an HMAC token and a JWE are refused.
                other = (asym.ec.generate_private_key(key.curve) if alg.startswith('ES')
                         else asym.rsa.generate_private_key(public_exponent=65537,
                                                            key_size=2048))
                forged = pyjwt.encode(self.claims(), other, algorithm=alg)
                response = self.refused_token(address, token_path(forged), 403)
                self.assertIn(b'signature does not match', response.body)
                response = self.refused_token(
                    address, token_path(make_jwt(b'x', self.claims(), 'HS256')), 403)
                self.assertIn(b'HS256', response.body)
                response = self.refused_token(address, token_path('a.b.c.d.e'), 403)
                self.assertIn(b'JWE', response.body)

    def test_bad_pem_keys_are_usage_errors(self):
        asym = import_optional('cryptography.hazmat.primitives.asymmetric',
                               'pip install cryptography')
        serialization = import_optional('cryptography.hazmat.primitives.serialization',
                                        'pip install cryptography')
        small = asym.rsa.generate_private_key(public_exponent=65537, key_size=1024)
        cases = {'1024 bits': small.public_key().public_bytes(
                     serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                 'malformed DER': b'-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n'
                                  b'-----END PUBLIC KEY-----\n'}
        for problem, pem in cases.items():
            with self.subTest(problem=problem):
                path = os.path.join(self.tempdir(), 'key.pem')
                with open(path, 'wb') as f:
                    f.write(pem)
                with self.assertRaises(websockify.UsageError) as caught:
                    websockify.prepare(websockify.parse_args([
                        '--token-plugin', 'JWTTokenApi', '--token-source', path, '6080']))
                self.assertIn(problem, str(caught.exception))


# -- JWT public keys: RS*, PS*, ES* checked against published examples and an
# independent signer (the cryptography and PyJWT packages)

try:
    import jwt as pyjwt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
    from cryptography.x509.oid import NameOID
except ImportError:
    pyjwt = None

# -- DER and PEM writers, independent of the reader under test -------------------

def der(tag, *parts):
    """A DER element of this tag, its contents the parts joined."""
    contents = b''.join(parts)
    size = len(contents)
    if size < 0x80:
        return bytes([tag, size]) + contents
    length = size.to_bytes((size.bit_length() + 7) // 8, 'big')
    return bytes([tag, 0x80 | len(length)]) + length + contents


def der_int(value):
    return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, 'big'))


def der_oid(dotted):
    arcs = [int(arc) for arc in dotted.split('.')]
    out = b''
    for arc in [40 * arcs[0] + arcs[1]] + arcs[2:]:
        chunk = [arc & 0x7f]
        arc >>= 7
        while arc:
            chunk.insert(0, 0x80 | arc & 0x7f)
            arc >>= 7
        out += bytes(chunk)
    return der(0x06, out)


RSA_OID, EC_OID = '1.2.840.113549.1.1.1', '1.2.840.10045.2.1'
CURVE_OIDS = {'P-256': '1.2.840.10045.3.1.7', 'P-384': '1.3.132.0.34',
              'P-521': '1.3.132.0.35'}
SIZES = {'P-256': 32, 'P-384': 48, 'P-521': 66}


def pkcs1_der(n, e):
    return der(0x30, der_int(n), der_int(e))


def spki_der(oid, parameters, key_bytes):
    return der(0x30, der(0x30, der_oid(oid), parameters), der(0x03, b'\0' + key_bytes))


def rsa_spki_der(n, e):
    return spki_der(RSA_OID, der(0x05), pkcs1_der(n, e))


def ec_point(curve, x, y):
    return b'\4' + x.to_bytes(SIZES[curve], 'big') + y.to_bytes(SIZES[curve], 'big')


def ec_spki_der(curve, x, y):
    return spki_der(EC_OID, der_oid(CURVE_OIDS[curve]), ec_point(curve, x, y))


def pem(der_bytes, label='PUBLIC KEY'):
    text = base64.b64encode(der_bytes).decode('ascii')
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return '-----BEGIN %s-----\n%s\n-----END %s-----\n' % (label, '\n'.join(lines), label)


def jwk_b64url(text):
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def jwk_int(text):
    return int.from_bytes(jwk_b64url(text), 'big')


def split(token):
    """(signing input, signature) of a compact JWS."""
    head, _, signature = token.rpartition('.')
    return head.encode('ascii'), jwk_b64url(signature)


def flip(data, bit):
    """data with one bit flipped."""
    data = bytearray(data)
    data[bit // 8] ^= 1 << bit % 8
    return bytes(data)


# -- Published examples -----------------------------------------------------------

#: RFC 7515 A.1-A.3 payload: {"iss":"joe",\r\n "exp":1300819380,\r\n ...}
RFC7515_PAYLOAD = ('eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt'
                   'cGxlLmNvbS9pc19yb290Ijp0cnVlfQ')
#: RFC 7515 A.2: RS256, RSA key n (e = AQAB) and token.
RFC7515_A2_N = (
    'ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp'
    '-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOW'
    'vG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUs'
    'LA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9k'
    'G4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2'
    'PAcDTW9gb54h4FRWyuXpoQ')
RFC7515_A2_TOKEN = (
    'eyJhbGciOiJSUzI1NiJ9.' + RFC7515_PAYLOAD + '.'
    'cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7'
    'AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4'
    'BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K'
    '0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv'
    'hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB'
    'p0igcN_IoypGlUPQGe77Rw')
#: RFC 7515 A.3: ES256, P-256 key and token.
RFC7515_A3_X = 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU'
RFC7515_A3_Y = 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0'
RFC7515_A3_TOKEN = (
    'eyJhbGciOiJFUzI1NiJ9.' + RFC7515_PAYLOAD + '.'
    'DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSA'
    'pmWQxfKTUJqPP3-Kg6NU1Q')
#: RFC 7515 A.4: ES512, P-521 key and token (payload "Payload").
RFC7515_A4_X = ('AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvL'
                'FV1jSfS9tsz4qUxcWceqwQGk')
RFC7515_A4_Y = ('ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4K'
                'kd0AZMaZmh9ubmf63e3kyMj2')
RFC7515_A4_TOKEN = (
    'eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.'
    'AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZq'
    'wqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8Kp'
    'EHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn')

#: RFC 7520 §3.3 RSA key (e = AQAB) and §3.1 P-521 key.
RFC7520_RSA_N = (
    'n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRoj'
    'dNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2l'
    'bzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6c'
    'S6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3'
    '-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwU'
    'kRz5iaiQkqgc5gHdrNP5zw')
RFC7520_EC_X = ('AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqv'
                'jyekWF-7ytDyRXYgCF5cj0Kt')
RFC7520_EC_Y = ('AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgD'
                'PrwQrJmbnX9cwlGfP-HqHZR1')
#: RFC 7520 §4 payload (Figure 8) and the kid header shared by §4.1-4.3.
RFC7520_PAYLOAD = (
    'SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IH'
    'lvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBk'
    'b24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcm'
    'UgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4')
RFC7520_KID = 'IsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9'
#: RFC 7520 §4.1 (RS256), §4.2 (PS384), §4.3 (ES512).
RFC7520_RS256_TOKEN = (
    'eyJhbGciOiJSUzI1Ni' + RFC7520_KID + '.' + RFC7520_PAYLOAD + '.'
    'MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZo'
    'pdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmD'
    'LJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9e'
    'Ro4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2'
    'aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH8'
    '4ogoree7vjbU5y18kDquDg')
RFC7520_PS384_TOKEN = (
    'eyJhbGciOiJQUzM4NC' + RFC7520_KID + '.' + RFC7520_PAYLOAD + '.'
    'cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN'
    '6-tPid6VrklHkqsGqDqHCdP6O8TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXUvdvW'
    'Xzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRXe8P_ij'
    'Q7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6ui'
    'P1aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmW'
    'jwZ6oD4ifKo8DYM-X72Eaw')
RFC7520_ES512_TOKEN = (
    'eyJhbGciOiJFUzUxMi' + RFC7520_KID + '.' + RFC7520_PAYLOAD + '.'
    'AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvbu9'
    'Plon7KRTzoNEuT4Va2cmL1eJAQy3mtPBu_u_sDDyYjnAMDxXPn7XrT0lw-kvAD89'
    '0jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2')

A2_N = jwk_int(RFC7515_A2_N)
A3_X, A3_Y = jwk_int(RFC7515_A3_X), jwk_int(RFC7515_A3_Y)
A2_PEM = pem(rsa_spki_der(A2_N, 65537))
A3_PEM = pem(ec_spki_der('P-256', A3_X, A3_Y))
P256 = websockify._P256


def published_examples():
    """(name, alg, PEM texts of the key, token) of every published example."""
    n7520 = jwk_int(RFC7520_RSA_N)
    a4 = ec_spki_der('P-521', jwk_int(RFC7515_A4_X), jwk_int(RFC7515_A4_Y))
    ec7520 = ec_spki_der('P-521', jwk_int(RFC7520_EC_X), jwk_int(RFC7520_EC_Y))
    rsa7520 = [pem(rsa_spki_der(n7520, 65537)), pem(pkcs1_der(n7520, 65537), 'RSA PUBLIC KEY')]
    return [
        ('RFC 7515 A.2', 'RS256', [A2_PEM, pem(pkcs1_der(A2_N, 65537), 'RSA PUBLIC KEY')],
         RFC7515_A2_TOKEN),
        ('RFC 7515 A.3', 'ES256', [A3_PEM], RFC7515_A3_TOKEN),
        ('RFC 7515 A.4', 'ES512', [pem(a4)], RFC7515_A4_TOKEN),
        ('RFC 7520 4.1', 'RS256', rsa7520, RFC7520_RS256_TOKEN),
        ('RFC 7520 4.2', 'PS384', rsa7520, RFC7520_PS384_TOKEN),
        ('RFC 7520 4.3', 'ES512', [pem(ec7520)], RFC7520_ES512_TOKEN),
    ]


class TestTokenJWTCurves(SocketFreeTestCase):
    """The curve constants: G on the curve, n G = infinity, p = 3 (mod 4)."""

    def test_generators(self):
        for curve in websockify._CURVES.values():
            with self.subTest(curve=curve.name):
                self.assertTrue(curve.contains(curve.gx, curve.gy))
                self.assertEqual(curve.p % 4, 3)
                self.assertEqual(curve.n.bit_length(), curve.p.bit_length())
                point, g = None, (curve.gx, curve.gy, 1)
                for i in range(curve.n.bit_length() - 1, -1, -1):
                    point = websockify._ec_add(websockify._ec_double(point, curve.p),
                                             g if curve.n >> i & 1 else None, curve.p)
                self.assertIsNone(point)

    def test_sum_at_infinity(self):
        """With Q = G (private key 1) and r = -e, u1 G + u2 Q is the point at
        infinity: no x to compare, the signature is false. Q = -G: G + Q is too."""
        import hashlib
        for curve, digest in ((websockify._P256, hashlib.sha256), (websockify._P384, hashlib.sha384),
                              (websockify._P521, hashlib.sha512)):
            size, n = curve.size, curve.n
            e = int.from_bytes(digest(b'x').digest(), 'big')
            e >>= max(0, 8 * digest().digest_size - n.bit_length())
            alg = 'ES%d' % (8 * digest().digest_size)
            key = websockify.ECPublicKey(curve, curve.gx, curve.gy)
            for s in (1, 2, n - 1):
                signature = ((-e) % n).to_bytes(size, 'big') + s.to_bytes(size, 'big')
                self.assertIs(websockify.verify_signature(alg, key, b'x', signature), False)
            negated = websockify.ECPublicKey(curve, curve.gx, curve.p - curve.gy)
            signature = (e % n).to_bytes(size, 'big') + (1).to_bytes(size, 'big')
            self.assertIs(websockify.verify_signature(alg, negated, b'x', signature), False)


class TestTokenJWTExamples(SocketFreeTestCase):
    """RFC 7515 Appendix A and RFC 7520 §4 with their published keys."""

    def test_examples_verify(self):
        for name, alg, pems, token in published_examples():
            for text in pems:
                with self.subTest(example=name, pem=text.split('\n')[0]):
                    key = websockify.load_public_key(text)
                    signing_input, signature = split(token)
                    self.assertIs(websockify.verify_signature(alg, key, signing_input, signature), True)
                    self.assertIs(websockify.verify_signature(alg, key, bytearray(signing_input),
                                                   memoryview(signature)), True)

    def test_tampering_fails(self):
        for name, alg, pems, token in published_examples():
            key = websockify.load_public_key(pems[0])
            signing_input, signature = split(token)
            with self.subTest(example=name):
                for bit in (0, 7, 8 * len(signature) // 2, 8 * len(signature) - 1):
                    self.assertIs(websockify.verify_signature(alg, key, signing_input,
                                                   flip(signature, bit)), False)
                for bit in (0, 8 * len(signing_input) - 1, 8 * len(signing_input) - 20):
                    self.assertIs(websockify.verify_signature(alg, key, flip(signing_input, bit),
                                                   signature), False)
                for bad in (b'', signature[1:], signature[:-1], b'\0' + signature,
                            signature + b'\0', bytes(len(signature)),
                            b'\xff' * len(signature)):
                    self.assertIs(websockify.verify_signature(alg, key, signing_input, bad), False)

    def test_pkcs1_and_pss_are_not_interchangeable(self):
        key = websockify.load_public_key(A2_PEM)
        signing_input, signature = split(RFC7515_A2_TOKEN)
        for alg in ('PS256', 'RS384', 'RS512', 'PS512'):
            self.assertIs(websockify.verify_signature(alg, key, signing_input, signature), False)

    def test_ecdsa_r_and_s_out_of_range(self):
        key = websockify.load_public_key(A3_PEM)
        signing_input, signature = split(RFC7515_A3_TOKEN)
        r, s = int.from_bytes(signature[:32], 'big'), int.from_bytes(signature[32:], 'big')
        n = P256.n

        def rs(r, s):
            return r.to_bytes(32, 'big') + s.to_bytes(32, 'big')
        self.assertIs(websockify.verify_signature('ES256', key, signing_input, rs(r, s)), True)
        for bad_r, bad_s in ((0, s), (r, 0), (0, 0), (n, s), (r, n), (r + n, s),
                             (r, s + n), (2 ** 256 - 1, s), (r, 2 ** 256 - 1)):
            if bad_r < 2 ** 256 and bad_s < 2 ** 256:
                self.assertIs(websockify.verify_signature('ES256', key, signing_input,
                                               rs(bad_r, bad_s)), False)
        # (r, n - s) is the other valid signature: JWS does not ask for low s.
        self.assertIs(websockify.verify_signature('ES256', key, signing_input, rs(r, n - s)), True)
        # DER-encoded ECDSA-Sig-Value is refused: JWS is R || S (RFC 7518 §3.4).
        as_der = der(0x30, der_int(r), der_int(s))
        self.assertIs(websockify.verify_signature('ES256', key, signing_input, as_der), False)

    def test_algorithm_must_fit_the_key(self):
        rsa_key, ec_key = websockify.load_public_key(A2_PEM), websockify.load_public_key(A3_PEM)
        signing_input, signature = split(RFC7515_A3_TOKEN)
        for alg, key in (('ES256', rsa_key), ('RS256', ec_key), ('PS256', ec_key),
                         ('ES384', ec_key), ('ES512', ec_key), ('HS256', rsa_key),
                         ('none', ec_key), ('', ec_key), (None, ec_key), (['ES256'], ec_key),
                         ('ES256', b'secret'), ('RS256', None), ('es256', ec_key)):
            with self.subTest(alg=alg, key=key):
                with self.assertRaises(ValueError):
                    websockify.verify_signature(alg, key, signing_input, signature)
        with self.assertRaisesRegex(ValueError, 'needs a P-256 key, not bytes') as caught:
            websockify.verify_signature('ES256', b'very secret', signing_input, signature)
        self.assertNotIn('secret', str(caught.exception))

    def test_algorithm_names(self):
        self.assertEqual(websockify.JWT_ASYMMETRIC_ALGORITHMS, frozenset(
            'RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512'.split()))

    def test_compressed_point(self):
        for prefix in (2, 3):
            text = pem(spki_der(EC_OID, der_oid(CURVE_OIDS['P-256']),
                                bytes([prefix]) + A3_X.to_bytes(32, 'big')))
            key = websockify.load_public_key(text)
            self.assertEqual(key.x, A3_X)
            self.assertEqual(key.y == A3_Y, prefix & 1 == A3_Y & 1)
            self.assertEqual(key.y in (A3_Y, P256.p - A3_Y), True)


class TestTokenJWTKeyRefusals(SocketFreeTestCase):
    """websockify.load_public_key raises ValueError for all but a good public key."""

    def refused(self, text, reason=''):
        with self.assertRaisesRegex(ValueError, reason):
            websockify.load_public_key(text)

    def test_small_rsa_keys(self):
        n1024 = (A2_N >> 1024) | 1
        for make in (rsa_spki_der, pkcs1_der):
            self.refused(pem(make(n1024, 65537),
                             'PUBLIC KEY' if make is rsa_spki_der else 'RSA PUBLIC KEY'),
                         '1024 bits')
        self.refused(pem(rsa_spki_der(A2_N >> 1, 65537)), '2047 bits')
        self.refused(pem(rsa_spki_der(2 ** 16400 + 1, 65537)), '16401 bits')

    def test_bad_rsa_numbers(self):
        for n, e in ((A2_N + 1, 65537), (A2_N, 65536), (A2_N, 1), (A2_N, 0),
                     (A2_N, 2 ** 256 + 1)):
            self.refused(pem(rsa_spki_der(n, e)), 'not an RSA public key')

    def test_points_off_the_curve(self):
        for x, y in ((A3_X, A3_Y + 1), (A3_X, P256.p - A3_Y + 1), (0, 0),
                     (A3_X + P256.p, A3_Y), (A3_X, A3_Y + P256.p)):
            if x < 2 ** 256 and y < 2 ** 256:
                self.refused(pem(ec_spki_der('P-256', x, y)), 'not on P-256')
        self.refused(pem(spki_der(EC_OID, der_oid(CURVE_OIDS['P-256']), b'\0')),
                     'point encoding')
        self.refused(pem(spki_der(EC_OID, der_oid(CURVE_OIDS['P-384']),
                                  ec_point('P-256', A3_X, A3_Y))), 'P-384')
        self.refused(pem(spki_der(EC_OID, der_oid(CURVE_OIDS['P-256']),
                                  ec_point('P-256', A3_X, A3_Y)[:-1])), 'P-256')
        with self.assertRaises(ValueError):
            websockify.ECPublicKey(P256, A3_X, A3_Y - 1)

    def test_other_algorithms_and_curves(self):
        point = ec_point('P-256', A3_X, A3_Y)
        self.refused(pem(spki_der(EC_OID, der_oid('1.3.132.0.10'), point)),
                     'curve 1.3.132.0.10')
        self.refused(pem(spki_der(EC_OID, der(0x05), point)), 'name a curve')
        self.refused(pem(spki_der(EC_OID, b'', point)), 'name a curve')
        self.refused(pem(der(0x30, der(0x30, der_oid('1.3.101.112')),
                             der(0x03, b'\0' + bytes(32)))), '1.3.101.112')
        self.refused(pem(spki_der('1.2.840.113549.1.1.10', b'', pkcs1_der(A2_N, 65537))),
                     '1.2.840.113549.1.1.10')
        self.refused(pem(spki_der(RSA_OID, b'', pkcs1_der(A2_N, 65537))), 'NULL')

    def test_strict_der(self):
        good = rsa_spki_der(A2_N, 65537)
        websockify.load_public_key(pem(good))
        inner = pkcs1_der(A2_N, 65537)
        n_bytes = A2_N.to_bytes(257, 'big')
        for bad in (
                good + b'\0',                                      # trailing bytes
                good[:-1],                                         # truncated
                spki_der(RSA_OID, der(0x05), inner + b'\0'),       # trailing in key
                spki_der(RSA_OID, der(0x05) + der(0x05), inner),   # extra parameter
                spki_der(RSA_OID, der(0x05, b'\0'), inner),        # NULL with contents
                b'\x30\x80' + good[4:] + b'\0\0',                  # indefinite length
                b'\x30\x83\x00' + good[2:],                        # long length, zero first
                der(0x30, der(0x30, der_oid(RSA_OID), der(0x05)),  # unused bits in BIT STRING
                    der(0x03, b'\1' + inner)),
                spki_der(RSA_OID, der(0x05), der(0x30, der(0x02, b'\0' + n_bytes),
                                                 der_int(65537))),   # INTEGER not shortest
                spki_der(RSA_OID, der(0x05), der(0x30, der(0x02, b'\xff' + n_bytes[1:]),
                                                 der_int(65537))),   # negative INTEGER
                spki_der(RSA_OID, der(0x05), der(0x30, der(0x02, b''), der_int(3))),
                spki_der(RSA_OID, der(0x05), der(0x30, der_int(A2_N))),  # no exponent
                spki_der(RSA_OID, der(0x05), der(0x31, der_int(A2_N), der_int(65537))),
                der(0x30, der(0x30, der(0x06, b'\x2a\x86'), der(0x05)),  # unfinished OID
                    der(0x03, b'\0' + inner)),
                der(0x30, der(0x30, der(0x06, b'\x80\x01'), der(0x05)),  # OID not shortest
                    der(0x03, b'\0' + inner)),
                der(0x30, der(0x30, der(0x05), der_oid(RSA_OID)),  # parameters first
                    der(0x03, b'\0' + inner)),
                b'', b'\x30', b'\x30\x00', b'\x30\x81\x05' + bytes(5)):
            with self.subTest(der=bad[:12].hex()):
                self.refused(pem(bad), 'DER|NULL')

    def test_pem_envelope(self):
        body = pem(rsa_spki_der(A2_N, 65537)).split('\n')[1:-2]
        self.refused('', 'found 0')
        self.refused('hello', 'found 0')
        self.refused(A2_PEM + A3_PEM, 'found 2')
        self.refused(A2_PEM.replace('-----END PUBLIC KEY-----', ''), 'malformed PEM')
        self.refused(A2_PEM.replace('-----END PUBLIC KEY-----', '-----END RSA PUBLIC KEY-----'),
                     'malformed PEM')
        self.refused(A2_PEM.replace('\n', '\nProc-Type: 4,ENCRYPTED\n', 1), 'malformed PEM')
        self.refused(A2_PEM.replace('M', '*', 1), 'not base64')
        self.refused(A2_PEM.replace(body[0], body[0][:-1]), 'not base64|DER')
        self.refused(A2_PEM.encode('ascii') + b'\xff', 'ASCII')
        self.refused(A2_PEM.replace('PUBLIC KEY', 'CERTIFICATE'), 'x509 -pubkey')
        self.refused(A2_PEM.replace('PUBLIC KEY', 'PRIVATE KEY'), 'pkey -pubout')
        self.refused(A2_PEM.replace('PUBLIC KEY', 'EC PRIVATE KEY'), 'pkey -pubout')
        self.refused(A2_PEM.replace('PUBLIC KEY', 'X509 CRL'), 'not a public key')
        # A SPKI under the PKCS#1 label and the reverse.
        self.refused(A2_PEM.replace('PUBLIC KEY', 'RSA PUBLIC KEY'), 'DER')
        self.refused(pem(pkcs1_der(A2_N, 65537)), 'DER')
        # Text around the block (RFC 7468 §2), CRLF lines, bytes: all fine.
        for text in ('Key of example.com\n' + A2_PEM + 'end\n', A2_PEM.replace('\n', '\r\n'),
                     A2_PEM.encode('ascii'), A2_PEM.replace('\n', '', 1)):
            self.assertEqual(websockify.load_public_key(text).n, A2_N)

    def test_mutations_only_raise_value_error(self):
        """Every one-byte change and truncation of a key: a key or ValueError."""
        for good in (rsa_spki_der(A2_N, 65537), pkcs1_der(A2_N, 65537),
                     ec_spki_der('P-256', A3_X, A3_Y)):
            label = 'RSA PUBLIC KEY' if good[4:5] == b'\x02' else 'PUBLIC KEY'
            variants = [good[:i] for i in range(len(good))]
            for i in range(len(good)):
                for value in (0, 0x80, 0xff, good[i] ^ 1, good[i] ^ 0x80):
                    variants.append(good[:i] + bytes([value]) + good[i + 1:])
                variants.append(good[:i] + good[i + 1:])
            for bad in variants:
                try:
                    key = websockify.load_public_key(pem(bad, label))
                except ValueError:
                    continue
                self.assertIsInstance(key, (websockify.RSAPublicKey, websockify.ECPublicKey))

    def test_random_input_only_raises_value_error(self):
        rng = random.Random(7515)
        for _ in range(300):
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
            for text in (pem(junk), pem(der(0x30, junk)), junk,
                         pem(der(0x30, der(0x30, der_oid(EC_OID), der_oid(CURVE_OIDS['P-256'])),
                                 der(0x03, b'\0' + junk)))):
                with self.assertRaises(ValueError):
                    websockify.load_public_key(text)

    def test_random_signatures_are_false(self):
        rng = random.Random(7518)
        for name, alg, pems, token in published_examples():
            key = websockify.load_public_key(pems[0])
            signing_input, signature = split(token)
            for _ in range(20):
                size = rng.choice((len(signature), rng.randrange(2 * len(signature))))
                junk = bytes(rng.randrange(256) for _ in range(size))
                self.assertIs(websockify.verify_signature(alg, key, signing_input, junk), False)


class TestTokenJWE(SocketFreeTestCase):

    def test_is_jwe(self):
        self.assertTrue(websockify.is_jwe('a.b.c.d.e'))
        self.assertTrue(websockify.is_jwe('a..c.d.e'))
        self.assertTrue(websockify.is_jwe('a.b.c', {'alg': 'RSA-OAEP', 'enc': 'A256GCM'}))
        self.assertFalse(websockify.is_jwe(RFC7515_A3_TOKEN, {'alg': 'ES256'}))
        self.assertFalse(websockify.is_jwe(RFC7515_A3_TOKEN))
        self.assertFalse(websockify.is_jwe('a.b.c', ['enc']))
        self.assertFalse(websockify.is_jwe('a.b.c.d'))


class TestTokenJWTIndependentSigner(SocketFreeTestCase):
    """Keys from cryptography, tokens from PyJWT."""

    @classmethod
    def setUpClass(cls):
        require('cryptography and PyJWT', pyjwt is not None, 'pip install cryptography pyjwt')
        cls.rsa_keys = [rsa.generate_private_key(65537, bits) for bits in (2048, 2049, 3072)]
        cls.rsa_keys.append(rsa.generate_private_key(3, 2048))
        cls.ec_keys = {'P-256': ec.generate_private_key(ec.SECP256R1()),
                       'P-384': ec.generate_private_key(ec.SECP384R1()),
                       'P-521': ec.generate_private_key(ec.SECP521R1())}

    @staticmethod
    def public_pem(private_key, pkcs1=False):
        return private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1 if pkcs1
            else serialization.PublicFormat.SubjectPublicKeyInfo).decode('ascii')

    def check(self, alg, private_key, pems, count):
        for pem_text in pems:
            key = websockify.load_public_key(pem_text)
            for i in range(count):
                claims = {'host': 'vnc%d.example' % i, 'port': 5900 + i, 'pad': 'x' * i}
                signing_input, signature = split(pyjwt.encode(claims, private_key, algorithm=alg))
                self.assertIs(websockify.verify_signature(alg, key, signing_input, signature), True)
                bit = random.randrange(8 * len(signature))
                self.assertIs(websockify.verify_signature(alg, key, signing_input, flip(signature, bit)),
                              False)
                bit = random.randrange(8 * len(signing_input))
                self.assertIs(websockify.verify_signature(alg, key, flip(signing_input, bit), signature),
                              False)
                for bad in (signature[1:], signature + b'\0', b'\0' + signature[:-1]):
                    self.assertIs(websockify.verify_signature(alg, key, signing_input, bad), False)

    def test_rsa(self):
        for private_key in self.rsa_keys:
            numbers = private_key.public_key().public_numbers()
            pems = [self.public_pem(private_key), self.public_pem(private_key, pkcs1=True)]
            for text in pems:
                key = websockify.load_public_key(text)
                self.assertEqual((key.n, key.e), (numbers.n, numbers.e))
            for alg in ('RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'):
                with self.subTest(alg=alg, bits=private_key.key_size, e=numbers.e):
                    self.check(alg, private_key, pems, 4)
                    token = pyjwt.encode({}, private_key, algorithm=alg)
                    other = alg.replace('R', 'P') if alg[0] == 'R' else alg.replace('P', 'R')
                    self.assertIs(websockify.verify_signature(other, websockify.load_public_key(pems[0]),
                                                   *split(token)), False)
                    with self.assertRaises(ValueError):
                        websockify.verify_signature(alg, websockify.load_public_key(self.public_pem(
                            self.ec_keys['P-256'])), *split(token))

    def test_ecdsa(self):
        for (curve, private_key), alg in zip(sorted(self.ec_keys.items()),
                                             ('ES256', 'ES384', 'ES512')):
            with self.subTest(alg=alg):
                text = self.public_pem(private_key)
                key = websockify.load_public_key(text)
                numbers = private_key.public_key().public_numbers()
                self.assertEqual((key.x, key.y, key.curve.name), (numbers.x, numbers.y, curve))
                self.check(alg, private_key, [text], 25)
                token = pyjwt.encode({}, private_key, algorithm=alg)
                for other in websockify.JWT_ASYMMETRIC_ALGORITHMS - {alg}:
                    with self.assertRaises(ValueError):
                        websockify.verify_signature(other, key, *split(token))
                n, size = key.curve.n, key.curve.size
                signing_input, signature = split(token)
                r = int.from_bytes(signature[:size], 'big')
                s = int.from_bytes(signature[size:], 'big')
                for bad_r, bad_s in ((0, s), (r, 0), (n, s), (r, n), (n + 1, s)):
                    if bad_r < 1 << 8 * size and bad_s < 1 << 8 * size:
                        self.assertIs(websockify.verify_signature(
                            alg, key, signing_input,
                            bad_r.to_bytes(size, 'big') + bad_s.to_bytes(size, 'big')), False)
                self.assertIs(websockify.verify_signature(
                    alg, key, signing_input,
                    r.to_bytes(size, 'big') + (n - s).to_bytes(size, 'big')), True)
                off = pem(ec_spki_der(curve, numbers.x, numbers.y ^ 1))
                with self.assertRaisesRegex(ValueError, 'not on'):
                    websockify.load_public_key(off)

    def test_short_r_and_s(self):
        """Signatures whose r or s has leading zero bytes keep their fixed width."""
        private_key = self.ec_keys['P-256']
        key = websockify.load_public_key(self.public_pem(private_key))
        found = set()
        for i in range(4000):
            message = b'message %d' % i
            r, s = utils.decode_dss_signature(private_key.sign(message, ec.ECDSA(hashes.SHA256())))
            short = ('r' if r < 1 << 248 else '') + ('s' if s < 1 << 248 else '')
            if short and short not in found:
                found.add(short)
                signature = r.to_bytes(32, 'big') + s.to_bytes(32, 'big')
                self.assertIs(websockify.verify_signature('ES256', key, message, signature), True)
            if {'r', 's'} <= found:
                break
        self.assertTrue({'r', 's'} <= found)

    def test_compressed_point_matches(self):
        for curve, private_key in self.ec_keys.items():
            public = private_key.public_key()
            compressed = public.public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.CompressedPoint)
            der_bytes = spki_der(EC_OID, der_oid(CURVE_OIDS[curve]), compressed)
            # cryptography reads our DER the same way...
            self.assertEqual(serialization.load_der_public_key(der_bytes).public_numbers(),
                             public.public_numbers())
            key = websockify.load_public_key(pem(der_bytes))
            self.assertEqual((key.x, key.y), (public.public_numbers().x,
                                              public.public_numbers().y))

    def test_our_der_writer_agrees(self):
        """The published keys as DER built here load in cryptography too."""
        rsa_key = serialization.load_pem_public_key(A2_PEM.encode('ascii'))
        self.assertEqual(rsa_key.public_numbers().n, A2_N)
        ec_key = serialization.load_pem_public_key(A3_PEM.encode('ascii'))
        self.assertEqual(ec_key.public_numbers().y, A3_Y)

    def test_refused_keys(self):
        small = rsa.generate_private_key(65537, 1024)
        with self.assertRaisesRegex(ValueError, '1024 bits'):
            websockify.load_public_key(self.public_pem(small))
        with self.assertRaisesRegex(ValueError, '1024 bits'):
            websockify.load_public_key(self.public_pem(small, pkcs1=True))
        k1 = ec.generate_private_key(ec.SECP256K1())
        with self.assertRaisesRegex(ValueError, '1.3.132.0.10'):
            websockify.load_public_key(self.public_pem(k1))
        for private_key in (self.rsa_keys[0], self.ec_keys['P-256']):
            for fmt in (serialization.PrivateFormat.PKCS8,
                        serialization.PrivateFormat.TraditionalOpenSSL):
                text = private_key.private_bytes(serialization.Encoding.PEM, fmt,
                                                 serialization.NoEncryption())
                with self.assertRaisesRegex(ValueError, 'pkey -pubout'):
                    websockify.load_public_key(text)
            der_bytes = private_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            with self.assertRaisesRegex(ValueError, 'trailing'):
                websockify.load_public_key(pem(der_bytes + b'\0'))
            with self.assertRaises(ValueError):
                websockify.load_public_key(der_bytes)

    def test_certificate_refused(self):
        import datetime
        private_key = self.ec_keys['P-256']
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'websockify.test')])
        now = datetime.datetime(2026, 1, 1)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(private_key.public_key()).serial_number(1)
                       .not_valid_before(now).not_valid_after(now + datetime.timedelta(1))
                       .sign(private_key, hashes.SHA256()))
        text = certificate.public_bytes(serialization.Encoding.PEM)
        with self.assertRaisesRegex(ValueError, 'CERTIFICATE.*x509 -pubkey'):
            websockify.load_public_key(text)


if __name__ == '__main__':
    unittest.main()


TOKEN_PLUGIN_MODULE = '''
class PortPlugin:
    """Test plugin: token "mine" goes to host:port given as --token-source."""

    def __init__(self, source):
        self.host, _, self.port = source.rpartition(':')

    def lookup(self, token):
        if token == 'fail':
            raise RuntimeError('database unavailable')
        return (self.host, self.port) if token == 'mine' else None
'''


class TestTokenCustomPlugin(TokenTestCase):

    def test_importable_module_class_plugin(self):
        folder = self.tempdir()
        module = 'wsfy_plugin_%d' % os.getpid()
        with open(os.path.join(folder, module + '.py'), 'w') as f:
            f.write(TOKEN_PLUGIN_MODULE)
        sys.path.insert(0, folder)
        self.addCleanup(sys.modules.pop, module, None)
        self.addCleanup(sys.path.remove, folder)
        target = self.target(b'custom')
        address = self.proxy('--token-plugin', module + '.PortPlugin', '--token-source',
                             target.arg, '127.0.0.1:0')
        self.reaches(address, b'custom', token_path('mine'))
        self.refused_token(address, token_path('yours'), 404)
        with self.assertLogs('websockify', 'INFO') as logs:
            self.refused_token(address, token_path('fail'), 502)
            self.wait_for_log(logs, lambda m: 'database unavailable' in m)

    def write_plugin(self, folder, module, text):
        with open(os.path.join(folder, module + '.py'), 'w') as f:
            f.write(text)

    def plugin_proxy(self, folder, cls, source):
        """websockify.py as a program with the --token-plugin cls found in folder."""
        path = os.pathsep.join(p for p in (folder, os.environ.get('PYTHONPATH')) if p)
        with unittest.mock.patch.dict(os.environ, PYTHONPATH=path):
            return ProxyProcess(self, '--token-plugin', cls, '--token-source', source,
                                '127.0.0.1:0')

    def test_plugin_written_for_upstream_runs_in_the_program(self):
        # Run as a program, websockify.py is __main__: a plugin importing
        # upstream's websockify.token_plugins must still find its base class.
        folder = self.tempdir()
        self.write_plugin(folder, 'upstream_style', 'from websockify.token_plugins import BasePlugin\n\n\n'
                    'class Mine(BasePlugin):\n'
                    '    def lookup(self, token):\n'
                    '        host, _, port = self.source.rpartition(":")\n'
                    '        return (host, port) if token == "mine" else None\n')
        target = self.target(b'upstream style')
        proxy = self.plugin_proxy(folder, 'upstream_style.Mine', target.arg)
        self.reaches(proxy.address, b'upstream style', token_path('mine'))
        self.refused_token(proxy.address, token_path('other'), 404)

    def test_subclass_unpacking_lookup_as_upstream_returns_it(self):
        # Upstream's TokenFile.lookup gives [host, port]; subclasses unpack it.
        folder = self.tempdir()
        target = self.target(b'unpacked')
        tokens = self.token_file(['vm1: %s' % target.arg], folder)
        self.write_plugin(folder, 'aliasing', 'import websockify.token_plugins\n\n\n'
                    'class Aliases(websockify.token_plugins.TokenFile):\n'
                    '    def lookup(self, token):\n'
                    '        result = super().lookup("vm1" if token == "alias" else token)\n'
                    '        if result is None:\n'
                    '            return None\n'
                    '        host, port = result\n'
                    '        assert (result[0], result[1]) == (host, port)\n'
                    '        return [host, int(port)]\n')
        proxy = self.plugin_proxy(folder, 'aliasing.Aliases', tokens)
        self.reaches(proxy.address, b'unpacked', token_path('alias'))
        self.reaches(proxy.address, b'unpacked', token_path('vm1'))
        self.refused_token(proxy.address, token_path('other'), 404)
        self.assertEqual(list(websockify.Target('h', 5900)), ['h', 5900])
        self.assertEqual(tuple(websockify.Target(unix='/run/s')), ('unix_socket', '/run/s'))

    def test_plugin_using_asyncio_in_lookup(self):
        # Upstream runs lookup() in a process's main thread, where
        # asyncio.get_event_loop() works; ours runs it in a connection thread.
        folder = self.tempdir()
        self.write_plugin(folder, 'async_plugin', 'import asyncio\n\n\n'
                    'class Async:\n'
                    '    def __init__(self, source):\n'
                    '        self.source = source\n\n'
                    '    async def fetch(self, token):\n'
                    '        await asyncio.sleep(0)\n'
                    '        host, _, port = self.source.rpartition(":")\n'
                    '        return (host, port) if token == "mine" else None\n\n'
                    '    def lookup(self, token):\n'
                    '        loop = asyncio.get_event_loop()\n'
                    '        return loop.run_until_complete(self.fetch(token))\n')
        target = self.target(b'async')
        proxy = self.plugin_proxy(folder, 'async_plugin.Async', target.arg)
        self.reaches(proxy.address, b'async', token_path('mine'))
        self.reaches(proxy.address, b'async', token_path('mine'))
        self.refused_token(proxy.address, token_path('other'), 404)
        self.assertNotIn('lookup failed', proxy.stderr)

    def test_usage_errors_exit_2_on_one_line(self):
        folder = self.tempdir()
        tokens = self.token_file(['a: 127.0.0.1:9'], folder)
        cases = [
            (('--target-config', tokens, '127.0.0.1:0', '127.0.0.1:9'), 'contradict'),
            (('--token-plugin', 'TokenFile', '--token-source', tokens, '127.0.0.1:0',
              '127.0.0.1:9'), 'contradict'),
            (('--token-plugin', 'TokenFile', '127.0.0.1:0'), 'needs --token-source'),
            (('--token-source', tokens, '127.0.0.1:0'), 'needs --token-plugin'),
            (('--host-token', '127.0.0.1:0', '127.0.0.1:9'), 'needs --token-plugin'),
            (('--token-plugin', 'NoSuchPlugin', '--token-source', 'x', '127.0.0.1:0'),
             'unknown --token-plugin'),
            (('--token-plugin', 'no_such_module_xyz.Plugin', '127.0.0.1:0'), 'cannot import'),
            (('--token-plugin', '.x.Y', '127.0.0.1:0'), 'cannot import'),
            (('--target-config', os.path.join(folder, 'absent'), '127.0.0.1:0'),
             'No such file'),
            (('--token-plugin', 'JSONTokenApi', '--token-source', 'http://h/no-slot',
              '127.0.0.1:0'), '%s'),
            (('--token-plugin', 'TokenRedis', '--token-source', 'h:port', '127.0.0.1:0'),
             'port'),
            (('--target-config', tokens, '--unix-target', tokens, '127.0.0.1:0'),
             'contradict'),
        ]
        for args, text in cases:
            with self.subTest(args=args):
                result = run_cli(*args)
                self.assertEqual(result.returncode, 2, result)
                self.assertIn(text, result.stderr)
                self.assertEqual(result.stderr.count('\n'), 1, result.stderr)
                self.assertNotIn('Traceback', result.stderr)


class TestTokenFileName(TokenTestCase):
    """TokenFileName: the token names a file of the --token-source directory that
    holds the target, read at each lookup."""

    def test_each_file_is_a_token(self):
        one = self.target(b'one')
        two = self.target(b'two', host='::1') if HAVE_IPV6 else self.target(b'two')
        folder = self.tempdir()

        def write(name, text):
            with open(os.path.join(folder, name), 'w') as f:
                f.write(text)
        write('vm1', '127.0.0.1:%d\n' % one.port)
        write('vm2', ('[::1]:%d\n' if HAVE_IPV6 else '127.0.0.1:%d\n') % two.port)
        write('broken', 'no port here')
        os.mkdir(os.path.join(folder, 'a-directory'))
        os.mkfifo(os.path.join(folder, 'a-fifo'))      # never opened: it would block
        address = self.proxy('--token-plugin', 'TokenFileName', '--token-source', folder,
                             '127.0.0.1:0')
        self.reaches(address, b'one', token_path('vm1'))
        self.reaches(address, b'two', token_path('vm2'))
        for token, status in (('vm3', 404), ('a-directory', 404), ('a-fifo', 404),
                              ('broken', 502), ('../vm1', 400), ('..', 400)):
            with self.subTest(token=token):
                self.refused_token(address, token_path(token), status)
        write('vm3', '127.0.0.1:%d' % one.port)         # read at each lookup
        self.reaches(address, b'one', token_path('vm3'))

    def test_source_must_be_a_directory(self):
        result = run_cli('--token-plugin', 'TokenFileName', '--token-source',
                         os.path.join(self.tempdir(), 'absent'), '127.0.0.1:0')
        check_usage_error(self, result, 'is not a directory')


class TestTokenUpstreamInterfaces(SocketFreeTestCase):
    """What upstream's plugins and their subclasses rely on."""

    def test_parse_source_args_as_upstream_splits(self):
        # Upstream 0.13's websockify.token_plugins.parse_source_args gives these.
        cases = {'a:b:c:d': ['a', 'b', 'c', 'd'], 'a:"b:c":d': ['a', 'b:c', 'd'],
                 'h::::"first-ns:second-ns"': ['h', '', '', '', 'first-ns:second-ns'],
                 'h::::a:b': ['h', '', '', '', 'a', 'b'], '': [''], '"x"': ['x'],
                 'a:': ['a', ''], '""': ['""'], 'a"b":c': ['a"b"', 'c'],
                 '"a"b:c': ['"a"b', 'c'], '"a:b': ['"a', 'b']}
        for source, parts in cases.items():
            with self.subTest(source=source):
                self.assertEqual(websockify.parse_source_args(source), parts)

    def test_redis_source_with_quoted_parts(self):
        redis = websockify.TokenRedis('h:6380:2:"pass:word":"ns:sub"')
        self.assertEqual((redis.host, redis.port, redis.db, redis._password, redis.namespace),
                         ('h', 6380, 2, 'pass:word', 'ns:sub'))
        redis = websockify.TokenRedis('h::::ns:sub')      # an unquoted namespace too
        self.assertEqual((redis.port, redis.db, redis.namespace), (6379, 0, 'ns:sub'))

    def test_base_plugin_takes_no_source_but_built_ins_need_one(self):
        class Mine(websockify.token_plugins.BasePlugin):
            pass
        self.assertIsNone(Mine(None).source)
        self.assertIsNone(Mine(None).lookup('x'))
        for cls in (websockify.TokenFile, websockify.TokenFileName, websockify.JSONTokenApi,
                    websockify.TokenRedis, websockify.UnixDomainSocketDirectory):
            with self.subTest(plugin=cls.__name__):
                with self.assertRaisesRegex(websockify.UsageError, 'needs --token-source'):
                    cls(None)

    def test_unix_socket_path_object(self):
        # Upstream's UnixDomainSocketDirectory returns ['unix_socket', PosixPath].
        import pathlib
        target = websockify.make_target('unix_socket', pathlib.Path('/run/vm.sock'))
        self.assertEqual(target.unix, '/run/vm.sock')
        with self.assertRaises(ValueError):
            websockify.make_target('unix_socket', pathlib.Path('/run/vm\n.sock'))

    def test_lookup_gets_an_event_loop_once_and_for_its_duration(self):
        import asyncio
        seen = []

        class Loopy:
            def lookup(self, token):
                loop = asyncio.get_event_loop()
                seen.append(loop)
                return loop.run_until_complete(asyncio.sleep(0, ('h', 1)))

        def lookup_then_probe():
            answer = websockify._lookup(Loopy(), 't')
            try:
                asyncio.get_event_loop()
                left = True
            except RuntimeError:
                left = False
            return answer, left
        answer, left = Worker(lookup_then_probe).result()
        self.assertEqual(answer, ('h', 1))
        self.assertEqual(len(seen), 1)                  # called once, not retried
        self.assertTrue(seen[0].is_closed())
        self.assertFalse(left)                          # no loop outlives the lookup


class TestTokenTargetConfigWins(SocketFreeTestCase):
    """--target-config means --token-plugin TokenFile --token-source FILE and, as
    upstream, replaces those options when they are given too: a warning each."""

    def test_warnings(self):
        settings = websockify.parse_args(['--target-config', 'tokens.cfg', '--token-plugin',
                                          'mine.Plugin', '--token-source', 'x', '6080'])
        self.assertEqual((settings.token_plugin, settings.token_source),
                         ('TokenFile', os.path.abspath('tokens.cfg')))
        self.assertEqual(len(settings.notices), 2, settings.notices)
        self.assertIn('--token-plugin has no effect with --target-config', settings.notices[0])
        self.assertIn('--token-source has no effect with --target-config', settings.notices[1])
        self.assertEqual(websockify.parse_args(['--target-config', 't', '6080']).notices, ())


class TestTokenApiUpstreamSubclass(TokenTestCase):
    """A BaseTokenAPI subclass written for upstream overrides process_result(resp)."""

    def test_process_result_sees_a_response(self):
        target = self.target(b'processed')
        server, url = TestTokenApi.api(self, {'vm': ('127.0.0.1', target.port)}, as_json=True)
        folder = self.tempdir()
        with open(os.path.join(folder, 'api_plugin.py'), 'w') as f:
            f.write('from websockify.token_plugins import BaseTokenAPI\n\n\n'
                    'class Api(BaseTokenAPI):\n'
                    '    def process_result(self, resp):\n'
                    '        assert resp.ok and resp.status_code == 200\n'
                    '        assert resp.json() == __import__("json").loads(resp.text)\n'
                    '        answer = resp.json()\n'
                    '        return [answer["host"], str(answer["port"]).encode()]\n')
        sys.path.insert(0, folder)
        self.addCleanup(sys.modules.pop, 'api_plugin', None)
        self.addCleanup(sys.path.remove, folder)
        address = self.proxy('--token-plugin', 'api_plugin.Api', '--token-source', url,
                             '127.0.0.1:0')
        self.reaches(address, b'processed', token_path('vm'))
        self.refused_token(address, token_path('other'), 404)


################################################################################
# Auth plugins
################################################################################

AUTH_PLUGIN_MODULE = '''
from websockify.auth_plugins import AuthenticationError


class PathGate:
    """Allows /open; other paths get the refusal the path names."""

    def __init__(self, src):
        self.src = src

    def authenticate(self, headers, target_host, target_port):
        path = headers.get('X-Path', '/open')
        if path == '/open':
            if (target_host, str(target_port)) != tuple(self.src.split('|')):
                raise AuthenticationError('wrong target %r' % ((target_host, target_port),))
            return
        if path == '/teapot':
            raise AuthenticationError(log_msg='short and stout', response_code=429,
                                      response_headers={'Retry-After': '7',
                                                        'X-Bad': 'a\\r\\nInjected: 1',
                                                        'Content-Length': '0'},
                                      response_msg='slow down')
        if path == '/bad-status':
            raise AuthenticationError(response_code=200)
        if path == '/crash':
            raise ValueError('plugin bug')
        raise AuthenticationError(response_code=403)


class NoSource:
    def __init__(self, src):
        if src is not None:
            raise ValueError('takes no --auth-source')

    def authenticate(self, headers, target_host, target_port):
        pass
'''


class TestAuth(ProxyTestCase):

    def auth_proxy(self, plugin, source=None, *options):
        target = TargetServer(self, echo)
        self.target = target
        argv = ['--auth-plugin', plugin] + (['--auth-source', source] if source else [])
        return self.proxy(*argv, *options, '127.0.0.1:0', target.arg)

    def upgraded(self, address, extra=()):
        client = WSClient(self, address)
        client.handshake(extra=extra)
        self.assertEqual(client.echo(b'allowed'), b'allowed')
        return client

    # -- BasicHTTPAuth -----------------------------------------------------------------

    def test_basic_auth_good_credentials_are_upgraded(self):
        address = self.auth_proxy('BasicHTTPAuth', 'alice:s3cret:with colon')
        self.upgraded(address, [('Authorization', basic('alice:s3cret:with colon'))])
        self.upgraded(address, [('authorization', 'basic ' + basic('alice:s3cret:with colon')[6:])])

    def test_basic_auth_missing_or_wrong_credentials_get_401_with_a_challenge(self):
        address = self.auth_proxy('BasicHTTPAuth', 'alice:s3cret')
        with self.assertLogs('websockify', 'INFO') as logs:
            for extra in ([], [('Authorization', basic('alice:Zz9wrong'))],
                          [('Authorization', basic('bob:s3cret'))],
                          [('Authorization', 'Bearer abc')]):
                with self.subTest(extra=extra):
                    response = self.refused(address, upgrade_request(extra=extra), 401)
                    self.assertEqual(response.header('www-authenticate'),
                                     'Basic realm="Websockify"')
                    self.assertEqual(len(response.body.strip().splitlines()), 1)
            self.wait_for_log(logs, lambda m: '401 GET /: BasicHTTPAuth refused: wrong '
                                              'password for user bob' in m)
        self.assertEqual(len(logs.records), 4, logs.output)
        self.assertFalse([m for m in logs.output if 's3cret' in m or 'Zz9wrong' in m])
        self.assertEqual(self.target._open, [])     # never connected to the target

    def test_basic_auth_malformed_credentials_get_400(self):
        address = self.auth_proxy('BasicHTTPAuth', 'alice:s3cret')
        for value in ('Basic !!!', 'Basic ' + base64.b64encode(b'no colon').decode()):
            with self.subTest(value=value):
                self.refused(address, upgrade_request(extra=[('Authorization', value)]), 400)

    def test_basic_auth_with_the_websockets_library(self):
        websockets = import_optional('websockets', 'pip install websockets')
        from websockets.sync.client import connect
        address = self.auth_proxy('BasicHTTPAuth', 'alice:s3cret')
        port = address[1]
        with connect('ws://alice:s3cret@127.0.0.1:%d/' % port, open_timeout=TIMEOUT) as ws:
            ws.send(b'from the URL')
            self.assertEqual(ws.recv(TIMEOUT), b'from the URL')
        headers = {'Authorization': basic('alice:s3cret')}
        with connect('ws://127.0.0.1:%d/' % port, additional_headers=headers,
                     open_timeout=TIMEOUT) as ws:
            ws.send(b'from a header')
            self.assertEqual(ws.recv(TIMEOUT), b'from a header')
        for uri in ('ws://alice:nope@127.0.0.1:%d/' % port, 'ws://127.0.0.1:%d/' % port):
            with self.subTest(uri=uri):
                with self.assertRaises(websockets.exceptions.InvalidStatus) as caught:
                    connect(uri, open_timeout=TIMEOUT)
                response = caught.exception.response
                self.assertEqual(response.status_code, 401)
                self.assertEqual(response.headers['WWW-Authenticate'],
                                 'Basic realm="Websockify"')

    def test_hixie_handshake_is_authenticated_too(self):
        address = self.auth_proxy('BasicHTTPAuth', 'alice:s3cret')
        response = self.refused(address, hixie_request(75, host='localhost', path='/',
                                                           origin='http://localhost'), 401)
        self.assertEqual(response.header('www-authenticate'), 'Basic realm="Websockify"')
        client = WSClient(self, address)
        client.send(hixie_request(75, host='localhost', path='/', origin='http://localhost',
                                  extra=[('Authorization', basic('alice:s3cret'))]))
        self.assertEqual(client.read_response().status, 101)
        client.send_hixie(b'hixie')
        self.assertEqual(client.recv_hixie_data(5), b'hixie')

    # -- ExpectOrigin --------------------------------------------------------------------

    def test_expect_origin(self):
        address = self.auth_proxy('ExpectOrigin', 'https://a.example http://b.example:8080')
        self.upgraded(address, [('Origin', 'https://a.example')])
        self.upgraded(address, [('Origin', 'http://b.example:8080')])
        client = WSClient(self, address)                # HyBi 8 named it Sec-WebSocket-Origin
        client.send(upgrade_request(replace={'Sec-WebSocket-Version': '8'},
                                    extra=[('Sec-WebSocket-Origin', 'https://a.example')]))
        self.assertEqual(client.read_response().status, 101)
        with self.assertLogs('websockify', 'INFO') as logs:
            for extra in ([('Origin', 'https://evil.example')], [],
                          [('Origin', 'https://a.example.evil')]):
                with self.subTest(extra=extra):
                    response = self.refused(address, upgrade_request(extra=extra), 403)
                    self.assertEqual(response.body, b'origin not allowed\n')
            self.wait_for_log(logs, lambda m: "origin 'https://evil.example' is not allowed"
                              in m)
            self.wait_for_log(logs, lambda m: 'origin missing is not allowed' in m)

    def test_dotted_upstream_name_is_accepted(self):
        address = self.auth_proxy('websockify.auth_plugins.ExpectOrigin', 'https://a.example')
        self.upgraded(address, [('Origin', 'https://a.example')])
        self.refused(address, upgrade_request(), 403)

    # -- ClientCertCNAuth ----------------------------------------------------------------

    def test_client_certificate_common_name(self):
        trustme = import_optional('trustme', 'pip install trustme')
        ca = trustme.CA()
        folder = self.tempdir()
        server_pem = os.path.join(folder, 'server.pem')
        ca_pem = os.path.join(folder, 'ca.pem')
        ca.issue_cert('localhost', '127.0.0.1').private_key_and_cert_chain_pem.write_to_path(
            server_pem)
        ca.cert_pem.write_to_path(ca_pem)
        address = self.auth_proxy('ClientCertCNAuth', 'alice carol', '--cert', server_pem,
                                  '--verify-client', '--cafile', ca_pem)

        def tls_client(common_name):
            context = ssl.create_default_context()
            ca.configure_trust(context)
            ca.issue_cert('%s@example.org' % common_name,
                          common_name=common_name).configure_cert(context)
            client = WSClient(self, address)
            client.sock = context.wrap_socket(client.sock, server_hostname='localhost')
            self.addCleanup(client.sock.close)
            return client

        for name in ('alice', 'carol'):
            with self.subTest(name=name):
                client = tls_client(name)
                client.handshake()
                self.assertEqual(client.echo(b'hello ' + name.encode()), b'hello ' + name.encode())
        with self.assertLogs('websockify', 'INFO') as logs:
            for extra in ([], [('SSL_CLIENT_S_DN_CN', 'alice')]):   # a forged header is ignored
                with self.subTest(extra=extra):
                    client = tls_client('mallory')
                    client.send(upgrade_request(extra=extra))
                    response = client.read_response()
                    self.assertEqual(response.status, 403)
                    self.assertIn(b'client certificate not allowed', client.read_until_eof())
            self.wait_for_log(logs, lambda m: "client certificate 'mallory' is not allowed" in m)

    # -- --web-auth ----------------------------------------------------------------------

    def web_proxy(self, *options):
        folder = self.tempdir()
        with open(os.path.join(folder, 'index.html'), 'w') as f:
            f.write('<p>secret page</p>\n')
        return self.auth_proxy('BasicHTTPAuth', 'alice:s3cret', '--web', folder, *options)

    def get(self, address, extra=()):
        lines = ['GET /index.html HTTP/1.1', 'Host: localhost'] + ['%s: %s' % h for h in extra]
        client = WSClient(self, address)
        client.send(('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1'))
        response = client.read_response()
        response.body = client.read_until_eof()
        return response

    def test_without_web_auth_files_are_public_and_upgrades_are_not(self):
        address = self.web_proxy()
        response = self.get(address)
        self.assertEqual(response.status, 200)
        self.assertIn(b'secret page', response.body)
        self.refused(address, upgrade_request(), 401)

    def test_web_auth_protects_files(self):
        address = self.web_proxy('--web-auth')
        response = self.get(address)
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header('www-authenticate'), 'Basic realm="Websockify"')
        self.assertNotIn(b'secret page', response.body)
        response = self.get(address, [('Authorization', basic('alice:s3cret'))])
        self.assertEqual(response.status, 200)
        self.assertIn(b'secret page', response.body)
        self.upgraded(address, [('Authorization', basic('alice:s3cret'))])

    # -- custom plugins ------------------------------------------------------------------

    def plugin_module(self):
        folder = self.tempdir()
        name = 'wsfy_test_plugin_%d' % id(self)
        with open(os.path.join(folder, name + '.py'), 'w') as f:
            f.write(textwrap.dedent(AUTH_PLUGIN_MODULE))
        return folder, name

    def test_custom_plugin_class(self):
        folder, name = self.plugin_module()
        sys.path.insert(0, folder)
        self.addCleanup(sys.path.remove, folder)
        self.addCleanup(sys.modules.pop, name, None)
        target = TargetServer(self, echo)
        address = self.proxy('--auth-plugin', name + '.PathGate', '--auth-source',
                             '127.0.0.1|%d' % target.port, '127.0.0.1:0', target.arg)
        self.upgraded(address)
        with self.assertLogs('websockify', 'INFO') as logs:
            response = self.refused(address, upgrade_request(extra=[('X-Path', '/teapot')]), 429)
            self.assertEqual(response.header('retry-after'), '7')
            self.assertIsNone(response.header('x-bad'))          # CR LF: dropped
            self.assertIsNone(response.header('injected'))
            self.assertEqual(response.header('content-length'), str(len(response.body)))
            self.assertEqual(response.body, b'slow down\n')
            self.refused(address, upgrade_request(extra=[('X-Path', '/other')]), 403)
            self.refused(address, upgrade_request(extra=[('X-Path', '/bad-status')]), 403)
            response = self.refused(address, upgrade_request(extra=[('X-Path', '/crash')]), 500)
            self.assertNotIn(b'plugin bug', response.body)     # details stay in the log
            self.wait_for_log(logs, lambda m: 'PathGate refused: short and stout' in m)
            self.wait_for_log(logs, lambda m: 'invalid status 200' in m)
            self.wait_for_log(logs, lambda m: 'PathGate failed: ValueError: plugin bug' in m)
        self.assertFalse(any(r.exc_info for r in logs.records))

    def test_custom_plugin_in_a_program_imports_websockify_auth_plugins(self):
        folder, name = self.plugin_module()
        target = TargetServer(self, echo)
        old = os.environ.get('PYTHONPATH')
        os.environ['PYTHONPATH'] = folder
        try:
            proc = ProxyProcess(self, '--auth-plugin', name + '.PathGate', '--auth-source',
                                '127.0.0.1|%d' % target.port, '127.0.0.1:0', target.arg)
        finally:
            if old is None:
                del os.environ['PYTHONPATH']
            else:
                os.environ['PYTHONPATH'] = old
        self.upgraded(proc.address)
        response = self.refused(proc.address, upgrade_request(extra=[('X-Path', '/teapot')]), 429)
        self.assertEqual(response.body, b'slow down\n')

    def test_usage_errors(self):
        folder, name = self.plugin_module()
        web = self.tempdir()
        for options, text in [
                (['--web-auth', '--web', web], '--web-auth needs --auth-plugin'),
                (['--auth-plugin', 'NoSuchPlugin'], 'unknown --auth-plugin NoSuchPlugin'),
                (['--auth-plugin', 'websockify.auth_plugins.Nope'], 'unknown --auth-plugin'),
                (['--auth-plugin', 'BasicHTTPAuth'], 'needs --auth-source USER:PASSWORD'),
                (['--auth-plugin', 'BasicHTTPAuth', '--auth-source', 'nocolon'],
                 'needs --auth-source USER:PASSWORD'),
                (['--auth-plugin', 'ExpectOrigin'], 'ExpectOrigin needs --auth-source'),
                (['--auth-plugin', 'ClientCertCNAuth', '--auth-source', 'alice'],
                 'needs --verify-client'),
                (['--auth-plugin', 'no_such_module_here.Plugin'], 'cannot import'),
                (['--auth-plugin', 'os.NoSuchClass'], 'has no class NoSuchClass'),
                (['--auth-plugin', 'os.sep'], 'has no class sep'),
                (['--auth-plugin', 'collections.Counter'], 'has no authenticate()'),
        ]:
            with self.subTest(options=options):
                result = run_cli(*options, '127.0.0.1:0', '127.0.0.1:9')
                check_usage_error(self, result, text)

    def test_plugin_constructor_errors_are_usage_errors_in_process(self):
        folder, name = self.plugin_module()
        sys.path.insert(0, folder)
        self.addCleanup(sys.path.remove, folder)
        self.addCleanup(sys.modules.pop, name, None)
        with self.assertRaises(websockify.UsageError) as caught:
            websockify.prepare(websockify.parse_args([
                '--auth-plugin', name + '.NoSource', '--auth-source', 'x', '127.0.0.1:0',
                '127.0.0.1:9']))
        self.assertEqual(caught.exception.exit_status, 2)
        runtime = websockify.prepare(websockify.parse_args(['--auth-plugin', name + '.NoSource',
                                                            '127.0.0.1:0', '127.0.0.1:9']))
        self.assertEqual(type(runtime.auth_plugin).__name__, 'NoSource')


class TestAuthInvalidOrigin(SocketFreeTestCase):
    """ExpectOrigin refuses with upstream's InvalidOriginError."""

    def test_attributes(self):
        plugin = websockify.ExpectOrigin('https://a.example https://b.example')
        for origin in ('https://evil.example', None):
            headers = http.client.HTTPMessage()
            if origin:
                headers['Origin'] = origin
            with self.subTest(origin=origin):
                with self.assertRaises(websockify.auth_plugins.InvalidOriginError) as caught:
                    plugin.authenticate(headers, 'h', 5900)
                exc = caught.exception
                self.assertIsInstance(exc, websockify.AuthenticationError)
                self.assertEqual(exc.code, 403)
                self.assertEqual(exc.expected_origin, ['https://a.example', 'https://b.example'])
                self.assertEqual(exc.actual_origin, origin)


class TestAuthOriginPolicy(SocketFreeTestCase):
    """--origin: parse_origin (RFC 6454 serialisation) and OriginPolicy, no sockets."""

    def test_parse_origin_normalises(self):
        cases = {'https://Example.COM': ('https', 'example.com', 443),
                 'HTTP://example.com:80': ('http', 'example.com', 80),
                 'http://example.com:8080': ('http', 'example.com', 8080),
                 'http://[::1]:6080': ('http', '::1', 6080),
                 'chrome-extension://abcdef': ('chrome-extension', 'abcdef', None)}
        for text, parsed in cases.items():
            with self.subTest(text=text):
                self.assertEqual(websockify.parse_origin(text), parsed)

    def test_parse_origin_refuses_what_is_not_an_origin(self):
        for text in ('example.com', 'http://', 'http://a/', 'http://a/path', 'http://a?q',
                     'http://u@a', 'http://a:0', 'http://a:99999', 'http://a:8o', 'null',
                     '1http://a', 'http://a\x1b[2J', 'http://a b'):
            with self.subTest(text=text):
                with self.assertRaises(ValueError):
                    websockify.parse_origin(text)

    def test_listed_origins(self):
        policy = websockify.OriginPolicy(['https://novnc.example', 'http://localhost:8080'])
        for origin in ('https://novnc.example', 'https://NOVNC.example:443',
                       'http://localhost:8080'):
            self.assertTrue(policy.allows(origin, 'anything'), origin)
        for origin in ('http://novnc.example', 'https://novnc.example:8443',
                       'https://evil.example', 'http://localhost', 'null', '', 'garbage',
                       'https://novnc.example/'):
            self.assertFalse(policy.allows(origin, 'novnc.example'), origin)

    def test_same_is_the_host_of_the_request(self):
        policy = websockify.OriginPolicy(['same'])
        allowed = [('http://127.0.0.1:6080', '127.0.0.1:6080'),
                   ('https://vnc.example:6080', 'VNC.example:6080'),
                   ('http://[::1]:6080', '[::1]:6080'),
                   # No port in Host (a TLS terminator in front): the scheme's default.
                   ('https://vnc.example', 'vnc.example'),
                   ('http://vnc.example', 'vnc.example')]
        refused = [('http://127.0.0.1:6081', '127.0.0.1:6080'),
                   ('http://evil.example:6080', '127.0.0.1:6080'),
                   ('https://vnc.example:8443', 'vnc.example'),
                   ('ws://127.0.0.1:6080', '127.0.0.1:6080'),
                   ('http://127.0.0.1:6080', None), ('null', '127.0.0.1:6080')]
        for origin, host in allowed:
            self.assertTrue(policy.allows(origin, host), (origin, host))
        for origin, host in refused:
            self.assertFalse(policy.allows(origin, host), (origin, host))

    def test_null_only_when_listed(self):
        self.assertFalse(websockify.OriginPolicy(['same']).allows('null', 'h'))
        self.assertTrue(websockify.OriginPolicy(['null']).allows('null', 'h'))

    def test_refusal_reads_both_header_names_and_passes_programs(self):
        policy = websockify.OriginPolicy(['https://a.example'])

        def request(*headers):
            head = 'GET / HTTP/1.1\r\nHost: h\r\n' + ''.join('%s: %s\r\n' % h for h in headers)
            return websockify.parse_request((head + '\r\n').encode('latin-1'))
        self.assertIsNone(policy.refusal(request()))
        self.assertIsNone(policy.refusal(request(('Origin', 'https://a.example'))))
        self.assertIsNone(policy.refusal(request(('Sec-WebSocket-Origin', 'https://a.example'))))
        for name in ('Origin', 'Sec-WebSocket-Origin'):
            refusal = policy.refusal(request((name, 'https://evil.example')))
            self.assertEqual(refusal.status, 403)
            self.assertIn('https://evil.example', refusal.log_reason)
            self.assertNotIn('evil', refusal.reason)

    def test_command_line(self):
        settings = websockify.parse_args(['--origin', 'same', '--origin', 'https://a.example',
                                          '6080', 'h:5900'])
        self.assertEqual(settings.origins.values, ('same', 'https://a.example'))
        self.assertIsNone(websockify.parse_args(['6080', 'h:5900']).origins)
        for bad in ('a.example', 'https://a.example/path', 'https://a.example:0'):
            with self.subTest(bad=bad):
                err = io.StringIO()
                with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as cm:
                    websockify.parse_args(['--origin', bad, '6080', 'h:5900'])
                self.assertEqual(cm.exception.code, 2)
                self.assertIn('--origin', err.getvalue())


class TestAuthOrigin(ProxyTestCase):
    """--origin through the proxy: browsers' handshakes from other origins get 403."""

    def setUp(self):
        self.target = TargetServer(self, echo)

    def upgraded(self, address, extra=()):
        client = WSClient(self, address)
        client.handshake(extra=extra)
        self.assertEqual(client.echo(b'allowed'), b'allowed')
        client.close()

    def test_allowed_refused_and_absent(self):
        address = self.proxy('--origin', 'https://novnc.example', '--origin', 'same',
                             '127.0.0.1:0', self.target.arg)
        self.upgraded(address)                                       # a program: no Origin
        self.upgraded(address, [('Origin', 'https://novnc.example')])
        self.upgraded(address, [('Sec-WebSocket-Origin', 'https://novnc.example')])
        same = 'http://127.0.0.1:%d' % address[1]
        client = WSClient(self, address)
        client.send(upgrade_request(replace={'Host': '127.0.0.1:%d' % address[1]},
                                    extra=[('Origin', same)]))
        self.assertEqual(client.read_response().status, 101)
        client.close()
        with self.assertLogs('websockify', 'INFO') as logs:
            for origin in ('https://evil.example', 'null', 'http://127.0.0.1:1',
                           'https://novnc.example.evil.example', 'http://a\x1b[2Jb'):
                with self.subTest(origin=origin):
                    request = upgrade_request(extra=[('Origin', origin)])
                    if '\x1b' in origin:     # refused earlier: no control character in a value
                        self.refused(address, request, 400)
                        continue
                    response = self.refused(address, request, 403)
                    self.assertEqual(response.body.strip(), b'origin not allowed')
            line = self.wait_for_log(logs, lambda m: 'https://evil.example' in m)
        self.assertIn('403', line)
        self.assertIn('not allowed', line)

    def test_hixie_76_origin(self):
        address = self.proxy('--origin', 'http://example.com', '127.0.0.1:0', self.target.arg)
        keys = ('4 @1  46546xW%0l 1 5', '12998 5 Y3 1  .P00')
        for origin, status in (('http://example.com', 101), ('http://evil.example', 403)):
            with self.subTest(origin=origin):
                client = WSClient(self, address)
                client.send(hixie_request(76, origin=origin, keys=keys) + b'^n:ds[4U')
                response = client.read_response()
                self.assertEqual(response.status, status)
                client.close()

    def test_same_over_tls(self):
        pki = get_pki()
        address = self.proxy('--cert', pki.server[0], '--key', pki.server[1], '--origin', 'same',
                             '127.0.0.1:0', self.target.arg)
        host = 'localhost:%d' % address[1]
        for origin, status in (('https://' + host, 101), ('http://localhost:%d' % address[1], 101),
                               ('https://localhost:1', 403)):
            with self.subTest(origin=origin):
                client = WSClient(self, address, context=client_context(pki),
                                  server_hostname='localhost')
                client.send(upgrade_request(replace={'Host': host}, extra=[('Origin', origin)]))
                self.assertEqual(client.read_response().status, status)
                client.close()

    def test_websockets_library_sends_its_origin(self):
        client = import_optional('websockets.sync.client', 'pip install websockets')
        exceptions = import_optional('websockets.exceptions', 'pip install websockets')
        address = self.proxy('--origin', 'https://novnc.example', '127.0.0.1:0', self.target.arg)
        uri = 'ws://127.0.0.1:%d/' % address[1]
        with client.connect(uri, origin='https://novnc.example', open_timeout=TIMEOUT) as ws:
            ws.send(b'ok')
            self.assertEqual(ws.recv(timeout=TIMEOUT), b'ok')
        with self.assertRaises(exceptions.InvalidStatus) as caught:
            client.connect(uri, origin='https://evil.example', open_timeout=TIMEOUT)
        self.assertEqual(caught.exception.response.status_code, 403)


################################################################################
# Program wrapping
################################################################################

#: The wrapped program of these tests: a TCP server binding PORT on HOST.
#:   serve     echo every connection, forever
#:   once      echo one connection, then exit with status ARG (default 0)
#:   fork      fork; the child echoes forever, the parent exits 7 (a daemonizing program)
#:   stubborn  like serve, plus a child in the same group that ignores SIGTERM
#:   crash     append a time to the file ARG and exit 3, binding nothing
PROGRAM = r'''
import os, signal, socket, sys, time
port, host, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
arg = sys.argv[4] if len(sys.argv) > 4 else ''
if mode == 'crash':
    with open(arg, 'a') as f:
        f.write('%f\n' % time.monotonic())
    sys.exit(3)
ls = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, port))
ls.listen(8)
sys.stderr.write('program %s listening\n' % mode)
sys.stderr.flush()

def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)

if mode == 'once':
    c, _ = ls.accept()
    ls.close()
    echo(c)
    sys.exit(int(arg or 0))
if mode == 'fork' and os.fork():
    os._exit(7)
if mode == 'stubborn' and os.fork() == 0:
    ls.close()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        signal.pause()
while True:
    c, _ = ls.accept()
    echo(c)
'''


def ensure_rebind():
    if not os.path.exists(REBIND):
        subprocess.run(['make', '-s', 'rebind.so'], cwd=HERE, check=True, timeout=120)


def relay_checksummed(test, port, size=1 << 20):
    """Send size random bytes through the proxy to an echo program; compare digests."""
    client = WSClient(test, ('127.0.0.1', port), timeout=PROCESS_TIMEOUT)
    response = client.handshake(protocols=['binary'])
    test.assertEqual(response.status, 101, response)
    data = os.urandom(size)
    sender = threading.Thread(target=lambda: [client.send_frame(BINARY, data[i:i + 65536])
                                              for i in range(0, size, 65536)], daemon=True)
    sender.start()
    received = hashlib.sha256()
    got = 0
    while got < size:
        _, opcode, payload = client.recv_frame()
        test.assertEqual(opcode, BINARY)
        received.update(payload)
        got += len(payload)
    sender.join(PROCESS_TIMEOUT)
    client.send_close(1000)
    client.expect_close(1000)
    test.assertEqual(got, size)
    test.assertEqual(received.hexdigest(), hashlib.sha256(data).hexdigest())


class WrapTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        ensure_rebind()
        cls.tmp = tempfile.mkdtemp(prefix='wrap-test-')
        cls.program = os.path.join(cls.tmp, 'program.py')
        with open(cls.program, 'w') as f:
            f.write(PROGRAM)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def wrap(self, mode_args, prog_args, listen=None, extra=()):
        """Run websockify wrapping the test program; return (run, port)."""
        port = free_port()
        listen = listen or '127.0.0.1:%d' % port
        args = list(extra) + list(mode_args) + [listen, '--', sys.executable, self.program,
                                                 str(port)] + list(prog_args)
        run = ProxyProcess(self, *args, ready=False)
        run.wait_log(r'listening on ')
        return run, port


class TestWrapUsage(SocketFreeTestCase):
    """Contradictory or incomplete wrap command lines are usage errors."""

    def refused(self, argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as cm:
            websockify.parse_args(argv)
        self.assertEqual(cm.exception.code, 2)
        return err.getvalue()

    def test_parses_the_program_and_mode(self):
        s = websockify.parse_args(['--wrap-mode=respawn', '6080', '--', 'prog', '-x', '--', 'y'])
        self.assertEqual(s.wrap_cmd, ('prog', '-x', '--', 'y'))
        self.assertEqual((s.wrap_mode, s.listen_port, s.target_host), ('respawn', 6080, None))
        self.assertEqual(websockify.parse_args(['6080', '--', 'p']).wrap_mode, 'exit')

    def test_contradictions(self):
        self.assertIn('contradict', self.refused(['6080', 'localhost:5900', '--', 'prog']))
        self.assertIn('contradict', self.refused(['--unix-target', '/tmp/x', '6080', '--', 'p']))
        self.assertIn('PROGRAM', self.refused(['6080', '--']))
        self.assertIn('not 0', self.refused(['0', '--', 'prog']))
        self.assertIn('--unix-listen', self.refused(['--unix-listen', '/tmp/x', '--', 'p']))
        self.assertIn('--wrap-mode has no effect', websockify.parse_args(
            ['--wrap-mode=ignore', '6080', 'h:1']).notices[0])


class TestWrapRestartBackoff(SocketFreeTestCase):
    """The one restart policy of --wrap-mode=respawn and --workers (no sockets, no sleeps)."""

    def delays(self, policy, runs):
        return [policy.next_delay(*run) for run in runs]

    def test_worker_policy(self):
        policy = websockify.RestartBackoff(websockify.WORKER_MIN_LIFE,
                                           websockify.WORKER_FIRST_DELAY,
                                           websockify.WORKER_BACKOFF_MAX)
        quick = (websockify.WORKER_MIN_LIFE / 2,)
        self.assertEqual(self.delays(policy, [quick] * 8),
                         [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])
        self.assertEqual(policy.next_delay(websockify.WORKER_MIN_LIFE), 0)
        self.assertEqual(policy.failures, 0)
        self.assertEqual(policy.next_delay(0.1), 0.5, 'a long life starts the back-off anew')
        self.assertEqual(self.delays(policy, [quick] * 1000)[-1], websockify.WORKER_BACKOFF_MAX)

    def test_program_policy(self):
        policy = websockify.RestartBackoff(
            websockify.RESPAWN_QUICK_EXIT, websockify.RESPAWN_FIRST_DELAY,
            websockify.RESPAWN_MAX_DELAY, websockify.RESPAWN_IMMEDIATE_RETRIES)
        self.assertEqual(self.delays(policy, [(0.1,)] * 9),
                         [0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])
        self.assertTrue(policy.backing_off)
        self.assertEqual(policy.next_delay(0.1, True), 0, 'a run that served a session')
        self.assertFalse(policy.backing_off)
        self.assertEqual(self.delays(policy, [(0.1,), (0.1,), (websockify.RESPAWN_QUICK_EXIT,),
                                              (0.1,)]), [0, 0.5, 0, 0])

    def test_program_wrapper_uses_it_and_warns_once(self):
        settings = websockify.parse_args(['--wrap-mode=respawn', '6080', '--', 'true'])
        wrapper = websockify.ProgramWrapper(settings, '/nonexistent/rebind.so', lambda: None)
        self.addCleanup(wrapper.stop)
        with self.assertLogs('websockify', 'DEBUG') as logs:
            delays = [wrapper._respawn_delay(False, 0.2, 'exited') for _ in range(4)]
            delays.append(wrapper._respawn_delay(True, 0.2, 'exited'))
            delays.append(wrapper._respawn_delay(False, 0.2, 'exited'))
        self.assertEqual(delays, [0, 0.5, 1.0, 2.0, 0, 0])
        warnings = [r for r in logs.records if r.levelno == logging.WARNING]
        self.assertEqual(len(warnings), 1, logs.output)
        self.assertTrue(any('restarts are immediate again' in r.getMessage()
                            for r in logs.records), logs.output)


class TestWrapRebindShim(WrapTestCase):
    """rebind.so alone, preloaded into a Python that binds sockets."""

    def preload_run(self, code, port):
        path = os.path.join(self.tmp, 'report-%d' % port)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reports:
            reports.bind(path)
            reports.settimeout(0.5)
            env = dict(os.environ, LD_PRELOAD=REBIND, WEBSOCKIFY_WRAP_PORT=str(port),
                       WEBSOCKIFY_WRAP_REPORT=path)
            out = subprocess.run([sys.executable, '-c', code, str(port)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 timeout=PROCESS_TIMEOUT)
            self.assertEqual(out.returncode, 0, out.stderr)
            got = []
            with contextlib.suppress(socket.timeout):
                while True:
                    got.append(reports.recv(100))
        os.unlink(path)
        return out.stdout.decode().split(), got

    def test_moves_tcp_binds_of_the_port_only(self):
        port = free_port()
        other = free_port()
        code = ('import socket, sys, errno\n'
                'p = int(sys.argv[1])\n'
                's = socket.socket(); s.bind(("0.0.0.0", p)); print("%s:%d" % s.getsockname())\n'
                'u = socket.socket(type=socket.SOCK_DGRAM); u.bind(("127.0.0.1", p))\n'
                'print("%s:%d" % u.getsockname())\n'
                'o = socket.socket(); o.bind(("127.0.0.1", ' + str(other) + '))\n'
                'print("%s:%d" % o.getsockname())\n'
                'try:\n    s.bind(("0.0.0.0", p))\n'
                'except OSError as e:\n    print(errno.errorcode[e.errno])\n')
        lines, reports = self.preload_run(code, port)
        moved_host, moved_port = lines[0].rsplit(':', 1)
        self.assertEqual(moved_host, '127.0.0.1')
        self.assertNotEqual(int(moved_port), port)
        self.assertEqual(lines[1], '127.0.0.1:%d' % port)      # UDP untouched
        self.assertEqual(lines[2], '127.0.0.1:%d' % other)     # other port untouched
        self.assertEqual(lines[3], 'EINVAL')                   # errno of the real bind kept
        self.assertEqual(len(reports), 1, reports)
        self.assertRegex(reports[0].decode(), r'^rebind 4 %s \d+$' % moved_port)

    @unittest.skipUnless(HAVE_IPV6, 'no IPv6 loopback')
    def test_moves_ipv6_binds_to_loopback(self):
        port = free_port()
        code = ('import socket, sys\n'
                's = socket.socket(socket.AF_INET6); s.bind(("::", int(sys.argv[1])))\n'
                'print("%s:%d" % s.getsockname()[:2])\n')
        lines, reports = self.preload_run(code, port)
        host, moved = lines[0].rsplit(':', 1)
        self.assertEqual(host, '::1')
        self.assertEqual([r.decode().split()[:3] for r in reports], [['rebind', '6', moved]])


class TestWrapRebindLookup(WrapTestCase):

    def copy_alone(self, with_source):
        where = tempfile.mkdtemp(prefix='alone-', dir=self.tmp)
        shutil.copy(SCRIPT, where)
        if with_source:
            shutil.copy(os.path.join(HERE, 'rebind.c'), where)
        return os.path.join(where, 'websockify.py')

    def env_without_rebind(self, path=None):
        env = dict(os.environ)
        env.pop('WEBSOCKIFY_REBIND', None)
        if path is not None:
            env['PATH'] = path
        return env

    def test_missing_rebind_gives_one_clear_message(self):
        script = self.copy_alone(with_source=False)
        port = free_port()
        out = subprocess.run([sys.executable, script, '127.0.0.1:%d' % port, '--',
                              sys.executable, self.program, str(port), '0.0.0.0', 'serve'],
                             env=self.env_without_rebind(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=PROCESS_TIMEOUT)
        err = out.stderr.decode()
        self.assertEqual(out.returncode, 1, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn('rebind.so not found', err)
        self.assertIn('`make`', err)
        self.assertNotIn('Traceback', err)
        self.assertNotIn('LD_PRELOAD', err)

    def test_rebind_option_naming_a_missing_file(self):
        port = free_port()
        missing = os.path.join(self.tmp, 'nowhere', 'rebind.so')
        out = subprocess.run([sys.executable, SCRIPT, '--rebind', missing,
                              '127.0.0.1:%d' % port, '--', 'true'],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=PROCESS_TIMEOUT)
        self.assertEqual(out.returncode, 1)
        self.assertIn(('rebind.so not found at %s (from --rebind)' % missing).encode(),
                      out.stderr)

    def test_builds_rebind_on_the_fly(self):
        require('a C compiler', shutil.which('cc') or shutil.which('gcc'),
                'apt-get install gcc')
        script = self.copy_alone(with_source=True)
        port = free_port()
        run = ProxyProcess(self, '127.0.0.1:%d' % port, '--', sys.executable, self.program,
                           str(port), '0.0.0.0', 'serve',
                           env=self.env_without_rebind(), script=script, ready=False)
        run.wait_log(r'built \S+rebind\.so from rebind\.c')
        run.wait_log(r'listening on ')
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(script), 'rebind.so')))
        relay_checksummed(self, port, 65536)


class TestWrapRelay(WrapTestCase):
    """The wrapped program's port is moved whatever address it binds; data arrives intact."""

    def check_relay(self, host):
        run, port = self.wrap([], [host, 'serve'])
        run.wait_log(r'^program serve listening')        # its output passes through
        relay_checksummed(self, port)
        self.assertIn('session closed', run.wait_log(r'session closed.*program').group(0))

    def test_program_binding_ipv4_any(self):
        self.check_relay('0.0.0.0')

    @unittest.skipUnless(HAVE_IPV6, 'no IPv6 loopback')
    def test_program_binding_ipv6_any(self):
        self.check_relay('::')

    def test_program_binding_ipv4_loopback(self):
        self.check_relay('127.0.0.1')

    def test_rebind_found_through_environment(self):
        port = free_port()
        env = dict(os.environ, WEBSOCKIFY_REBIND=REBIND)
        run = ProxyProcess(self, '127.0.0.1:%d' % port, '--', sys.executable, self.program,
                           str(port), '0.0.0.0', 'serve', env=env, ready=False)
        run.wait_log(r'listening on ')
        relay_checksummed(self, port, 4096)


class TestWrapModes(WrapTestCase):

    def test_exit_mode_propagates_status(self):
        run, port = self.wrap([], ['0.0.0.0', 'once', '5'])
        relay_checksummed(self, port, 65536)
        self.assertEqual(run.proc.wait(PROCESS_TIMEOUT), 5)
        self.assertIn('exited with status 5', run.stderr)

    def test_ignore_mode_keeps_serving(self):
        run, port = self.wrap(['--wrap-mode=ignore'], ['0.0.0.0', 'fork'])
        run.wait_log(r'exited with status 7: still serving')
        relay_checksummed(self, port, 65536)
        relay_checksummed(self, port, 65536)
        self.assertIsNone(run.proc.poll())
        pgid = run.pgids()[0]
        self.assertEqual(run.stop(), 0)
        wait_group_gone(self, pgid)

    def test_respawn_restarts_after_each_session(self):
        run, port = self.wrap(['--wrap-mode', 'respawn'], ['0.0.0.0', 'once'])
        for _ in range(4):       # back to back: each arrives while the program restarts
            relay_checksummed(self, port, 32768)
        run.wait_log(r'restarting \(--wrap-mode=respawn\)', count=3)
        self.assertGreaterEqual(len(run.pgids()), 4)
        self.assertNotIn('back-off', run.stderr)
        self.assertIsNone(run.proc.poll())

    def test_respawn_backs_off_a_program_that_crashes_at_start(self):
        starts = os.path.join(self.tmp, 'starts')
        port = free_port()
        run = ProxyProcess(self, '--wrap-mode=respawn', '127.0.0.1:%d' % port, '--',
                           sys.executable, self.program, str(port), '0.0.0.0', 'crash',
                           starts, ready=False)
        run.wait_log(r'started \S+ \(pid \d+\)', count=5, timeout=PROCESS_TIMEOUT)
        with open(starts) as f:
            times = [float(line) for line in f]
        self.assertGreaterEqual(len(times), 4)
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertLess(gaps[0], 1.0, gaps)             # the first failure restarts at once
        self.assertGreater(gaps[2], gaps[1], gaps)        # then the delay doubles
        self.assertGreater(gaps[2], 0.9, gaps)
        self.assertEqual(run.stderr.count('back-off'), 1, run.stderr)
        self.assertIsNone(run.proc.poll())


class TestWrapLifetime(WrapTestCase):
    """No wrapped process outlives websockify."""

    def test_sigterm_leaves_no_process_of_the_group(self):
        run, port = self.wrap([], ['0.0.0.0', 'stubborn'])
        relay_checksummed(self, port, 4096)
        pgid = run.pgids()[0]
        os.killpg(pgid, 0)                                 # the group exists
        self.assertEqual(run.stop(), 0)
        wait_group_gone(self, pgid)
        self.assertIn('SIGKILL', run.stderr)               # the child ignored SIGTERM

    def test_sighup_stops_the_program_and_websockify(self):
        # With a program, SIGHUP keeps its old meaning: a closed terminal stops both.
        run, port = self.wrap([], ['0.0.0.0', 'serve'])
        relay_checksummed(self, port, 4096)
        pgid = run.pgids()[0]
        self.assertEqual(run.stop(signal.SIGHUP), 0)
        wait_group_gone(self, pgid)
        self.assertNotIn('reloaded', run.stderr)

    def test_timeout_stops_the_program(self):
        pid_file = os.path.join(self.tmp, 'timeout.pid')
        run, port = self.wrap([], ['0.0.0.0', 'serve'],
                              extra=['--timeout', '1', '--pid-file', pid_file])
        with open(pid_file) as f:
            self.assertEqual(int(f.read()), run.proc.pid)
        pgid = run.pgids()[0]
        self.assertEqual(run.proc.wait(PROCESS_TIMEOUT), 0)
        wait_group_gone(self, pgid)
        self.assertFalse(os.path.exists(pid_file))


class TestWrapTelnetd(WrapTestCase):
    """The seed's example: websockify.py P --wrap-mode=respawn -- in.telnetd -debug P."""

    def login_prompt(self, port):
        """Negotiate (refusing every option) until telnetd's login prompt; return all bytes."""
        client = WSClient(self, ('127.0.0.1', port), timeout=PROCESS_TIMEOUT)
        response = client.handshake(protocols=['binary'])
        self.assertEqual(response.status, 101, response)
        seen = b''
        end = time.monotonic() + 30
        while b'login:' not in seen:
            self.assertLess(time.monotonic(), end, seen)
            _, opcode, data = client.recv_frame()
            self.assertEqual(opcode, BINARY, data)
            answer = b''
            for verb, option in re.findall(rb'\xff([\xfb-\xfe])(.)', data, re.S):
                # WILL/WONT -> DONT, DO/DONT -> WONT (RFC 854)
                answer += b'\xff' + (b'\xfe' if verb in b'\xfb\xfc' else b'\xfc') + option
            if answer:
                client.send_frame(BINARY, answer)
            seen += data
        client.send_close(1000)
        client.expect_close(1000)
        return seen

    def test_telnetd_login_prompt_across_two_connections(self):
        telnetd = telnetd_path()
        port = free_port()
        run = ProxyProcess(self, port, '--wrap-mode=respawn', '--', telnetd, '-debug', port,
                           ready=False)
        run.wait_log(r'listening on ')
        for n in (1, 2):
            seen = self.login_prompt(port)
            self.assertIn(b'\xff\xfd', seen)           # IAC DO: telnet negotiation
            self.assertIn(b'login:', seen)
            run.wait_log(r'session closed', count=n)
        self.assertGreaterEqual(len(run.pgids()), 2)      # respawned after the first
        self.assertEqual(run.stop(), 0)


################################################################################
# Recording
################################################################################

_ENTRY = re.compile(r"'([{}])(\d+)\1(.*)',\Z")


def parse_recording(text):
    """[(marker, ms, bytes)] of a recording file; fails unless it has the noVNC layout.

    The entries' escapes (\\xNN \\n \\t \\r \\\\ \\') mean the same in Python and
    JavaScript, so Python's literal parser reads them."""
    lines = text.split('\n')
    if lines[:2] != ["var VNC_frame_encoding = 'binary';", 'var VNC_frame_data = [']:
        raise AssertionError('bad head: %r' % lines[:2])
    if lines[-2:] != ["'EOF'];", '']:
        raise AssertionError('bad tail: %r' % lines[-2:])
    entries = []
    for line in lines[2:-2]:
        match = _ENTRY.match(line)
        if not match:
            raise AssertionError('bad entry %r' % line)
        body = ast.literal_eval("'%s'" % match.group(3))
        entries.append((match.group(1), int(match.group(2)), body.encode('latin-1')))
    return entries


def joined(entries, marker):
    return b''.join(data for m, _, data in entries if m == marker)


#: noVNC's playback page loads a recording as a script and turns each string into
#: {fromClient, timestamp, data}; this does the same with Node's vm module.
NODE_READER = r"""
const fs = require('fs'), vm = require('vm');
const scope = {};
vm.runInNewContext(fs.readFileSync(process.argv[1], 'latin1'), scope);
const out = [];
for (const frame of scope.VNC_frame_data) {
    if (frame === 'EOF') { out.push('EOF'); break; }
    const mark = frame[0];
    const dataIdx = frame.indexOf(mark, 1) + 1;
    const bytes = [];
    for (let i = dataIdx; i < frame.length; i++) { bytes.push(frame.charCodeAt(i)); }
    out.push({fromClient: mark === '}', timestamp: parseInt(frame.slice(1, dataIdx - 1), 10),
              data: Buffer.from(bytes).toString('hex')});
}
console.log(JSON.stringify({encoding: scope.VNC_frame_encoding, frames: out}));
"""


class TestRecording(ProxyTestCase):

    def recorded_proxy(self, *options, handler=greet_then_echo):
        folder = self.tempdir()
        prefix = os.path.join(folder, 'session')
        target = TargetServer(self, handler)
        address = self.proxy('--record', prefix, *options, '127.0.0.1:0', target.arg)
        return address, prefix

    def read_when_closed(self, path):
        """The recording once its session has ended (the file ends with 'EOF'];)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            with contextlib.suppress(FileNotFoundError), open(path, encoding='ascii') as f:
                text = f.read()
                if text.endswith("'EOF'];\n"):
                    return text
            if time.monotonic() > deadline:
                self.fail('%s was not completed' % path)
            time.sleep(0.02)

    #: Bytes that need escaping in a JavaScript string, and every byte value.
    MESSAGES = [b"it's \\ a 'quote'\n\r\t", bytes(range(256)), b'x' * 70000]

    def test_hybi_session_is_recorded_both_ways_in_a_0600_file(self):
        address, prefix = self.recorded_proxy()
        with self.assertLogs('websockify', 'INFO') as logs:
            client = open_session(self, address)
            self.assertEqual(client.recv_data(12), b'RFB 003.008\n')
            for message in self.MESSAGES:
                self.assertEqual(client.echo(message), message)
            client.send_frame(TEXT, 'héllo'.encode('utf-8'))
            self.assertEqual(client.recv_data(6), 'héllo'.encode('utf-8'))
            client.send_close(1000)
            client.expect_close(1000)
            line = self.wait_for_log(logs, lambda m: 'recording to' in m)
        path = prefix + '.1'
        self.assertIn(path, line)
        entries = parse_recording(self.read_when_closed(path))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        sent = b''.join(self.MESSAGES) + 'héllo'.encode('utf-8')
        self.assertEqual(joined(entries, '}'), sent)
        self.assertEqual(joined(entries, '{'), b'RFB 003.008\n' + sent)
        self.assertEqual(entries[0][0], '{')        # the target spoke first
        times = [ms for _, ms, _ in entries]
        self.assertEqual(times, sorted(times))
        self.assertLess(times[-1], TIMEOUT * 1000)

    def test_sessions_go_to_numbered_files_and_an_existing_file_is_kept(self):
        address, prefix = self.recorded_proxy()
        with open(prefix + '.2', 'w') as f:      # from a run before a restart
            f.write('old content')
        os.chmod(prefix + '.2', 0o644)
        for n in (1, 2):
            client = open_session(self, address)
            self.assertEqual(client.recv_data(12), b'RFB 003.008\n')
            self.assertEqual(client.echo(b'session %d' % n), b'session %d' % n)
            client.send_close(1000)
            client.expect_close(1000)
        for n, name in ((1, prefix + '.1'), (2, prefix + '.2.1')):
            entries = parse_recording(self.read_when_closed(name))
            self.assertEqual(joined(entries, '}'), b'session %d' % n)
            self.assertEqual(stat.S_IMODE(os.stat(name).st_mode), 0o600)
        with open(prefix + '.2') as f:
            self.assertEqual(f.read(), 'old content')

    def test_base64_session_records_decoded_bytes(self):
        address, prefix = self.recorded_proxy()
        client = WSClient(self, address)
        client.handshake(protocols=['base64'])
        frame = client.recv_frame()
        self.assertEqual(base64.b64decode(frame.payload), b'RFB 003.008\n')
        payload = bytes(range(200))
        client.send_frame(TEXT, base64.b64encode(payload))
        echoed = b''
        while len(echoed) < len(payload):
            echoed += base64.b64decode(client.recv_frame().payload)
        self.assertEqual(echoed, payload)
        client.send_close(1000)
        client.expect_close(1000)
        entries = parse_recording(self.read_when_closed(prefix + '.1'))
        self.assertEqual(joined(entries, '}'), payload)
        self.assertEqual(joined(entries, '{'), b'RFB 003.008\n' + payload)

    def test_hixie_session_records_decoded_bytes(self):
        address, prefix = self.recorded_proxy(handler=echo)
        client = WSClient(self, address)
        client.send(hixie_request(75, host='localhost', path='/', origin='http://localhost'))
        self.assertEqual(client.read_response().status, 101)
        payload = b'\x00\xffhixie\'s bytes\\'
        client.send_hixie(payload)
        self.assertEqual(client.recv_hixie_data(len(payload)), payload)
        client.sock.shutdown(socket.SHUT_WR)
        client.read_until_eof()
        entries = parse_recording(self.read_when_closed(prefix + '.1'))
        self.assertEqual(joined(entries, '}'), payload)
        self.assertEqual(joined(entries, '{'), payload)

    def test_node_reads_the_recording_as_novnc_playback_does(self):
        node = shutil.which('node') or shutil.which('nodejs')
        require('Node.js', node, 'apt-get install nodejs')
        address, prefix = self.recorded_proxy()
        client = open_session(self, address)
        self.assertEqual(client.recv_data(12), b'RFB 003.008\n')
        for message in self.MESSAGES:
            self.assertEqual(client.echo(message), message)
        client.send_close(1000)
        client.expect_close(1000)
        self.read_when_closed(prefix + '.1')
        result = subprocess.run([node, '-e', NODE_READER, prefix + '.1'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 0, result.stderr)
        parsed = json.loads(result.stdout)
        self.assertEqual(parsed['encoding'], 'binary')
        frames = parsed['frames']
        self.assertEqual(frames[-1], 'EOF')
        received = b''.join(bytes.fromhex(f['data']) for f in frames[:-1] if not f['fromClient'])
        sent = b''.join(bytes.fromhex(f['data']) for f in frames[:-1] if f['fromClient'])
        self.assertEqual(received, b'RFB 003.008\n' + b''.join(self.MESSAGES))
        self.assertEqual(sent, b''.join(self.MESSAGES))
        self.assertTrue(all(isinstance(f['timestamp'], int) for f in frames[:-1]))

    def test_session_goes_on_when_its_file_cannot_be_made(self):
        address, prefix = self.recorded_proxy()
        shutil.rmtree(os.path.dirname(prefix))  # gone after start-up: FILE.1 cannot be made
        with self.assertLogs('websockify', 'INFO') as logs:
            client = open_session(self, address)
            self.assertEqual(client.recv_data(12), b'RFB 003.008\n')
            self.assertEqual(client.echo(b'still relayed'), b'still relayed')
            line = self.wait_for_log(logs, lambda m: 'cannot record' in m)
        self.assertIn(prefix + '.1', line)

    def test_a_failing_write_stops_the_recording_with_one_log_line(self):
        if not os.path.exists('/dev/full'):
            self.skipTest('no /dev/full here')
        path = os.path.join(self.tempdir(), 'session.1')
        recorder = websockify.SessionRecorder(path, 'test')
        recorder._file.close()
        recorder._file = open('/dev/full', 'wb', buffering=0)   # every write: ENOSPC
        with self.assertLogs('websockify', 'WARNING') as logs:
            recorder.target(b'first')
            recorder.client([b'second'])
            recorder.close()
        self.assertEqual(len(logs.records), 1, logs.output)
        self.assertIn('recording to %s stopped' % path, logs.output[0])

    def test_usage_errors(self):
        folder = self.tempdir()
        for option, text in [
                (os.path.join(folder, 'missing', 'session'), 'does not exist'),
                (folder, 'is a directory'),
                (folder + '/', 'is a directory')]:
            with self.subTest(option=option):
                result = run_cli('--record', option, '127.0.0.1:0', '127.0.0.1:9')
                check_usage_error(self, result, text)


################################################################################
# Server and command line: options, workers, daemon, syslog, signals
################################################################################

class TestServerOptions(SocketFreeTestCase):
    """parse_args: the command line into Settings."""

    def test_options_parse_into_settings(self):
        settings = websockify.parse_args(
            ['--heartbeat', '5', '--text-frames', '--handshake-timeout', '2.5',
             '--idle-timeout', '7', '--run-once', '-v', '[::1]:6080', '[::1]:5900'])
        self.assertEqual((settings.heartbeat, settings.text_frames, settings.handshake_timeout,
                          settings.idle_timeout, settings.run_once, settings.verbose),
                         (5, True, 2.5, 7, True, True))

    def test_usage_error_raises_system_exit_2(self):
        with contextlib.redirect_stderr(io.StringIO()) as err, \
                self.assertRaises(SystemExit) as cm:
            websockify.parse_args(['notaport', 'localhost:5900'])
        self.assertEqual(cm.exception.code, 2)
        self.assertEqual(len(err.getvalue().strip().splitlines()), 1, err.getvalue())


class TestServerPrepare(SocketFreeTestCase):
    """parse_args gives plain values; prepare() builds every object or raises UsageError."""

    def prepared(self, *argv):
        return websockify.prepare(websockify.parse_args(list(argv)))

    def refused(self, *argv):
        with self.assertRaises(websockify.UsageError) as caught:
            self.prepared(*argv)
        return caught.exception

    def test_settings_hold_plain_values_only(self):
        settings = websockify.parse_args(['--auth-plugin', 'BasicHTTPAuth', '--auth-source',
                                          'u:p', '--target-config', 'tokens', '6080'])
        self.assertEqual((settings.auth_plugin_name, settings.auth_source),
                         ('BasicHTTPAuth', 'u:p'))
        plain = (str, int, float, bool, tuple, type(None))
        for name, value in settings.as_dict().items():
            self.assertIsInstance(value, plain, name)
        self.assertFalse(hasattr(settings, 'auth_plugin'))

    def test_every_usage_error(self):
        missing = os.path.join(tempfile.gettempdir(), 'no-such-dir-%d' % os.getpid(), 'x')
        cases = [
            (['--auth-plugin', 'NoSuchPlugin', '6080', 'h:1'], 'unknown --auth-plugin'),
            (['--auth-plugin', 'BasicHTTPAuth', '6080', 'h:1'], 'needs --auth-source'),
            (['--auth-plugin', 'no_such_module_here.P', '6080', 'h:1'], 'cannot import'),
            (['--auth-plugin', 'ClientCertCNAuth', '--auth-source', 'alice', '6080', 'h:1'],
             'needs --verify-client'),
            (['--token-plugin', 'TokenFile', '--token-source', missing, '6080'],
             '--token-source'),
            (['--token-plugin', 'no_such_module_here.P', '--token-source', 'x', '6080'],
             'cannot import'),
            (['--ssl-target', '--ssl-target-cafile', missing, '6080', 'h:1'],
             'cannot load the target CA file'),
            (['--cert', missing, '6080', 'h:1'], 'cannot read the certificate'),
        ]
        for argv, text in cases:
            with self.subTest(argv=argv):
                exc = self.refused(*argv)
                self.assertIn(text, str(exc))
                self.assertEqual(exc.exit_status, 2)
        exc = self.refused('--rebind', missing, '6080', '--', 'true')
        self.assertIn('rebind.so not found', str(exc))
        self.assertEqual(exc.exit_status, 1, 'a missing rebind.so exits 1, as before')

    def test_runtime_parts_reach_the_server(self):
        folder = tempfile.mkdtemp(prefix='prepare-')
        self.addCleanup(shutil.rmtree, folder)
        tokens = os.path.join(folder, 'tokens')
        with open(tokens, 'w') as f:
            f.write('a: h:1\n')
        settings = websockify.parse_args(['--auth-plugin', 'ExpectOrigin', '--auth-source',
                                          'https://a.example', '--target-config', tokens,
                                          '--ssl-target', '127.0.0.1:0'])
        runtime = websockify.prepare(settings)
        self.assertIsInstance(runtime.server_tls, websockify.ServerTLS)
        self.assertIsInstance(runtime.target_tls, ssl.SSLContext)
        self.assertIsInstance(runtime.token_plugin, websockify.TokenFile)
        self.assertIsInstance(runtime.auth_plugin, websockify.ExpectOrigin)
        self.assertIsNone(runtime.rebind)
        server = websockify.make_server(settings, runtime)
        self.addCleanup(server.server_close)
        self.assertIs(server.settings, settings)
        self.assertIs(server.tls, runtime.server_tls)
        self.assertIs(server.target_tls, runtime.target_tls)
        self.assertIs(server.token_plugin, runtime.token_plugin)
        self.assertIs(server.auth_plugin, runtime.auth_plugin)
        self.assertIsNone(server.wrapper)

    def test_rebind_path_is_prepared(self):
        require('rebind.so (make rebind.so)', os.path.isfile(REBIND), 'make rebind.so')
        runtime = self.prepared('--rebind', REBIND, '6080', '--', 'true')
        self.assertEqual(runtime.rebind, REBIND)


class TestServerWithoutOptionalModules(unittest.TestCase):
    """websockify.py on an interpreter built without ssl, mmap and ctypes (minimal
    and embedded builds): a runner blocks their import, then runs the file as
    __main__. Without ctypes, main() leaves malloc's settings alone."""

    RUNNER = textwrap.dedent("""\
        import runpy, sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name in ('ssl', '_ssl', 'mmap', 'ctypes', '_ctypes'):
                    raise ImportError('%s is blocked' % name)
        sys.meta_path.insert(0, Blocker())
        script = sys.argv.pop(1)
        sys.argv[0] = script
        runpy.run_path(script, run_name='__main__')
        """)

    def setUp(self):
        folder = tempfile.mkdtemp(prefix='wsfy-nossl-')
        self.addCleanup(shutil.rmtree, folder)
        self.runner = os.path.join(folder, 'without_ssl_mmap.py')
        with open(self.runner, 'w') as f:
            f.write(self.RUNNER)

    def run_blocked(self, *args):
        return subprocess.run([sys.executable, self.runner, SCRIPT] + list(args),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=TIMEOUT, cwd=HERE)

    def test_plain_relay_works_and_tls_hello_is_closed(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, SCRIPT, '127.0.0.1:0', '127.0.0.1:%d' % target.port,
                             script=self.runner)
        self.assertIn('no ssl module: wss:// is off', proxy.stderr)
        client = WSClient(self, proxy.address)
        client.handshake(protocols=['binary'])
        self.assertEqual(client.echo(b'no ssl, no mmap'), b'no ssl, no mmap')
        client.send_close(1000)
        client.expect_close()
        hello = socket.create_connection(proxy.address, TIMEOUT)
        self.addCleanup(hello.close)
        hello.sendall(b'\x16\x03\x01\x00\x05hello')
        try:
            self.assertEqual(hello.recv(100), b'')
        except ConnectionResetError:
            pass
        proxy.wait_log('TLS handshake refused: this Python has no ssl module')

    def test_options_that_need_them_are_usage_errors(self):
        cases = {('--cert', SCRIPT): 'no ssl module',
                 ('--ssl-only',): 'no ssl module',
                 ('--ssl-target',): 'no ssl module',
                 ('--workers', '2'): 'mmap'}
        for options, problem in cases.items():
            with self.subTest(options=options):
                result = self.run_blocked(*(options + ('127.0.0.1:0', '127.0.0.1:9')))
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn(problem, result.stderr)
                self.assertNotIn('Traceback', result.stderr)


class TestServerOptionsWithoutEffect(SocketFreeTestCase):
    """An option that has no effect in its combination is a warning, as upstream
    accepts it, never a refusal to start; options that would be unsafe stay errors."""

    CASES = {('--wrap-mode', 'respawn'): '--wrap-mode has no effect without -- PROGRAM',
             ('--rebind', '/x/rebind.so'): '--rebind has no effect without -- PROGRAM',
             ('--cafile', '/x/ca.pem'): '--cafile has no effect without --verify-client',
             ('--ssl-target-insecure',): '--ssl-target-insecure has no effect without',
             ('--ssl-target-cafile', '/x/ca.pem'): '--ssl-target-cafile has no effect',
             ('--web-listing',): '--web-listing has no effect without --web',
             ('--auth-source', 'a:b'): '--auth-source has no effect without --auth-plugin',
             ('--legacy-syslog',): '--legacy-syslog has no effect without --syslog'}

    def test_each_is_a_notice(self):
        for options, text in self.CASES.items():
            with self.subTest(options=options):
                settings = websockify.parse_args(list(options) + ['6080', 'h:5900'])
                self.assertEqual(len(settings.notices), 1, settings.notices)
                self.assertIn(text, settings.notices[0])
        self.assertEqual(websockify.parse_args(['6080', 'h:5900']).notices, ())

    def test_logged_at_start_and_the_server_serves(self):
        options = [o for case in self.CASES for o in case]
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, *options, '127.0.0.1:0', '127.0.0.1:%d' % target.port)
        for text in self.CASES.values():
            self.assertIn(text, proxy.stderr)
        client = WSClient(self, proxy.address)
        client.handshake(protocols=['binary'])
        self.assertEqual(client.echo(b'still serves'), b'still serves')


class TestServerOptionsWithoutEffectUnixTarget(SocketFreeTestCase):
    """--ssl-target to a --unix-target without --ssl-target-insecure: upstream speaks
    to the socket without TLS, so it is a warning, and TLS is off."""

    def test_warning_and_no_tls(self):
        settings = websockify.parse_args(['--ssl-target', '--unix-target', '/x.sock', '6080'])
        self.assertFalse(settings.ssl_target)
        self.assertEqual(len(settings.notices), 1)
        self.assertIn('--ssl-target has no effect with --unix-target', settings.notices[0])
        settings = websockify.parse_args(['--ssl-target', '--ssl-target-cafile', '/ca.pem',
                                          '--unix-target', '/x.sock', '6080'])
        self.assertEqual(len(settings.notices), 2, settings.notices)
        settings = websockify.parse_args(['--ssl-target', '--ssl-target-insecure',
                                          '--unix-target', '/x.sock', '6080'])
        self.assertTrue(settings.ssl_target)
        self.assertEqual(settings.notices, ())


class TestServer(ProxyTestCase):

    def unix_listen(self, *options):
        path = os.path.join(self.tempdir(), 'listen.sock')
        target = TargetServer(self, echo)
        server = start_proxy(self, '--unix-listen', path, *options, target.arg)
        self.assertEqual(server.server_address, path)
        return path

    def test_unix_listen_socket_has_mode_0600_by_default_and_relays(self):
        path = self.unix_listen()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        client = open_session(self, path)
        self.assertEqual(client.echo(b'over a unix socket'), b'over a unix socket')

    def test_unix_listen_mode_sets_the_socket_mode(self):
        path = self.unix_listen('--unix-listen-mode', '660')
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        self.assertEqual(open_session(self, path).echo(b'660'), b'660')

    def test_ipv6_listen_and_target(self):
        if not HAVE_IPV6:
            self.skipTest('no IPv6 on this host')
        target = TargetServer(self, echo, host='::1')
        address = self.proxy('[::1]:0', target.arg)
        self.assertEqual(address[0], '::1')
        self.assertEqual(open_session(self, address).echo(b'v6 to v6'), b'v6 to v6')

    def test_session_open_and_closed_lines(self):
        target = TargetServer(self, echo)
        address = self.proxy('127.0.0.1:0', target.arg)
        with self.assertLogs('websockify', 'INFO') as logs:
            client = WSClient(self, address)
            client.handshake(path='/some/path', protocols=['binary'])
            peer = '127.0.0.1:%d' % client.sock.getsockname()[1]
            self.assertEqual(client.echo(b'12345'), b'12345')
            client.send_close(1000, b'done')
            client.expect_close(1000)
            closed = self.wait_for_log(logs, lambda m: 'session closed' in m)
        opened = [r.getMessage() for r in logs.records if 'session open' in r.getMessage()]
        self.assertEqual(len(opened), 1, logs.output)
        for part in (peer, '/some/path', target.arg, 'binary'):
            self.assertIn(part, opened[0])
        for part in (peer, '/some/path', target.arg, '1000', 'done'):
            self.assertIn(part, closed)


#: Options --help must mention, each as a word of its own.
DOCUMENTED_OPTIONS = ('-v', '--verbose', '--traffic', '--run-once', '--timeout', '--idle-timeout',
                '--unix-target', '--unix-listen', '--unix-listen-mode', '-6',
                '--prefer-ipv6', '--libserver', '--text-frames', '--heartbeat',
                '--handshake-timeout', '--log-file')


class TestServerCommandLine(ProxyTestCase):

    def relays(self, address):
        client = open_session(self, address)
        self.assertEqual(client.echo(b'round trip'), b'round trip')
        return client

    def test_upstream_command_line_forms_run_unchanged(self):
        target = TargetServer(self, echo)
        folder = self.tempdir()
        unix_target = os.path.join(folder, 'target.sock')
        TargetServer(self, echo, unix_path=unix_target)
        forms = {
            'PORT localhost:PORT': ['0', 'localhost:%d' % target.port],
            ':PORT host:PORT': [':0', '127.0.0.1:%d' % target.port],
            '--unix-target': ['--unix-target', unix_target, '127.0.0.1:0'],
            '--unix-listen': ['--unix-listen', os.path.join(folder, 'l.sock'), target.arg],
            '--libserver': ['--libserver', '127.0.0.1:0', target.arg],
            '-v --traffic': ['-v', '--traffic', '127.0.0.1:0', target.arg],
        }
        for name, args in forms.items():
            with self.subTest(name):
                proxy = ProxyProcess(self, *args)
                self.relays(proxy.address)
                proxy.kill()
                self.assertNotIn('Traceback', proxy.stderr)

    def test_upstream_ipv6_form_runs_unchanged(self):
        if not HAVE_IPV6:
            self.skipTest('no IPv6 on this host')
        target = TargetServer(self, echo, host='::1')
        proxy = ProxyProcess(self, '[::1]:0', target.arg)
        self.assertEqual(proxy.address[0], '::1')
        self.relays(proxy.address)

    def test_usage_errors_exit_2_with_one_line_and_no_traceback(self):
        cases = [
            (),
            ('--no-such-option', '6080', 'localhost:5900'),
            ('notaport', 'localhost:5900'),
            ('6080', 'localhost:notaport'),
            ('70000', 'localhost:5900'),
            ('6080', 'localhost:0'),
            ('6080', 'localhost:59_00'),
            ('6080', 'localhost: 5900'),
            ('6080',),
            ('6080', 'localhost:5900', 'extra'),
            ('--heartbeat', 'soon', '6080', 'localhost:5900'),
            ('--unix-listen-mode', 'rw', '--unix-listen', 'x.sock', 'localhost:5900'),
        ]
        for args in cases:
            with self.subTest(args=args):
                result = run_cli(*args, cwd=self.tempdir())
                self.assertEqual(result.returncode, 2, result)
                self.assertNotIn('Traceback', result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)

    def test_help_mentions_every_option(self):
        result = run_cli('--help')
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in DOCUMENTED_OPTIONS:
            self.assertRegex(result.stdout, r'(?<![\w-])%s(?![\w-])' % re.escape(option))

    def test_sigterm_closes_live_sessions_with_1001_and_exits_0(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '127.0.0.1:0', target.arg)
        clients = [self.relays(proxy.address) for _ in range(3)]
        proxy.proc.send_signal(signal.SIGTERM)
        for client in clients:
            client.expect_close(1001)
        self.assertEqual(proxy.wait(), 0, proxy.stderr)
        self.assertNotIn('Traceback', proxy.stderr)

    def test_run_once_exits_after_one_session(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--run-once', '127.0.0.1:0', target.arg)
        client = self.relays(proxy.address)
        client.send_close(1000)
        client.expect_close(1000)
        self.assertEqual(proxy.wait(), 0, proxy.stderr)

    def hold(self, client, seconds):
        """Keep a session busy for `seconds` with round trips."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.assertEqual(client.echo(b'busy'), b'busy')
            time.sleep(0.1)

    def test_idle_timeout_exits_only_once_no_session_is_live(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--idle-timeout', '1', '127.0.0.1:0', target.arg)
        client = self.relays(proxy.address)
        self.hold(client, 1.5)
        self.assertIsNone(proxy.proc.poll(), 'exited during a live session')
        client.send_close(1000)
        client.expect_close(1000)
        self.assertEqual(proxy.wait(), 0, proxy.stderr)

    def test_timeout_stops_accepting_and_exits_after_the_last_session(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--timeout', '1', '127.0.0.1:0', target.arg)
        client = self.relays(proxy.address)
        self.hold(client, 1.5)
        self.assertIsNone(proxy.proc.poll(), 'exited during a live session')
        with self.assertRaises((OSError, EOFError, AssertionError)):
            WSClient(self, proxy.address, timeout=2).handshake()
        client.send_close(1000)
        client.expect_close(1000)
        self.assertEqual(proxy.wait(), 0, proxy.stderr)

    def test_log_file_receives_the_log(self):
        target = TargetServer(self, echo)
        log = os.path.join(self.tempdir(), 'websockify.log')
        ProxyProcess(self, '--log-file', log, '127.0.0.1:0', target.arg, ready=False)
        deadline = time.monotonic() + TIMEOUT
        match = None
        while match is None:
            self.assertLess(time.monotonic(), deadline, 'no "listening on" line in the log file')
            time.sleep(0.05)
            with contextlib.suppress(FileNotFoundError), open(log) as f:
                match = LISTENING.search(f.read())
        self.relays(('127.0.0.1', int(match.group('port'))))


class TestServerTLSStartup(unittest.TestCase):
    """Start-up: bad TLS set-ups refuse to start with exit 2 and one line."""

    def run_main(self, *args):
        result = run_cli(*args, '127.0.0.1:0', '127.0.0.1:9', cwd=self.pki.dir,
                         env=dict(os.environ, WSFY_TEST_PW='s3cret'))
        return result.returncode, result.stderr

    def setUp(self):
        self.pki = get_pki()

    def test_refusals(self):
        p = self.pki
        garbage = p.path('garbage.pem')
        with open(garbage, 'w') as f:
            f.write('not a certificate\n')
        cases = [
            (['--ssl-only'], '--ssl-only needs a certificate'),
            (['--verify-client'], '--verify-client needs a certificate'),
            (['--cert', p.path('missing.pem')], 'cannot read the certificate'),
            (['--cert', garbage, '--key', p.server[1]], 'holds no PEM certificate'),
            (['--cert', p.server[0]], 'holds no PEM private key'),
            (['--cert', p.server[0], '--key', p.other[1]], 'does not belong'),
            (['--cert', p.server[0], '--key', p.enc_key], 'no password given'),
            (['--cert', p.server[0], '--key', p.enc_key, '--key-password', 'nope'],
             'wrong password'),
            (['--cert', p.server[0], '--key', p.server[1], '--ssl-ciphers', 'NO-SUCH'],
             'selects no cipher'),
            (['--cert', p.server[0], '--key', p.server[1], '--verify-client',
              '--cafile', garbage], 'cannot load the client CA file'),
            (['--ssl-target', '--ssl-target-cafile', p.path('missing.pem')],
             'cannot load the target CA file'),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                code, err = self.run_main(*args)
                self.assertEqual(code, 2, err)
                lines = err.strip().splitlines()
                self.assertEqual(len(lines), 1, err)
                self.assertIn(message, lines[0])
                self.assertNotIn('Traceback', err)

    def test_usage_errors(self):
        p = self.pki
        for args in (['--ssl-version', 'sslv3'],
                     ['--key-password', 'a', '--key-password-env', 'WSFY_TEST_PW'],
                     ['--key-password-env', 'WSFY_NO_SUCH_VARIABLE'],
                     ['--ssl-target', '--ssl-target-insecure', '--ssl-target-cafile', p.ca[0]]):
            with self.subTest(args=args):
                code, err = self.run_main(*args)
                self.assertEqual(code, 2, err)
                self.assertIn('error:', err)

    def test_key_password_from_env_and_file(self):
        p = self.pki
        pwfile = p.path('password.txt')
        with open(pwfile, 'w') as f:
            f.write('s3cret\n')
        os.environ['WSFY_TEST_PW'] = 's3cret'
        self.addCleanup(os.environ.pop, 'WSFY_TEST_PW', None)
        target = TargetServer(self, echo)
        for extra in (['--key-password-env', 'WSFY_TEST_PW'], ['--key-password-file', pwfile],
                      ['--key-password', 's3cret']):
            with self.subTest(extra=extra):
                server = start_proxy(self, '--cert', p.server[0], '--key', p.enc_key, *extra,
                                     '127.0.0.1:0', '127.0.0.1:%d' % target.port)
                self.assertNotIn('s3cret', repr(server.settings))
                ws = open_session(self, server.server_address[1], protocols=['binary'],
                                  context=client_context(p))
                ws.send_frame(BINARY, b'hello')
                self.assertEqual(ws.recv_data(5), b'hello')

    def test_default_cert_is_self_pem_in_working_directory(self):
        settings = websockify.parse_args(['127.0.0.1:0', 'localhost:9'])
        self.assertEqual(settings.cert, os.path.join(os.getcwd(), 'self.pem'))
        self.assertFalse(settings.cert_given)
        code, err = self.run_main('--idle-timeout', '0.1')   # no self.pem in cwd: TLS off
        self.assertEqual(code, 0, err)
        self.assertIn('no certificate %s: wss:// is off' % self.pki.path('self.pem'), err)


class TestServerWorkers(ProxyTestCase):
    """--workers N: forked copies of the server sharing the listening socket."""

    def children(self, pid):
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return [int(c) for c in f.read().split()]

    def wait_children(self, pid, count, exclude=()):
        deadline = time.monotonic() + TIMEOUT
        while True:
            kids = [c for c in self.children(pid) if c not in exclude]
            if len(kids) == count:
                return kids
            if time.monotonic() > deadline:
                self.fail('expected %d workers, found %r' % (count, kids))
            time.sleep(0.05)

    def test_workers_relay_are_replaced_when_killed_and_stop_on_sigterm(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--workers', '2', '127.0.0.1:0', target.arg)
        workers = self.wait_children(proxy.proc.pid, 2)
        for i in range(6):
            self.echo_once(proxy.address, b'round %d' % i)
        os.kill(workers[0], signal.SIGKILL)
        replaced = self.wait_children(proxy.proc.pid, 2, exclude=[workers[0]])
        self.assertIn(workers[1], replaced)
        for i in range(6):
            self.echo_once(proxy.address, b'after %d' % i)
        held = open_session(self, proxy.address)
        os.kill(proxy.proc.pid, signal.SIGTERM)
        code, _ = held.expect_close()
        self.assertEqual(code, 1001)
        self.assertEqual(proxy.wait(), 0)
        for pid in replaced:
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)
        self.assertIn('worker 1', proxy.stderr + ' worker 2')
        self.assertRegex(proxy.stderr, r'worker \d \(pid %d\) died' % workers[0])

    def test_a_worker_that_stops_leaves_the_shared_socket_to_the_others(self):
        # Workers keep socketserver's acceptor: a worker stopping as one process
        # does (shutting the listening socket) would stop every worker accepting.
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--workers', '2', '127.0.0.1:0', target.arg)
        workers = self.wait_children(proxy.proc.pid, 2)
        os.kill(workers[0], signal.SIGTERM)
        deadline = time.monotonic() + TIMEOUT
        while workers[0] in self.children(proxy.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertNotIn(workers[0], self.children(proxy.proc.pid))    # it has stopped
        for i in range(8):
            self.echo_once(proxy.address, b'after a worker stopped %d' % i)

    def test_busy_worker_leaves_the_next_connection_to_an_idle_one(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--workers', '2', '127.0.0.1:0', target.arg)
        self.wait_children(proxy.proc.pid, 2)
        held = [open_session(self, proxy.address) for _ in range(4)]
        for client in held:
            client.send_frame(BINARY, b'x')
            self.assertEqual(client.recv_frame().payload, b'x')
        deadline = time.monotonic() + TIMEOUT
        while proxy.stderr.count('session open') < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        per_worker = [len(re.findall(r' w%d\.\d+ .*session open' % i, proxy.stderr))
                      for i in (1, 2)]
        self.assertEqual(sorted(per_worker), [2, 2], proxy.stderr)

    def test_run_once_with_workers_is_a_usage_error(self):
        result = run_cli('--workers', '2', '--run-once', '6080', 'localhost:5900')
        self.assertEqual(result.returncode, 2)
        self.assertIn('--run-once', result.stderr)


#: A launcher for ProxyProcess(script=...): sets RLIMIT_NOFILE (soft, hard) from
#: WEBSOCKIFY_TEST_NOFILE, then becomes websockify.py (same pid).
LIMITED_LAUNCHER = """
import os, resource, sys
soft, hard = (int(v) for v in os.environ['WEBSOCKIFY_TEST_NOFILE'].split(':'))
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
os.execv(sys.executable, [sys.executable, %r] + sys.argv[1:])
""" % SCRIPT


def limited_proxy(testcase, soft, hard, *args, ready=True):
    """ProxyProcess whose process starts with RLIMIT_NOFILE (soft, hard)."""
    folder = tempfile.mkdtemp(prefix='wsfy-')
    testcase.addCleanup(shutil.rmtree, folder, True)
    launcher = os.path.join(folder, 'launch.py')
    with open(launcher, 'w') as f:
        f.write(LIMITED_LAUNCHER)
    env = dict(os.environ, WEBSOCKIFY_TEST_NOFILE='%d:%d' % (soft, hard))
    return ProxyProcess(testcase, *args, script=launcher, env=env, ready=ready)


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def nofile_limits(pid):
    """(soft, hard) 'Max open files' of a process, from /proc/PID/limits."""
    with open('/proc/%d/limits' % pid) as f:
        for line in f:
            if line.startswith('Max open files'):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError('no Max open files in /proc/%d/limits' % pid)


class TestServerDescriptorLimits(ProxyTestCase):
    """RLIMIT_NOFILE: raised at start-up; running out pauses accept() (one log line
    per episode, no spinning) and serving resumes once connections end."""

    #: A limit the proxy cannot raise: a few dozen connections exhaust it.
    LIMIT = 64
    #: Connections opened per episode: more than LIMIT descriptors.
    FLOOD = 120

    def flood(self, address):
        """FLOOD bare TCP connections (no request: each holds a handler thread)."""
        clients = []
        for _ in range(self.FLOOD):
            clients.append(socket.create_connection(address, TIMEOUT))
        return clients

    def assert_idle_while_starved(self, pids):
        """The processes use little CPU over a bounded interval while out of descriptors."""
        before = [cpu_seconds(pid) for pid in pids]
        time.sleep(1.0)
        used = [cpu_seconds(pid) - b for pid, b in zip(pids, before)]
        for pid, seconds in zip(pids, used):
            self.assertLess(seconds, 0.25, 'pid %d used %.2f s of CPU in 1 s' % (pid, seconds))

    def episode(self, proxy, pids, count):
        clients = self.flood(proxy.address)
        try:
            for n in range(1, count + 1):
                proxy.wait_log(r'out of file descriptors \(EMFILE\)', count=n)
            self.assert_idle_while_starved(pids)
        finally:
            for client in clients:
                client.close()

    def served_again(self, address):
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while True:             # the backlog of closed flood connections drains first
            try:
                client = WSClient(self, address)
                client.handshake()
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertEqual(client.echo(b'served again'), b'served again')
        client.send_close(1000)
        self.assertEqual(client.expect_close()[0], 1000)

    def test_out_of_descriptors_pauses_logs_once_per_episode_and_recovers(self):
        target = TargetServer(self, echo)
        proxy = limited_proxy(self, self.LIMIT, self.LIMIT, '127.0.0.1:0', target.arg)
        self.assertIn('descriptor limit %d (hard limit %d)' % (self.LIMIT, self.LIMIT),
                      proxy.stderr)
        for episode in (1, 2):
            self.episode(proxy, [proxy.proc.pid], 1)
            self.served_again(proxy.address)
            self.assertEqual(proxy.stderr.count('out of file descriptors'), episode,
                             proxy.stderr)
            # A shortage is over once accept() has worked for a while: the closed
            # flood is accepted faster than its descriptors come back, and that
            # coming and going is one episode (logged once), not several.
            time.sleep(websockify.STARVED_EPISODE_GAP + 0.2)
        self.assertNotIn('Traceback', proxy.stderr)

    def test_every_worker_pauses_and_recovers(self):
        target = TargetServer(self, echo)
        proxy = limited_proxy(self, self.LIMIT, self.LIMIT, '--workers', '2',
                              '127.0.0.1:0', target.arg)
        workers = TestServerWorkers.children(self, proxy.proc.pid)
        deadline = time.monotonic() + TIMEOUT
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = TestServerWorkers.children(self, proxy.proc.pid)
        self.assertEqual(len(workers), 2)
        self.episode(proxy, workers + [proxy.proc.pid], 2)
        lines = [line for line in proxy.stderr.splitlines() if 'out of file descriptors' in line]
        self.assertEqual(sorted(re.search(r'worker (\d)', line).group(1) for line in lines),
                         ['1', '2'], proxy.stderr)
        self.served_again(proxy.address)
        self.assertNotIn('Traceback', proxy.stderr)

    def test_start_up_raises_the_soft_limit_to_the_hard_one(self):
        soft, hard = nofile_limits(os.getpid())
        if hard < 4096:
            self.skipTest('hard descriptor limit %d' % hard)
        target = TargetServer(self, echo)
        proxy = limited_proxy(self, 1024, hard, '127.0.0.1:0', target.arg)
        self.assertEqual(nofile_limits(proxy.proc.pid), (hard, hard))
        self.assertNotIn('descriptor limit', proxy.stderr)


class RefusingThread(threading.Thread):
    """A connection thread whose start() fails as in a process out of threads
    while `refusing` is set (the server's thread_class in TestServerThreadLimits)."""

    refusing = threading.Event()

    def start(self):
        if self.refusing.is_set():
            raise RuntimeError("can't start new thread")
        super().start()


class TestServerThreadLimits(ProxyTestCase):
    """A connection no thread can be started for is answered 503 and closed; one
    log line per episode, no traceback, and serving resumes."""

    def setUp(self):
        RefusingThread.refusing.clear()
        self.addCleanup(RefusingThread.refusing.clear)

    def test_no_thread_answers_503_logs_once_and_recovers(self):
        self._check_refusals(accept_in_threads=False)

    def test_no_thread_answers_503_when_connection_threads_accept(self):
        # The thread that accepted is the only one waiting in accept() (at most one
        # waits here): it cannot start a successor, so it answers and accepts again.
        with unittest.mock.patch.object(websockify, 'ACCEPTING_THREADS_MAX', 1):
            self._check_refusals(accept_in_threads=True)

    def test_without_a_first_accepting_thread_serve_forever_accepts(self):
        RefusingThread.refusing.set()
        target = TargetServer(self, echo)
        server = start_proxy(self, '127.0.0.1:0', target.arg, thread_class=RefusingThread,
                             accept_in_threads=True)
        for _ in range(2):
            with socket.create_connection(server.server_address, TIMEOUT) as sock:
                self.assertTrue(read_to_eof(sock).startswith(b'HTTP/1.1 503 '))
        RefusingThread.refusing.clear()
        for n in range(3):
            client = open_session(self, server.server_address)
            self.assertEqual(client.echo(b'served %d' % n), b'served %d' % n)
            client.send_close(1000)
            self.assertEqual(client.expect_close()[0], 1000)

    def test_an_episode_counts_from_any_thread_and_begins_once(self):
        episode = websockify._Episode()
        self.assertIsNone(episode.end())
        firsts = queue.Queue()
        threads = [threading.Thread(target=lambda: [firsts.put(episode.count())
                                                    for _ in range(100)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        begun = [firsts.get_nowait() for _ in range(400)]
        self.assertEqual(begun.count(True), 1)
        self.assertEqual(episode.end(), 400)
        self.assertIsNone(episode.end())
        self.assertTrue(episode.count())        # a new episode

    def _check_refusals(self, accept_in_threads):
        target = TargetServer(self, echo)
        server = start_proxy(self, '127.0.0.1:0', target.arg, thread_class=RefusingThread,
                             accept_in_threads=accept_in_threads)
        address = server.server_address
        with self.assertLogs('websockify', logging.DEBUG) as logs:
            for episode in (1, 2):
                RefusingThread.refusing.set()
                for _ in range(5):
                    with socket.create_connection(address, TIMEOUT) as sock:
                        answer = read_to_eof(sock)
                    self.assertTrue(answer.startswith(b'HTTP/1.1 503 '), answer)
                RefusingThread.refusing.clear()
                client = open_session(self, address)
                self.assertEqual(client.echo(b'threads again'), b'threads again')
                client.send_close(1000)
                self.assertEqual(client.expect_close()[0], 1000)
                refusals = [m for m in logs.output if 'cannot start a connection thread' in m]
                self.assertEqual(len(refusals), episode, logs.output)
        self.assertFalse([r for r in logs.records if r.exc_info], logs.output)
        deadline = time.monotonic() + TIMEOUT
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(server.connections, 0)


class MarkedThread(threading.Thread):
    """A connection thread that marks itself in `marks` (a ThreadMarks) as it runs."""

    marks = None

    def run(self):
        self.marks.mark()
        super().run()


class TestAcceptingThreads(ProxyTestCase):
    """accept_in_threads (main() in one process): connection threads wait in
    accept() themselves; one always waits, at most ACCEPTING_THREADS_MAX do, and
    shutdown() wakes them all."""

    def start(self, most_waiting):
        patch = unittest.mock.patch.object(websockify, 'ACCEPTING_THREADS_MAX', most_waiting)
        patch.start()
        self.marks = ThreadMarks()
        thread_class = type('Marked', (MarkedThread,), {'marks': self.marks})
        target = TargetServer(self, echo)
        server = start_proxy(self, '127.0.0.1:0', target.arg, accept_in_threads=True,
                             thread_class=thread_class)
        self.addCleanup(patch.stop)         # after the server's cleanup: it runs first
        return server

    def wait_until(self, what, expected):
        deadline = time.monotonic() + TIMEOUT
        while what() != expected and time.monotonic() < deadline:
            time.sleep(0.005)
        self.assertEqual(what(), expected)

    def waiting(self, server):
        return lambda: server._acceptors

    def test_sessions_at_once_each_have_a_thread_and_idle_threads_are_bounded(self):
        server = self.start(3)
        self.wait_until(self.waiting(server), 1)
        clients = [open_session(self, server.server_address) for _ in range(6)]
        for n, client in enumerate(clients):
            self.assertEqual(client.echo(b'at once %d' % n), b'at once %d' % n)
        # Six serving, and the one each accepting thread started before serving.
        self.wait_until(self.marks.alive, 7)
        self.wait_until(self.waiting(server), 1)
        for client in clients:
            client.send_close(1000)
            self.assertEqual(client.expect_close()[0], 1000)
        # Back in accept() up to three; the rest ended.
        self.wait_until(self.waiting(server), 3)
        self.wait_until(self.marks.alive, 3)
        client = open_session(self, server.server_address)
        self.assertEqual(client.echo(b'again'), b'again')
        self.assertEqual(self.marks.alive(), 3)         # one of those waiting took it

    def test_shutdown_wakes_every_waiting_thread_and_refuses_clients(self):
        server = self.start(4)
        clients = [open_session(self, server.server_address) for _ in range(3)]
        for client in clients:
            client.send_close(1000)
            self.assertEqual(client.expect_close()[0], 1000)
        self.wait_until(self.waiting(server), 4)
        stopping = threading.Thread(target=server.shutdown, daemon=True)
        stopping.start()
        stopping.join(TIMEOUT)
        self.assertFalse(stopping.is_alive())
        self.wait_until(self.marks.alive, 0)
        self.assertEqual(server._acceptors, 0)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(server.server_address, TIMEOUT).close()
        server.shutdown()                       # again: returns at once

    def test_an_error_while_serving_ends_neither_the_thread_nor_accepting(self):
        server = self.start(1)          # one waits: an ended thread would stop accepting
        verify = server.verify_request
        calls = []

        def failing_once(request, client_address):
            calls.append(client_address)
            if len(calls) == 1:
                raise RuntimeError('verify failed')
            return verify(request, client_address)
        server.verify_request = failing_once
        with self.assertLogs('websockify', logging.ERROR) as logs:
            with socket.create_connection(server.server_address, TIMEOUT) as sock:
                self.assertEqual(read_to_eof(sock), b'')
        self.assertIn('verify failed', '\n'.join(logs.output))
        client = open_session(self, server.server_address)
        self.assertEqual(client.echo(b'after the error'), b'after the error')
        self.assertEqual(len(calls), 2)
        self.wait_until(lambda: server.connections, 1)

    def test_a_session_accepted_before_shutdown_is_served(self):
        server = self.start(2)
        client = open_session(self, server.server_address)
        server.shutdown()
        self.assertEqual(client.echo(b'still here'), b'still here')
        client.send_close(1000)
        self.assertEqual(client.expect_close()[0], 1000)
        self.wait_until(self.marks.alive, 0)     # it ended instead of accepting again


TUNING_PROGRAM = r'''
import gc, json, logging, sys, threading
sys.path.insert(0, sys.argv[1])
import websockify
websockify._tune_process()
if websockify._MallocTrim.active is not None:
    websockify._MallocTrim.active._trim(0)      # the real call, through ctypes
print(json.dumps({'switch interval': sys.getswitchinterval(), 'stack size': threading.stack_size(),
                  'gc threshold': gc.get_threshold(), 'thread class': websockify._ServerMixin.thread_class.__name__,
                  'logging': [logging.logThreads, logging.logProcesses,
                              logging.logMultiprocessing, logging._srcfile],
                  'malloc trim': websockify._MallocTrim.active is not None}))
'''


class TestServerProcessTuning(ProxyTestCase):
    """What main() sets for thousands of threads (_tune_process), and the pieces
    that make a connection cheap: light threads, no constructor nesting, no
    getaddrinfo for addresses, malloc_trim after idle buffers."""

    def test_tune_process_sets_what_main_needs(self):
        result = subprocess.run([sys.executable, '-c', TUNING_PROGRAM, HERE],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True,
                                timeout=PROCESS_TIMEOUT)
        self.assertEqual(result.returncode, 0, result.stderr)
        state = json.loads(result.stdout)
        self.assertAlmostEqual(state['switch interval'], websockify.SWITCH_INTERVAL)
        self.assertEqual(state['stack size'], websockify.THREAD_STACK_SIZE)
        self.assertEqual(state['gc threshold'][0], websockify.GC_THRESHOLD)
        self.assertEqual(state['gc threshold'][1:], list(gc.get_threshold()[1:]))
        self.assertEqual(state['thread class'], '_ConnectionThread')
        self.assertEqual(state['logging'], [False, False, False, None])
        import platform
        self.assertEqual(state['malloc trim'], platform.libc_ver()[0] == 'glibc')

    def test_connection_thread_runs_its_target(self):
        done = queue.Queue()
        websockify._ConnectionThread(target=lambda *a: done.put(a), args=(1, 'two')).start()
        self.assertEqual(done.get(timeout=TIMEOUT), (1, 'two'))

    def _parked_threads(self, count):
        """Wait (bounded) until count connection threads are parked; returns them."""
        cls = websockify._ConnectionThread
        deadline = time.monotonic() + TIMEOUT
        while len(cls._parked) != count and time.monotonic() < deadline:
            time.sleep(0.005)
        self.assertEqual(len(cls._parked), count)
        return list(cls._parked)

    def _wait_alive(self, marks, count):
        deadline = time.monotonic() + TIMEOUT
        while marks.alive() != count and time.monotonic() < deadline:
            time.sleep(0.005)
        self.assertEqual(marks.alive(), count)

    def test_connection_thread_serves_the_next_connection(self):
        cls = websockify._ConnectionThread
        idents = queue.Queue()
        marks = ThreadMarks()

        def job(*args):
            marks.mark()
            idents.put(args + (_thread.get_ident(),))
        with unittest.mock.patch.object(cls, '_parked', []):
            cls(target=job).start()
            first, = idents.get(timeout=TIMEOUT)
            self._parked_threads(1)
            cls(target=job, args=(2,)).start()
            self.assertEqual(idents.get(timeout=TIMEOUT), (2, first))
            self._parked_threads(1)
            self.assertEqual(marks.alive(), 1)

    def test_parked_threads_are_bounded_and_end_when_idle(self):
        cls = websockify._ConnectionThread
        release = threading.Event()
        running = queue.Queue()
        marks = ThreadMarks()

        def job():
            marks.mark()
            running.put(_thread.get_ident())
            release.wait(TIMEOUT)
        with unittest.mock.patch.object(cls, '_parked', []), \
                unittest.mock.patch.object(websockify, 'THREAD_PARK_MAX', 2), \
                unittest.mock.patch.object(websockify, 'THREAD_PARK_IDLE', 0.5):
            for _ in range(4):
                cls(target=job).start()
            self.assertEqual(len({running.get(timeout=TIMEOUT) for _ in range(4)}), 4)
            self.assertEqual(marks.alive(), 4)
            release.set()
            self._parked_threads(2)         # two wait for work, two ended
            self._wait_alive(marks, 2)
            self._parked_threads(0)         # idle: they end too
            self._wait_alive(marks, 0)

    @unittest.skipUnless(os.path.isdir('/proc/self/task'), 'needs /proc')
    def test_the_program_serves_the_next_session_with_the_same_thread(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '127.0.0.1:0', target.arg)
        tasks = lambda: set(os.listdir('/proc/%d/task' % proxy.proc.pid))

        def session(n):
            client = open_session(self, proxy.address)
            self.assertEqual(client.echo(b'session %d' % n), b'session %d' % n)
            during = tasks()
            client.send_close(1000)
            self.assertEqual(client.expect_close()[0], 1000)
            proxy.wait_log('session closed', count=n)
            return during
        deadline = time.monotonic() + TIMEOUT
        while len(tasks()) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)           # the threads start after 'listening on'
        before = tasks()
        # The main thread, serve_forever's and the first connection thread, which
        # waits in accept() (one process: connection threads accept).
        self.assertEqual(len(before), 3)
        during_first = session(1)
        self.assertEqual(len(during_first - before), 1)   # the next one to accept

        def parked():
            """Whether every thread started for a session waits in futex() (parked,
            or for a moment for the GIL) or in accept4(), not finishing its session."""
            for task in tasks() - before:
                try:
                    with open('/proc/%d/task/%s/syscall' % (proxy.proc.pid, task)) as f:
                        if f.read().split()[:1] not in (['202'], ['288']):
                            return False
                except FileNotFoundError:
                    pass                # ended
                except OSError:
                    return True         # not ours to read: the tries below still hold
            return True
        # The next session runs on a thread that waits: none is started for it. A
        # thread logs 'session closed' before it parks, and a session that comes in
        # between gets a thread of its own: wait for the park, and allow a few tries.
        for n in range(2, 6):
            deadline = time.monotonic() + TIMEOUT
            while not parked() and time.monotonic() < deadline:
                time.sleep(0.005)
            waiting = tasks()
            if session(n) == waiting:
                break
        else:
            self.fail('every session started a thread of its own')
        self.assertLessEqual(during_first, waiting)      # the first one among them
        # main()'s log format: local date and time with milliseconds, level, message.
        stamped = re.compile(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \d+ \S+: session open: ')
        opened = [line for line in proxy.lines if 'session open' in line]
        self.assertEqual(len(opened), n)
        self.assertTrue(all(stamped.match(line) for line in opened), opened)

    def test_malloc_trim_after_enough_released_buffers_and_time(self):
        calls = []
        clock = [1000.0]
        with unittest.mock.patch.object(websockify.time, 'monotonic', lambda: clock[0]), \
                unittest.mock.patch.object(websockify._Side, 'released', 0):
            trim = websockify._MallocTrim(calls.append)
            websockify._Side.released = websockify.MALLOC_TRIM_AFTER - 1
            clock[0] += websockify.MALLOC_TRIM_INTERVAL
            trim.maybe()
            self.assertEqual(calls, [])                 # too few buffers released
            websockify._Side.released += 1
            trim.maybe()
            self.assertEqual(calls, [0])
            websockify._Side.released += 10 * websockify.MALLOC_TRIM_AFTER
            clock[0] += websockify.MALLOC_TRIM_INTERVAL / 2
            trim.maybe()
            self.assertEqual(calls, [0])                 # too soon
            clock[0] += websockify.MALLOC_TRIM_INTERVAL / 2
            trim.maybe()
            self.assertEqual(calls, [0, 0])

    def test_released_buffers_are_counted_once(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        side = websockify._Side('client', a)
        before = websockify._Side.released
        side.ensure_buffer()
        self.assertEqual(len(side.buf), websockify.RECV_MIN)
        side.release_buffer()
        side.release_buffer()                               # nothing left to release
        self.assertEqual(websockify._Side.released, before + 1)

    def test_finish_request_runs_the_handler_as_its_constructor_would(self):
        calls = []

        class Plain(socketserver.BaseRequestHandler):
            def setup(self):
                calls.append(('setup', self.request, self.client_address, self.server))

            def handle(self):
                calls.append('handle')
                raise ValueError('handled badly')

            def finish(self):
                calls.append('finish')

        class OwnInit(Plain):
            def __init__(self, *args):
                calls.append('own __init__')
                super().__init__(*args)

        class Server(websockify._ServerMixin, socketserver.BaseServer):
            pass

        server = Server.__new__(Server)
        for handler_class, first in ((Plain, []), (OwnInit, ['own __init__'])):
            with self.subTest(handler=handler_class.__name__):
                calls.clear()
                server.RequestHandlerClass = handler_class
                with self.assertRaisesRegex(ValueError, 'handled badly'):
                    server.finish_request('req', ('127.0.0.1', 1))
                self.assertEqual(calls, first + [('setup', 'req', ('127.0.0.1', 1), server),
                                                 'handle', 'finish'])

    def test_shutdown_request_skips_a_closed_request(self):
        server = start_proxy(self, '127.0.0.1:0', '127.0.0.1:%d' % free_port())
        calls = []

        class Sock(socket.socket):
            def shutdown(self, how):
                calls.append(how)
                super().shutdown(how)
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        open_request = Sock(a.family, a.type, 0, a.detach())
        closed_request = Sock(socket.AF_INET, socket.SOCK_STREAM)
        closed_request.close()
        with server._lock:                  # as if both had been accepted
            server.connections += 2
            server.tally.add(server.worker_slot, 'connections', 2)
            before = server.connections
        server.shutdown_request(closed_request)             # finish() closed it: no syscall
        self.assertEqual(calls, [])
        server.shutdown_request(open_request)               # still open: shut down, closed
        self.assertEqual(calls, [socket.SHUT_WR])
        self.assertEqual(open_request.fileno(), -1)
        self.assertEqual(b.recv(1), b'')
        self.assertEqual(server.connections, before - 2)

    def test_ip_literal_family(self):
        cases = {'127.0.0.1': socket.AF_INET, '::1': socket.AF_INET6,
                 '::ffff:10.0.0.1': socket.AF_INET6, 'localhost': None, '1.2.3': None,
                 'fe80::1%lo': None, '': None, 'example.com': None}
        for host, family in cases.items():
            with self.subTest(host=host):
                self.assertEqual(websockify._ip_literal_family(host), family)

    @unittest.skipUnless(HAVE_IPV6, 'no IPv6 loopback')
    def test_address_targets_of_both_families_connect(self):
        for host in ('127.0.0.1', '::1'):
            with self.subTest(host=host):
                target = TargetServer(self, echo, host=host)
                address = self.proxy('127.0.0.1:0', target.arg)
                self.echo_once(address, host.encode())

    @unittest.skipUnless(os.path.exists('/proc/self/smaps') and (3, 11) <= sys.version_info[:2]
                         < (3, 13), 'the C stack depth measured is that of CPython 3.11-3.12')
    def test_connection_threads_touch_two_stack_pages(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '127.0.0.1:0', target.arg)
        clients = [open_session(self, proxy.address) for _ in range(20)]
        for client in clients:
            self.assertEqual(client.echo(b'deep?'), b'deep?')
        stacks = []
        with open('/proc/%d/smaps' % proxy.proc.pid) as f:
            size = None
            for line in f:
                fields = line.split()
                if '-' in fields[0] and not fields[0].endswith(':'):
                    low, high = (int(x, 16) for x in fields[0].split('-'))
                    size = high - low
                elif fields[0] == 'Rss:' and size == websockify.THREAD_STACK_SIZE:
                    stacks.append(int(fields[1]))
        self.assertGreaterEqual(len(stacks), len(clients))
        self.assertLessEqual(sorted(stacks)[len(stacks) // 2], 8, stacks)


#: Control characters, line breaks and an ANSI escape sequence, as UTF-8 text.
HOSTILE = '\x1b[31m\x1b]0;title\x07\r\nFAKE line\x00\x7f\u0085\u2028\u202e'
#: The same as raw bytes (latin-1 for where HTTP takes bytes).
HOSTILE_BYTES = b'\x1b[31m\x1b]0;t\x07\rFAKE\x00\x7f\x85\xc2\x85\xe2\x80\xa8'


def printable_lines(text):
    """True if text is lines (\n, or \r\n) of printable characters only."""
    return all(c == '\n' or c.isprintable() for c in text.replace('\r\n', '\n'))


class TestServerLogSanitiser(ProxyTestCase):
    """Every client string that reaches a log line (stderr, syslog) or a response
    passes _printable: no raw control characters, line breaks or escape sequences."""

    def exchange(self, address, request):
        """Send raw request bytes; the response bytes up to EOF (or a reset)."""
        with socket.create_connection(address, TIMEOUT) as sock:
            sock.settimeout(TIMEOUT)
            try:
                sock.sendall(request)
            except OSError:
                pass
            answer = read_to_eof(sock)
        self.assertTrue(printable_lines(answer.decode('utf-8', 'replace')), answer)
        return answer

    def requests(self, extra_headers=()):
        """Upgrade requests carrying HOSTILE in the path, the query, the token and
        every header in turn."""
        quoted = urllib.parse.quote(HOSTILE)
        yield b'GET /' + HOSTILE_BYTES + b' HTTP/1.1\r\nHost: x\r\n\r\n'
        yield upgrade_request(path='/' + quoted + '?token=' + quoted, extra=extra_headers)
        yield upgrade_request(path='/?token=' + quoted * 100, extra=extra_headers)
        yield upgrade_request(extra=list(extra_headers) + [('Cookie', 'token=' + quoted)])
        for name in ('Host', 'Origin', 'User-Agent', 'Sec-WebSocket-Protocol',
                     'Sec-WebSocket-Key', 'Sec-WebSocket-Version', 'Upgrade',
                     'Connection', 'Authorization', 'X-Other'):
            head = upgrade_request(path='/?token=good', drop=(name,), extra=extra_headers)
            yield head[:-2] + name.encode() + b': ' + HOSTILE_BYTES + b'\r\n\r\n'
            yield (head[:-2] + name.encode() + b': a' + HOSTILE.encode('utf-8')
                   + b'\r\n\r\n')
        yield upgrade_request(path='/?token=good', extra=list(extra_headers) + [
            ('Sec-WebSocket-Protocol', 'x\xa0y, \u2028'.encode('utf-8').decode('latin-1'))])

    def check_log(self, proxy):
        deadline = time.monotonic() + TIMEOUT
        while 'FAKE' not in proxy.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        log = proxy.stderr
        self.assertIn('FAKE', log)          # the hostile text was logged, escaped
        self.assertTrue(printable_lines(log), [line for line in log.split('\n')
                                               if not printable_lines(line)])
        self.assertFalse([line for line in log.split('\n') if line.startswith('FAKE')])
        self.assertNotIn('Traceback', log)

    def test_every_request_input_with_token_file_and_basic_auth(self):
        target = TargetServer(self, echo)
        folder = self.tempdir()
        tokens = os.path.join(folder, 'tokens')
        with open(tokens, 'w') as f:
            f.write('good: %s\n' % target.arg)
        proxy = ProxyProcess(self, '-v', '--target-config', tokens, '--auth-plugin',
                             'BasicHTTPAuth', '--auth-source', 'alice:pw', '127.0.0.1:0')
        good = [('Authorization', basic('alice:pw'))]
        for request in self.requests(good):
            self.exchange(proxy.address, request)
        user = base64.b64encode(HOSTILE.encode('utf-8') + b':pw').decode()
        self.exchange(proxy.address, upgrade_request(extra=[('Authorization',
                                                             'Basic ' + user)]))
        self.exchange(proxy.address, upgrade_request(extra=[('Authorization',
                                                             HOSTILE_BYTES.decode('latin-1'))]))
        client = WSClient(self, proxy.address)
        client.handshake(path='/?token=good', extra=good)
        self.assertEqual(client.echo(b'x'), b'x')
        client.send_close(1000, HOSTILE.encode('utf-8'))
        client.expect_close()
        proxy.wait_log('session closed')
        self.check_log(proxy)

    def test_unix_socket_directory_token_longer_than_a_file_name(self):
        folder = self.tempdir()
        proxy = ProxyProcess(self, '--token-plugin', 'UnixDomainSocketDirectory',
                             '--token-source', folder, '127.0.0.1:0')
        token = urllib.parse.quote(HOSTILE.replace('\x00', '').replace('\r', '')
                                   .replace('\n', '').replace('\x1b', '')
                                   .replace('\x07', '').replace('\x7f', '') + 'FAKE' * 300)
        answer = self.exchange(proxy.address, upgrade_request(path='/?token=' + token))
        self.assertIn(b' 502 ', answer.split(b'\r\n')[0])
        proxy.wait_log('token lookup failed')
        self.check_log(proxy)
        line = next(l for l in proxy.stderr.split('\n') if 'token lookup failed' in l)
        self.assertLess(len(line), 2 * websockify.LOG_ARGUMENT_MAX + 1000)

    def test_host_token(self):
        target = TargetServer(self, echo)
        folder = self.tempdir()
        tokens = os.path.join(folder, 'tokens')
        with open(tokens, 'w') as f:
            f.write('good: %s\n' % target.arg)
        proxy = ProxyProcess(self, '-v', '--target-config', tokens, '--host-token',
                             '127.0.0.1:0')
        for host in (HOSTILE_BYTES, HOSTILE.encode('utf-8'), b'a\xc2\x85b:1',
                     b'[' + HOSTILE_BYTES + b']:80'):
            head = upgrade_request(drop=('Host',))
            self.exchange(proxy.address, head[:-2] + b'Host: ' + host + b'\r\n\r\n')
        self.exchange(proxy.address, upgrade_request(
            replace={'Host': 'FAKE' + '\u2028'.encode('utf-8').decode('latin-1')}))
        self.check_log(proxy)

    def test_tls_server_name(self):
        pki = get_pki()
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '-v', '--cert', pki.server[0], '--key', pki.server[1],
                             '127.0.0.1:0', target.arg)
        context = client_context(pki)
        context.check_hostname = False
        for name in ('FAKE\x1b[31m', 'FAKE\u2028x', 'FAKE.' + 'a' * 60):
            try:
                client = WSClient(self, proxy.address, context=context, server_hostname=name)
            except (ValueError, UnicodeError, ssl.SSLError, OSError):
                continue        # the client library refuses to send it
            client.handshake()
            client.send_close(1000, HOSTILE.encode('utf-8'))
            self.assertEqual(client.recv_frame().opcode, CLOSE)
        proxy.wait_log('session closed')
        self.check_log(proxy)

    def test_log_filter_leaves_plain_arguments_and_cuts_long_ones(self):
        def filtered(args):
            record = websockify.logger.makeRecord('websockify', logging.INFO, __file__, 1,
                                                  '%s' * len(args), args, None)
            websockify.logger.filter(record)
            return record.args
        plain = ('6 127.0.0.1:40000', '/path?x=1', 1000, None, 1.5)
        self.assertIs(filtered(plain), plain)           # nothing to escape: not rebuilt
        long_text = 'a' * (websockify.LOG_ARGUMENT_MAX + 10)
        self.assertEqual(filtered(('ok', long_text, 7)),
                         ('ok', 'a' * websockify.LOG_ARGUMENT_MAX, 7))
        self.assertEqual(filtered(('ok', 'bell\x07', 7)), ('ok', 'bell\\x07', 7))
        self.assertEqual(filtered((3, ValueError('a\nb'))), (3, 'a\\nb'))

    def test_log_formatter_writes_what_logging_formatter_writes(self):
        ours = websockify._LogFormatter()
        reference = logging.Formatter('%(asctime)s %(levelname)s %(message)s')
        base = time.time()
        for offset in (0.0, 0.25, 0.999, 1.0, 1.5, 61.0, 3600.002, 0.5):
            record = websockify.logger.makeRecord('websockify', logging.WARNING, __file__, 1,
                                                  'session %s', ('x',), None)
            record.created = base + offset
            record.msecs = (record.created - int(record.created)) * 1000
            self.assertEqual(ours.format(record), reference.format(record))

    def test_syslog_formatter_gets_escaped_records(self):
        record = websockify.logger.makeRecord(
            'websockify', logging.INFO, __file__, 1, 'client %s said %s',
            (HOSTILE, ValueError(HOSTILE)), None)
        websockify.logger.filter(record)
        for formatter in (websockify._SyslogFormatter(False),
                          websockify._SyslogFormatter(True)):
            text = formatter.format(record)
            self.assertTrue(printable_lines(text), text)
            self.assertNotIn('\n', text)


def proc_counts(pid):
    """(threads, open descriptors) of a process, from /proc."""
    return len(os.listdir('/proc/%d/task' % pid)), len(os.listdir('/proc/%d/fd' % pid))


def settled_counts(proxy):
    """proc_counts of a proxy that is serving and idle: after one refused request has
    been answered, once three looks 0.1 s apart agree on four threads: the main
    thread, serve_forever's, the one that accepted the request (it started the next
    one to wait in accept() and waits there again itself) and that next one."""
    answer = http_exchange(proxy.address[1], b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 426'), answer
    looks = []
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end:
        looks = (looks + [proc_counts(proxy.proc.pid)])[-3:]
        if len(looks) == 3 and looks[0] == looks[1] == looks[2] and looks[0][0] == 4:
            break
        time.sleep(0.1)
    return looks[-1]


class _LoadPeer:
    """One socket of LoadRun: bytes to send, bytes received, what to do when done."""

    __slots__ = ('sock', 'out', 'sent', 'received', 'state', 'abort', 'expected', 'data',
                 'payload', 'close_code', 'threshold', 'index')

    def __init__(self, sock):
        self.sock = sock
        self.out = bytearray()
        self.sent = 0
        self.received = bytearray()
        self.state = 'new'
        self.abort = None           # None, 'rst' or 'fin'
        self.payload = bytearray()
        self.close_code = None
        self.threshold = None


class LoadRun:
    """Many WebSocket clients and an echo target in one selector loop (this thread):
    every loop is bounded by a deadline. Clients hand-shake, wait until all are
    open, then send checksummed random data in masked frames of random sizes and
    expect it echoed; some abort in the middle of a frame (RST or FIN), and the
    target aborts some connections after a random number of bytes."""

    def __init__(self, test, proxy_address, sessions, seed, abort_share=0.1):
        self.test = test
        self.rng = random.Random(seed)
        self.sel = selectors.DefaultSelector()
        test.addCleanup(self.close)
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.target_arg = '127.0.0.1:%d' % self.listener.getsockname()[1]
        self.proxy_address = proxy_address
        self.sessions = sessions
        self.abort_share = abort_share
        self.clients = []
        self.targets = []

    def close(self):
        for peer in self.clients + self.targets:
            peer.sock.close()
        self.listener.close()
        self.sel.close()

    # -- the loop -----------------------------------------------------------------

    def run_until(self, done, deadline, what):
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                self.test.fail('load: %s not done in time: %s' % (what, self.summary()))
            for key, events in self.sel.select(min(left, 0.5)):
                if key.data is None:
                    self._accept()
                elif events & selectors.EVENT_READ:
                    key.data[0](key.data[1])
                if events & selectors.EVENT_WRITE and key.data is not None:
                    self._flush(key.data[1])

    def summary(self):
        states = {}
        for peer in self.clients:
            states[peer.state] = states.get(peer.state, 0) + 1
        return 'clients by state %s, %d target connections' % (states, len(self.targets))

    def _watch(self, peer, handler):
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.sent < len(peer.out)
                                         else 0)
        try:
            self.sel.modify(peer.sock, events, (handler, peer))
        except KeyError:
            self.sel.register(peer.sock, events, (handler, peer))

    def _flush(self, peer):
        handler = self.sel.get_key(peer.sock).data[0]
        try:
            while peer.sent < len(peer.out):
                n = peer.sock.send(memoryview(peer.out)[peer.sent:peer.sent + 65536])
                peer.sent += n
        except BlockingIOError:
            pass
        except OSError:
            self._drop(peer, 'lost')
            return
        if peer.sent == len(peer.out) and peer.abort and peer.state == 'relaying':
            self._abort(peer)
            return
        self._watch(peer, handler)

    def _drop(self, peer, state):
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(peer.sock)
        peer.sock.close()
        peer.state = state

    def _abort(self, peer):
        if peer.abort == 'rst':
            peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        else:
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_WR)
        self._drop(peer, 'aborted')

    # -- clients ------------------------------------------------------------------

    def open_clients(self, deadline, batch=256):
        """Connect every client, a batch at a time, and complete its handshake."""
        while len(self.clients) < self.sessions:
            for _ in range(min(batch, self.sessions - len(self.clients))):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(self.proxy_address)
                peer = _LoadPeer(sock)
                peer.index = len(self.clients)
                peer.state = 'handshake'
                peer.out += upgrade_request(path='/load/%d' % peer.index)
                self.clients.append(peer)
                self._watch(peer, self._client_read)
            self.run_until(lambda: all(c.state != 'handshake' for c in self.clients),
                           deadline, 'handshakes')
        opened = sum(1 for c in self.clients if c.state == 'open')
        self.test.assertEqual(opened, self.sessions, self.summary())

    def start_relaying(self, sizes=(1024, 16384), frame_max=3000):
        for peer in self.clients:
            data = os.urandom(self.rng.randint(*sizes))
            peer.data = data
            frames = bytearray()
            cuts = []
            pos = 0
            while pos < len(data):
                n = self.rng.randint(1, frame_max)
                key = os.urandom(4)
                frames += self._frame(data[pos:pos + n], key)
                cuts.append(len(frames))
                pos += n
            if self.rng.random() < self.abort_share:
                peer.abort = self.rng.choice(('rst', 'fin'))
                # Cut inside a frame: after its header, before its end.
                end = self.rng.choice(cuts)
                frames = frames[:max(1, end - self.rng.randint(1, 50))]
            peer.state = 'relaying'
            peer.out += frames
            self._flush(peer)

    @staticmethod
    def _frame(payload, key):
        n = len(payload)
        if n < 126:
            head = struct.pack('!BB', 0x82, 0x80 | n)
        elif n < 65536:
            head = struct.pack('!BBH', 0x82, 0xFE, n)
        else:
            head = struct.pack('!BBQ', 0x82, 0xFF, n)
        return head + key + mask_bytes(payload, key)

    def _client_read(self, peer):
        try:
            chunk = peer.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            self._drop(peer, 'lost' if peer.state != 'closing' else 'closed')
            return
        if not chunk:
            self._drop(peer, 'closed' if peer.close_code is not None else 'eof')
            return
        peer.received += chunk
        if peer.state == 'handshake':
            end = peer.received.find(b'\r\n\r\n')
            if end < 0:
                return
            status = bytes(peer.received[:12])
            del peer.received[:end + 4]
            peer.state = 'open' if status.startswith(b'HTTP/1.1 101') else 'refused'
            if peer.state == 'refused':
                self._drop(peer, 'refused')
                return
        self._parse_frames(peer)

    def _parse_frames(self, peer):
        buf = peer.received
        while len(buf) >= 2:
            length = buf[1] & 0x7F
            start = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, start = struct.unpack_from('!H', buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, start = struct.unpack_from('!Q', buf, 2)[0], 10
            if len(buf) < start + length:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[start:start + length])
            del buf[:start + length]
            if opcode == 0x8:
                peer.close_code = struct.unpack('!H', payload[:2])[0] if payload else 1005
                if peer.state == 'relaying':
                    peer.out += self._close_frame()
                    self._flush(peer)
                peer.state = 'closing'
            elif opcode in (0x1, 0x2, 0x0):
                peer.payload += payload
                if (peer.state == 'relaying' and not peer.abort
                        and len(peer.payload) >= len(peer.data)):
                    peer.state = 'echoed'
                    peer.out += self._close_frame()
                    self._flush(peer)

    def _close_frame(self):
        return self._frame(struct.pack('!H', 1000), os.urandom(4)).replace(
            b'\x82', b'\x88', 1)

    # -- the echo target ----------------------------------------------------------

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            peer = _LoadPeer(sock)
            peer.state = 'relaying'
            if self.rng.random() < self.abort_share / 2:
                peer.abort = self.rng.choice(('rst', 'fin'))
                peer.threshold = self.rng.randint(1, 8000)
            self.targets.append(peer)
            self._watch(peer, self._target_read)

    def _target_read(self, peer):
        try:
            chunk = peer.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            self._drop(peer, 'lost')
            return
        if not chunk:
            self._drop(peer, 'closed')
            return
        peer.received += chunk
        if peer.abort and len(peer.received) >= peer.threshold:
            peer.out += chunk[:len(chunk) // 2]
            self._flush(peer)
            if peer.state == 'relaying':
                self._abort(peer)
            return
        peer.out += chunk
        self._flush(peer)


class TestServerLoad(ProxyTestCase):
    """2,000 concurrent sessions under a soft descriptor limit of 1,024 (the start-up
    raise makes room), relaying checksummed random data both ways, some cut by RST
    or FIN from either side in the middle of frames; afterwards the proxy's threads
    and descriptors are back at their baseline and its log has no traceback."""

    SESSIONS = int(os.environ.get('WEBSOCKIFY_LOAD_SESSIONS') or 2000)

    def test_2000_sessions_under_a_soft_limit_of_1024(self):
        hard = nofile_limits(os.getpid())[1]
        need = 2 * self.SESSIONS + 200
        if hard < need:
            self.skipTest('hard descriptor limit %d is below %d' % (hard, need))
        started = time.monotonic()
        deadline = started + 90
        load = LoadRun(self, None, self.SESSIONS, seed=15)
        proxy = limited_proxy(self, 1024, hard, '127.0.0.1:0', load.target_arg)
        load.proxy_address = proxy.address
        pid = proxy.proc.pid
        baseline = settled_counts(proxy)
        load.open_clients(deadline)
        opened_at = time.monotonic()
        peak = proc_counts(pid)
        self.assertGreaterEqual(peak[1], 2 * self.SESSIONS, 'descriptors at the peak')
        load.start_relaying()
        load.run_until(lambda: all(c.state in ('closed', 'eof', 'aborted', 'lost')
                                   for c in load.clients), deadline, 'relaying')
        relayed_at = time.monotonic()
        good = [c for c in load.clients if not c.abort and c.close_code == 1000
                and bytes(c.payload) == c.data]
        cut = [c for c in load.clients if not c.abort and c not in good]
        for c in cut:                       # only a target abort may cut a session short
            self.assertIn(c.close_code, (1000, 1011, None), load.summary())
            self.assertEqual(bytes(c.payload), c.data[:len(c.payload)])
        target_aborts = sum(1 for t in load.targets if t.abort)
        self.assertLessEqual(len(cut), target_aborts)
        self.assertGreater(len(good), self.SESSIONS * 3 // 4)
        load.close()
        # Connection threads left waiting in accept(): two at the baseline, the most
        # that wait after a load (the others have ended).
        settled = (baseline[0] - 2 + websockify.ACCEPTING_THREADS_MAX, baseline[1])
        end = time.monotonic() + 30
        while proc_counts(pid) != settled and time.monotonic() < end:
            time.sleep(0.2)
        self.assertEqual(proc_counts(pid), settled, 'threads, descriptors after the load')
        self.assertNotIn('Traceback', proxy.stderr)
        self.assertNotIn('internal error', proxy.stderr)
        sys.stderr.write('\n  load: %d sessions (peak %d threads, %d fds), opened in %.1f s, '
                         'relayed in %.1f s, %d good, %d client aborts, %d target aborts, '
                         'back to baseline after %.1f s ... '
                         % (self.SESSIONS, peak[0], peak[1], opened_at - started,
                            relayed_at - opened_at, len(good),
                            sum(1 for c in load.clients if c.abort), target_aborts,
                            time.monotonic() - relayed_at))


class TestServerDaemon(WrapTestCase):
    """-D: a daemon with its pid file, its errors on the terminal."""

    def test_daemon_writes_pid_file_serves_and_stops_on_sigterm(self):
        port = free_port()
        pid_file = os.path.join(self.tmp, 'daemon.pid')
        log_file = os.path.join(self.tmp, 'daemon.log')
        fg = subprocess.run([sys.executable, SCRIPT, '-D', '--pid-file', pid_file,
                             '--log-file', log_file, '127.0.0.1:%d' % port, '--',
                             sys.executable, self.program, str(port), '0.0.0.0', 'serve'],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=PROCESS_TIMEOUT)
        self.assertEqual(fg.returncode, 0, fg.stderr)
        with open(pid_file) as f:
            pid = int(f.read())
        self.addCleanup(self.stop_daemon, pid, pid_file, log_file)
        self.assertNotEqual(os.getsid(pid), os.getsid(0))  # a session of its own,
        self.assertNotEqual(os.getsid(pid), pid)           # which it does not lead
        relay_checksummed(self, port, 65536)
        with open(log_file) as f:
            log = f.read()
        pgid = int(re.search(r'started \S+ \(pid (\d+)\)', log).group(1))
        self.assertIn('program serve listening', log)     # its output goes to the log
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + PROCESS_TIMEOUT
        while os.path.exists(pid_file) and time.monotonic() < end:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(pid_file))
        wait_group_gone(self, pgid)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(('127.0.0.1', port), PROCESS_TIMEOUT).close()

    def stop_daemon(self, pid, pid_file, log_file):
        """Cleanup after a failure: SIGTERM the daemon (it stops its program), then kill."""
        if not os.path.exists(pid_file):
            return                          # it stopped, and stopped its program
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + PROCESS_TIMEOUT
        while os.path.exists(pid_file) and time.monotonic() < end:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with open(log_file) as f:
            for pgid in re.findall(r'started \S+ \(pid (\d+)\)', f.read()):
                with contextlib.suppress(OSError):
                    os.killpg(int(pgid), signal.SIGKILL)

    def test_daemon_errors_reach_the_terminal(self):
        port = free_port()
        fg = subprocess.run([sys.executable, SCRIPT, '-D', '127.0.0.1:%d' % port, '--',
                             os.path.join(self.tmp, 'no-such-program')],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=PROCESS_TIMEOUT)
        self.assertEqual(fg.returncode, 1)
        self.assertIn(b'cannot run', fg.stderr)
        with socket.socket() as busy:
            busy.bind(('127.0.0.1', 0))
            busy.listen(1)
            fg = subprocess.run([sys.executable, SCRIPT, '-D',
                                 '127.0.0.1:%d' % busy.getsockname()[1], '127.0.0.1:9'],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=PROCESS_TIMEOUT)
        self.assertEqual(fg.returncode, 1)
        self.assertIn(b'cannot listen', fg.stderr)


#: The part after <PRI> of an RFC 5424 message and of a legacy (RFC 3164) one.
RFC5424 = re.compile(r'<(\d+)>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) websockify '
                     r'(\d+) - - (.*)\Z', re.S)
LEGACY = re.compile(r'<(\d+)>([A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d) websockify\[(\d+)\]: '
                    r'(.*)\Z', re.S)


class TestServerSyslog(ProxyTestCase):

    def udp_receiver(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(('127.0.0.1', 0))
        sock.settimeout(TIMEOUT)
        return sock

    def unix_receiver(self):
        path = os.path.join(self.tempdir(), 'log')
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(TIMEOUT)
        return sock, path

    def message(self, sock, containing):
        """The first datagram containing a text (others are skipped)."""
        deadline = time.monotonic() + TIMEOUT
        seen = []
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            text = data.decode('utf-8')
            if containing in text:
                return text
            seen.append(text)
        self.fail('no syslog message with %r in %r' % (containing, seen))

    def test_udp_messages_are_rfc5424_with_facility_user(self):
        receiver = self.udp_receiver()
        target = TargetServer(self, echo)
        proc = ProxyProcess(self, '--syslog', '127.0.0.1:%d' % receiver.getsockname()[1],
                            '127.0.0.1:0', target.arg)
        text = self.message(receiver, 'listening on')
        match = RFC5424.match(text)
        self.assertTrue(match, text)
        self.assertEqual(int(match.group(1)), 1 * 8 + 6)      # user.info
        self.assertEqual(int(match.group(4)), proc.proc.pid)
        self.assertEqual(match.group(3), socket.gethostname())
        self.assertFalse(text.endswith('\x00'))
        stamp = time.strptime(match.group(2)[:19], '%Y-%m-%dT%H:%M:%S')
        self.assertLess(abs(time.mktime(stamp) - time.mktime(time.gmtime())), 120)
        client = open_session(self, proc.address)         # session lines arrive too
        self.assertEqual(client.echo(b'x'), b'x')
        self.assertTrue(RFC5424.match(self.message(receiver, 'session open')))
        self.assertIn('listening on', proc.stderr)   # stderr still has the log

    def test_legacy_syslog_messages_are_rfc3164(self):
        receiver = self.udp_receiver()
        target = TargetServer(self, echo)
        proc = ProxyProcess(self, '--syslog', '127.0.0.1:%d' % receiver.getsockname()[1],
                            '--legacy-syslog', '127.0.0.1:0', target.arg)
        text = self.message(receiver, 'listening on')
        match = LEGACY.match(text)
        self.assertTrue(match, text)
        self.assertEqual(int(match.group(1)), 14)
        self.assertEqual(int(match.group(3)), proc.proc.pid)
        self.assertTrue(match.group(4).startswith('websockify.py '), text)

    def test_unix_datagram_socket(self):
        receiver, path = self.unix_receiver()
        target = TargetServer(self, echo)
        ProxyProcess(self, '--syslog', path, '127.0.0.1:0', target.arg)
        self.assertTrue(RFC5424.match(self.message(receiver, 'listening on')))

    def test_daemon_logs_with_facility_daemon(self):
        receiver, path = self.unix_receiver()
        target = TargetServer(self, echo)
        pid_file = os.path.join(self.tempdir(), 'pid')
        result = run_cli('-D', '--pid-file', pid_file, '--syslog', path, '--legacy-syslog',
                         '127.0.0.1:0', target.arg)
        self.assertEqual(result.returncode, 0, result)
        with open(pid_file) as f:
            pid = int(f.read())
        self.addCleanup(self.stop_daemon, pid)
        text = self.message(receiver, 'listening on')
        match = LEGACY.match(text)
        self.assertTrue(match, text)
        self.assertEqual(int(match.group(1)), 3 * 8 + 6)      # daemon.info
        self.assertEqual(int(match.group(3)), pid)

    def stop_daemon(self, pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_until_gone(lambda: os.kill(pid, 0), TIMEOUT):
            os.kill(pid, signal.SIGKILL)

    def test_usage_errors(self):
        folder = self.tempdir()
        plain = os.path.join(folder, 'file')
        open(plain, 'w').close()
        for options, text in [
                (['--syslog', 'localhost:x'], 'invalid syslog port'),
                (['--syslog', 'localhost:0'], 'invalid syslog port'),
                (['--syslog', ':514'], 'needs HOST:PORT'),
                (['--syslog', 'no-such-host.invalid:514'], 'cannot resolve'),
                (['--syslog', os.path.join(folder, 'missing')], 'No such file'),
                (['--syslog', plain], 'is not a socket')]:
            with self.subTest(options=options):
                result = run_cli(*options, '127.0.0.1:0', '127.0.0.1:9')
                check_usage_error(self, result, text)


def wait_file_line(test, path, pattern, timeout=PROCESS_TIMEOUT):
    """The first line of the file at path matching pattern (a regex), waiting for it."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding='utf-8', errors='replace') as f:
                for line in f:
                    match = regex.search(line)
                    if match:
                        return match
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            test.fail('no %r in %s' % (pattern, path))
        time.sleep(0.02)


def rewrite_keeping_stat(path, text):
    """Write text over the file in place (same inode), padded to its old size,
    and set its times back: nothing in its stat shows the edit."""
    st = os.stat(path)
    data = text.encode()
    assert len(data) <= st.st_size, 'the new text must not be longer'
    with open(path, 'r+b') as f:
        f.write(data + b'#' * (st.st_size - len(data)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


class TestServerReload(ProxyTestCase):
    """SIGHUP without a program: log file, token files and certificates are read
    again; sessions go on."""

    def token_file(self, text):
        path = os.path.join(self.tempdir(), 'tokens')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def token_session(self, address, token):
        client = WSClient(self, address)
        client.handshake(path='/?token=' + token)
        return client

    def test_log_file_opened_again_after_logrotate_renamed_it(self):
        target = TargetServer(self, echo)
        folder = self.tempdir()
        log = os.path.join(folder, 'websockify.log')
        proxy = ProxyProcess(self, '--log-file', log, '127.0.0.1:0', target.arg, ready=False)
        port = int(wait_file_line(self, log, r'listening on 127\.0\.0\.1:(\d+)').group(1))
        client = WSClient(self, ('127.0.0.1', port))
        client.handshake()
        self.assertEqual(client.echo(b'before'), b'before')
        os.rename(log, log + '.1')
        proxy.proc.send_signal(signal.SIGHUP)
        line = wait_file_line(self, log, r'SIGHUP: reloaded (.*)').group(1)
        self.assertIn('log file ' + log, line)
        self.assertEqual(client.echo(b'after'), b'after')       # the session went on
        client.close()
        wait_file_line(self, log, 'session closed')
        self.assertEqual(proxy.stop(), 0)
        with open(log + '.1') as f:
            old = f.read()
        with open(log) as f:
            new = f.read()
        self.assertIn('session open', old)
        self.assertNotIn('SIGHUP', old)
        self.assertNotIn('session closed', old)
        self.assertIn('stopped', new)

    def test_token_file_edited_with_its_old_stat_is_read_on_sighup(self):
        first, second = TargetServer(self), TargetServer(self)
        path = self.token_file('a: %s\nb: %s\n' % (first.arg, first.arg))
        proxy = ProxyProcess(self, '--target-config', path, '127.0.0.1:0')
        self.token_session(proxy.address, 'a').close()
        first.accept().close()
        rewrite_keeping_stat(path, 'a: %s\n' % second.arg)
        # Nothing in the file's stat changed: without a reload, still the old target.
        self.token_session(proxy.address, 'b').close()
        first.accept().close()
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_log(r'SIGHUP: reloaded token file \S+ \(1 tokens\)')
        client = self.token_session(proxy.address, 'a')
        second.accept().close()
        client.close()
        self.refused(proxy.address, upgrade_request(path='/?token=b'), 404)

    def test_certificate_read_again_and_a_broken_one_kept_out(self):
        pki = get_pki()
        target = TargetServer(self, echo)
        folder = self.tempdir()
        cert, key = os.path.join(folder, 'cert.pem'), os.path.join(folder, 'key.pem')
        shutil.copy(pki.server[0], cert)
        shutil.copy(pki.server[1], key)
        proxy = ProxyProcess(self, '--cert', cert, '--key', key, '127.0.0.1:0', target.arg)

        def served():
            client = WSClient(self, proxy.address, context=client_context(pki),
                              server_hostname='localhost')
            client.handshake()
            der = client.sock.getpeercert(binary_form=True)
            client.close()
            return der

        def der(path):
            with open(path) as f:
                return ssl.PEM_cert_to_DER_cert(f.read())
        self.assertEqual(served(), der(pki.server[0]))
        shutil.copy(pki.server2[0], cert)
        shutil.copy(pki.server2[1], key)
        proxy.proc.send_signal(signal.SIGHUP)
        self.assertIn('certificate ' + cert,
                      proxy.wait_log(r'SIGHUP: reloaded (.*)').group(1))
        self.assertEqual(served(), der(pki.server2[0]))
        with open(cert, 'w') as f:
            f.write('-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n')
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_log(r'certificate files were not loaded')
        proxy.wait_log(r'SIGHUP: ', count=2)
        self.assertEqual(served(), der(pki.server2[0]))         # the previous one is kept
        self.assertNotIn('Traceback', proxy.stderr)

    def test_workers_each_reload(self):
        first, second = TargetServer(self), TargetServer(self)
        path = self.token_file('a: %s\n' % first.arg)
        proxy = ProxyProcess(self, '--workers', '2', '--target-config', path, '127.0.0.1:0')
        rewrite_keeping_stat(path, 'a: %s\n' % second.arg)
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_log(r'SIGHUP: passed on to 2 workers')
        proxy.wait_log(r'worker 1: SIGHUP: reloaded token file')
        proxy.wait_log(r'worker 2: SIGHUP: reloaded token file')
        for _ in range(4):                    # whichever worker takes it
            client = self.token_session(proxy.address, 'a')
            second.accept().close()
            client.close()
        self.assertEqual(proxy.stop(), 0)

    def test_nothing_to_reload_is_said(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '127.0.0.1:0', target.arg)
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_log(r'SIGHUP: nothing to reload')
        client = WSClient(self, proxy.address)
        client.handshake()
        self.assertEqual(client.echo(b'still here'), b'still here')
        client.close()
        self.assertEqual(proxy.stop(), 0)


#: Starts websockify.py as systemd does with socket activation: the listening
#: socket as descriptor 3, LISTEN_FDS and LISTEN_PID (this very process, which
#: then execs) in the environment. argv: tcp|unix|file, where to listen, the
#: LISTEN_FDS value, whose pid ('self' or 'parent'), then websockify.py's arguments.
SYSTEMD_LAUNCHER = r'''
import os, socket, sys
kind, where, count, whose = sys.argv[1:5]
if kind == 'tcp':
    sock = socket.socket()
    sock.bind((where, 0))
    sock.listen(64)
    fd = sock.fileno()
elif kind == 'unix':
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(where)
    sock.listen(64)
    fd = sock.fileno()
else:
    fd = os.open(where, os.O_RDONLY)
os.dup2(fd, 3)
os.set_inheritable(3, True)
os.environ['LISTEN_FDS'] = count
os.environ['LISTEN_PID'] = str(os.getpid() if whose == 'self' else os.getppid())
os.environ['LISTEN_FDNAMES'] = 'websockify'
os.execv(sys.executable, [sys.executable, SCRIPT] + sys.argv[5:])
'''


class TestServerSocketActivation(ProxyTestCase):
    """systemd socket activation: websockify.py started exactly as systemd starts it."""

    def launcher(self):
        path = os.path.join(self.tempdir(), 'systemd_launcher.py')
        with open(path, 'w') as f:
            f.write('SCRIPT = %r\n' % SCRIPT + SYSTEMD_LAUNCHER)
        return path

    def occupied_port(self):
        """A port bound by this test: websockify.py must not try to bind it."""
        sock = socket.socket()
        sock.bind(('127.0.0.1', 0))
        self.addCleanup(sock.close)
        return str(sock.getsockname()[1])

    def test_tcp_socket_on_fd_3(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, 'tcp', '127.0.0.1', '1', 'self', self.occupied_port(),
                             target.arg, script=self.launcher())
        self.assertIn('(socket from systemd)', proxy.stderr)
        self.echo_once(proxy.address, b'activated')
        self.assertEqual(proxy.stop(), 0)

    def test_unix_socket_on_fd_3_is_left_to_systemd(self):
        target = TargetServer(self, echo)
        path = os.path.join(self.tempdir(), 'ws.sock')
        proxy = ProxyProcess(self, 'unix', path, '1', 'self', '6080', target.arg,
                             script=self.launcher())
        self.assertEqual(proxy.address, path)
        self.echo_once(path, b'over unix')
        self.assertEqual(proxy.stop(), 0)
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))   # systemd's file, not ours

    def test_variables_of_another_process_are_ignored(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, 'tcp', '127.0.0.1', '1', 'parent', '127.0.0.1:0', target.arg,
                             script=self.launcher())
        self.assertNotIn('systemd', proxy.stderr)
        self.echo_once(proxy.address, b'bound itself')

    def test_workers_share_the_passed_socket(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, 'tcp', '127.0.0.1', '1', 'self', '--workers', '2',
                             self.occupied_port(), target.arg, script=self.launcher())
        for _ in range(4):
            self.echo_once(proxy.address, b'w')
        self.assertEqual(proxy.stop(), 0)

    def test_what_cannot_be_served_is_a_usage_error(self):
        folder = self.tempdir()
        plain = os.path.join(folder, 'plain')
        with open(plain, 'w') as f:
            f.write('not a socket')
        for args, text in ((['tcp', '127.0.0.1', '2', 'self'], 'serves one'),
                           (['file', plain, '1', 'self'], 'not a socket')):
            with self.subTest(text=text):
                result = subprocess.run(
                    [sys.executable, self.launcher()] + args + ['6080', '127.0.0.1:5900'],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    universal_newlines=True, timeout=TIMEOUT)
                self.assertEqual(result.returncode, 2, result)
                self.assertIn(text, result.stderr)
                self.assertNotIn('Traceback', result.stderr)

    def test_a_wrapped_program_gets_neither_the_variables_nor_the_socket(self):
        ensure_rebind()
        folder = self.tempdir()
        seen = os.path.join(folder, 'seen')
        program = ('import os, sys\n'
                   'try:\n    os.fstat(3); fd3 = "open"\nexcept OSError:\n    fd3 = "closed"\n'
                   'with open(sys.argv[1], "w") as f:\n'
                   '    f.write(repr([os.environ.get(k) for k in '
                   '("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")] + [fd3]))\n')
        proxy = ProxyProcess(self, 'tcp', '127.0.0.1', '1', 'self', '--wrap-mode', 'ignore',
                             str(free_port()), '--', sys.executable, '-c', program, seen,
                             script=self.launcher())
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(seen) or not os.path.getsize(seen):
            self.assertLess(time.monotonic(), deadline, proxy.stderr)
            time.sleep(0.05)
        with open(seen) as f:
            self.assertEqual(f.read(), repr([None, None, None, 'closed']))
        self.assertEqual(proxy.stop(), 0)


_METRIC_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? (-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)\Z')
_METRIC_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse_metrics(test, text):
    """Prometheus text format 0.0.4, strictly: every line a HELP, a TYPE (before its
    samples) or a sample; returns {(name, ((label, value), ...)): value}."""
    test.assertTrue(text.endswith('\n'), 'the page must end with a line feed')
    types, samples = {}, {}
    for line in text[:-1].split('\n'):
        if line.startswith('# HELP '):
            name, _, help_text = line[7:].partition(' ')
            test.assertRegex(name, r'\A[a-zA-Z_:][a-zA-Z0-9_:]*\Z')
            test.assertTrue(help_text, line)
            continue
        if line.startswith('# TYPE '):
            name, _, kind = line[7:].partition(' ')
            test.assertIn(kind, ('counter', 'gauge'), line)
            test.assertNotIn(name, types, 'TYPE given twice: ' + line)
            types[name] = kind
            continue
        match = _METRIC_SAMPLE.match(line)
        test.assertIsNotNone(match, 'not a sample line: %r' % line)
        name, labels, value = match.groups()
        test.assertIn(name, types, 'sample before its TYPE: ' + line)
        key = (name, tuple(_METRIC_LABEL.findall(labels or '')))
        test.assertNotIn(key, samples, 'sample given twice: ' + line)
        samples[key] = float(value)
    return samples


class TestServerLimits(ProxyTestCase):
    """--max-connections, --max-connections-per-ip, --max-sessions-per-token."""

    def session(self, address, path='/'):
        client = WSClient(self, address)
        client.handshake(path=path)
        return client

    def over_limit(self, address, status):
        """A connection answered status with Retry-After, without sending anything."""
        with socket.create_connection(address[:2], TIMEOUT) as sock:
            sock.settimeout(TIMEOUT)
            answer = read_to_eof(sock)
        self.assertTrue(answer.startswith(b'HTTP/1.1 %d ' % status), answer)
        self.assertIn(b'\r\nRetry-After: 1\r\n', answer)
        return answer

    def settled(self, address, probe, timeout=TIMEOUT):
        """Wait until probe() (a new session) succeeds: counts are released when
        the proxy has seen a connection end, a moment after the client closed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return probe()
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def test_max_connections(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--max-connections', '3', '127.0.0.1:0', target.arg)
        clients = [self.session(proxy.address) for _ in range(3)]
        self.over_limit(proxy.address, 503)
        for client in clients:                      # the first three go on
            self.assertEqual(client.echo(b'x'), b'x')
        proxy.wait_log(r'limit of connections reached')
        clients.pop().close()
        client = self.settled(proxy.address, lambda: self.session(proxy.address))
        self.assertEqual(client.echo(b'again'), b'again')
        for client in clients + [client]:
            client.close()
        self.assertEqual(len(re.findall('limit of connections reached', proxy.stderr)), 1)
        proxy.wait_log(r'below the limits again \(\d+ connections answered at a limit\)')

    @unittest.skipUnless(HAVE_IPV6, 'no IPv6 loopback')
    def test_max_connections_per_ip_from_127_0_0_1_and_v6(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--max-connections-per-ip', '2', '[::]:0', target.arg)
        port = proxy.address[1]
        v4 = [self.session(('127.0.0.1', port)) for _ in range(2)]
        self.over_limit(('127.0.0.1', port), 429)
        # Another address is not limited by the first one's connections.
        v6 = [self.session(('::1', port)) for _ in range(2)]
        self.over_limit(('::1', port), 429)
        for client in v4 + v6:
            self.assertEqual(client.echo(b'ok'), b'ok')
        v4.pop().close()
        client = self.settled(('127.0.0.1', port), lambda: self.session(('127.0.0.1', port)))
        for client in v4 + v6 + [client]:
            client.close()

    def test_max_sessions_per_token_released_when_a_client_resets(self):
        target = TargetServer(self, echo)
        folder = self.tempdir()
        tokens = os.path.join(folder, 'tokens')
        with open(tokens, 'w') as f:
            f.write('a: %s\nb: %s\n' % (target.arg, target.arg))
        proxy = ProxyProcess(self, '--max-sessions-per-token', '1', '--target-config', tokens,
                             '127.0.0.1:0')
        first = self.session(proxy.address, '/?token=a')
        response = self.refused(proxy.address, upgrade_request(path='/?token=a'), 429)
        self.assertEqual(response.header('retry-after'), '1')
        other = self.session(proxy.address, '/?token=b')
        self.assertEqual(other.echo(b'b'), b'b')
        proxy.wait_log(r'1 sessions of token a already open')
        # A reset, not a close: the count must still be released.
        first.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        first.sock.close()
        again = self.settled(proxy.address, lambda: self.session(proxy.address, '/?token=a'))
        self.assertEqual(again.echo(b'a'), b'a')
        again.close()
        other.close()

    def test_limits_are_counted_over_workers(self):
        target = TargetServer(self, echo)
        folder = self.tempdir()
        tokens = os.path.join(folder, 'tokens')
        with open(tokens, 'w') as f:
            f.write(''.join('%s: %s\n' % (name, target.arg) for name in 'abc'))
        proxy = ProxyProcess(self, '--workers', '2', '--max-connections', '6',
                             '--max-sessions-per-token', '2', '--target-config', tokens,
                             '127.0.0.1:0')
        clients = [self.session(proxy.address, '/?token=' + name) for name in 'aabbcc']
        for _ in range(4):                  # whichever worker takes it
            self.over_limit(proxy.address, 503)
        for client in clients[4:]:
            client.close()
        for _ in range(4):
            self.settled(proxy.address, lambda: self.refused(
                proxy.address, upgrade_request(path='/?token=a'), 429))
        for client in clients[:4]:
            self.assertEqual(client.echo(b'w'), b'w')
            client.close()
        self.assertEqual(proxy.stop(), 0)


class TestServerMetrics(ProxyTestCase):
    """--metrics-path: Prometheus text format, after known traffic."""

    def scrape(self, address, path='/metrics'):
        response = http_request(address[1], path)
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.header('content-type'),
                         'text/plain; version=0.0.4; charset=utf-8')
        return parse_metrics(self, response.body.decode('utf-8'))

    def test_counters_after_known_traffic(self):
        target = TargetServer(self, echo)
        folder = self.tempdir()
        tokens = os.path.join(folder, 'tokens')
        with open(tokens, 'w') as f:
            f.write('a: %s\n' % target.arg)
        proxy = ProxyProcess(self, '--metrics-path', '/metrics', '--target-config', tokens,
                             '127.0.0.1:0')
        sent = 0
        for size in (1000, 70000):
            client = WSClient(self, proxy.address)
            client.handshake(path='/?token=a')
            self.assertEqual(client.echo(b'm' * size), b'm' * size)
            sent += size
            client.close()
        open_one = WSClient(self, proxy.address)
        open_one.handshake(path='/?token=a')
        self.refused(proxy.address, upgrade_request(path='/?token=nope'), 404)
        self.refused(proxy.address, upgrade_request(path='/?token=a\x1b[2J'), 400)
        self.refused(proxy.address, b'GET /metrics\x1b HTTP/1.1\r\nHost: x\r\n\r\n', 400)
        proxy.wait_log(r'session closed', count=2)
        metrics = self.scrape(proxy.address)
        m = lambda name, **labels: metrics[('websockify_' + name, tuple(sorted(labels.items())))]
        self.assertEqual(m('workers'), 1)
        self.assertEqual(m('sessions_open'), 1)
        self.assertEqual(m('sessions_total', transport='plain'), 3)
        self.assertEqual(m('sessions_total', transport='tls'), 0)
        self.assertEqual(m('bytes_total', direction='client_to_target'), sent)
        self.assertEqual(m('bytes_total', direction='target_to_client'), sent)
        self.assertEqual(m('refusals_total', status='404'), 1)
        self.assertEqual(m('refusals_total', status='400'), 2)
        self.assertEqual(m('token_lookup_failures_total', plugin='TokenFile'), 0)
        self.assertGreaterEqual(m('connections_open'), 2)    # the open session, this scrape
        labels = {value for (_, pairs) in metrics for (_, value) in pairs}
        self.assertLessEqual(labels, {'plain', 'tls', 'client_to_target', 'target_to_client',
                                      'max_connections', 'max_connections_per_ip',
                                      'max_sessions_per_token', 'threads', 'TokenFile', 'other'}
                             | {str(s) for s in websockify.Tally.STATUSES})
        open_one.close()

    def test_only_allowed_addresses_read_it(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--metrics-path', '/metrics', '--metrics-allow', '10.0.0.0/8',
                             '127.0.0.1:0', target.arg)
        response = http_request(proxy.address[1], '/metrics')
        self.assertEqual(response.status, 403)
        self.assertNotIn(b'websockify_', response.body)
        proxy.wait_log(r'metrics refused to 127\.0\.0\.1')
        # Other paths are not metrics.
        self.assertEqual(http_request(proxy.address[1], '/other').status, 426)

    def test_aggregated_over_workers(self):
        target = TargetServer(self, echo)
        proxy = ProxyProcess(self, '--workers', '2', '--metrics-path', '/metrics',
                             '127.0.0.1:0', target.arg)
        for _ in range(6):
            client = WSClient(self, proxy.address)
            client.handshake()
            self.assertEqual(client.echo(b'abc'), b'abc')
            client.close()
        proxy.wait_log(r'session closed', count=6)
        metrics = self.scrape(proxy.address)
        self.assertEqual(metrics[('websockify_workers', ())], 2)
        self.assertEqual(metrics[('websockify_sessions_total', (('transport', 'plain'),))], 6)
        self.assertEqual(metrics[('websockify_bytes_total',
                                  (('direction', 'client_to_target'),))], 18)
        self.assertEqual(proxy.stop(), 0)


def readme_block(language, first_line):
    """The README code block of language whose text starts with first_line."""
    with open(os.path.join(HERE, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    for block in re.findall(r'```%s\n(.*?)```' % re.escape(language), text, re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError('no ```%s block starting %r in README.md' % (language, first_line))


class TestServerScaleOut(ProxyTestCase):
    """HAProxy (Debian haproxy) with README.md's haproxy.cfg in front of two
    websockify.py processes sharing TokenRedis on a real redis-server."""

    def haproxy(self, backends):
        program = shutil.which('haproxy') or '/usr/sbin/haproxy'
        require('haproxy', os.access(program, os.X_OK), 'apt-get install haproxy')
        config = readme_block('haproxy', 'defaults')
        port = free_port()
        for old, new in (('bind :6080', 'bind 127.0.0.1:%d' % port),
                         ('10.0.0.11:6080', '127.0.0.1:%d' % backends[0]),
                         ('10.0.0.12:6080', '127.0.0.1:%d' % backends[1])):
            self.assertIn(old, config)
            config = config.replace(old, new)
        path = os.path.join(self.tempdir(), 'haproxy.cfg')
        with open(path, 'w') as f:
            f.write(config)
        proc = subprocess.Popen([program, '-db', '-f', path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def stop():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(TIMEOUT)
            proc.stderr.close()
        self.addCleanup(stop)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), 1.0).close()
                return port
            except OSError:
                if proc.poll() is not None:
                    self.fail('haproxy exited: %s' % proc.stderr.read().decode('utf-8', 'replace'))
                self.assertLess(time.monotonic(), deadline, 'haproxy did not listen')
                time.sleep(0.05)

    def sessions_of(self, proxy):
        return len(re.findall(r'session open', proxy.stderr))

    def test_two_instances_behind_haproxy_share_redis(self):
        redis = RedisServer(self)
        one, two = TargetServer(self, echo), TargetServer(self, echo)
        redis.set('vnc:one', one.arg)
        source = '127.0.0.1:%d:0:%s:vnc' % (redis.port, redis.PASSWORD)
        instances = [ProxyProcess(self, '--token-plugin', 'TokenRedis', '--token-source', source,
                                  '127.0.0.1:0') for _ in range(2)]
        front = ('127.0.0.1', self.haproxy([p.address[1] for p in instances]))

        clients = []
        for i in range(6):
            client = WSClient(self, front)
            client.handshake(path='/?token=one')
            self.assertEqual(client.echo(b'via haproxy %d' % i), b'via haproxy %d' % i)
            clients.append(client)
        counts = [self.sessions_of(p) for p in instances]
        self.assertEqual(sum(counts), 6)
        self.assertTrue(all(counts), 'sessions not spread: %s' % counts)

        # A token added to Redis now works on both instances at once.
        redis.set('vnc:two', two.arg)
        for proxy in instances:
            client = WSClient(self, proxy.address)
            client.handshake(path='/?token=two')
            self.assertEqual(client.echo(b'new token'), b'new token')
            client.close()

        # SIGTERM on the first: its sessions end with 1001, the others go on.
        on_first = self.sessions_of(instances[0]) - 1      # one was the direct check
        instances[0].proc.send_signal(signal.SIGTERM)
        self.assertEqual(instances[0].proc.wait(PROCESS_TIMEOUT), 0)
        closed = 0
        for client in clients:
            try:
                frame = client.recv_frame(timeout=0.5)
            except AssertionError:            # nothing: a session of the second instance
                self.assertEqual(client.echo(b'still here'), b'still here')
                continue
            self.assertEqual(frame.opcode, CLOSE)
            self.assertEqual(struct.unpack('!H', frame.payload[:2])[0], 1001)
            closed += 1
        self.assertEqual(closed, on_first)
        # New sessions go to the second one (redispatched, then by the health check).
        before = self.sessions_of(instances[1])
        for i in range(4):
            client = WSClient(self, front)
            client.handshake(path='/?token=two')
            self.assertEqual(client.echo(b'after %d' % i), b'after %d' % i)
            client.close()
        instances[1].wait_log(r'session open', count=before + 4)
        for client in clients:
            client.close()


class TestServerDeadPeers(ProxyTestCase):
    """--heartbeat-timeout drops a client that stops answering pings (and its target
    connection); --session-idle-timeout ends a quiet session with 1001."""

    def setUp(self):
        self.log = LogWatch(self)

    def test_heartbeat_timeout_needs_heartbeat(self):
        with contextlib.redirect_stderr(io.StringIO()) as err, \
                self.assertRaises(SystemExit) as cm:
            websockify.parse_args(['--heartbeat-timeout', '5', '6080', 'localhost:5900'])
        self.assertEqual(cm.exception.code, 2)
        self.assertIn('--heartbeat-timeout needs --heartbeat', err.getvalue())
        settings = websockify.parse_args(['--heartbeat', '2', '--heartbeat-timeout', '5',
                                          '--session-idle-timeout', '60',
                                          '6080', 'localhost:5900'])
        self.assertEqual((settings.heartbeat_timeout, settings.session_idle_timeout), (5, 60))

    def test_client_that_never_answers_is_closed_with_its_target(self):
        target = TargetServer(self)
        address = self.proxy('--heartbeat', '0.2', '--heartbeat-timeout', '0.5',
                             '127.0.0.1:0', target.arg)
        client = open_session(self, address, timeout=10)
        conn = target.accept()
        conn.settimeout(10)
        started = time.monotonic()
        pings = 0
        deadline = started + 5.0
        with self.assertRaises(EOFError):
            while True:                     # read, never answer; pings keep coming if not closed
                if client.recv_frame(timeout=deadline - time.monotonic()).opcode == PING:
                    pings += 1
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(pings, 1)
        self.assertLess(elapsed, 3.0)       # 0.2 s to the first ping + 0.5 s to answer it
        self.assertEqual(read_to_eof(conn), b'')
        lines = self.log.wait_for('no answer to a ping within 0.5 s')
        self.assertEqual(len(lines), 1, self.log.output)
        self.assertIn('session closed', lines[0])

    def test_client_that_answers_stays_open(self):
        websockets_asyncio()
        from websockets.asyncio.client import connect
        address = self.echo_proxy('--heartbeat', '0.1', '--heartbeat-timeout', '0.3')

        async def run():
            # websockets answers pings by itself while it waits; five times the timeout.
            async with connect('ws://127.0.0.1:%d/' % address[1]) as ws:
                await asyncio.sleep(1.5)
                await ws.send(b'still here')
                return await asyncio.wait_for(ws.recv(), 5)
        self.assertEqual(asyncio.run(asyncio.wait_for(run(), 20)), b'still here')
        self.assertEqual(self.log.wait_for('no answer to a ping', timeout=0.1), [])

    def test_session_idle_timeout_closes_with_1001(self):
        address = self.echo_proxy('--session-idle-timeout', '0.5')
        client = open_session(self, address, timeout=10)
        self.assertEqual(client.echo(b'data resets the clock'), b'data resets the clock')
        started = time.monotonic()
        code, reason = client.expect_close()
        self.assertEqual(code, 1001)
        self.assertIn(b'no data either way', reason)
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertTrue(self.log.wait_line('session closed', 'close 1001'))

    def test_session_idle_timeout_spares_a_busy_session(self):
        address = self.echo_proxy('--session-idle-timeout', '0.5')
        client = open_session(self, address, timeout=10)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # data every echo round trip, for 3 timeouts
            self.assertEqual(client.echo(b'busy'), b'busy')
        self.assertEqual(self.log.wait_for('session closed', timeout=0.1), [])


################################################################################
# Interoperability: the demo and the pages of web/ in a browser
################################################################################

def line_service(testcase):
    """The demo's line service (web/demo.py) on 127.0.0.1, stopped in the test's cleanup."""
    service = web_demo.LineService()
    testcase.addCleanup(service.stop)
    return service


class TestDemoLineService(unittest.TestCase):
    """The test line service: greeting, echo, commands, telnet bytes dropped."""

    def setUp(self):
        self.service = line_service(self)
        self.sock = socket.create_connection(('127.0.0.1', self.service.port), TIMEOUT)
        self.addCleanup(self.sock.close)
        self.got = b''

    def until(self, needle):
        while needle not in self.got:
            data = self.sock.recv(4096)
            self.assertTrue(data, 'closed; got %r' % self.got)
            self.got += data
        return self.got

    def test_session(self):
        self.until(b'> ')
        self.sock.sendall(b'hel\xff\xfb\x18lo\r\x00')
        self.until(b'echo: hello\r\n> ')
        self.sock.sendall(b'colr\x7fo')
        self.sock.sendall(b'r\r\n')
        self.until(web_demo.LineService.COLOR)
        self.assertIn(b'colr\b \bor\r\n', self.got)
        self.sock.sendall(b'cursor\n')
        self.until(web_demo.LineService.CURSOR + b'> ')
        self.sock.sendall(b'quit\r')
        self.until(b'bye\r\n')
        self.sock.settimeout(TIMEOUT)
        self.assertEqual(self.sock.recv(100), b'')


class TestDemo(unittest.TestCase):
    """The demo, as `make demo` runs it and through `make demo` itself: its URL loads,
    a WebSocket round trip works, and SIGINT stops it with all it started."""

    def start(self, argv, **options):
        """Run argv in a session (process group) of its own, killed in cleanup; its
        stdout lines are read with printed_until(), its stderr lines go to self.errors."""
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True,
                                start_new_session=True, **options)
        self.printed, self.errors, self.stdout_lines = [], [], queue.Queue()
        self.copiers = [drain(proc.stdout, self.stdout_lines.put),
                        drain(proc.stderr, self.errors.append)]
        self.addCleanup(self.kill_group, proc)
        return proc

    def kill_group(self, proc):
        """Cleanup: whatever is left of proc's group is killed, the pipes closed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        for copier in self.copiers:
            copier.join(TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()

    def printed_until(self, pattern, timeout=TIMEOUT):
        """Wait (bounded) for a stdout line matching pattern; returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.stdout_lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.fail('no line matching %r in %s s; stdout %r; stderr %r'
                          % (pattern, timeout, ''.join(self.printed), ''.join(self.errors)))
            self.printed.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stopped_by_sigint(self, proc, group):
        """SIGINT to proc (or its whole group, as Ctrl-C in a terminal does): it must
        exit in time and leave no process of its group behind."""
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail('the demo did not stop on SIGINT; stderr %r' % ''.join(self.errors))
        wait_group_gone(self, proc.pid, TIMEOUT)
        for copier in self.copiers:
            copier.join(TIMEOUT)

    def test_demo(self):
        if not os.path.isdir(WEB_DIR):
            self.fail('web/ is missing next to websockify.py')
        proc = self.start([sys.executable, DEMO, '--port', '0'])
        match = self.printed_until(r'(http://localhost:(\d+)/\S*)')
        url, port = match.group(1), int(match.group(2))
        self.printed_until('Ctrl-C')
        self.assertIn('wstelnet.html?autoconnect=1', url)
        path = url.split('localhost:%d' % port, 1)[1]
        r = http_request(port, path)
        self.assertEqual(r.status, 200)
        self.assertIn(b'<script src="wstelnet.js"></script>', r.body)
        ws = WSClient(self, ('127.0.0.1', port))
        ws.handshake(protocols=['binary'])
        ws.recv_until(b'> ')
        ws.send_frame(BINARY, b'hello demo\n')
        ws.recv_until(b'echo: hello demo')
        ws.send_close(1000)
        ws.expect_close(1000)
        latency = [line for line in self.printed if 'latency.html' in line]
        self.assertTrue(latency, self.printed)
        echo_port = int(re.search(r'latency\.html\?port=(\d+)', latency[0]).group(1))
        ws = WSClient(self, ('127.0.0.1', echo_port))
        ws.handshake(protocols=['binary'])
        ws.send_frame(BINARY, bytes(range(256)))
        self.assertEqual(ws.recv_until(b'\xfe\xff'), bytes(range(256)))
        ws.send_close(1000)
        ws.expect_close(1000)
        self.stopped_by_sigint(proc, group=False)    # the demo stops what it started
        self.assertEqual(proc.returncode, 0)
        self.assertNotIn('Traceback', ''.join(self.errors))
        self.assertEqual(sum('stopped' in line for line in self.errors), 2, self.errors)

    def test_make_demo(self):
        """`make demo` on free ports: the URL it prints serves the page, its proxy
        relays a WebSocket round trip, and Ctrl-C (SIGINT to the group) stops it all."""
        make = shutil.which('make')
        require('make', make, 'apt-get install make')
        port = free_port()
        echo_port = free_port()
        while echo_port == port:
            echo_port = free_port()
        proc = self.start([make, '--no-print-directory', 'demo', 'PYTHON=' + sys.executable,
                           'DEMO_PORT=%d' % port, 'DEMO_ECHO_PORT=%d' % echo_port], cwd=HERE)
        # The demo starts two websockify.py.
        url = self.printed_until(r'http://localhost:%d/\S*' % port, 3 * TIMEOUT).group(0)
        self.printed_until('Ctrl-C')
        self.assertIn('latency.html?port=%d&' % echo_port, ''.join(self.printed))
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(url, timeout=TIMEOUT) as reply:
            self.assertEqual(reply.status, 200)
            self.assertEqual(reply.headers.get_content_type(), 'text/html')
            page = reply.read()
        self.assertTrue(page.lstrip().lower().startswith(b'<!doctype html'), page[:200])
        ws = WSClient(self, ('127.0.0.1', port))
        ws.handshake(protocols=['binary'])
        ws.recv_until(web_demo.LineService.PROMPT)
        ws.send_frame(BINARY, b'hello make demo\r\n')
        ws.recv_until(b'echo: hello make demo\r\n')
        ws.send_close(1000)
        ws.expect_close(1000)
        self.stopped_by_sigint(proc, group=True)
        # make dies of the SIGINT once the demo, which stops cleanly, has exited.
        self.assertIn(proc.returncode, (0, -signal.SIGINT), ''.join(self.errors))
        self.assertNotIn('Traceback', ''.join(self.errors))
        self.assertEqual(sum('stopped' in line for line in self.errors), 2, self.errors)
        self.assertFalse(tcp_listening(port), 'port %d still listened on' % port)
        self.assertFalse(tcp_listening(echo_port), 'port %d still listened on' % echo_port)


class TestBrowser(unittest.TestCase):
    """wstelnet.html, wsecho.html and websock.js from --web, in headless Chromium."""

    @classmethod
    def setUpClass(cls):
        cls.playwright = cls.browser = None
        sync_api = import_optional('playwright.sync_api', 'pip install playwright')
        require(CHROMIUM, os.path.exists(CHROMIUM), 'apt-get install chromium')
        cls.playwright = sync_api.sync_playwright().start()
        try:
            cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM,
                                                         args=CHROMIUM_ARGS)
        except Exception:
            cls.playwright.stop()
            raise
        os.makedirs(ARTIFACTS, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        if cls.browser is not None:
            cls.browser.close()
        if cls.playwright is not None:
            cls.playwright.stop()

    def setUp(self):
        self.assertTrue(os.path.isdir(WEB_DIR), 'web/ is missing next to websockify.py')
        self.console = []

    def new_page(self, **context_options):
        context = self.browser.new_context(**context_options)
        self.addCleanup(context.close)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT * 1000)
        page.on('console', lambda msg: self.console.append('%s: %s' % (msg.type, msg.text)))
        page.on('pageerror', lambda exc: self.console.append('pageerror: %s' % exc))
        return page

    def screenshot(self, page, name):
        page.screenshot(path=os.path.join(ARTIFACTS, name + '.png'))

    def line_proxy(self, extra=()):
        service = line_service(self)
        return start_proxy(self, *extra, '--web', WEB_DIR, '127.0.0.1:0',
                           '127.0.0.1:%d' % service.port).server_address[1]

    def wait_text(self, page, text, hook='wstelnet'):
        """Wait until the terminal (or wsecho output) shows text; returns the screen."""
        expr = ('(t) => window.wstelnet && window.wstelnet.getText().indexOf(t) >= 0'
                if hook == 'wstelnet' else
                '(t) => window.wsecho && window.wsecho.output().indexOf(t) >= 0')
        try:
            page.wait_for_function(expr, arg=text)
        except Exception:
            screen = page.evaluate('window.%s ? (window.%s.getText ? window.%s.getText() : '
                                   'window.%s.output()) : null' % ((hook,) * 4))
            self.fail('%r never appeared; screen:\n%s\nconsole: %s' % (text, screen, self.console))
        return page.evaluate('window.wstelnet ? window.wstelnet.getText() : window.wsecho.output()')

    def find(self, page, text):
        """(row, col) where text starts on the terminal screen."""
        rows = page.evaluate('(function(){var t=window.wstelnet.term,r=[];'
                             'for(var y=0;y<t.rows;y++){r.push(t.getRow(y));}return r;})()')
        for y, row in enumerate(rows):
            x = row.find(text)
            if x >= 0:
                return y, x
        self.fail('%r is not on the screen' % text)

    def cell(self, page, row, col):
        return page.evaluate('([r, c]) => window.wstelnet.term.cellAttr(r, c)', [row, col])

    def open_telnet(self, page, url):
        response = page.goto(url)
        self.assertEqual(response.status, 200)
        page.wait_for_function("window.wstelnet && window.wstelnet.status === 'connected'")

    def type_line(self, page, text):
        page.click('#terminal')
        page.keyboard.type(text)
        page.keyboard.press('Enter')

    def check_line_service(self, page, name):
        """Type into the terminal and check echo, colours and cursor movement."""
        self.wait_text(page, 'websockify.py line service')
        self.type_line(page, 'hello from chromium')
        self.wait_text(page, 'echo: hello from chromium')
        page.click('#terminal')
        page.keyboard.type('hellp')
        page.keyboard.press('Backspace')
        page.keyboard.type('o')
        page.keyboard.press('Enter')
        self.wait_text(page, 'echo: hello\n')
        self.type_line(page, 'color')
        self.wait_text(page, 'bold blue plain')
        y, x = self.find(page, 'red green bold blue plain')
        red, green, blue = self.cell(page, y, x), self.cell(page, y, x + 4), self.cell(page, y, x + 10)
        plain = self.cell(page, y, x + 20)
        self.assertEqual((red['ch'], red['fg'], red['bold']), ('r', 1, False))
        self.assertEqual((green['ch'], green['fg']), ('g', 2))
        self.assertEqual((blue['ch'], blue['fg'], blue['bold']), ('b', 4, True))
        self.assertEqual((plain['ch'], plain['fg'], plain['bold']), ('p', None, False))
        page.evaluate('window.wstelnet.term.render()')
        spans = page.evaluate('''() => Array.prototype.map.call(
            document.querySelectorAll('#terminal span.fg1'),
            (s) => [s.textContent, getComputedStyle(s).color])''')
        self.assertIn(['red', 'rgb(205, 0, 0)'], spans)
        self.screenshot(page, name + '-color')
        self.type_line(page, 'cursor')
        page.wait_for_function("window.wstelnet.term.getRow(3).indexOf('> ') === 0")
        rows = page.evaluate('[0, 1, 2, 3].map((y) => window.wstelnet.term.getRow(y).trimEnd())')
        self.assertEqual(rows, ['AB23456789', 'abcdXYghij', '', '>'])
        self.assertEqual(page.evaluate('window.wstelnet.term.getCursor()')['row'], 3)
        self.assertEqual(page.evaluate('window.wstelnet.term.getCursor()')['col'], 2)
        page.evaluate('window.wstelnet.term.render()')
        dom = page.evaluate("document.querySelectorAll('#terminal .row')[1].textContent")
        self.assertEqual(dom.rstrip(), 'abcdXYghij')
        self.screenshot(page, name + '-cursor')
        self.assertFalse([m for m in self.console if m.startswith('pageerror')], self.console)

    def test_wstelnet_line_service(self):
        port = self.line_proxy()
        page = self.new_page()
        self.open_telnet(page, 'http://127.0.0.1:%d/wstelnet.html?autoconnect=1' % port)
        self.check_line_service(page, 'wstelnet-line-service')
        self.type_line(page, 'quit')
        page.wait_for_function("window.wstelnet.status === 'disconnected'")
        self.assertIn('1000', page.evaluate('window.wstelnet.detail'))

    def test_wsecho_round_trip(self):
        port = self.line_proxy()
        page = self.new_page()
        self.assertEqual(page.goto('http://127.0.0.1:%d/wsecho.html?autoconnect=1' % port).status,
                         200)
        page.wait_for_function("window.wsecho && window.wsecho.status === 'connected'")
        self.wait_text(page, 'websockify.py line service', 'wsecho')
        page.fill('#line', 'héllo wsecho')
        page.press('#line', 'Enter')
        self.wait_text(page, 'echo: héllo wsecho\r\n', 'wsecho')
        self.assertIn('(binary)', page.evaluate('window.wsecho.detail'))
        self.screenshot(page, 'wsecho')
        self.assertFalse([m for m in self.console if m.startswith('pageerror')], self.console)

    def test_websock_js_loads_and_reports_mode(self):
        target = TargetServer(self, echo)
        port = start_proxy(self, '--web', WEB_DIR, '127.0.0.1:0', target.arg).server_address[1]
        page = self.new_page()
        scripts = {}
        page.on('response', lambda r: scripts.__setitem__(r.url.rsplit('/', 1)[-1],
                                                          r.headers.get('content-type')))
        page.goto('http://127.0.0.1:%d/wsecho.html' % port)
        self.assertEqual(scripts.get('websock.js'), 'text/javascript; charset=utf-8')
        self.assertEqual(page.evaluate('typeof Websock'), 'function')
        result = page.evaluate('''(uri) => new Promise((resolve, reject) => {
            var sock = new Websock(), sent = [];
            for (var i = 0; i < 256; i++) { sent.push(i); }
            sock.on('open', function () { sock.send(sent); });
            sock.on('message', function () {
                if (sock.rQlen() < 256) { return; }
                var got = Array.prototype.slice.call(sock.rQshiftBytes(256));
                resolve({mode: sock.mode, same: got.join() === sent.join()});
                sock.close();
            });
            sock.on('error', function () { reject(new Error('websocket error')); });
            sock.open(uri);
            setTimeout(function () { reject(new Error('timeout')); }, 8000);
        })''', 'ws://127.0.0.1:%d/' % port)
        self.assertEqual(result, {'mode': 'binary', 'same': True})

    def test_origin_allow_list(self):
        """--origin same: the page --web serves connects; a page of another origin
        (another port is another origin) gets no WebSocket, and the log says why."""
        target = TargetServer(self, echo)
        with self.assertLogs('websockify', 'INFO') as logs:
            guarded = start_proxy(self, '--web', WEB_DIR, '--origin', 'same', '127.0.0.1:0',
                                  target.arg).server_address[1]
            other = start_proxy(self, '--web', WEB_DIR, '127.0.0.1:0',
                                target.arg).server_address[1]
            script = '''(uri) => new Promise((resolve) => {
                var ws = new WebSocket(uri);
                ws.onopen = function () { ws.close(); resolve('open'); };
                ws.onclose = function (e) { resolve('closed ' + e.code); };
                setTimeout(function () { resolve('timeout'); }, 8000);
            })'''
            uri = 'ws://127.0.0.1:%d/' % guarded
            page = self.new_page()
            page.goto('http://127.0.0.1:%d/wsecho.html' % guarded)
            self.assertEqual(page.evaluate(script, uri), 'open')
            page.goto('http://127.0.0.1:%d/wsecho.html' % other)
            self.assertEqual(page.evaluate(script, uri), 'closed 1006')
            line = wait_for_log(self, logs, lambda m: 'not allowed' in m)
        self.assertIn('origin http://127.0.0.1:%d not allowed' % other, line)

    def test_index_links_every_page(self):
        port = self.line_proxy()
        page = self.new_page()
        statuses = {}
        page.on('response', lambda r: statuses.__setitem__(r.url, r.status))
        self.assertEqual(page.goto('http://127.0.0.1:%d/' % port).status, 200)
        links = page.evaluate("Array.prototype.map.call(document.querySelectorAll('a'), "
                              "(a) => a.getAttribute('href'))")
        for name in ('wsecho.html', 'wstelnet.html', 'latency.html'):
            self.assertIn(name, links)
            page.goto('http://127.0.0.1:%d/%s' % (port, name))
        self.assertEqual({u: s for u, s in statuses.items() if s not in (200, 304)}, {})
        # The shared files were cached and revalidated (no-cache + If-Modified-Since).
        self.assertEqual(statuses['http://127.0.0.1:%d/demo.css' % port], 304)
        self.assertFalse([m for m in self.console if m.startswith('pageerror')], self.console)

    def test_latency_page(self):
        """latency.html against an echo server, the demo's second proxy."""
        target = TargetServer(self, echo)
        port = start_proxy(self, '--web', WEB_DIR, '127.0.0.1:0', target.arg).server_address[1]
        page = self.new_page()
        page.goto('http://127.0.0.1:%d/latency.html?n=200&size=64&bulk=4194304&autoconnect=1'
                  % port)
        page.wait_for_function('window.latencyResults', timeout=TIMEOUT * 3000)
        results = page.evaluate('window.latencyResults')
        self.assertTrue(results.get('done'), results)
        self.assertEqual((results['count'], results['bulkBytes'], results['badBytes']),
                         (200, 4194304, 0))
        self.assertEqual(results['mode'], 'binary')
        self.screenshot(page, 'latency')
        sys.stderr.write('\n  latency.html: median %s us, p99 %s us, bulk %s MB/s '
                         % (results['medianUs'], results['p99Us'], results['mbps']))

    # -- in.telnetd, wrapped or not, and TLS ------------------------------------------

    def telnetd_login(self, page, url, name):
        self.open_telnet(page, url)
        self.wait_text(page, 'login:')
        self.screenshot(page, name + '-login')
        self.type_line(page, 'nobody')
        self.wait_text(page, 'Password:')
        self.screenshot(page, name + '-password')

    def telnetd_login_again(self, url, name):
        """Log in on a new page, retrying while the next in.telnetd is not listening
        yet (the page then ends up disconnected) until the deadline."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            page = self.new_page()
            page.goto(url)
            try:
                page.wait_for_function("window.wstelnet && (window.wstelnet.status === "
                                       "'disconnected' || window.wstelnet.getText()"
                                       ".indexOf('login:') >= 0)")
            except Exception:
                pass
            if 'login:' in page.evaluate('window.wstelnet ? window.wstelnet.getText() : ""'):
                break
            page.context.close()
            self.assertLess(time.monotonic(), deadline, 'no second in.telnetd session')
        self.type_line(page, 'nobody')
        self.wait_text(page, 'Password:')
        self.screenshot(page, name)

    def test_wstelnet_telnetd_direct(self):
        """in.telnetd -debug P started by the test, websockify with a fixed target."""
        telnetd = telnetd_path()
        tport = free_port()
        proc = subprocess.Popen([telnetd, '-debug', str(tport)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        # in.telnetd -debug serves one connection and exits, and says nothing when
        # ready: watch the kernel's socket table instead of probing the port.
        deadline = time.monotonic() + TIMEOUT
        while not tcp_listening(tport):
            self.assertIsNone(proc.poll(), 'in.telnetd exited')
            self.assertLess(time.monotonic(), deadline, 'in.telnetd never listened')
            time.sleep(0.02)
        port = start_proxy(self, '--web', WEB_DIR, '127.0.0.1:0',
                           '127.0.0.1:%d' % tport).server_address[1]
        url = 'http://127.0.0.1:%d/wstelnet.html?autoconnect=1' % port
        page = self.new_page()
        self.telnetd_login(page, url, 'wstelnet-telnetd')
        page.context.close()
        proc.wait(TIMEOUT)         # it served its one connection
        # A fresh one on the same port, without waiting for it to listen: the
        # page may see the proxy's 502 first and must retry, as after a respawn.
        proc2 = subprocess.Popen([telnetd, '-debug', str(tport)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: proc2.poll() is None and (proc2.kill(), proc2.wait()))
        self.telnetd_login_again(url, 'wstelnet-telnetd-again')

    def test_wstelnet_wrapped_telnetd(self):
        """The README's demo: websockify.py --web web P --wrap-mode=respawn -- in.telnetd -debug P."""
        telnetd = telnetd_path()
        port = free_port()
        run = ProxyProcess(self, '--web', WEB_DIR, '127.0.0.1:%d' % port,
                           '--wrap-mode=respawn', '--', telnetd, '-debug', port, ready=False)
        port = int(run.wait_log(LISTENING.pattern).group('port'))
        url = 'http://127.0.0.1:%d/wstelnet.html?autoconnect=1' % port
        page = self.new_page()
        self.telnetd_login(page, url, 'wstelnet-wrapped-telnetd')
        page.context.close()
        # respawn: once that in.telnetd has exited, a new one serves the next session.
        self.telnetd_login_again(url, 'wstelnet-wrapped-telnetd-again')

    def test_wstelnet_over_wss(self):
        trustme = import_optional('trustme', 'pip install trustme')
        ca = trustme.CA()
        cert = ca.issue_cert('127.0.0.1', 'localhost')
        tmp = tempfile.mkdtemp(prefix='wsweb-')
        self.addCleanup(shutil.rmtree, tmp, True)
        cert_file, key_file = os.path.join(tmp, 'cert.pem'), os.path.join(tmp, 'key.pem')
        cert.cert_chain_pems[0].write_to_path(cert_file)
        for pem in cert.cert_chain_pems[1:]:
            with open(cert_file, 'ab') as f:
                f.write(pem.bytes())
        cert.private_key_pem.write_to_path(key_file)
        port = self.line_proxy(['--cert', cert_file, '--key', key_file])
        page = self.new_page(ignore_https_errors=True)
        self.open_telnet(page, 'https://127.0.0.1:%d/wstelnet.html?autoconnect=1' % port)
        self.assertTrue(page.evaluate("document.getElementById('encrypt').checked"))
        self.assertIn('wss://', page.evaluate('window.wstelnet.detail'))
        self.check_line_service(page, 'wstelnet-wss')


################################################################################
# Upstream's Python API: programs written for upstream websockify, run as they run
# there, against websockify.py and, where it is installed, against upstream 0.13
################################################################################

#: A virtual environment holding upstream websockify 0.13 (pip install
#: websockify==0.13.0): $WEBSOCKIFY_UPSTREAM_VENV, else build/upstream-venv, which
#: `make test` creates. Only programs run in it: it is never on this process's path.
UPSTREAM_VENV = (os.environ.get('WEBSOCKIFY_UPSTREAM_VENV')
                 or os.path.join(HERE, 'build', 'upstream-venv'))
_upstream_python = []


def upstream_python():
    """The python of UPSTREAM_VENV, once upstream websockify 0.13 imports there;
    skips (or fails, with WEBSOCKIFY_REQUIRE_ALL) without it."""
    if not _upstream_python:
        python = os.path.join(UPSTREAM_VENV, 'bin', 'python')
        found = None
        if os.access(python, os.X_OK):
            probe = subprocess.run(
                [python, '-c', 'import importlib.metadata as m, websockify.websocketproxy; '
                               'print(m.version("websockify"))'],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                universal_newlines=True, timeout=PROCESS_TIMEOUT, cwd=WEB_DIR,
                env=program_env('upstream'))
            if probe.returncode == 0 and probe.stdout.strip() == '0.13.0':
                found = python
        _upstream_python.append(found)
    require('upstream websockify 0.13 in %s' % UPSTREAM_VENV, _upstream_python[0],
            'make test creates build/upstream-venv; or point WEBSOCKIFY_UPSTREAM_VENV '
            'at a venv with websockify==0.13.0')
    return _upstream_python[0]


def program_env(impl, *paths):
    """The environment of a test program: our websockify.py on its path for 'ours',
    nothing of ours for 'upstream' (whose venv holds websockify), plus paths."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env.pop('PYTHONPATH', None)
    path = list(paths) + ([HERE] if impl == 'ours' else [])
    if path:
        env['PYTHONPATH'] = os.pathsep.join(path)
    return env


class ApiProgram:
    """A Python program run with our websockify.py importable (impl 'ours', this
    Python) or in upstream's venv ('upstream'): its stdout lines (wait_line), stderr
    (wait_stderr, stderr), exit status (wait, stop). It runs in a session of its own,
    whose processes (upstream's per-connection ones, multiprocessing's) the test's
    cleanup kills; a daemon (-D) leaves it, and must end by itself."""

    def __init__(self, testcase, impl, args, paths=(), cwd=None):
        self.test = testcase
        python = sys.executable if impl == 'ours' else upstream_python()
        self.proc = subprocess.Popen([python] + [str(a) for a in args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=cwd or testcase.tempdir(),
                                     env=program_env(impl, *paths), start_new_session=True)
        self.out, self.err = [], []
        self.cond = threading.Condition()
        self.readers = [self._reader(self.proc.stdout, self.out),
                        self._reader(self.proc.stderr, self.err)]
        testcase.addCleanup(self.kill)

    def _reader(self, stream, lines):
        def run():
            for line in stream:
                with self.cond:
                    lines.append(line.decode('utf-8', 'replace'))
                    self.cond.notify_all()
            with self.cond:
                lines.append(None)             # EOF
                self.cond.notify_all()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    @property
    def stderr(self):
        with self.cond:
            return ''.join(line for line in self.err if line)

    def _wait_for(self, lines, regex, timeout, what):
        pattern = re.compile(regex)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in lines:
                    if line is None:
                        break
                    if pattern.search(line):
                        return line
                else:
                    left = end - time.monotonic()
                    if left > 0:
                        self.cond.wait(left)
                        continue
                self.test.fail('no %r on its %s (%s); stderr:\n%s' % (
                    regex, what, 'EOF' if None in lines else 'timeout',
                    ''.join(line for line in self.err if line)))

    def wait_line(self, regex, timeout=PROCESS_TIMEOUT):
        """The first stdout line matching regex, once there is one."""
        return self._wait_for(self.out, regex, timeout, 'stdout')

    def wait_stderr(self, regex, timeout=PROCESS_TIMEOUT):
        """The first stderr line matching regex, once there is one."""
        return self._wait_for(self.err, regex, timeout, 'stderr')

    def wait(self, timeout=PROCESS_TIMEOUT):
        """Its exit status, once it exits by itself."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.test.fail('still running after %s s; stderr:\n%s' % (timeout, self.stderr))
        for reader in self.readers:
            reader.join(TIMEOUT)
        return status

    def stop(self, signum=signal.SIGTERM):
        """Send signum; its exit status."""
        self.proc.send_signal(signum)
        return self.wait()

    def kill(self):
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        for reader in self.readers:
            reader.join(TIMEOUT)
        self.proc.stdout.close()
        self.proc.stderr.close()


#: What a WebSocketProxy started as a program logs once it listens: ours, upstream's.
SERVING = r'listening on|proxying from'


def wait_closed_port(test, port, timeout=PROCESS_TIMEOUT):
    """Wait (bounded) until nothing listens on port (a daemon has exited)."""
    end = time.monotonic() + timeout
    while tcp_listening(port):
        if time.monotonic() > end:
            test.fail('port %d still listening after %s s' % (port, timeout))
        time.sleep(0.05)


def not_relayed(test, port, path='/', extra=()):
    """A WebSocket request on port that must get nowhere: refused before the upgrade
    (an HTTP error, or the connection closed: upstream's EClose), or upgraded then
    closed without relaying anything (a close frame; upstream's failing handler
    just closes). Returns what happened: 'refused STATUS', 'closed' or 'close CODE'."""
    client = WSClient(test, port)
    client.send(upgrade_request(path=path, extra=[('Sec-WebSocket-Protocol', 'binary')]
                                + list(extra)))
    try:
        response = client.read_response()
    except (ConnectionError, EOFError):
        return 'closed'
    if response.status != 101:
        return 'refused %d' % response.status
    try:
        client.send_frame(BINARY, b'anyone there?')
        while True:
            frame = client.recv_frame(TIMEOUT)
            if frame.opcode == CLOSE:
                return 'close %s' % describe_close(frame.payload)
            if frame.opcode != PING:
                test.fail('relayed after all: %r' % (frame,))
    except (ConnectionError, EOFError):
        return 'closed'


def http_call(port, method, target, headers=(), body=b''):
    """One HTTP/1.1 request with a body, answered up to the server's close: Response."""
    lines = ['%s %s HTTP/1.1' % (method, target), 'Host: 127.0.0.1:%d' % port]
    lines += ['%s: %s' % header for header in headers]
    raw = http_exchange(port, ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body)
    head, _, rest = raw.partition(b'\r\n\r\n')
    response = parse_response_head(head)
    response.body, response.raw = rest, raw
    return response


class UpstreamApiTestCase(ProxyTestCase):
    """Runs each check against ours and, in a subTest, against upstream."""

    def each(self, check):
        for impl in ('ours', 'upstream'):
            with self.subTest(websockify=impl):
                check(impl)

    def program(self, impl, source, *args, paths=()):
        """ApiProgram running source (a program's text) with args, in a new folder."""
        folder = self.tempdir()
        path = os.path.join(folder, 'program.py')
        with open(path, 'w') as f:
            f.write(source)
        return ApiProgram(self, impl, [path] + list(args), paths=paths, cwd=folder)

    def cli(self, impl, *args, paths=()):
        """websockify as upstream's users start it, `python -m websockify ARGS`,
        once it serves."""
        program = ApiProgram(self, impl, ['-m', 'websockify'] + list(args), paths=paths)
        program.wait_stderr(SERVING)
        return program

    def reaches(self, port, name, path, payload=b'round trip'):
        """A WebSocket session on port reaching a named_echo target (its name first),
        then an echo through it."""
        client = WSClient(self, port)
        client.handshake(path=path, protocols=['binary'])
        self.assertEqual(client.recv_data(len(name)), name)
        self.assertEqual(client.echo(payload), payload)
        client.close()


NOVA_PROGRAM = r'''
"""OpenStack nova's console proxy in miniature (nova/console/websocketproxy.py and
nova/cmd/baseproxy.py): the handler checks the token and Origin itself in
new_websocket_client and opens the target with WebSockifyServer.socket; the proxy
subclass takes options of its own and turns ssl_minimum_version into ssl_options."""
import logging
import socket
import sys
import urllib.parse

import websockify
from websockify import websockifyserver

LOG = logging.getLogger('nova_like')
logging.basicConfig(level=logging.INFO)
TOKENS = {'good': ('127.0.0.1', int(sys.argv[2]))}


class TokenError(Exception):
    pass


class NovaLikeHandler(websockify.ProxyRequestHandler):
    def __init__(self, *args, **kwargs):
        self._compute_rpcapi = None
        websockify.ProxyRequestHandler.__init__(self, *args, **kwargs)

    def address_string(self):
        return str(self.client_address[0])

    def socket(self, *args, **kwargs):
        return websockifyserver.WebSockifyServer.socket(*args, **kwargs)

    def new_websocket_client(self):
        query = urllib.parse.urlparse(self.path).query
        token = urllib.parse.parse_qs(query).get('token', ['']).pop()
        if token not in TOKENS:
            raise TokenError('invalid token')
        expected = self.headers.get('Host').split(':')[0]
        origin = self.headers.get('Origin')
        if origin is not None and urllib.parse.urlparse(origin).hostname != expected:
            raise TokenError('Origin header does not match this host')
        if self.server.security_proxy != 'none' or not self.client_address[0]:
            raise TokenError('server options lost')
        host, port = TOKENS[token]
        self.msg('connecting to: %(host)s:%(port)s' % {'host': host, 'port': port})
        tsock = self.socket(host, port, connect=True)
        try:
            self.do_proxy(tsock)
        except Exception:
            if tsock:
                tsock.shutdown(socket.SHUT_RDWR)
                tsock.close()
            raise


class NovaLikeProxy(websockify.WebSocketProxy):
    def __init__(self, *args, **kwargs):
        self.security_proxy = kwargs.pop('security_proxy', None)
        ssl_min_version = kwargs.pop('ssl_minimum_version', None)
        if ssl_min_version and ssl_min_version != 'default':
            kwargs['ssl_options'] = websockify.websocketproxy.select_ssl_version(
                ssl_min_version)
        super(NovaLikeProxy, self).__init__(*args, **kwargs)

    @staticmethod
    def get_logger():
        return LOG

    def started(self):
        print('READY', flush=True)


NovaLikeProxy(listen_host='127.0.0.1', listen_port=int(sys.argv[1]), source_is_ipv6=False,
              cert='self.pem', key=None, ssl_only=False, ssl_ciphers=None,
              ssl_minimum_version='tlsv1_2', daemon=False, record=None, traffic=False,
              web=None, file_only=True, RequestHandlerClass=NovaLikeHandler,
              security_proxy='none').start_server()
'''


class TestUpstreamNova(UpstreamApiTestCase):
    """nova's pattern: a ProxyRequestHandler subclass that checks the token in
    new_websocket_client, opens the target and relays with do_proxy."""

    def test_token_checked_in_new_websocket_client(self):
        target = TargetServer(self, echo)

        def check(impl):
            port = free_port()
            program = self.program(impl, NOVA_PROGRAM, port, target.port)
            program.wait_line('READY')
            client = WSClient(self, port)
            client.handshake(path='/?token=good', protocols=['binary'],
                             extra=[('Origin', 'http://localhost')])
            self.assertEqual(client.echo(b'console bytes'), b'console bytes')
            client.close()
            not_relayed(self, port, '/?token=bad')
            not_relayed(self, port, '/?token=good', extra=[('Origin', 'http://elsewhere')])
            self.assertEqual(program.stop(), 0, program.stderr)
            # msg() goes to the logger get_logger() names, prefixed per connection.
            self.assertRegex(program.stderr, r'nova_like:.*connecting to: 127\.0\.0\.1:%d'
                             % target.port)
            self.assertIn('invalid token', program.stderr)
        self.each(check)


ZSTACK_COMMAND = ('import logging; logging.basicConfig(filename=%r, level=logging.INFO); '
                  'import websockify; websockify.websocketproxy.websockify_init()')


class TestUpstreamZstack(UpstreamApiTestCase):
    """zstack's one-liner: python -c "...; websockify.websocketproxy.websockify_init()"
    with the options after it, logging configured by the program, in the background."""

    def test_one_liner_daemon_with_token_file(self):
        target = TargetServer(self, named_echo(b'vm one'))
        folder = self.tempdir()
        tokens = os.path.join(folder, 'tokens')
        with open(tokens, 'w') as f:
            f.write('vm1: 127.0.0.1:%d\n' % target.port)

        def check(impl):
            port = free_port()
            log = os.path.join(folder, impl + '.log')
            program = ApiProgram(self, impl, ['-c', ZSTACK_COMMAND % log, '127.0.0.1:%d' % port,
                                              '-D', '--target-config=%s' % tokens,
                                              '--idle-timeout=3'], cwd=folder)
            # The command returns once the daemon listens.
            self.assertEqual(program.wait(), 0, program.stderr)
            self.addCleanup(wait_closed_port, self, port)
            self.assertTrue(tcp_listening(port))
            self.reaches(port, b'vm one', token_path('vm1'))
            not_relayed(self, port, token_path('vm2'))
            wait_closed_port(self, port)            # --idle-timeout ends the daemon
            with open(log) as f:
                self.assertIn('127.0.0.1:%d' % target.port, f.read())
        self.each(check)


EMSCRIPTEN_PROGRAM = r'''
"""emscripten's socket test harness: a WebSocketProxy with run_once in a
multiprocessing.Process, probed until it accepts; it ends after one session."""
import multiprocessing
import socket
import sys
import time

import websockify


def main():
    listen_port, target_port, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    context = multiprocessing.get_context(None if method == 'default' else method)
    wsp = websockify.WebSocketProxy(verbose=True, source_is_ipv6=True,
                                    listen_host='127.0.0.1', listen_port=listen_port,
                                    target_host='127.0.0.1', target_port=target_port,
                                    run_once=True)
    process = context.Process(target=wsp.start_server)
    process.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(('127.0.0.1', listen_port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.terminate()
                raise
            time.sleep(0.05)
    print('READY', flush=True)
    process.join(30)
    if process.is_alive():
        process.terminate()
        process.join()
        print('STILL RUNNING', flush=True)
    print('EXIT %s' % process.exitcode, flush=True)


if __name__ == '__main__':
    main()
'''


class TestUpstreamEmscripten(UpstreamApiTestCase):
    """emscripten's pattern: start_server() in a multiprocessing.Process with
    run_once=True (spawned too, as Python 3.14's default forkserver pickles it)."""

    def test_run_once_in_a_process(self):
        target = TargetServer(self, echo)
        for method in ('default', 'spawn'):
            def check(impl):
                port = free_port()
                program = self.program(impl, EMSCRIPTEN_PROGRAM, port, target.port, method)
                program.wait_line('READY', LONG_TIMEOUT)
                client = WSClient(self, port)
                client.handshake(protocols=['binary'])
                self.assertEqual(client.echo(b'emscripten'), b'emscripten')
                client.send_close(1000)
                client.read_until_eof()
                self.assertEqual(program.wait_line('^EXIT'), 'EXIT 0\n', program.stderr)
                self.assertEqual(program.wait(), 0)
            with self.subTest(start_method=method):
                self.each(check)


UPSTREAM_PLUGINS = r'''
"""Token plugins written for upstream websockify."""
import asyncio

import websockify.token_plugins


class Fixed(websockify.token_plugins.BasePlugin):
    """The token 'mine' goes to the --token-source host:port."""

    def lookup(self, token):
        host, _, port = self.source.rpartition(':')
        return [host, port] if token == 'mine' else None


class Aliases(websockify.token_plugins.TokenFile):
    """A token file where 'alias' means 'vm1'."""

    def lookup(self, token):
        result = super().lookup('vm1' if token == 'alias' else token)
        if result is None:
            return None
        host, port = result
        return [host, int(port)]


class Async(websockify.token_plugins.BasePlugin):
    """Fixed, looked up with asyncio on the current event loop."""

    async def find(self, token):
        await asyncio.sleep(0)
        host, _, port = self.source.rpartition(':')
        return (host, port) if token == 'mine' else None

    def lookup(self, token):
        loop = asyncio.get_event_loop()
        return loop.run_until_complete(self.find(token))
'''


class TestUpstreamTokenPlugins(UpstreamApiTestCase):
    """Token plugins as upstream's users write them, given to `python -m websockify`."""

    def plugins(self):
        folder = self.tempdir()
        with open(os.path.join(folder, 'upstream_plugins.py'), 'w') as f:
            f.write(UPSTREAM_PLUGINS)
        return folder

    def test_plugin_module_imports_websockify_token_plugins(self):
        target = TargetServer(self, named_echo(b'fixed'))
        folder = self.plugins()

        def check(impl):
            port = free_port()
            self.cli(impl, '--token-plugin', 'upstream_plugins.Fixed', '--token-source',
                     '127.0.0.1:%d' % target.port, '127.0.0.1:%d' % port, paths=[folder])
            self.reaches(port, b'fixed', token_path('mine'))
            not_relayed(self, port, token_path('yours'))
        self.each(check)

    def test_subclass_unpacks_token_file_lookup(self):
        target = TargetServer(self, named_echo(b'aliased'))
        folder = self.plugins()
        tokens = os.path.join(folder, 'tokens')
        with open(tokens, 'w') as f:
            f.write('vm1: 127.0.0.1:%d\n' % target.port)

        def check(impl):
            port = free_port()
            self.cli(impl, '--token-plugin', 'upstream_plugins.Aliases', '--token-source',
                     tokens, '127.0.0.1:%d' % port, paths=[folder])
            self.reaches(port, b'aliased', token_path('alias'))
            self.reaches(port, b'aliased', token_path('vm1'))
            not_relayed(self, port, token_path('vm2'))
        self.each(check)

    def test_plugin_using_the_current_event_loop(self):
        target = TargetServer(self, named_echo(b'async'))
        folder = self.plugins()

        def check(impl):
            port = free_port()
            program = self.cli(impl, '--token-plugin', 'upstream_plugins.Async',
                               '--token-source', '127.0.0.1:%d' % target.port,
                               '127.0.0.1:%d' % port, paths=[folder])
            for _ in range(2):                      # a thread (here) or process each
                self.reaches(port, b'async', token_path('mine'))
            not_relayed(self, port, token_path('yours'))
            self.assertNotIn('event loop', program.stderr)
        self.each(check)

    def test_token_file_name(self):
        one, two = TargetServer(self, named_echo(b'one')), TargetServer(self, named_echo(b'two'))
        folder = self.tempdir()
        for name, target in (('vm1', one), ('vm2', two)):
            with open(os.path.join(folder, name), 'w') as f:
                f.write('127.0.0.1:%d\n' % target.port)

        def check(impl):
            port = free_port()
            self.cli(impl, '--token-plugin', 'TokenFileName', '--token-source', folder,
                     '127.0.0.1:%d' % port)
            self.reaches(port, b'one', token_path('vm1'))
            self.reaches(port, b'two', token_path('vm2'))
            not_relayed(self, port, token_path('vm3'))
        self.each(check)


SECURITY_PROXY_PROGRAM = r'''
"""A security-proxy style handler, as nova's TenantSock wraps the client: it
speaks to the client with recv_frames and send_frames before relaying (or
closes with send_close), and opens the target with self.server.socket."""
import sys

import websockify


class Greeter(websockify.ProxyRequestHandler):
    def new_websocket_client(self):
        data = b''
        while len(data) < 6:
            frames, closed = self.recv_frames()
            data += b''.join(frames)
            if closed:
                return
        if data != b'SECRET':
            self.send_close(4000, 'wrong secret')
            return
        self.send_frames([b'WELCOME', b'!'])
        tsock = self.server.socket(self.server.target_host, self.server.target_port,
                                   connect=True)
        self.do_proxy(tsock)


class Proxy(websockify.WebSocketProxy):
    def started(self):
        print('READY', flush=True)


Proxy(RequestHandlerClass=Greeter, listen_host='127.0.0.1', listen_port=int(sys.argv[1]),
      target_host='127.0.0.1', target_port=int(sys.argv[2])).start_server()
'''


class TestUpstreamFrames(UpstreamApiTestCase):
    """recv_frames, send_frames and send_close before do_proxy."""

    def test_greeting_before_the_relay(self):
        target = TargetServer(self, echo)

        def check(impl):
            port = free_port()
            program = self.program(impl, SECURITY_PROXY_PROGRAM, port, target.port)
            program.wait_line('READY')
            client = WSClient(self, port)
            client.handshake(protocols=['binary'])
            client.send_frame(BINARY, b'SEC')
            client.send_frame(BINARY, b'RET')
            self.assertEqual(client.recv_frame(TIMEOUT), Frame(True, BINARY, b'WELCOME'))
            self.assertEqual(client.recv_frame(TIMEOUT), Frame(True, BINARY, b'!'))
            self.assertEqual(client.echo(b'after the greeting'), b'after the greeting')
            client.close()
            client = WSClient(self, port)
            client.handshake(protocols=['binary'])
            client.send_frame(BINARY, b'GUESS!')
            frame = client.recv_frame(TIMEOUT)
            self.assertEqual(frame.opcode, CLOSE)
            self.assertEqual(frame.payload, close_body(4000, b'wrong secret'))
            client = WSClient(self, port)
            client.handshake(protocols=['binary'])
            client.send_frame(BINARY, b'SE')
            client.send_close(4002, b'changed my mind')     # recv_frames says: closed
            self.assertEqual(client.expect_close(4002)[0], 4002)
        self.each(check)


HTTP_HANDLER_PROGRAM = r'''
"""A handler that answers an HTTP endpoint of its own next to the web directory,
as many programs add a status page or a login form."""
import json
import sys

import websockify


class Status(websockify.ProxyRequestHandler):
    def do_GET(self):
        if self.path != '/status':
            return super().do_GET()
        body = json.dumps({'path': self.path, 'agent': self.headers.get('User-Agent')})
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self):
        length = int(self.headers.get('Content-Length', 0))
        body = self.rfile.read(length)
        self.send_response(201)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body[::-1])


class Proxy(websockify.WebSocketProxy):
    def started(self):
        print('READY', flush=True)


Proxy(RequestHandlerClass=Status, listen_host='127.0.0.1', listen_port=int(sys.argv[1]),
      target_host='127.0.0.1', target_port=int(sys.argv[2]), web=sys.argv[3]).start_server()
'''


class TestUpstreamHttpHandler(UpstreamApiTestCase):
    """A subclass's do_GET and do_POST answer plain requests; super().do_GET()
    serves the web directory; WebSocket requests still reach the target."""

    def test_endpoint_of_its_own(self):
        target = TargetServer(self, echo)
        web = self.tempdir()
        with open(os.path.join(web, 'page.html'), 'w') as f:
            f.write('<p>from the web directory</p>')
        close = [('Connection', 'close'), ('User-Agent', 'tester/1')]

        def check(impl):
            port = free_port()
            program = self.program(impl, HTTP_HANDLER_PROGRAM, port, target.port, web)
            program.wait_line('READY')
            status = http_call(port, 'GET', '/status', close)
            self.assertEqual(status.status, 200, status)
            self.assertEqual(json.loads(status.body.decode()),
                             {'path': '/status', 'agent': 'tester/1'})
            page = http_call(port, 'GET', '/page.html', close)
            self.assertEqual((page.status, page.body),
                             (200, b'<p>from the web directory</p>'))
            posted = http_call(port, 'POST', '/echo', close + [('Content-Length', '5')],
                               b'hello')
            self.assertEqual((posted.status, posted.body), (201, b'olleh'))
            client = WSClient(self, port)
            client.handshake(protocols=['binary'])
            self.assertEqual(client.echo(b'still a proxy'), b'still a proxy')
        self.each(check)


UNKNOWN_OPTION_PROGRAM = r'''
import websockify

try:
    websockify.WebSocketProxy(listen_port=1, no_such_option=True)
except TypeError as exc:
    print('TypeError', 'no_such_option' in str(exc))
'''


class TestUpstreamOptions(UpstreamApiTestCase):

    def test_unknown_option_is_a_type_error_naming_it(self):
        def check(impl):
            program = self.program(impl, UNKNOWN_OPTION_PROGRAM)
            self.assertEqual(program.wait(), 0, program.stderr)
            self.assertEqual(program.wait_line('TypeError'), 'TypeError True\n')
        self.each(check)


class TestUpstreamModules(SocketFreeTestCase):
    """Upstream's module names, in this process (websockify.py imported as websockify)."""

    def test_submodules_hold_upstreams_names(self):
        import websockify.token_plugins
        from websockify.websocketproxy import WebSocketProxy, ProxyRequestHandler
        from websockify.websockifyserver import WebSockifyServer, WebSockifyRequestHandler
        from websockify.auth_plugins import AuthenticationError, InvalidOriginError
        self.assertIs(WebSocketProxy, websockify.WebSocketProxy)
        self.assertIs(ProxyRequestHandler, websockify.ProxyRequestHandler)
        self.assertTrue(issubclass(WebSocketProxy, WebSockifyServer))
        self.assertTrue(issubclass(ProxyRequestHandler, WebSockifyRequestHandler))
        self.assertIs(websockify.token_plugins.BasePlugin, websockify.TokenPlugin)
        self.assertIs(websockify.token_plugins.TokenFileName, websockify.TokenFileName)
        self.assertIs(websockify.auth_plugins.BasePlugin, websockify.BasePlugin)
        self.assertIs(AuthenticationError, websockify.AuthenticationError)
        self.assertTrue(issubclass(InvalidOriginError, AuthenticationError))
        for name in ('websocketproxy', 'websockifyserver', 'token_plugins', 'auth_plugins'):
            module = importlib.import_module('websockify.' + name)
            self.assertIs(module, getattr(websockify, name))
            self.assertIs(sys.modules['websockify.' + name], module)
        self.assertIs(websockify.websocketproxy.websockifyserver, websockify.websockifyserver)
        self.assertIs(websockify.websocketproxy.websockify_init, websockify.websockify_init)

    def test_under_another_name_it_leaves_websockify_alone(self):
        name = 'wsfy_renamed_%d' % os.getpid()
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        self.addCleanup(lambda: [sys.modules.pop(key) for key in list(sys.modules)
                                 if key == name or key.startswith(name + '.')])
        before = {key: value for key, value in sys.modules.items()
                  if key.startswith('websockify')}
        log = logging.getLogger('websockify')
        filters = list(log.filters)
        self.addCleanup(setattr, log, 'filters', filters)    # the copy's log filter
        spec.loader.exec_module(module)
        self.assertIs(sys.modules[name + '.token_plugins'], module.token_plugins)
        self.assertIs(module.token_plugins.TokenFile, module.TokenFile)
        self.assertEqual({key: value for key, value in sys.modules.items()
                          if key.startswith('websockify')}, before)

    def test_select_ssl_version_round_trip(self):
        for version in ('tlsv1_1', 'tlsv1_2', 'tlsv1_3'):
            options = websockify.select_ssl_version(version)
            proxy = websockify.WebSocketProxy(listen_port=1, ssl_options=options)
            self.assertEqual(proxy._settings().ssl_version, version)
        self.assertEqual(websockify.WebSocketProxy(listen_port=1)._settings().ssl_version,
                         'default')
        self.assertEqual(websockify.select_ssl_version('sslv3'),
                         websockify.select_ssl_version('tlsv1_3'))

    def test_options_become_settings(self):
        proxy = websockify.WebSocketProxy(
            None, None, '127.0.0.1', 6080, True, target_host='h', target_port=5900,
            heartbeat=30, web='web', file_only=True, record='rec', run_once=True)
        settings = proxy._settings()
        self.assertEqual((settings.listen_host, settings.listen_port, settings.prefer_ipv6),
                         ('127.0.0.1', 6080, True))
        self.assertEqual((settings.target_host, settings.target_port, settings.heartbeat),
                         ('h', 5900, 30))
        self.assertEqual(settings.web, os.path.abspath('web'))
        self.assertFalse(settings.web_listing)
        self.assertEqual(settings.record, os.path.abspath('rec'))
        self.assertTrue(settings.run_once)
        self.assertIsNone(settings.cert)
        with self.assertRaisesRegex(TypeError, 'no_such_option'):
            websockify.WebSocketProxy(listen_port=1, no_such_option=1)


AUTH_PROGRAM = r'''
"""A WebSocketProxy with upstream's BasicHTTPAuth plugin object."""
import sys

import websockify
from websockify.auth_plugins import BasicHTTPAuth


class Proxy(websockify.WebSocketProxy):
    def started(self):
        print('READY', flush=True)


Proxy(listen_host='127.0.0.1', listen_port=int(sys.argv[1]), target_host='127.0.0.1',
      target_port=int(sys.argv[2]), auth_plugin=BasicHTTPAuth('ann:s3cret')).start_server()
'''


class TestUpstreamAuthPlugin(UpstreamApiTestCase):

    def test_basic_auth_plugin_object(self):
        target = TargetServer(self, echo)

        def check(impl):
            port = free_port()
            program = self.program(impl, AUTH_PROGRAM, port, target.port)
            program.wait_line('READY')
            client = WSClient(self, port)
            client.send(UPGRADE)
            response = client.read_response()
            self.assertEqual(response.status, 401, response)
            self.assertIn('Basic', response.header('www-authenticate'))
            client = WSClient(self, port)
            client.handshake(protocols=['binary'],
                             extra=[('Authorization', basic('ann:s3cret'))])
            self.assertEqual(client.echo(b'let in'), b'let in')
        self.each(check)


class TestUpstreamInProcess(ProxyTestCase):
    """WebSocketProxy.start_server() in a thread of this process (ours only)."""

    def serve(self, proxy_class=None, **options):
        """Start (proxy_class or WebSocketProxy)(**options) with run_once in a thread;
        returns (proxy, port, thread) once it listens."""
        listening = threading.Event()

        class Proxy(proxy_class or websockify.WebSocketProxy):
            def started(self):
                listening.set()
        port = free_port()
        proxy = Proxy(listen_host='127.0.0.1', listen_port=port, run_once=True, **options)
        thread = Worker(proxy.start_server)
        self.addCleanup(thread.join, TIMEOUT)
        self.assertTrue(listening.wait(TIMEOUT))
        return proxy, port, thread

    def test_each_connection_has_its_own_copy_of_the_server(self):
        one, two = TargetServer(self, named_echo(b'one')), TargetServer(self, named_echo(b'two'))

        class Table(websockify.token_plugins.BasePlugin):
            def lookup(self, token):
                return {'one': ('127.0.0.1', one.port), 'two': ['127.0.0.1', two.port]}.get(token)
        signals = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
        proxy, port, thread = self.serve(token_plugin=Table())
        first = open_session(self, port, path=token_path('one'))
        second = open_session(self, port, path=token_path('two'))
        self.assertEqual(first.recv_data(3), b'one')
        self.assertEqual(second.recv_data(3), b'two')
        # validate_connection set target_host/port on the connection's copy only.
        self.assertEqual((proxy.target_host, proxy.target_port), (None, None))
        self.assertEqual(second.echo(b'2'), b'2')
        self.assertEqual(first.echo(b'1'), b'1')
        for client in (first, second):
            client.send_close(1000)
            client.expect_close()
        thread.result()                      # run_once: start_server() returned
        self.assertEqual([signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)],
                         signals)            # not the main thread: no handler installed

    def test_default_handler_and_cclose(self):
        target = TargetServer(self, echo)

        class Closer(websockify.ProxyRequestHandler):
            def new_websocket_client(self):
                if self.path == '/close':
                    raise self.CClose(4001, 'not today')
                super().new_websocket_client()
        for path in ('/close', '/'):
            proxy, port, thread = self.serve(RequestHandlerClass=Closer,
                                             target_host='127.0.0.1', target_port=target.port)
            client = open_session(self, port, path=path, protocols=['binary'])
            if path == '/close':
                self.assertEqual(client.expect_close(4001), (4001, b'not today'))
                thread.result()
        self.assertEqual(client.echo(b'default handler'), b'default handler')
        client.send_close(1000)
        client.expect_close()
        thread.result()               # run_once: after the one session, each time

    def test_web_directory_with_web_auth(self):
        web = self.tempdir()
        with open(os.path.join(web, 'index.html'), 'w') as f:
            f.write('<p>hello</p>')
        proxy, port, thread = self.serve(web=web, web_auth=True, target_host='127.0.0.1',
                                         target_port=1,
                                         auth_plugin=websockify.BasicHTTPAuth('ann:pw'))
        refused = http_request(port, '/index.html')
        self.assertEqual(refused.status, 401, refused)
        page = http_request(port, '/index.html', headers=[('Authorization', basic('ann:pw'))])
        self.assertEqual((page.status, page.body), (200, b'<p>hello</p>'))
        self.assertEqual(http_request(port, '/', 'POST',
                                      headers=[('Authorization', basic('ann:pw'))]).status, 405)
        self.assertTrue(thread.is_alive())             # plain requests are no session
        client = WSClient(self, port)                  # run_once: end it with one
        client.handshake(extra=[('Authorization', basic('ann:pw'))])
        client.expect_close(1011)
        thread.result()

    def test_unreachable_target_closes_with_1011(self):
        proxy, port, thread = self.serve(target_host='127.0.0.1', target_port=free_port())
        client = open_session(self, port)
        self.assertEqual(client.expect_close(1011)[0], 1011)
        thread.result()

NATIVE_SIDE_EFFECTS_PROGRAM = r'''
"""What importing websockify and running a Proxy leave behind in the process."""
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading


def state():
    umask = os.umask(0)
    os.umask(umask)
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    return {'stack size': threading.stack_size(), 'switch interval': sys.getswitchinterval(),
            'gc threshold': gc.get_threshold(), 'umask': umask, 'cwd': os.getcwd(),
            'wakeup fd': wakeup, 'root handlers': len(logging.getLogger().handlers),
            'root level': logging.getLogger().level,
            'logging': [logging.logThreads, logging.logProcesses, logging.logMultiprocessing,
                        logging._srcfile is None],
            'thread class': repr(getattr(sys.modules.get('websockify'), '_ServerMixin',
                                         threading.Thread).thread_class
                                 if 'websockify' in sys.modules else threading.Thread),
            'malloc trim': repr(getattr(getattr(sys.modules.get('websockify'), '_MallocTrim',
                                                None), 'active', None)),
            'signals': {name: repr(signal.getsignal(getattr(signal, name)))
                        for name in ('SIGTERM', 'SIGINT', 'SIGHUP', 'SIGCHLD', 'SIGPIPE')}}


target = socket.socket()
target.bind(('127.0.0.1', 0))
target.listen(1)
before = state()
import websockify
states = [before, state()]
proxy = websockify.Proxy(listen_host='127.0.0.1', listen_port=0, target_host='127.0.0.1',
                         target_port=target.getsockname()[1])
with proxy:
    client = socket.create_connection(proxy.address[:2], timeout=10)
    client.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n'
                   b'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'
                   b'Sec-WebSocket-Version: 13\r\n\r\n')
    head = b''
    while not head.endswith(b'\r\n\r\n'):
        head += client.recv(1)
    conn, _ = target.accept()
    conn.sendall(b'hi')
    assert client.recv(4) == b'\x82\x02hi'
    states.append(state())
    conn.close()
    client.close()
states.append(state())
websockify.WebSocketProxy(listen_port=1, target_host='h', target_port=1)
states.append(state())
print(json.dumps(states))
'''


class TestUpstreamNativeApi(ProxyTestCase):
    """The native API: Proxy, in this process."""

    def test_relays_and_stops(self):
        target = TargetServer(self, echo)
        with websockify.Proxy(listen_host='127.0.0.1', listen_port=0,
                              target_host='127.0.0.1', target_port=target.port) as proxy:
            client = open_session(self, proxy.address, protocols=['binary'])
            self.assertEqual(client.echo(b'embedded'), b'embedded')
            host, port = proxy.address[:2]
            closing = Worker(client.expect_close)
        self.assertIsNone(proxy.server)
        self.assertEqual(closing.result()[0], 1001)       # stop() closed the live session
        with self.assertRaises(OSError):
            socket.create_connection((host, port), TIMEOUT).close()

    def test_settings_plugin_objects_and_run_once(self):
        target = TargetServer(self, named_echo(b'picked'))

        class Pick:
            def lookup(self, token):
                return ('127.0.0.1', target.port) if token == 'it' else None
        settings = websockify.parse_args(['--run-once', '127.0.0.1:0', '127.0.0.1:1'])
        proxy = websockify.Proxy(settings, target_host=None, target_port=None,
                                 token_plugin=Pick()).start()
        self.addCleanup(proxy.stop)
        self.refused(proxy.address, upgrade_request(path=token_path('other')), 404)
        self.assertFalse(proxy.wait(0))
        client = open_session(self, proxy.address, path=token_path('it'))
        self.assertEqual(client.recv_data(6), b'picked')
        client.send_close(1000)
        client.expect_close()
        self.assertTrue(proxy.wait(TIMEOUT))            # --run-once: its one session is over

    def test_program_options_refused(self):
        for option, value in (('daemon', True), ('workers', 2), ('timeout', 5),
                              ('pid_file', '/x'), ('log_file', '/x')):
            with self.subTest(option=option):
                with self.assertRaisesRegex(websockify.UsageError, option):
                    websockify.Proxy(**{option: value})
        with self.assertRaisesRegex(TypeError, 'no_such'):
            websockify.Proxy(no_such=1)

    def test_no_process_wide_side_effects(self):
        folder = self.tempdir()
        path = os.path.join(folder, 'program.py')
        with open(path, 'w') as f:
            f.write(NATIVE_SIDE_EFFECTS_PROGRAM)
        result = subprocess.run([sys.executable, path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, timeout=PROCESS_TIMEOUT,
                                cwd=folder, env=program_env('ours'))
        self.assertEqual(result.returncode, 0, result.stderr)
        states = json.loads(result.stdout)
        self.assertEqual(len(states), 5)
        for when, state in zip(('import', 'serving', 'stopped', 'WebSocketProxy()'),
                               states[1:]):
            self.assertEqual(state, states[0], 'changed by %s' % when)


if __name__ == '__main__':
    unittest.main()
