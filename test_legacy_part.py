"""Tests of the legacy protocol family: Hixie-75/76, the HyBi base64 subprotocol and
the Flash socket policy (issue 4). Folded into test_websockify.py by the lead.

Stdlib only at import time; the `websockets` client is imported lazily and its tests
are skipped when it is missing, unless WEBSOCKIFY_REQUIRE_ALL is set."""

import asyncio
import base64
import hashlib
import logging
import os
import random
import select
import socket
import struct
import threading
import time
import unittest

import websockify

REQUIRE_ALL = bool(os.environ.get('WEBSOCKIFY_REQUIRE_ALL'))
TIMEOUT = 10.0


def _need_websockets(test):
    try:
        import websockets.asyncio.client   # noqa: F401
        import websockets.exceptions       # noqa: F401
    except ImportError:
        if REQUIRE_ALL:
            test.fail('the websockets client is required (WEBSOCKIFY_REQUIRE_ALL is set)')
        test.skipTest('websockets is not installed')
    import websockets
    return websockets


# -- servers -----------------------------------------------------------------------

class _Target:
    """A TCP target on 127.0.0.1: 'echo' sends back what it gets, 'sink' counts it,
    'bye' sends b'bye' and closes."""

    def __init__(self, test, mode='echo'):
        self.mode = mode
        self.received = 0
        self.first_data = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._conns = []
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        test.addCleanup(self.close)

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            if self.mode == 'bye':
                conn.sendall(b'bye')
                conn.shutdown(socket.SHUT_WR)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                self.received += len(data)
                self.first_data.set()
                if self.mode == 'echo':
                    conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.listener.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass


