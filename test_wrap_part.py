"""Tests of program wrapping: rebind.so, `-- PROGRAM ARGS`, --wrap-mode, -D/--pid-file.

Part of test_websockify.py-to-be (issue 7). Stdlib only; everything runs through
real sockets and real processes. rebind.so is built with `make rebind.so` if missing.
"""

import base64
import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import websockify  # noqa: E402

WEBSOCKIFY = os.path.join(HERE, 'websockify.py')
REBIND = os.path.join(HERE, 'rebind.so')
REQUIRE_ALL = bool(os.environ.get('WEBSOCKIFY_REQUIRE_ALL'))
WAIT = 20.0

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


def free_port():
    """A TCP port free right now on loopback (only ever the wrapped port)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


def ensure_rebind():
    if not os.path.exists(REBIND):
        subprocess.run(['make', '-s', 'rebind.so'], cwd=HERE, check=True, timeout=120)


class WSClient:
    """A minimal RFC 6455 client over a blocking socket (binary frames)."""

    def __init__(self, port, host='127.0.0.1', timeout=WAIT):
        self.sock = socket.create_connection((host, port), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(('GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n'
                           'Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n'
                           'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n'
                           % (host, port, key)).encode())
        self.buf = b''
        while b'\r\n\r\n' not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError('closed during the handshake: %r' % self.buf)
            self.buf += chunk
        head, self.buf = self.buf.split(b'\r\n\r\n', 1)
        self.status = int(head.split()[1])
        self.head = head

    def send(self, data, opcode=2):
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack('!BB', 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack('!BBH', 0x80 | opcode, 0xFE, n)
        else:
            header = struct.pack('!BBQ', 0x80 | opcode, 0xFF, n)
        reps = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(data, 'big') ^ int.from_bytes(reps, 'big')).to_bytes(n, 'big')
        self.sock.sendall(header + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError('connection closed')
            self.buf += chunk

    def recv_frame(self):
        """(opcode, payload) of the next frame."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, pos = struct.unpack_from('!H', self.buf, 2)[0], 4
        elif n == 127:
            self._need(10)
            n, pos = struct.unpack_from('!Q', self.buf, 2)[0], 10
        self._need(pos + n)
        payload, self.buf = self.buf[pos:pos + n], self.buf[pos + n:]
        return b0 & 0x0F, payload

    def close(self):
        with contextlib.suppress(OSError):
            self.send(struct.pack('!H', 1000), opcode=8)
        self.sock.close()


def relay_checksummed(test, port, size=1 << 20):
    """Send size random bytes through the proxy to an echo program; compare digests."""
    client = WSClient(port)
    test.assertEqual(client.status, 101, client.head)
    data = os.urandom(size)
    sender = threading.Thread(target=lambda: [client.send(data[i:i + 65536])
                                              for i in range(0, size, 65536)], daemon=True)
    sender.start()
    received = hashlib.sha256()
    got = 0
    while got < size:
        opcode, payload = client.recv_frame()
        test.assertEqual(opcode, 2)
        received.update(payload)
        got += len(payload)
    sender.join(WAIT)
    client.close()
    test.assertEqual(got, size)
    test.assertEqual(received.hexdigest(), hashlib.sha256(data).hexdigest())


