"""TLS tests for websockify.py: wss:// on the same port, the TLS options, renewal,
--ssl-target. A part file, to be folded into test_websockify.py.

Certificates are made with the openssl command. Optional clients (websockets,
Node ws) are imported or run lazily; without them those tests are skipped,
unless WEBSOCKIFY_REQUIRE_ALL is set, when they fail.
"""

import asyncio
import dataclasses
import hashlib
import logging
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import websockify

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'websockify.py')
REQUIRE_ALL = bool(os.environ.get('WEBSOCKIFY_REQUIRE_ALL'))
NODE_PATH = os.environ.get('NODE_PATH') or os.path.join(HERE, 'build', 'node', 'node_modules')
WAIT = 10.0


def _need(test, what, present):
    """Skip (or fail under WEBSOCKIFY_REQUIRE_ALL) when an optional tool is missing."""
    if present:
        return
    if REQUIRE_ALL:
        test.fail('%s is required (WEBSOCKIFY_REQUIRE_ALL is set)' % what)
    test.skipTest('%s not available' % what)


# -- certificates -------------------------------------------------------------------

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


def get_pki(test):
    global _pki, _pki_error
    if _pki is None and _pki_error is None:
        if shutil.which('openssl') is None:
            _pki_error = 'the openssl command'
        else:
            _pki = PKI()
    _need(test, _pki_error or 'openssl', _pki is not None)
    return _pki


def tearDownModule():
    if _pki is not None:
        _pki.close()


def client_context(pki, cert=None, max_version=None):
    ctx = ssl.create_default_context(cafile=pki.ca[0])
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


# -- servers: echo targets and the proxy ------------------------------------------------

class EchoServer:
    """A TCP (or TLS) echo target in threads; greeting is sent first when given."""

    def __init__(self, test, context=None, greeting=None):
        self.context = context
        self.greeting = greeting
        self.server_names = []
        self.errors = []
        #: Set once a TLS handshake with the proxy has completed.
        self.handshake_done = threading.Event()
        if context is not None:
            context.sni_callback = self._sni
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.conns = []
        test.addCleanup(self.close)
        threading.Thread(target=self._accept, daemon=True).start()

    def _sni(self, sslobj, name, ctx):
        self.server_names.append(name)

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(WAIT)
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
                self.conns.append(conn)
                self.handshake_done.set()
            if self.greeting:
                conn.sendall(self.greeting)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except (OSError, ValueError) as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self):
        self.listener.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass


