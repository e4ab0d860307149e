#!/usr/bin/env python3
"""The demo behind `make demo`: the pages of web/ and two services behind websockify.py.

    python3 web/demo.py [--port N] [--echo-port M]

websockify.py --web web/ on port N (default 6080) relays to a line service a terminal
can exercise (wstelnet.html); a second websockify.py on port M (default N + 1) relays
to an echo server (latency.html). Both services listen on 127.0.0.1 only. Ctrl-C stops
everything. Needs nothing but Python and ../websockify.py; test_websockify.py imports
this file for its LineService.
"""

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

WEB_DIR = os.path.dirname(os.path.abspath(__file__))
#: websockify.py, run as a program next to this folder.
SCRIPT = os.path.join(os.path.dirname(WEB_DIR), 'websockify.py')
#: Seconds any single wait may take (a start-up line, a process exit).
TIMEOUT = 10.0
#: The line websockify.py logs at start; the groups give the port it listens on.
LISTENING = re.compile(r'listening on (?:unix:(?P<path>[^\s,]+)'
                       r'|\[(?P<host6>[^\]]*)\]:(?P<port6>\d+)'
                       r'|(?P<host>[^\s\[\],]*):(?P<port>\d+))')


################################################################################
# The services
################################################################################

class Service:
    """A TCP service on host, port 0, in a thread: each connection runs
    handler(sock) in a thread of its own. stop() closes the listener and every
    connection."""

    def __init__(self, handler, host='127.0.0.1'):
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        #: The port it listens on.
        self.port = self.listener.getsockname()[1]
        self.handler = handler
        self._open = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._open.append(sock)
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
                sock.shutdown(socket.SHUT_RDWR)   # wakes the threads blocked on it
            sock.close()
        self._thread.join(TIMEOUT)


def echo(sock):
    """Send back everything, until the peer's EOF."""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        sock.sendall(data)


class LineService(Service):
    """A line service a terminal can exercise.

    It greets, echoes every character typed (remote echo, as a telnet server
    does, so wstelnet shows what is typed; BS/DEL rub out), and on each line
    (CR, CR LF, CR NUL or LF) runs a command or echoes the line back:
      help     the commands
      color    red, green and bold blue words (SGR 31, 32, 1;34)
      cursor   clears the screen, writes two rows, then overwrites cells at
               ESC[H and ESC[2;5H: rows read 'AB23456789' and 'abcdXYghij'
      quit     says bye and closes
    Telnet commands from the client (IAC ...) are dropped."""

    GREETING = (b'websockify.py line service\r\n'
                b'commands: help, color, cursor, quit; other lines are echoed\r\n')
    PROMPT = b'> '
    COLOR = (b'\x1b[31mred\x1b[0m \x1b[32mgreen\x1b[0m \x1b[1;34mbold blue\x1b[0m plain\r\n')
    CURSOR = (b'\x1b[2J\x1b[H0123456789\r\nabcdefghij\r\n'
              b'\x1b[HAB\x1b[2;5HXY\x1b[4;1H')
    HELP = (b'help: this list; color: coloured words; cursor: cursor movement; '
            b'quit: close\r\n')
    _TELNET = re.compile(rb'\xff(?:[\xfb-\xfe][\s\S]|\xfa[\s\S]*?\xff\xf0|[\xf0-\xf9])')

    def __init__(self, host='127.0.0.1'):
        super().__init__(self._session, host=host)

    def _session(self, conn):
        conn.sendall(self.GREETING + self.PROMPT)
        line = bytearray()
        after_cr = False
        while True:
            data = conn.recv(4096)
            if not data:
                return
            data = self._TELNET.sub(b'', data.replace(b'\xff\xff', b'\x00\xff\xff'))
            out = bytearray()
            for b in data:
                if after_cr and b in (0, 10):
                    after_cr = False
                    continue
                after_cr = b == 13
                if b in (10, 13):
                    out += b'\r\n'
                    reply = self._command(bytes(line))
                    line.clear()
                    if reply is None:
                        conn.sendall(bytes(out) + b'bye\r\n')
                        return
                    out += reply + self.PROMPT
                elif b in (8, 127):
                    if line:
                        del line[-1]
                        while line and 0x80 <= line[-1] < 0xC0:
                            del line[-1]
                        out += b'\b \b'
                elif b == 3:
                    line.clear()
                    out += b'^C\r\n' + self.PROMPT
                elif b >= 32 or b == 9:
                    line.append(b)
                    out.append(b)
            if out:
                conn.sendall(bytes(out))

    def _command(self, line):
        """The reply to a line, or None to close."""
        word = line.strip().lower()
        if word == b'quit':
            return None
        if word == b'help':
            return self.HELP
        if word == b'color':
            return self.COLOR
        if word == b'cursor':
            return self.CURSOR
        if not word:
            return b''
        return b'echo: ' + line + b'\r\n'


