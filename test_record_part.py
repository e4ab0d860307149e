"""Tests for --record, --syslog/--legacy-syslog and the auth plugins (--auth-plugin,
--auth-source, --web-auth), through real sockets. Helpers come from test_websockify.

    python3 -m unittest test_record_part
    WEBSOCKIFY_REQUIRE_ALL=1 build/venv/bin/python -m unittest test_record_part

Optional: the `websockets` and `trustme` packages (venv) and Node.js (reads a
recording as noVNC's playback page does); each is skipped when missing unless
WEBSOCKIFY_REQUIRE_ALL is set.
"""

import ast
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import time
import unittest

import websockify
from test_websockify import (
    TEXT, TIMEOUT, ProxyProcess, ProxyTestCase, TargetServer, WSClient, echo,
    import_optional, require, run_cli, upgrade_request)

_NULL_HANDLER = logging.NullHandler()


def setUpModule():
    # As test_websockify: refusals made on purpose stay off the test output.
    logging.getLogger('websockify').addHandler(_NULL_HANDLER)


def tearDownModule():
    logging.getLogger('websockify').removeHandler(_NULL_HANDLER)


def basic(user_password):
    return 'Basic ' + base64.b64encode(user_password.encode('utf-8')).decode('ascii')


def greet_then_echo(sock):
    """Target: says hello first (as a VNC server does), then echoes."""
    sock.sendall(b'RFB 003.008\n')
    echo(sock)


def hixie75_request(path='/', extra=()):
    lines = ['GET %s HTTP/1.1' % path, 'Upgrade: WebSocket', 'Connection: Upgrade',
             'Host: localhost', 'Origin: http://localhost']
    lines += ['%s: %s' % h for h in extra]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


def hixie_frame(data):
    return b'\x00' + base64.b64encode(data) + b'\xff'


def read_hixie_data(client, total):
    """Decoded payload of draft-75 frames from the proxy until `total` bytes."""
    data = b''
    while len(data) < total:
        while b'\xff' not in client.buffer:
            if not client._fill():
                raise AssertionError('EOF after %d of %d bytes' % (len(data), total))
        frame, _, rest = bytes(client.buffer).partition(b'\xff')
        client.buffer = bytearray(rest)
        if not frame.startswith(b'\x00'):
            raise AssertionError('not a Hixie text frame: %r' % frame[:40])
        data += base64.b64decode(frame[1:])
    return data


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