class Run:
    """websockify.py in a subprocess; its stderr lines collected for wait_log()."""

    def __init__(self, test, args, env=None, script=WEBSOCKIFY, cwd=None):
        self.test = test
        # faulthandler: a websockify that hangs dumps its threads on SIGABRT (stop()).
        env = dict(os.environ if env is None else env, PYTHONFAULTHANDLER='1')
        self.proc = subprocess.Popen([sys.executable, script] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, cwd=cwd)
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        threading.Thread(target=self._read, daemon=True).start()
        test.addCleanup(self.cleanup)

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.decode('utf-8', 'replace'))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def text(self):
        with self.cond:
            return ''.join(self.lines)

    def wait_log(self, pattern, timeout=WAIT, count=1):
        """Wait for the count-th stderr line matching pattern; return its match."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in map(regex.search, self.lines) if m]
                if len(found) >= count:
                    return found[count - 1]
                left = end - time.monotonic()
                if left <= 0 or self.eof:
                    self.test.fail('no %r in the log (%s):\n%s' % (
                        pattern, 'EOF' if self.eof else 'timeout', ''.join(self.lines)))
                self.cond.wait(left)

    def wait_eof(self, timeout=WAIT):
        end = time.monotonic() + timeout
        with self.cond:
            while not self.eof and time.monotonic() < end:
                self.cond.wait(end - time.monotonic())
            return self.eof

    def stop(self, signum=signal.SIGTERM):
        """Send signum and return the exit status; fail with the log if it hangs."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.wait_eof(5.0)
            self.test.fail('websockify did not stop on signal %d:\n%s' % (signum, self.text()))

    def pgids(self):
        """Process groups websockify started (one per run of the program)."""
        regex = re.compile(r'started \S+ \(pid (\d+)\)')
        with self.cond:
            return [int(m.group(1)) for m in map(regex.search, self.lines) if m]

    def cleanup(self):
        """After a failed test: stop websockify, and its programs if it could not."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
                for pgid in self.pgids():
                    with contextlib.suppress(OSError):
                        os.killpg(pgid, signal.SIGKILL)
        if self.wait_eof(5.0):
            self.proc.stderr.close()


def wait_group_gone(test, pgid, timeout=WAIT):
    """Wait (bounded) until no process of group pgid is left."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    test.fail('process group %d still has processes' % pgid)


class WrapTestBase(unittest.TestCase):

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
        run = Run(self, args)
        run.wait_log(r'listening on ')
        return run, port