################################################################################
# websockify.py in front of them
################################################################################

def read_listening_port(proc, echo_to=None):
    """The port of the 'listening on' line on a websockify.py's stderr (a text
    pipe), copying its lines to echo_to until then."""
    lines = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if echo_to is not None:
            echo_to.write(line)
            echo_to.flush()
        lines.append(line)
        match = LISTENING.search(line)
        if match and not match.group('path'):
            return int(match.group('port') or match.group('port6'))
    raise RuntimeError('no "listening on" line; stderr: %r' % ''.join(lines))


def copy_lines(stream, out):
    """Copy a text pipe to out, line by line, in a daemon thread; returns the thread."""
    def run():
        for line in iter(stream.readline, ''):
            out.write(line)
            out.flush()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main(argv=None):
    """The line service behind websockify --web web on --port, an echo server (for
    latency.html) behind a second websockify; Ctrl-C stops all. Returns the status."""
    parser = argparse.ArgumentParser(prog='web/demo.py', description=__doc__.split('\n')[0])
    parser.add_argument('--port', type=int, default=6080,
                        help='port for the pages and the line service (default 6080; '
                             '0 picks a free one)')
    parser.add_argument('--echo-port', type=int, default=None,
                        help='port for the echo server (default: --port + 1, or a free one)')
    opts = parser.parse_args(argv)
    if opts.echo_port is None:
        opts.echo_port = opts.port + 1 if opts.port else 0
    # Ctrl-C must reach us even when started with SIGINT ignored (from a
    # background job, for instance); websockify.py sets its own handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    service = LineService()
    echo_service = Service(echo)
    procs, copiers = [], []
    try:
        ports = []
        for listen, target in ((opts.port, service.port), (opts.echo_port, echo_service.port)):
            proc = subprocess.Popen([sys.executable, SCRIPT, '--web', WEB_DIR, str(listen),
                                     '127.0.0.1:%d' % target],
                                    stderr=subprocess.PIPE, universal_newlines=True)
            procs.append(proc)
            try:
                ports.append(read_listening_port(proc, echo_to=sys.stderr))
            except RuntimeError:
                proc.wait(TIMEOUT)
                return proc.returncode or 1
            copiers.append(copy_lines(proc.stderr, sys.stderr))
        port, echo_port = ports
        base = 'http://localhost:%d/' % port
        print('websockify.py on port %d relays to the line service (127.0.0.1:%d), '
              'on port %d to an echo server (127.0.0.1:%d). Open:'
              % (port, service.port, echo_port, echo_service.port))
        print('  %swstelnet.html?autoconnect=1' % base)
        print('  %swsecho.html?autoconnect=1' % base)
        print('  %slatency.html?port=%d&autoconnect=1' % (base, echo_port))
        print('  %s   (all the demo pages)' % base)
        print('In the terminal type help, color or cursor. Ctrl-C stops the demo.')
        sys.stdout.flush()
        procs[0].wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for copier in copiers:      # their last log lines
            copier.join(TIMEOUT)
        service.stop()
        echo_service.stop()
    bad = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGINT)]
    return bad[0] if bad else 0


if __name__ == '__main__':
    sys.exit(main())