class _LogCapture(logging.Handler):
    """Collects the websockify logger's lines; wait_for() blocks (bounded) for one."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []
        self._cond = threading.Condition()

    def emit(self, record):
        with self._cond:
            self.lines.append(record.getMessage())
            self._cond.notify_all()

    def wait_for(self, *fragments, timeout=TIMEOUT):
        def found():
            return next((line for line in self.lines
                         if all(f in line for f in fragments)), None)
        with self._cond:
            self._cond.wait_for(found, timeout)
            return found()


def _start_proxy(test, target, *options):
    """An in-process proxy to target; returns (port, log capture)."""
    log = _LogCapture()
    logger = logging.getLogger('websockify')
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(log)
    test.addCleanup(logger.setLevel, old_level)
    test.addCleanup(logger.removeHandler, log)
    settings = websockify.parse_args(['127.0.0.1:0', '127.0.0.1:%d' % target.port]
                                     + list(options))
    server = websockify.make_server(settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.close_sessions(2.0)
        server.server_close()
    test.addCleanup(stop)
    return server.server_address[1], log


# -- raw socket helpers ---------------------------------------------------------------

def _connect(port):
    sock = socket.create_connection(('127.0.0.1', port), TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Reader:
    """Buffered, bounded reads from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError('timed out waiting for the server')
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError('timed out waiting for the server') from None
        if not data:
            raise EOFError
        self.buf += data

    def until(self, marker, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            self._fill(deadline)
        i = self.buf.index(marker) + len(marker)
        data = bytes(self.buf[:i])
        del self.buf[:i]
        return data

    def exact(self, n, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def rest(self, timeout=TIMEOUT):
        """Everything until EOF."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except (EOFError, ConnectionResetError):
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def quiet(self, seconds):
        """True when nothing arrives for `seconds` (the server is waiting for us)."""
        if self.buf:
            return False
        readable, _, _ = select.select([self.sock], [], [], seconds)
        return not readable


# -- a Hixie client written from draft-hixie-thewebsocketprotocol-76 ---------------

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
                  protocol=None, keys=None):
    """The client's handshake lines (draft-76 §4.1), ending in CRLF CRLF."""
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
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


class HixieClient:
    """A draft-75/76 client: handshake, 0x00 base64 0xFF frames, 0xFF 0x00 close."""

    def __init__(self, port, draft=76, rng=None, **request):
        self.sock = _connect(port)
        self.reader = _Reader(self.sock)
        rng = rng or random.Random()
        self.draft = draft
        expected = None
        keys = None
        key3 = b''
        if draft == 76:
            key1, number1 = hixie76_client_key(rng)
            key2, number2 = hixie76_client_key(rng)
            key3 = bytes(rng.getrandbits(8) for _ in range(8))           # 8 random bytes
            keys = (key1, key2)
            expected = hashlib.md5(struct.pack('>II', number1, number2) + key3).digest()
        self.sock.sendall(hixie_request(draft, keys=keys, **request) + key3)
        self.head = self.reader.until(b'\r\n\r\n')
        # draft-75 §4.1: the first 85 bytes must match exactly.
        if not self.head.startswith(b'HTTP/1.1 101 Web Socket Protocol Handshake\r\n'
                                    b'Upgrade: WebSocket\r\nConnection: Upgrade\r\n'):
            raise AssertionError('bad reply %r' % self.head)
        if draft == 76:
            challenge = self.reader.exact(16)
            if challenge != expected:
                raise AssertionError('challenge response %r != %r' % (challenge, expected))

    def send(self, data):
        self.sock.sendall(b'\x00' + base64.b64encode(data) + b'\xff')

    def recv_frame(self, timeout=TIMEOUT):
        """The bytes of the next frame (each decoded on its own), or None for 0xFF 0x00."""
        kind = self.reader.exact(1, timeout)
        if kind == b'\xff':
            if self.reader.exact(1, timeout) != b'\x00':
                raise AssertionError('length-prefixed frame from the server')
            return None
        if kind != b'\x00':
            raise AssertionError('unexpected frame type %r' % kind)
        return base64.b64decode(self.reader.until(b'\xff', timeout)[:-1], validate=True)

    def recv_bytes(self, n, timeout=TIMEOUT):
        data = b''
        deadline = time.monotonic() + timeout
        while len(data) < n:
            frame = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise AssertionError('closed after %d of %d bytes' % (len(data), n))
            data += frame
        return data

    def close(self):
        self.sock.close()


# -- a raw HyBi client (for frame-level control) ----------------------------------

def hybi_handshake(port, protocols=None):
    sock = _connect(port)
    lines = ['GET / HTTP/1.1', 'Host: 127.0.0.1', 'Upgrade: websocket',
             'Connection: Upgrade', 'Sec-WebSocket-Version: 13',
             'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']
    if protocols:
        lines.append('Sec-WebSocket-Protocol: ' + protocols)
    sock.sendall(('\r\n'.join(lines) + '\r\n\r\n').encode('ascii'))
    reader = _Reader(sock)
    head = reader.until(b'\r\n\r\n')
    return sock, reader, head


def hybi_frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    b0 = opcode | (0x80 if fin else 0)
    n = len(payload)
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = struct.pack('!BBH', b0, 0xFE, n)
    else:
        head = struct.pack('!BBQ', b0, 0xFF, n)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def hybi_read_frame(reader, timeout=TIMEOUT):
    """(opcode, payload) of the next server frame."""
    b0, b1 = reader.exact(2, timeout)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack('!H', reader.exact(2, timeout))[0]
    elif n == 127:
        n = struct.unpack('!Q', reader.exact(8, timeout))[0]
    return b0 & 0x0F, reader.exact(n, timeout)


def hybi_read_base64(reader, n, timeout=TIMEOUT):
    """Read text frames, decoding each on its own, until n bytes came."""
    data = b''
    while len(data) < n:
        opcode, payload = hybi_read_frame(reader, timeout)
        if opcode != 1:
            raise AssertionError('expected a text frame, got opcode %d %r' % (opcode, payload))
        data += base64.b64decode(payload, validate=True)
    return data


# -- the draft-76 vector ---------------------------------------------------------------

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
        if events and events[-1][0] == 'close':
            buf += data[i + step:]
            break
    return b''.join(out), events, bytes(buf)


class LegacyProtocolTest(unittest.TestCase):
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
        req = _request('GET / HTTP/1.1\nHost: a\rb\nUpgrade: WebSocket\nConnection: Upgrade\n')
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
            self.assertEqual(events, [('close', 1005, '')])
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
        frames = (hybi_frame(1, b'aGVs', fin=False) + hybi_frame(0, b'bG8')
                  + hybi_frame(9, b'p') + hybi_frame(1, b'=QQ==') + hybi_frame(2, b'QkM='))
        for chunk in (None, 1, 7):
            codec = websockify.HybiBase64Codec()
            data, events, rest = _decode_all(codec, frames, chunk)
            self.assertEqual((data, events, rest), (b'helloABC', [('ping', b'p')], b''))
        parts = codec.encode(memoryview(b'\x01\x02'))
        self.assertEqual(b''.join(parts), b'\x81\x04AQI=')
        codec = websockify.HybiBase64Codec()
        with self.assertRaises(websockify.ProtocolError) as cm:
            _decode_all(codec, hybi_frame(1, b'QUJD') + hybi_frame(1, b'QU*D'))
        self.assertEqual(cm.exception.code, 1007)


class LegacyWireTest(unittest.TestCase):
    """Through real sockets: an in-process proxy and echo/sink targets."""

    def setUp(self):
        self.target = _Target(self)
        self.port, self.log = _start_proxy(self, self.target)

    def _vector_session(self, delivery):
        sock = _connect(self.port)
        self.addCleanup(sock.close)
        reader = _Reader(sock)
        request = hixie_request(76, protocol='sample', keys=(KEY1, KEY2))
        if delivery == 'same':
            sock.sendall(request + KEY3)
        else:
            sock.sendall(request)
            self.assertTrue(reader.quiet(0.3), 'replied before key3')
            if delivery == 'separate':
                sock.sendall(KEY3)
            else:
                for i in range(8):
                    self.assertTrue(reader.quiet(0.02 if i else 0.0), 'replied early')
                    sock.sendall(KEY3[i:i + 1])
        self.assertEqual(reader.exact(len(VECTOR_REPLY)), VECTOR_REPLY)
        sock.sendall(b'\x00' + base64.b64encode(b'ping me') + b'\xff')
        self.assertEqual(reader.until(b'\xff'), b'\x00' + base64.b64encode(b'ping me') + b'\xff')
        sock.sendall(b'\xff\x00')
        self.assertEqual(reader.rest(), b'\xff\x00')
        sock.close()   # the peer closes after the closing handshake
        self.assertTrue(self.log.wait_for('session open', 'hixie-76/base64',
                                          'protocol sample'))
        self.assertTrue(self.log.wait_for('session closed', 'close 1005'))

    def test_draft76_vector_key3_same_segment(self):
        self._vector_session('same')

    def test_draft76_vector_key3_separate_segment(self):
        self._vector_session('separate')

    def test_draft76_vector_key3_byte_by_byte(self):
        self._vector_session('bytewise')

    def test_draft76_first_frame_with_key3(self):
        sock = _connect(self.port)
        self.addCleanup(sock.close)
        reader = _Reader(sock)
        frame = b'\x00' + base64.b64encode(b'eager') + b'\xff'
        sock.sendall(hixie_request(76, keys=(KEY1, KEY2), protocol='sample') + KEY3 + frame)
        self.assertEqual(reader.exact(len(VECTOR_REPLY)), VECTOR_REPLY)
        self.assertEqual(reader.until(b'\xff'), frame)

    def test_85_byte_prefix_and_draft76_client(self):
        client = HixieClient(self.port, 76, path='/x?token=1', host='example.com:6080',
                             origin=None)
        self.addCleanup(client.close)
        self.assertEqual(client.head[:85], PREFIX_85)
        self.assertIn(b'\r\nSec-WebSocket-Location: ws://example.com:6080/x?token=1\r\n',
                      client.head)
        self.assertNotIn(b'Origin', client.head)
        client.send(b'\x00\x01\xfe\xff')
        self.assertEqual(client.recv_bytes(4), b'\x00\x01\xfe\xff')

    def test_draft75_session(self):
        sock = _connect(self.port)
        self.addCleanup(sock.close)
        reader = _Reader(sock)
        sock.sendall(hixie_request(75, protocol='sample'))
        expected = (PREFIX_85 + b'WebSocket-Origin: http://example.com\r\n'
                    b'WebSocket-Location: ws://example.com/demo\r\n'
                    b'WebSocket-Protocol: sample\r\n\r\n')
        self.assertEqual(reader.exact(len(expected)), expected)
        sock.sendall(b'\x00aGVsbG8=\xff')
        self.assertEqual(reader.until(b'\xff'), b'\x00aGVsbG8=\xff')
        for message in (bytes(range(256)), b'', b'!'):
            sock.sendall(b'\x00' + base64.b64encode(message) + b'\xff')
        got = b''
        while len(got) < 257:
            got += base64.b64decode(reader.until(b'\xff')[1:-1], validate=True)
        self.assertEqual(got, bytes(range(256)) + b'!')
        sock.shutdown(socket.SHUT_WR)       # draft-75 has no closing handshake
        self.assertIn(reader.rest(), (b'', b'\xff\x00'))
        self.assertTrue(self.log.wait_for('session open', 'hixie-75/base64'))
        self.assertTrue(self.log.wait_for('session closed'))

    def test_hixie_1mib_both_ways(self):
        client = HixieClient(self.port, 76)
        self.addCleanup(client.close)
        total = 1 << 20
        data = os.urandom(total)
        sizes = [1, 2, 3, 1000, 65536, 300000]

        def writer():
            i = n = 0
            while n < total:
                size = min(sizes[i % len(sizes)], total - n)
                client.send(data[n:n + size])
                n += size
                i += 1
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        got = client.recv_bytes(total, timeout=30)
        thread.join(TIMEOUT)
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())
        client.sock.sendall(b'\xff\x00')
        self.assertIsNone(client.recv_frame())

    def test_hybi_base64_1mib_both_ways_websockets(self):
        websockets = _need_websockets(self)
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
        self.assertTrue(self.log.wait_for('session open', 'hybi/base64', 'protocol base64'))
        del websockets

    def test_hybi_invalid_base64_websockets(self):
        websockets = _need_websockets(self)
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
        sock, reader, head = hybi_handshake(self.port, 'base64')
        self.addCleanup(sock.close)
        self.assertIn(b'\r\nSec-WebSocket-Protocol: base64\r\n', head)
        message = b'hello, split base64 world!'
        text = base64.b64encode(message)
        pieces = [text[0:1], text[1:6], text[6:7], text[7:]]
        frames = (hybi_frame(1, pieces[0]) + hybi_frame(1, pieces[1], fin=False)
                  + hybi_frame(0, pieces[2]) + hybi_frame(1, pieces[3]))
        for i in range(len(frames)):           # one byte per TCP segment
            sock.sendall(frames[i:i + 1])
        self.assertEqual(hybi_read_base64(reader, len(message)), message)
        sock.sendall(hybi_frame(1, b'QQ==') + hybi_frame(1, b'Qg=='))
        self.assertEqual(hybi_read_base64(reader, 2), b'AB')
        sock.sendall(hybi_frame(8, struct.pack('!H', 1000)))
        self.assertEqual(hybi_read_frame(reader), (8, struct.pack('!H', 1000)))

    def test_hybi_invalid_base64(self):
        sock, reader, head = hybi_handshake(self.port, 'base64')
        self.addCleanup(sock.close)
        sock.sendall(hybi_frame(1, b'QU') + hybi_frame(1, b'JD'))
        self.assertEqual(hybi_read_base64(reader, 3), b'ABC')
        sock.sendall(hybi_frame(1, b'QQ=x'))
        opcode, payload = hybi_read_frame(reader)
        self.assertEqual(opcode, 8)
        self.assertEqual(struct.unpack('!H', payload[:2])[0], 1007)
        self.assertIn(b'base64', payload[2:])
        sock.sendall(hybi_frame(8, payload[:2]))
        self.assertEqual(reader.rest(), b'')
        sock.close()   # the peer closes after the closing handshake
        self.assertTrue(self.log.wait_for('session closed', 'close 1007', 'base64'))

    def test_hixie_groups_split_across_frames_and_invalid_base64(self):
        client = HixieClient(self.port, 76)
        self.addCleanup(client.close)
        text = base64.b64encode(b'split groups')
        data = b'\x00' + text[:3] + b'\xff\x00' + text[3:5] + b'\xff\x00' + text[5:] + b'\xff'
        for i in range(len(data)):
            client.sock.sendall(data[i:i + 1])
        self.assertEqual(client.recv_bytes(12), b'split groups')
        client.sock.sendall(b'\x00QQ=*\xff')
        self.assertIsNone(client.recv_frame())
        self.assertEqual(client.reader.rest(), b'')
        client.close()   # the peer closes after the closing handshake
        self.assertTrue(self.log.wait_for('session closed', 'invalid base64'))

    def test_hixie_length_prefixed_frame_ends_session(self):
        client = HixieClient(self.port, 76)
        self.addCleanup(client.close)
        client.sock.sendall(b'\x80\x05hello')
        self.assertIsNone(client.recv_frame())
        self.assertEqual(client.reader.rest(), b'')
        client.close()   # the peer closes after the closing handshake
        self.assertTrue(self.log.wait_for('session closed', 'length-prefixed'))

    def test_hixie_target_close_sends_closing_handshake(self):
        target = _Target(self, 'bye')
        port, log = _start_proxy(self, target)
        client = HixieClient(port, 76)
        self.addCleanup(client.close)
        self.assertEqual(client.recv_frame(), b'bye')
        self.assertIsNone(client.recv_frame())
        client.sock.sendall(b'\xff\x00')
        self.assertEqual(client.reader.rest(), b'')
        client.close()   # the peer closes after the closing handshake
        self.assertTrue(log.wait_for('session closed', 'target closed'))

    def test_hixie_heartbeat_sends_nothing_invalid(self):
        port, log = _start_proxy(self, self.target, '--heartbeat', '0.1')
        client = HixieClient(port, 76)
        self.addCleanup(client.close)
        self.assertTrue(client.reader.quiet(0.5), 'heartbeat sent bytes to a Hixie client')
        client.send(b'still alive')
        self.assertEqual(client.recv_bytes(11), b'still alive')

    def test_subprotocol_choice(self):
        for offered, chosen, opcode in (('base64, binary', b'binary', 2),
                                        ('binary, base64', b'binary', 2),
                                        ('base64', b'base64', 1)):
            sock, reader, head = hybi_handshake(self.port, offered)
            self.addCleanup(sock.close)
            self.assertIn(b'\r\nSec-WebSocket-Protocol: ' + chosen + b'\r\n', head)
            payload = b'QUJD'
            sock.sendall(hybi_frame(opcode, payload))
            expected = b'ABC' if chosen == b'base64' else payload
            got = hybi_read_base64(reader, 3) if opcode == 1 else hybi_read_frame(reader)[1]
            self.assertEqual(got, expected, offered)
        self.assertTrue(self.log.wait_for('session open', 'hybi/binary', 'protocol binary'))
        self.assertTrue(self.log.wait_for('session open', 'hybi/base64', 'protocol base64'))

    def test_flash_policy(self):
        for pieces in ([b'<policy-file-request/>\x00'],
                       [b'<policy-', b'file-request/>', b'\x00']):
            sock = _connect(self.port)
            self.addCleanup(sock.close)
            reader = _Reader(sock)
            for i, piece in enumerate(pieces):
                if i:
                    self.assertTrue(reader.quiet(0.05))
                sock.sendall(piece)
            self.assertEqual(reader.rest(), FLASH_POLICY)
        self.assertTrue(self.log.wait_for('Flash socket policy served'))

    def test_not_a_policy_request(self):
        sock = _connect(self.port)
        self.addCleanup(sock.close)
        sock.sendall(b'<hello/>\x00')
        self.assertEqual(_Reader(sock).rest(), b'')
        self.assertTrue(self.log.wait_for('neither HTTP nor a Flash policy request'))

    def _status(self, request):
        sock = _connect(self.port)
        self.addCleanup(sock.close)
        sock.sendall(request)
        return _Reader(sock).rest()

    def test_bad_hixie_keys_get_400(self):
        for key1 in ('12345', '1 2 3', 'no digits '):
            reply = self._status(hixie_request(76, keys=(key1, KEY2)) + KEY3)
            self.assertTrue(reply.startswith(b'HTTP/1.1 400 '), reply)
        reply = self._status(b'GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n'
                             b'Connection: Upgrade\r\nSec-WebSocket-Key1: 1 2\r\n\r\n')
        self.assertTrue(reply.startswith(b'HTTP/1.1 400 '), reply)
        self.assertTrue(self.log.wait_for('400', 'spaces'))

    def test_hybi_without_version_still_426(self):
        reply = self._status(b'GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n'
                             b'Connection: Upgrade\r\n'
                             b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
        self.assertTrue(reply.startswith(b'HTTP/1.1 426 '), reply)
        self.assertIn(b'Sec-WebSocket-Version: 13, 8, 7', reply)

    def test_key3_that_never_comes(self):
        port, log = _start_proxy(self, self.target, '--handshake-timeout', '1')
        sock = _connect(port)
        self.addCleanup(sock.close)
        start = time.monotonic()
        sock.sendall(hixie_request(76, keys=(KEY1, KEY2)) + KEY3[:5])
        reply = _Reader(sock).rest(timeout=5)
        self.assertTrue(reply.startswith(b'HTTP/1.1 408 '), reply)
        self.assertLess(time.monotonic() - start, 4.0)
        self.assertTrue(log.wait_for('408', 'did not arrive in time'))

    def test_frame_that_never_ends(self):
        sink = _Target(self, 'sink')
        port, log = _start_proxy(self, sink)
        client = HixieClient(port, 76)
        self.addCleanup(client.close)
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
        self.assertIsNone(client.recv_frame(timeout=20))
        self.assertEqual(client.reader.rest(timeout=20), b'')
        thread.join(TIMEOUT)
        self.assertTrue(log.wait_for('session closed', 'longer than'))
        self.assertLessEqual(sink.received, websockify.HIXIE_MAX_FRAME * 3 // 4)


if __name__ == '__main__':
    unittest.main()