class RebindShimTest(WrapTestBase):
    """rebind.so alone, preloaded into a Python that binds sockets."""

    def preload_run(self, code, port):
        path = os.path.join(self.tmp, 'report-%d' % port)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reports:
            reports.bind(path)
            reports.settimeout(0.5)
            env = dict(os.environ, LD_PRELOAD=REBIND, WEBSOCKIFY_WRAP_PORT=str(port),
                       WEBSOCKIFY_WRAP_REPORT=path)
            out = subprocess.run([sys.executable, '-c', code, str(port)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=WAIT)
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

    @unittest.skipUnless(have_ipv6(), 'no IPv6 loopback')
    def test_moves_ipv6_binds_to_loopback(self):
        port = free_port()
        code = ('import socket, sys\n'
                's = socket.socket(socket.AF_INET6); s.bind(("::", int(sys.argv[1])))\n'
                'print("%s:%d" % s.getsockname()[:2])\n')
        lines, reports = self.preload_run(code, port)
        host, moved = lines[0].rsplit(':', 1)
        self.assertEqual(host, '::1')
        self.assertEqual([r.decode().split()[:3] for r in reports], [['rebind', '6', moved]])


class WrapRelayTest(WrapTestBase):
    """The wrapped program's port is moved whatever address it binds; data arrives intact."""

    def check_relay(self, host):
        run, port = self.wrap([], [host, 'serve'])
        run.wait_log(r'^program serve listening')        # its output passes through
        relay_checksummed(self, port)
        self.assertIn('session closed', run.wait_log(r'session closed.*program').group(0))

    def test_program_binding_ipv4_any(self):
        self.check_relay('0.0.0.0')

    @unittest.skipUnless(have_ipv6(), 'no IPv6 loopback')
    def test_program_binding_ipv6_any(self):
        self.check_relay('::')

    def test_program_binding_ipv4_loopback(self):
        self.check_relay('127.0.0.1')

    def test_rebind_found_through_environment(self):
        port = free_port()
        env = dict(os.environ, WEBSOCKIFY_REBIND=REBIND)
        run = Run(self, ['127.0.0.1:%d' % port, '--', sys.executable, self.program, str(port),
                         '0.0.0.0', 'serve'], env=env)
        run.wait_log(r'listening on ')
        relay_checksummed(self, port, 4096)


class WrapModeTest(WrapTestBase):

    def test_exit_mode_propagates_status(self):
        run, port = self.wrap([], ['0.0.0.0', 'once', '5'])
        relay_checksummed(self, port, 65536)
        self.assertEqual(run.proc.wait(WAIT), 5)
        self.assertIn('exited with status 5', run.text())

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
        self.assertNotIn('back-off', run.text())
        self.assertIsNone(run.proc.poll())

    def test_respawn_backs_off_a_program_that_crashes_at_start(self):
        starts = os.path.join(self.tmp, 'starts')
        port = free_port()
        run = Run(self, ['--wrap-mode=respawn', '127.0.0.1:%d' % port, '--', sys.executable,
                         self.program, str(port), '0.0.0.0', 'crash', starts])
        run.wait_log(r'started \S+ \(pid \d+\)', count=5, timeout=WAIT)
        with open(starts) as f:
            times = [float(line) for line in f]
        self.assertGreaterEqual(len(times), 4)
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertLess(gaps[0], 1.0, gaps)             # the first failure restarts at once
        self.assertGreater(gaps[2], gaps[1], gaps)        # then the delay doubles
        self.assertGreater(gaps[2], 0.9, gaps)
        self.assertEqual(run.text().count('back-off'), 1, run.text())
        self.assertIsNone(run.proc.poll())


class WrapLifetimeTest(WrapTestBase):
    """No wrapped process outlives websockify."""

    def test_sigterm_leaves_no_process_of_the_group(self):
        run, port = self.wrap([], ['0.0.0.0', 'stubborn'])
        relay_checksummed(self, port, 4096)
        pgid = run.pgids()[0]
        os.killpg(pgid, 0)                                 # the group exists
        self.assertEqual(run.stop(), 0)
        wait_group_gone(self, pgid)
        self.assertIn('SIGKILL', run.text())               # the child ignored SIGTERM

    def test_timeout_stops_the_program(self):
        pid_file = os.path.join(self.tmp, 'timeout.pid')
        run, port = self.wrap([], ['0.0.0.0', 'serve'],
                              extra=['--timeout', '1', '--pid-file', pid_file])
        with open(pid_file) as f:
            self.assertEqual(int(f.read()), run.proc.pid)
        pgid = run.pgids()[0]
        self.assertEqual(run.proc.wait(WAIT), 0)
        wait_group_gone(self, pgid)
        self.assertFalse(os.path.exists(pid_file))

    def test_daemon_writes_pid_file_serves_and_stops_on_sigterm(self):
        port = free_port()
        pid_file = os.path.join(self.tmp, 'daemon.pid')
        log_file = os.path.join(self.tmp, 'daemon.log')
        fg = subprocess.run([sys.executable, WEBSOCKIFY, '-D', '--pid-file', pid_file,
                             '--log-file', log_file, '127.0.0.1:%d' % port, '--',
                             sys.executable, self.program, str(port), '0.0.0.0', 'serve'],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=WAIT)
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
        end = time.monotonic() + WAIT
        while os.path.exists(pid_file) and time.monotonic() < end:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(pid_file))
        wait_group_gone(self, pgid)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(('127.0.0.1', port), WAIT).close()

    def stop_daemon(self, pid, pid_file, log_file):
        """Cleanup after a failure: SIGTERM the daemon (it stops its program), then kill."""
        if not os.path.exists(pid_file):
            return                          # it stopped, and stopped its program
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + WAIT
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
        fg = subprocess.run([sys.executable, WEBSOCKIFY, '-D', '127.0.0.1:%d' % port, '--',
                             os.path.join(self.tmp, 'no-such-program')],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=WAIT)
        self.assertEqual(fg.returncode, 1)
        self.assertIn(b'cannot run', fg.stderr)
        with socket.socket() as busy:
            busy.bind(('127.0.0.1', 0))
            busy.listen(1)
            fg = subprocess.run([sys.executable, WEBSOCKIFY, '-D',
                                 '127.0.0.1:%d' % busy.getsockname()[1], '127.0.0.1:9'],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=WAIT)
        self.assertEqual(fg.returncode, 1)
        self.assertIn(b'cannot listen', fg.stderr)