def start_proxy(test, argv, settings=None):
    """An in-process proxy for argv; returns its server (already serving)."""
    settings = settings or websockify.parse_args(argv)
    server = websockify.make_server(settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.close_sessions(1.0)
        server.server_close()
        thread.join(WAIT)
    test.addCleanup(stop)
    return server


class LogWatch(logging.Handler):
    """Collects the websockify logger's INFO lines; wait_for() waits for one to appear
    (the server may log a failed handshake just after the client saw the close)."""

    def __init__(self, test):
        super().__init__(logging.INFO)
        self.output = []
        self._cond = threading.Condition()
        log = logging.getLogger('websockify')
        test.addCleanup(log.setLevel, log.level)
        test.addCleanup(log.removeHandler, self)
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

    def wait_for(self, text, count=1, timeout=WAIT):
        """The lines containing text once there are count of them (or the timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: len([r for r in self.output if text in r]) >= count,
                                timeout)
            return [r for r in self.output if text in r]


# -- a small blocking WebSocket client ------------------------------------------------------

def http_exchange(port, request, context=None, host='localhost'):
    """Send raw bytes, return everything the server answers before closing."""
    sock = socket.create_connection(('127.0.0.1', port), WAIT)
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
            if not chunk:
                return data
            data += chunk
    finally:
        sock.close()


UPGRADE = (b'GET /x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n'
           b'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'
           b'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n')


class WSClient:
    """Blocking RFC 6455 client over a plain or TLS socket, binary frames only."""

    def __init__(self, port, context=None, host='localhost', rcvbuf=None, read_size=65536):
        self.read_size = read_size
        sock = socket.socket()
        try:
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(WAIT)
            sock.connect(('127.0.0.1', port))
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
            self._handshake(sock)
        except BaseException:
            sock.close()
            raise

    def _handshake(self, sock):
        self.sock = sock
        sock.sendall(UPGRADE)
        head = b''
        while b'\r\n\r\n' not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError('closed during the handshake: %r' % head)
            head += chunk
        head, _, self.buf = head.partition(b'\r\n\r\n')
        self.status = int(head.split(b' ')[1])
        self.head = head
        if self.status != 101:
            raise ConnectionError(head.decode('latin-1'))

    def send(self, data):
        n = len(data)
        if n < 126:
            header = struct.pack('!BB', 0x82, 0x80 | n)
        elif n < 65536:
            header = struct.pack('!BBH', 0x82, 0xFE, n)
        else:
            header = struct.pack('!BBQ', 0x82, 0xFF, n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + websockify.unmask(data, mask))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(self.read_size)
            if not chunk:
                raise ConnectionError('closed')
            self.buf += chunk

    def recv_frame(self):
        self._need(2)
        opcode, length = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        pos = 2
        if length == 126:
            self._need(4)
            length, pos = struct.unpack_from('!H', self.buf, 2)[0], 4
        elif length == 127:
            self._need(10)
            length, pos = struct.unpack_from('!Q', self.buf, 2)[0], 10
        self._need(pos + length)
        payload, self.buf = self.buf[pos:pos + length], self.buf[pos + length:]
        return opcode, payload

    def recv_bytes(self, n):
        out = b''
        while len(out) < n:
            opcode, payload = self.recv_frame()
            if opcode != 2:
                raise ConnectionError('unexpected opcode %d' % opcode)
            out += payload
        return out

    def exchange(self, payloads, total, lazy=False):
        """Send the payloads while receiving total payload bytes, in this one thread
        (an SSL socket must not be read and written from two threads at once).
        lazy: read only when sending is blocked, so that every buffer fills up."""
        frames = bytearray()
        for data in payloads:
            mask = os.urandom(4)
            frames += struct.pack('!BBQ', 0x82, 0xFF, len(data)) + mask
            frames += websockify.unmask(data, mask)
        out, sent, got = memoryview(frames), 0, []
        received = 0
        sock = self.sock
        sock.setblocking(False)
        deadline = time.monotonic() + 60
        while received < total:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('%d of %d bytes received' % (received, total))
            writable = [sock] if sent < len(out) else []
            if not sock.pending():
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
            self.buf += chunk
            while True:
                frame = self._parse()
                if frame is None:
                    break
                got.append(frame)
                received += len(frame)
        return b''.join(got)

    def _parse(self):
        """One complete binary frame's payload from buf, or None."""
        buf = self.buf
        if len(buf) < 2:
            return None
        length, pos = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = struct.unpack_from('!H', buf, 2)[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = struct.unpack_from('!Q', buf, 2)[0], 10
        if len(buf) < pos + length:
            return None
        if buf[0] & 0x0F != 2:
            raise ConnectionError('unexpected opcode %d' % (buf[0] & 0x0F))
        self.buf = buf[pos + length:]
        return buf[pos:pos + length]

    def close(self):
        self.sock.close()


def ws_client(test, *args, **kwargs):
    client = WSClient(*args, **kwargs)
    test.addCleanup(client.close)
    return client


# -- the tests ----------------------------------------------------------------------------------

class TLSStartupTest(unittest.TestCase):
    """Start-up: bad TLS set-ups refuse to start with exit 2 and one line."""

    def run_main(self, *args):
        proc = subprocess.run([sys.executable, SCRIPT] + list(args) + ['127.0.0.1:0',
                                                                     '127.0.0.1:9'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=WAIT, cwd=self.pki.dir,
                              env=dict(os.environ, WSFY_TEST_PW='s3cret'))
        return proc.returncode, proc.stderr.decode()

    def setUp(self):
        self.pki = get_pki(self)

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
        for args in (['--cafile', p.ca[0]], ['--ssl-target-insecure'],
                     ['--ssl-version', 'sslv3'],
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
        echo = EchoServer(self)
        for extra in (['--key-password-env', 'WSFY_TEST_PW'], ['--key-password-file', pwfile],
                      ['--key-password', 's3cret']):
            with self.subTest(extra=extra):
                server = start_proxy(self, ['--cert', p.server[0], '--key', p.enc_key] + extra
                                     + ['127.0.0.1:0', '127.0.0.1:%d' % echo.port])
                self.assertNotIn('s3cret', repr(server.settings))
                ws = ws_client(self, server.server_address[1], client_context(p))
                ws.send(b'hello')
                self.assertEqual(ws.recv_bytes(5), b'hello')

    def test_default_cert_is_self_pem_in_working_directory(self):
        settings = websockify.parse_args(['127.0.0.1:0', 'localhost:9'])
        self.assertEqual(settings.cert, os.path.join(os.getcwd(), 'self.pem'))
        self.assertFalse(settings.cert_given)
        code, err = self.run_main('--idle-timeout', '0.1')   # no self.pem in cwd: TLS off
        self.assertEqual(code, 0, err)
        self.assertIn('no certificate %s: wss:// is off' % self.pki.path('self.pem'), err)


class TLSServerTest(unittest.TestCase):
    """wss:// by sniffing, next to ws:// on the same port."""

    def setUp(self):
        self.pki = get_pki(self)
        self.echo = EchoServer(self)

    def proxy(self, *args, cert=None):
        cert = cert or self.pki.server
        server = start_proxy(self, ['--cert', cert[0], '--key', cert[1]] + list(args)
                             + ['127.0.0.1:0', '127.0.0.1:%d' % self.echo.port])
        return server.server_address[1]

    def test_wss_websockets_client_16mib(self):
        try:
            from websockets.asyncio.client import connect
        except ImportError:
            connect = None
        _need(self, 'the websockets package', connect)
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
        node = shutil.which('node')
        _need(self, 'node with the ws package',
              node and os.path.isdir(os.path.join(NODE_PATH, 'ws')))
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
                              env=dict(os.environ, NODE_PATH=NODE_PATH))
        self.assertEqual(proc.stdout.decode().strip(), 'equal', proc.stderr.decode())

    def test_slow_tls_client_gets_every_byte(self):
        # A small receive window and small reads: the proxy's TLS sends to the
        # client keep meeting a full kernel buffer (SSLWantWrite) and are retried
        # from the queue.
        port = self.proxy()
        ws = ws_client(self, port, client_context(self.pki), rcvbuf=4096, read_size=1000)
        total = 4 << 20
        data = os.urandom(total)
        got = ws.exchange([data[pos:pos + 300000] for pos in range(0, total, 300000)], total,
                          lazy=True)
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())

    def test_plain_and_tls_on_one_port_at_once(self):
        port = self.proxy()
        with LogWatch(self) as logs:
            plain = ws_client(self, port)
            secure = ws_client(self, port, client_context(self.pki))
            secure.send(b'over tls')
            plain.send(b'in clear')
            self.assertEqual(plain.recv_bytes(8), b'in clear')
            self.assertEqual(secure.recv_bytes(8), b'over tls')
            answer = http_exchange(port, b'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
                                   client_context(self.pki))
            self.assertTrue(answer.startswith(b'HTTP/1.1 426 '), answer)
        opened = logs.wait_for('session open', 2)
        self.assertEqual(len(opened), 2)
        self.assertEqual(sum('TLSv1.3' in r for r in opened), 1)

    def test_no_certificate_plain_works_and_tls_logged(self):
        settings = websockify.parse_args(['127.0.0.1:0', '127.0.0.1:%d' % self.echo.port])
        settings = dataclasses.replace(settings, cert=self.pki.path('self.pem'))
        with LogWatch(self) as logs:
            server = start_proxy(self, None, settings)
            port = server.server_address[1]
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                WSClient(port, client_context(self.pki))
            ws = ws_client(self, port)
            ws.send(b'plain')
            self.assertEqual(ws.recv_bytes(5), b'plain')
        refused = logs.wait_for('TLS handshake refused')
        self.assertEqual(len(refused), 1, logs.output)
        self.assertIn('no certificate', refused[0])

    def test_handshake_garbage_and_wrong_protocol_log_one_line(self):
        port = self.proxy()
        with LogWatch(self) as logs:
            answer = http_exchange(port, b'\x16\x03\x01\x00\x05hello garbage\r\n\r\n')
            self.assertNotIn(b'HTTP', answer)
            answer = http_exchange(port, b'\x80\x00garbage')
            ws = ws_client(self, port, client_context(self.pki))   # the server still works
            ws.send(b'ok')
            self.assertEqual(ws.recv_bytes(2), b'ok')
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
        ws = ws_client(self, port, client_context(self.pki))
        ws.send(b'secure')
        self.assertEqual(ws.recv_bytes(6), b'secure')

    def test_client_certificates(self):
        p = self.pki
        port = self.proxy('--verify-client', '--cafile', p.ca[0])
        with LogWatch(self) as logs:
            ws = ws_client(self, port, client_context(p, cert=p.client))
            ws.send(b'trusted')
            self.assertEqual(ws.recv_bytes(7), b'trusted')
            self.assertTrue(logs.wait_for('client client one'), logs.output)
            for cert in (None, p.client2):
                with self.subTest(cert=cert):
                    with self.assertRaises((ssl.SSLError, ConnectionError)):
                        WSClient(port, client_context(p, cert=cert)).close()
            answer = http_exchange(port, UPGRADE)      # --verify-client implies --ssl-only
            self.assertTrue(answer.startswith(b'HTTP/1.1 403 '), answer)
        failed = logs.wait_for('TLS handshake failed', 2)
        self.assertEqual(len(failed), 2, logs.output)
        self.assertIn('certificate', failed[0])

    def test_minimum_version_enforced(self):
        port = self.proxy('--ssl-version', 'tlsv1_3')
        with LogWatch(self) as logs:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                WSClient(port, client_context(self.pki, max_version=ssl.TLSVersion.TLSv1_2))
            ws = ws_client(self, port, client_context(self.pki))
            self.assertEqual(ws.sock.version(), 'TLSv1.3')
        failed = logs.wait_for('TLS handshake failed')
        self.assertEqual(len(failed), 1, logs.output)
        self.assertIn('protocol', failed[0])

    def test_tls12_works_by_default(self):
        port = self.proxy('--ssl-ciphers', 'ECDHE+AESGCM')
        ws = ws_client(self, port, client_context(self.pki, max_version=ssl.TLSVersion.TLSv1_2))
        self.assertEqual(ws.sock.version(), 'TLSv1.2')
        self.assertIn('ECDHE', ws.sock.cipher()[0])
        ws.send(b'1.2')
        self.assertEqual(ws.recv_bytes(3), b'1.2')

    def served_certificate(self, port):
        with socket.create_connection(('127.0.0.1', port), WAIT) as sock:
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
            ws = ws_client(self, port, client_context(p))
            ws.send(b'renewed')
            self.assertEqual(ws.recv_bytes(7), b'renewed')
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


class TLSTargetTest(unittest.TestCase):
    """--ssl-target: verification, SNI, opt-out, and relaying through TLS."""

    def setUp(self):
        self.pki = get_pki(self)

    def tls_target(self, pair, greeting=None, minimum=None):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*pair)
        if minimum is not None:
            ctx.minimum_version = minimum
        return EchoServer(self, ctx, greeting)

    def proxy(self, target, host, *args):
        server = start_proxy(self, ['--ssl-target'] + list(args)
                             + ['127.0.0.1:0', '%s:%d' % (host, target.port)])
        return server.server_address[1]

    def test_verified_target_with_sni(self):
        target = self.tls_target(self.pki.server)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        ws = ws_client(self, port)
        ws.send(b'verified')
        self.assertEqual(ws.recv_bytes(8), b'verified')
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
        ws = ws_client(self, port)
        ws.send(b'self-signed')
        self.assertEqual(ws.recv_bytes(11), b'self-signed')

    def test_tls13_target_that_waits_for_the_client(self):
        target = self.tls_target(self.pki.server, minimum=ssl.TLSVersion.TLSv1_3)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        ws = ws_client(self, port)
        # Neither side has sent data yet, yet the handshake must be complete.
        self.assertTrue(target.handshake_done.wait(WAIT))
        ws.send(b'you first')
        self.assertEqual(ws.recv_bytes(9), b'you first')

    def test_decrypted_bytes_held_by_openssl_are_relayed(self):
        # One full 16 KiB TLS record; the proxy's first read takes half of it and
        # the kernel then has nothing more: only sock.pending() tells.
        greeting = os.urandom(16384)
        target = self.tls_target(self.pki.server, greeting=greeting)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        ws = ws_client(self, port)
        ws.sock.settimeout(3.0)      # the target waits 10 s before giving up on us
        self.assertEqual(ws.recv_bytes(len(greeting)), greeting)

    def test_4mib_both_ways_through_a_tls_target(self):
        target = self.tls_target(self.pki.server)
        port = self.proxy(target, 'localhost', '--ssl-target-cafile', self.pki.ca[0])
        ws = ws_client(self, port, None)
        total = 4 << 20
        data = os.urandom(total)
        result = {}

        def reader():
            try:
                result['got'] = ws.recv_bytes(total)
            except Exception as exc:
                result['error'] = exc
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        for pos in range(0, total, 100000):
            ws.send(data[pos:pos + 100000])
        thread.join(60)
        self.assertFalse(thread.is_alive())
        self.assertNotIn('error', result)
        self.assertEqual(hashlib.sha256(result['got']).digest(), hashlib.sha256(data).digest())


if __name__ == '__main__':
    unittest.main()
