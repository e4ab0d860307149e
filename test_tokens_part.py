"""Tests of targets chosen by token (section Targets), through real sockets.

    python3 -m unittest test_tokens_part
    WEBSOCKIFY_REQUIRE_ALL=1 build/venv/bin/python -m unittest test_tokens_part

Every target is an echo server that first sends its own name, so a client knows
which target its token reached. TokenRedis runs against a redis-server started
here on a free loopback port (skipped when redis-server is missing, unless
WEBSOCKIFY_REQUIRE_ALL is set).
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

import websockify
from test_websockify import (TIMEOUT, ProxyTestCase, TargetServer, WSClient, closed_port,
                             echo, import_optional, require, run_cli, setUpModule,
                             tearDownModule, upgrade_request)

__all__ = ['setUpModule', 'tearDownModule']


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


################################################################################
# Token files
################################################################################

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
        self.assertEqual(client._take(1), b'\x00')
        frame = b''
        while not frame.endswith(b'\xff'):
            frame += client._take(1)
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
                              capture_output=True, timeout=TIMEOUT)
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
        raw = socket.create_connection(address[:2], TIMEOUT)
        client = WSClient.__new__(WSClient)
        client.sock = client_ctx.wrap_socket(raw, server_hostname='localhost')
        self.addCleanup(client.sock.close)
        client.buffer = bytearray()
        client.handshake(path=token_path('vm'))
        self.assertEqual(client.recv_data(6), b'secret')
        self.assertEqual(client.echo(b'both ways'), b'both ways')

    def test_websockets_library_client_through_a_token(self):
        sync_client = import_optional(self, 'websockets.sync.client', 'pip install websockets')
        target = self.target(b'lib')
        address = self.proxy('--target-config', self.token_file(['lib: %s' % target.arg]),
                             '127.0.0.1:0')
        url = 'ws://127.0.0.1:%d/websockify?token=lib' % address[1]
        with sync_client.connect(url, subprotocols=['binary'], open_timeout=TIMEOUT) as ws:
            self.assertEqual(ws.recv(TIMEOUT), b'lib')
            ws.send(b'\x00\x01binary')
            self.assertEqual(ws.recv(TIMEOUT), b'\x00\x01binary')


################################################################################
# Unix socket directory
################################################################################

class TestUnixDomainSocketDirectory(TokenTestCase):

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


################################################################################
# Token APIs
################################################################################

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
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _ApiHandler)
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
                          'http://127.0.0.1:%d/%%s' % closed_port(), '127.0.0.1:0')
        self.refused_token(down, token_path('vm'), 502)


################################################################################
# Redis
################################################################################

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
        require(testcase, 'redis-server', program, 'apt-get install redis-server')
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


################################################################################
# JWT
################################################################################

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


class TestJWTTokenApi(TokenTestCase):

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
        }
        for name, (token, reason) in cases.items():
            with self.subTest(name):
                response = self.refused_token(self.address, token_path(token), 403)
                self.assertIn(reason, response.body)
                self.assertNotIn(self.SECRET_TEXT.encode(), response.body)

    def test_pem_key_refuses_every_token_with_a_reason(self):
        pem = os.path.join(self.tempdir(), 'public.pem')
        with open(pem, 'w') as f:
            f.write('-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n'
                    '-----END PUBLIC KEY-----\n')
        with self.assertLogs('websockify', 'WARNING'):
            address = self.proxy('--token-plugin', 'JWTTokenApi', '--token-source', pem,
                                 '127.0.0.1:0')
        for alg in ('RS256', 'HS256'):
            with self.subTest(alg=alg):
                response = self.refused_token(
                    address, token_path(make_jwt(b'x', self.claims(), alg)), 403)
                self.assertIn(b'HMAC', response.body)


################################################################################
# Custom plugins and the command line
################################################################################

PLUGIN_MODULE = '''
class PortPlugin:
    """Test plugin: token "mine" goes to host:port given as --token-source."""

    def __init__(self, source):
        self.host, _, self.port = source.rpartition(':')

    def lookup(self, token):
        if token == 'fail':
            raise RuntimeError('database unavailable')
        return (self.host, self.port) if token == 'mine' else None
'''


class TestCustomPluginAndCommandLine(TokenTestCase):

    def test_importable_module_class_plugin(self):
        folder = self.tempdir()
        module = 'wsfy_plugin_%d' % os.getpid()
        with open(os.path.join(folder, module + '.py'), 'w') as f:
            f.write(PLUGIN_MODULE)
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

    def test_token_options_reach_settings(self):
        settings = websockify.parse_args(['--target-config', 'tokens', '--host-token', '6080'])
        self.assertEqual((settings.token_plugin, settings.token_source, settings.host_token),
                         ('TokenFile', os.path.abspath('tokens'), True))
        self.assertIsNone(settings.target_host)


if __name__ == '__main__':
    unittest.main()