class RebindLookupTest(WrapTestBase):

    def copy_alone(self, with_source):
        where = tempfile.mkdtemp(prefix='alone-', dir=self.tmp)
        shutil.copy(WEBSOCKIFY, where)
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
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=WAIT)
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
        out = subprocess.run([sys.executable, WEBSOCKIFY, '--rebind', missing,
                              '127.0.0.1:%d' % port, '--', 'true'],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=WAIT)
        self.assertEqual(out.returncode, 1)
        self.assertIn(('rebind.so not found at %s (from --rebind)' % missing).encode(),
                      out.stderr)

    def test_builds_rebind_on_the_fly(self):
        if not (shutil.which('cc') or shutil.which('gcc')):
            if REQUIRE_ALL:
                self.fail('no C compiler')
            self.skipTest('no C compiler')
        script = self.copy_alone(with_source=True)
        port = free_port()
        run = Run(self, ['127.0.0.1:%d' % port, '--', sys.executable, self.program, str(port),
                         '0.0.0.0', 'serve'], env=self.env_without_rebind(), script=script)
        run.wait_log(r'built \S+rebind\.so from rebind\.c')
        run.wait_log(r'listening on ')
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(script), 'rebind.so')))
        relay_checksummed(self, port, 65536)


class WrapUsageTest(unittest.TestCase):
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
        self.assertIn('only apply', self.refused(['--wrap-mode=ignore', '6080', 'h:1']))


class TelnetdTest(WrapTestBase):
    """The seed's example: websockify.py P --wrap-mode=respawn -- in.telnetd -debug P."""

    def telnetd(self):
        path = shutil.which('in.telnetd') or '/usr/sbin/in.telnetd'
        if not os.access(path, os.X_OK):
            if REQUIRE_ALL:
                self.fail('in.telnetd (Debian telnetd-ssl) is not installed')
            self.skipTest('in.telnetd (Debian telnetd-ssl) is not installed')
        return path

    def login_prompt(self, port):
        """Negotiate (refusing every option) until telnetd's login prompt; return all bytes."""
        client = WSClient(port)
        self.assertEqual(client.status, 101, client.head)
        seen = b''
        end = time.monotonic() + 30
        while b'login:' not in seen:
            self.assertLess(time.monotonic(), end, seen)
            opcode, data = client.recv_frame()
            self.assertEqual(opcode, 2, data)
            answer = b''
            for verb, option in re.findall(rb'\xff([\xfb-\xfe])(.)', data, re.S):
                # WILL/WONT -> DONT, DO/DONT -> WONT (RFC 854)
                answer += b'\xff' + (b'\xfe' if verb in b'\xfb\xfc' else b'\xfc') + option
            if answer:
                client.send(answer)
            seen += data
        client.close()
        return seen

    def test_telnetd_login_prompt_across_two_connections(self):
        telnetd = self.telnetd()
        port = free_port()
        run = Run(self, [str(port), '--wrap-mode=respawn', '--', telnetd, '-debug', str(port)])
        run.wait_log(r'listening on ')
        for n in (1, 2):
            seen = self.login_prompt(port)
            self.assertIn(b'\xff\xfd', seen)           # IAC DO: telnet negotiation
            self.assertIn(b'login:', seen)
            run.wait_log(r'session closed', count=n)
        self.assertGreaterEqual(len(run.pgids()), 2)      # respawned after the first
        self.assertEqual(run.stop(), 0)


if __name__ == '__main__':
    unittest.main()