################################################################################
# Recording
################################################################################

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
            client = self.session(address)
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

    def test_sessions_go_to_numbered_files_and_an_existing_file_is_replaced_as_0600(self):
        address, prefix = self.recorded_proxy()
        with open(prefix + '.2', 'w') as f:
            f.write('old content')
        os.chmod(prefix + '.2', 0o644)
        for n in (1, 2):
            client = self.session(address)
            self.assertEqual(client.recv_data(12), b'RFB 003.008\n')
            self.assertEqual(client.echo(b'session %d' % n), b'session %d' % n)
            client.send_close(1000)
            client.expect_close(1000)
        for n in (1, 2):
            entries = parse_recording(self.read_when_closed('%s.%d' % (prefix, n)))
            self.assertEqual(joined(entries, '}'), b'session %d' % n)
            self.assertEqual(stat.S_IMODE(os.stat('%s.%d' % (prefix, n)).st_mode), 0o600)

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
        client.send(hixie75_request())
        self.assertEqual(client.read_response().status, 101)
        payload = b'\x00\xffhixie\'s bytes\\'
        client.send(hixie_frame(payload))
        self.assertEqual(read_hixie_data(client, len(payload)), payload)
        client.sock.shutdown(socket.SHUT_WR)
        client.read_until_eof()
        entries = parse_recording(self.read_when_closed(prefix + '.1'))
        self.assertEqual(joined(entries, '}'), payload)
        self.assertEqual(joined(entries, '{'), payload)

    def test_node_reads_the_recording_as_novnc_playback_does(self):
        node = shutil.which('node') or shutil.which('nodejs')
        require(self, 'Node.js', node, 'apt-get install nodejs')
        address, prefix = self.recorded_proxy()
        client = self.session(address)
        self.assertEqual(client.recv_data(12), b'RFB 003.008\n')
        for message in self.MESSAGES:
            self.assertEqual(client.echo(message), message)
        client.send_close(1000)
        client.expect_close(1000)
        self.read_when_closed(prefix + '.1')
        result = subprocess.run([node, '-e', NODE_READER, prefix + '.1'], capture_output=True,
                                text=True, timeout=TIMEOUT)
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
        os.mkdir(prefix + '.1')                 # FILE.1 cannot be opened for writing
        with self.assertLogs('websockify', 'INFO') as logs:
            client = self.session(address)
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
                self.assertEqual(result.returncode, 2, result)
                self.assertIn(text, result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertNotIn('Traceback', result.stderr)


################################################################################
# Syslog
################################################################################

#: The part after <PRI> of an RFC 5424 message and of a legacy (RFC 3164) one.
RFC5424 = re.compile(r'<(\d+)>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) websockify '
                     r'(\d+) - - (.*)\Z', re.S)
LEGACY = re.compile(r'<(\d+)>([A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d) websockify\[(\d+)\]: '
                    r'(.*)\Z', re.S)


class TestSyslog(ProxyTestCase):

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
        client = self.session(proc.address)         # session lines arrive too
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
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def test_usage_errors(self):
        folder = self.tempdir()
        plain = os.path.join(folder, 'file')
        open(plain, 'w').close()
        for options, text in [
                (['--legacy-syslog'], '--legacy-syslog needs --syslog'),
                (['--syslog', 'localhost:x'], 'invalid syslog port'),
                (['--syslog', 'localhost:0'], 'needs HOST:PORT'),
                (['--syslog', ':514'], 'needs HOST:PORT'),
                (['--syslog', 'no-such-host.invalid:514'], 'cannot resolve'),
                (['--syslog', os.path.join(folder, 'missing')], 'No such file'),
                (['--syslog', plain], 'is not a socket')]:
            with self.subTest(options=options):
                result = run_cli(*options, '127.0.0.1:0', '127.0.0.1:9')
                self.assertEqual(result.returncode, 2, result)
                self.assertIn(text, result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertNotIn('Traceback', result.stderr)


################################################################################
# Auth plugins
################################################################################

PLUGIN_MODULE = '''
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
        websockets = import_optional(self, 'websockets', 'pip install websockets')
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
        response = self.refused(address, hixie75_request(), 401)
        self.assertEqual(response.header('www-authenticate'), 'Basic realm="Websockify"')
        client = WSClient(self, address)
        client.send(hixie75_request(extra=[('Authorization', basic('alice:s3cret'))]))
        self.assertEqual(client.read_response().status, 101)
        client.send(hixie_frame(b'hixie'))
        self.assertEqual(read_hixie_data(client, 5), b'hixie')

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
        trustme = import_optional(self, 'trustme', 'pip install trustme')
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
            f.write(textwrap.dedent(PLUGIN_MODULE))
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
                (['--auth-source', 'a:b'], '--auth-source needs --auth-plugin'),
                (['--web-auth', '--web', web], '--web-auth needs --auth-plugin'),
                (['--web-auth', '--auth-plugin', 'BasicHTTPAuth', '--auth-source', 'a:b'],
                 '--web-auth needs --web'),
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
                self.assertEqual(result.returncode, 2, result)
                self.assertIn(text, result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertNotIn('Traceback', result.stderr)

    def test_plugin_constructor_errors_are_usage_errors_in_process(self):
        folder, name = self.plugin_module()
        sys.path.insert(0, folder)
        self.addCleanup(sys.path.remove, folder)
        self.addCleanup(sys.modules.pop, name, None)
        with contextlib.redirect_stderr(open(os.devnull, 'w')) as err:
            self.addCleanup(err.close)
            with self.assertRaises(SystemExit) as caught:
                websockify.parse_args(['--auth-plugin', name + '.NoSource', '--auth-source',
                                       'x', '127.0.0.1:0', '127.0.0.1:9'])
        self.assertEqual(caught.exception.code, 2)
        settings = websockify.parse_args(['--auth-plugin', name + '.NoSource',
                                          '127.0.0.1:0', '127.0.0.1:9'])
        self.assertEqual(type(settings.auth_plugin).__name__, 'NoSource')


if __name__ == '__main__':
    unittest.main()
