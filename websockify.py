#!/usr/bin/env python3
"""websockify.py: a WebSocket-to-TCP proxy in one file, standard library only.

    python3 websockify.py [options] [source_addr:]source_port target_addr:target_port
    python3 websockify.py [options] --unix-target FILE [source_addr:]source_port
    python3 websockify.py [options] --target-config TOKEN_FILE [source_addr:]source_port
    python3 websockify.py [options] --unix-listen FILE target_addr:target_port
    python3 websockify.py [options] [source_addr:]source_port -- PROGRAM ARGS

A browser opens a WebSocket to this server; every byte it sends reaches the TCP (or
Unix socket) target, and every byte the target sends comes back in WebSocket frames.
The command line is that of websockify 0.13, so this file is a drop-in replacement.
With `-- PROGRAM ARGS` it runs PROGRAM with rebind.so preloaded (see rebind.c), which
moves PROGRAM's listening port to loopback, and relays to it (section Program wrapping).
With --target-config or --token-plugin, the token of each request (?token=NAME)
chooses that session's target (section Targets).

Specifications:
    RFC 6455 (HyBi 13; drafts 07/08 frame the same way)
        https://www.rfc-editor.org/rfc/rfc6455
    RFC 9110 / RFC 9112 (HTTP semantics and message syntax)
    draft-hixie-thewebsocketprotocol-75 and -76 (old browsers, Flash fallbacks)
        https://datatracker.ietf.org/doc/html/draft-hixie-thewebsocketprotocol-76
    RFC 4648 §4 (base64, for Hixie frames and the HyBi "base64" subprotocol)
    Adobe, "Setting up a socket policy file server" (Flash cross-domain policy)
"""

import _thread
import argparse
import atexit
import base64
import binascii
import codecs
import email.utils
import errno
import gc
import hashlib
import hmac
import html
import http.client
import http.server
import ipaddress
import importlib
import itertools
import json
import logging
import logging.handlers
import os
import re
import select
import shutil
import signal
import socket
import socketserver
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

try:                    # only TLS needs it; minimal and embedded builds may lack it
    import ssl
except ImportError:
    ssl = None
try:                    # only --workers needs it
    import mmap
except ImportError:
    mmap = None
try:                    # Unix only: raising the descriptor limit at start-up
    import resource
except ImportError:
    resource = None

__version__ = '0.1.0'

logger = logging.getLogger('websockify')


################################################################################
# Constants and errors
################################################################################
#
# Owns the limits (named constants, each with its reason), the exceptions that
# carry their answer (status, close code, exit status), and the small text
# helpers every section uses: format_address, _printable (log escaping) and
# has_control_characters. Calls nothing else in this file.

#: Longest request line accepted (414 beyond): URLs carry at most a token.
MAX_REQUEST_LINE = 8192
#: Largest header block accepted (431 beyond): browsers send 1-4 KiB with cookies.
MAX_HEADER_BYTES = 16384
#: Most header lines accepted (431 beyond).
MAX_HEADERS = 100
#: First read of a receive buffer; idle sessions stay this small.
RECV_MIN = 1024
#: Most bytes one read takes in the upstream API's blocking calls (recv_frames,
#: a request body): each read makes a new bytes object, sized to what came.
API_RECV = 65536
#: Largest receive buffer: a read that fills a buffer makes it four times bigger,
#: up to this size, so bulk transfers take few system calls per megabyte.
RECV_MAX = 262144
#: Most bytes the pump holds for one peer. A side is only read while the other
#: side has nothing queued, so one read (<= RECV_MAX plus a frame header) is the
#: usual bound; control frames (pongs, close) may add up to 64 KiB before the
#: pump stops reading the client too.
PUMP_HIGH_WATER = RECV_MAX + 65536
#: Seconds a side may take to finish the closing handshake and reach EOF.
CLOSE_TIMEOUT = 3.0
#: After an answer that ends a connection (an HTTP error, a Flash policy), read
#: what the peer still sends for up to DRAIN_TIMEOUT seconds and DRAIN_READS
#: reads, so that close() does not reset the connection before it read the answer.
DRAIN_TIMEOUT = 1.0
DRAIN_READS = 16
#: Seconds live sessions get to close after SIGTERM/SIGINT.
SHUTDOWN_GRACE = 2.0
#: Seconds without traffic after which a session gives back a grown buffer (one
#: of RECV_MIN goes back as soon as a read leaves it empty).
BUFFER_RELEASE_IDLE = 1.0
#: Seconds allowed to connect to a target.
CONNECT_TIMEOUT = 10.0
#: Bytes of a --web file read and sent per step when sendfile cannot be used
#: (TLS sockets): the memory a file download costs, whatever the file's size.
WEB_CHUNK = 65536
#: Seconds a --web client may take to accept more of a file before it is dropped.
WEB_SEND_TIMEOUT = 30.0
#: Most entries shown in a --web-listing page: its HTML is built in memory.
WEB_LISTING_MAX = 10000
#: Stack size of connection threads: deep enough for ssl and logging, small
#: enough that ten thousand idle sessions cost little address space.
THREAD_STACK_SIZE = 512 * 1024
#: Most connection threads that wait for a next connection once theirs has ended
#: (main() only; see _ConnectionThread), and how many seconds each waits. A
#: waiting thread keeps its stack pages and thread state (about 12 kB).
THREAD_PARK_MAX = 32
THREAD_PARK_IDLE = 5.0
#: Most idle connection threads that wait in accept() themselves (main() in one
#: process; see _ServerMixin._accept_loop): the kernel hands a new connection to
#: one of them, which serves it with no hand-over from an acceptor thread. A
#: thread beyond them parks (THREAD_PARK_MAX) and ends when idle.
ACCEPTING_THREADS_MAX = 8
#: The interpreter's switch interval, set by main(): how long a thread waiting
#: for the GIL waits before forcing the holder to let go. When thousands of
#: sessions wake at once, each needs about 0.1 ms: a thread waiting longer than
#: the interval forces a switch, and once every waiter does, each thread runs a
#: few instructions per turn (a convoy: 5,000 sessions echoing one frame each
#: took 16-20 s with the default 5 ms, and with 50 ms some rounds still took
#: 2-17 s or never ended within 20 s). Longer than such a round, nobody forces:
#: each thread runs to its next system call and hands over there (5,000
#: sessions: 0.4-0.8 s, every round). Our own long computations (bulk decoding)
#: let go by themselves (see Fairness in the Pump section).
SWITCH_INTERVAL = 5.0
#: The cyclic collector's first threshold, set by main(): how many more container
#: objects than were freed may be allocated before the youngest generation is
#: collected (Python's default: 700). Each busy session holds a few such objects
#: across its system calls (poll's events, views of its buffers), so a few
#: hundred sessions busy at once cross 700 again and again: 5,000 sessions echoing
#: one frame each, five rounds, ran 341 young, 30 middle and 2 full collections
#: (230 ms of CPU, every thread stopped meanwhile), twice the context switches and
#: 1.6 times the CPU per session; with this threshold, one collection. Sessions
#: leave no reference cycles (1,000 of them with the collector off: nothing to
#: collect afterwards), so nothing piles up in between.
GC_THRESHOLD = 100000
#: How many malloc arenas glibc may keep, set by main() (mallopt M_ARENA_MAX).
#: glibc gives threads up to 8 arenas per core, and what a session frees (its
#: receive buffers when it goes idle) stays in its arena as holes between the
#: blocks of later sessions: 13 kB of such holes per idle session, measured. The
#: GIL serialises nearly every malloc of the process anyway, so one arena costs no
#: lock waits and keeps the holes where the next session reuses them.
MALLOC_ARENAS = 1
#: mallopt's parameter number for it (glibc's malloc.h).
_M_ARENA_MAX = -8
#: Receive buffers sessions gave back that make main()'s process call
#: malloc_trim(): what sessions free between live blocks (buffers, requests)
#: stays in the process until then (up to 5 kB an idle session, measured).
MALLOC_TRIM_AFTER = 256
#: Fewest seconds between two malloc_trim() calls (each takes the malloc lock
#: for about a millisecond per 100 MB of heap).
MALLOC_TRIM_INTERVAL = 10.0
#: Most buffers one sendmsg takes (IOV_MAX; beyond it Linux fails with EMSGSIZE).
#: A read full of tiny frames yields more pieces than that: they are joined.
SENDMSG_MAX_BUFFERS = 1024
#: Listen backlog; the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024
#: Seconds the accepting thread waits when accept() fails for want of descriptors
#: (EMFILE, ENFILE): the connection stays in the backlog until a session ends,
#: and retrying at once would only spin at full CPU.
ACCEPT_PAUSE = 0.1
#: Seconds accept() must keep working for a shortage of descriptors to be over:
#: a backlog of connections that clients already closed is accepted faster than
#: their threads give the descriptors back, and the shortage comes and goes; it
#: is logged once, not once per return.
STARVED_EPISODE_GAP = 1.0
#: Descriptors a relayed session holds: the client and the target.
FDS_PER_SESSION = 2
#: A soft RLIMIT_NOFILE below this after start-up (the hard limit forbids more) is
#: logged: it allows fewer than about 2,000 sessions at once.
NOFILE_LOW = 4096
#: Seconds between two looks at the certificate files for a renewal (one
#: os.stat per file, made by the next TLS handshake after that time).
TLS_RELOAD_INTERVAL = 1.0
#: First byte of a TLS client: a handshake record (0x16, RFC 8446 §5.1) or an
#: SSLv2-compatible ClientHello (0x80).
TLS_FIRST_BYTES = (b'\x16', b'\x80')
#: --ssl-version values: the lowest protocol version accepted from clients.
#: 'default' keeps what ssl.create_default_context chose (TLS 1.2 on current
#: Pythons); OpenSSL 3 refuses TLS 1.1 at its default security level anyway.
TLS_MIN_VERSIONS = {'default': None, 'tlsv1_1': 'TLSv1_1', 'tlsv1_2': 'TLSv1_2',
                    'tlsv1_3': 'TLSv1_3'}
#: Protocol versions oldest first: where SSLContext.minimum_version is missing
#: (Python 3.6), the ones below the minimum are switched off with OP_NO_*.
TLS_VERSION_ORDER = ('TLSv1', 'TLSv1_1', 'TLSv1_2', 'TLSv1_3')
#: Longest sleep of the main thread: the kernel may hand SIGTERM to another thread
#: (measured: often one in fork or waitpid, as the wrapped-program watcher is), and
#: Python runs the handler only once the main thread wakes up.
MAIN_WAKE_INTERVAL = 0.5
#: Seconds a session waits for a wrapped program to accept: it may be starting,
#: restarting or still binding; telnetd-style programs restart after every session.
WRAP_CONNECT_WAIT = 15.0
#: Seconds between connection attempts while a wrapped program's port refuses.
WRAP_RETRY = 0.05
#: A respawned program that exits within this many seconds of starting, without
#: having accepted a session, failed to start (see ProgramWrapper).
RESPAWN_QUICK_EXIT = 3.0
#: Failed starts in a row restarted at once before the back-off begins: one
#: failure may be bad luck (the old run still held a resource), two are a pattern.
RESPAWN_IMMEDIATE_RETRIES = 1
#: First and longest delay before restarting a program that keeps failing to start.
RESPAWN_FIRST_DELAY = 0.5
RESPAWN_MAX_DELAY = 30.0
#: Seconds a wrapped program's process group has between SIGTERM and SIGKILL.
WRAP_KILL_GRACE = 3.0
#: Seconds allowed to compile rebind.so on the fly.
REBIND_BUILD_TIMEOUT = 60.0
#: Seconds the foreground process of -D waits for the daemon to report that it serves.
DAEMON_READY_TIMEOUT = 30.0
#: Most --workers processes: more than cores only adds contention.
MAX_WORKERS = 64
#: A worker that dies sooner than this after starting is restarted after a
#: back-off from WORKER_FIRST_DELAY that doubles each time, up to WORKER_BACKOFF_MAX
#: seconds (also the wait after a failed fork).
WORKER_MIN_LIFE = 5.0
WORKER_FIRST_DELAY = 0.5
WORKER_BACKOFF_MAX = 30.0
#: Retry-After (seconds) of the answers to connections beyond --max-connections
#: and --max-connections-per-ip.
LIMIT_RETRY_AFTER = 1
#: Buckets of the per-address and per-token counts (Tally): addresses or tokens
#: that share a bucket share a count, which can only make a limit stricter.
TALLY_BUCKETS = 4096
#: Who may read --metrics-path without --metrics-allow: loopback clients.
METRICS_ALLOW_DEFAULT = ('127.0.0.0/8', '::1/128')
#: Seconds a worker relaying more sessions than the least busy one waits before
#: accepting, so that the kernel's wake-up of every worker favours the idle one.
ACCEPT_YIELD = 0.002
#: Seconds a token lookup over the network (Redis, a token API) may take in all;
#: the client is answered 502 after that.
TOKEN_LOOKUP_TIMEOUT = 5.0
#: Largest answer read from Redis or a token API: a target is a few dozen bytes.
TOKEN_ANSWER_MAX = 65536
#: Client payloads up to this size are moved next to each other in the receive
#: buffer and relayed as one piece: a read full of tiny frames then costs a few
#: objects instead of one per frame (bounded memory whatever the frame size).
COALESCE_MAX = 512
#: Most control frames decoded per call; the session answers them, then asks for
#: more: a read full of pings costs a bounded number of objects at a time.
DECODE_EVENTS = 64
#: Fairness between sessions (Pump): a client read of at least FAIR_READ bytes
#: is decoded under one process-wide lock, FAIR_SLICE bytes at a time, so only
#: one session at a time does bulk work (1-byte frames decode at ~1 us each).
FAIR_READ = 16384
FAIR_SLICE = 8192
#: Bulk decoding that has run FAIR_BURST seconds pauses FAIR_PAUSE seconds when
#: another session woke within FAIR_WINDOW seconds. A thread waiting for the
#: interpreter lock otherwise waits a whole switch interval (5 ms) after each of
#: its system calls while a busy thread holds it: measured with 6 sessions
#: flooding 1-byte frames, a 64-byte echo took 61 ms (p50) and 230 ms (p99)
#: without this and about 1 ms and 5 ms with it. Alone, a session never pauses.
FAIR_BURST = 0.001
FAIR_PAUSE = 0.0002
FAIR_WINDOW = 0.5
#: WebSocket versions we speak (RFC 6455 §4.4).
HYBI_VERSIONS = ('13', '8', '7')
#: Longest Hixie frame accepted, in base64 characters (3 MiB of data). A Hixie
#: frame has no length header, only 0xFF ends it; payload is streamed, so memory
#: does not depend on this, but a client that never ends its frame is cut off.
#: websock.js sends one frame per send() call, far below this.
HIXIE_MAX_FRAME = 1 << 22

#: Received close codes that are valid on the wire (RFC 6455 §7.4).
VALID_CLOSE_CODES = frozenset(itertools.chain(
    (1000, 1001, 1002, 1003), range(1007, 1015), range(3000, 5000)))


class HTTPError(Exception):
    """A request refused before the upgrade: an HTTP status and a one-line reason."""

    def __init__(self, status, reason, headers=(), log_reason=None, detail=None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)
        #: Logged after the reason but never sent: what the client must not see
        #: (which back end failed) or need not be told back (its own token).
        self.detail = detail
        #: What the log says when it should say more than the client is told.
        self.log_reason = log_reason or reason


class ProtocolError(Exception):
    """A WebSocket session ended by us: the close code and reason to send."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class UsageError(Exception):
    """A command line that cannot work; main() prints it and exits with
    exit_status: 2, or 1 for a setup problem that is not the command line's (no
    rebind.so)."""

    def __init__(self, message, exit_status=2):
        super().__init__(message)
        self.exit_status = exit_status


def format_address(host, port):
    """host:port, with IPv6 hosts in brackets and IPv4-mapped ones unwrapped."""
    if host and host.startswith('::ffff:') and '.' in host:
        host = host[7:]
    if host and ':' in host:
        return '[%s]:%s' % (host, port)
    return '%s:%s' % (host, port)


def _printable(text, limit=200):
    """A client-supplied string made safe for one log line."""
    text = text[:limit]
    return text if text.isprintable() else text.encode('unicode_escape').decode('ascii')


#: Longest string argument of a log line, client-supplied or not: a request line
#: or a token file entry is shorter; more would let one client flood the log.
LOG_ARGUMENT_MAX = 2000


class _EscapingFilter(logging.Filter):
    """The one sanitiser of log lines (and so of syslog): every string or exception
    argument of a record of the websockify logger, and the message of a record
    without arguments, goes through _printable. Client text (path, headers, token,
    subprotocol, close reason, user names) then never reaches a log raw, whichever
    code path logs it."""

    def filter(self, record):
        if isinstance(record.args, tuple):
            # Most lines need nothing: look before building a new tuple.
            for arg in record.args:
                if (isinstance(arg, BaseException) or isinstance(arg, str)
                        and (len(arg) > LOG_ARGUMENT_MAX or not arg.isprintable())):
                    break
            else:
                return True
            record.args = tuple(
                _printable(str(arg), LOG_ARGUMENT_MAX)
                if isinstance(arg, (str, BaseException)) else arg for arg in record.args)
        elif not record.args and isinstance(record.msg, str):
            record.msg = _printable(record.msg, None)
        return True


logger.addFilter(_EscapingFilter())


#: The control characters of RFC 5234 (CTL): C0 and DEL. HTTP forbids them in
#: field values (RFC 9110 §5.5), and a host name or a header we send must not hold one.
_CONTROL_CHARACTERS = re.compile(r'[\x00-\x1f\x7f]')
#: The same but tab, CR and LF: what may not appear anywhere in a request head.
_CONTROL_CHARACTERS_IN_HEAD = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def has_control_characters(text, allow_line_ends=False):
    """True if text holds a control character (U+0000-U+001F or U+007F): the one
    check of client, plugin and token-file text before we use or send it. With
    allow_line_ends, tab, CR and LF pass (a whole request head)."""
    pattern = _CONTROL_CHARACTERS_IN_HEAD if allow_line_ends else _CONTROL_CHARACTERS
    return pattern.search(text) is not None


class WrapError(Exception):
    """The wrapped program cannot be run (no rebind.so, no such program); main() exits 1."""


class AuthenticationError(Exception):
    """Raised by an auth plugin to refuse a request: upstream websockify's interface.

    code is the HTTP status, headers a dict of headers for the answer (such as
    WWW-Authenticate), msg its one-line reason; the log says log_msg (default msg)."""

    def __init__(self, log_msg=None, response_code=403, response_headers=None,
                 response_msg=None):
        super().__init__(log_msg if log_msg is not None else response_msg)
        self.code = response_code
        self.headers = dict(response_headers or {})
        self.msg = response_msg


################################################################################
# Protocol (Sans-I/O): requests, handshakes, frames, the session
################################################################################
#
# Nothing here touches a socket, a logger or the settings: bytes in, results out.
# It owns every WebSocket rule; it calls only section 1. In file order:
#
#   parse_request()   a request head -> Request, or HTTPError 400/414/431
#   accept()          a Request -> Acceptance (reply bytes, Session, key3 bytes
#                     still needed), a refusal (400/405/426), or None (--web's)
#   HybiCodec, HybiBase64Codec, HixieCodec
#                     framing: client bytes -> payload + events, target bytes ->
#                     frames; Base64Stream for base64 cut anywhere
#   Session           one connection after the upgrade: closing handshake, close
#                     codes, ping/pong, heartbeat pings, closing deadline
#
# The client-to-target direction is a stream decoder. `HybiCodec.decode` takes
# the pump's receive buffer, unmasks payload *in place* and appends memoryviews
# of the unmasked bytes to a list that the pump hands to the kernel at once, so a
# payload is never copied in Python. Payload is forwarded as it arrives: a frame
# may span any number of reads and a read may hold any number of frames. What
# cannot be used yet (a partial header, an incomplete control frame) is left
# unconsumed; the pump moves it to the front of the buffer for the next read.
#
# The target-to-client direction is `encode`: a frame header plus the view of the
# target's bytes, handed to the kernel together (sendmsg) without joining them.

_STATUS_TEXT = {
    101: 'Switching Protocols', 200: 'OK', 301: 'Moved Permanently', 304: 'Not Modified',
    400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
    405: 'Method Not Allowed', 408: 'Request Timeout', 414: 'URI Too Long',
    426: 'Upgrade Required', 431: 'Request Header Fields Too Large',
    500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable',
}

#: Our Server header.
SERVER_NAME = 'websockify.py/' + __version__

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_VERSION = re.compile(r'HTTP/(\d)\.(\d)\Z')
_WS_GUID = b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11'


class Request:
    """A parsed HTTP request head: method, target, version and headers."""

    __slots__ = ('method', 'target', 'version', 'headers')

    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        #: (major, minor) as integers.
        self.version = version
        #: Lower-case name -> list of values, in the order received.
        self.headers = headers

    def header(self, name, default=None):
        """The value of a header; repeated lines are joined with ', ' (RFC 9110 §5.3)."""
        values = self.headers.get(name)
        return ', '.join(values) if values else default

    def tokens(self, name):
        """The comma-separated, lower-cased tokens of a header over all its lines."""
        return [t.strip().lower() for v in self.headers.get(name, ())
                for t in v.split(',') if t.strip()]

    @property
    def path(self):
        return self.target


def find_header_end(data, start=0):
    """Index just past the blank line ending a request head, or -1 if not there yet.

    RFC 9112 §2.2: a line ends at LF, a CR before it dropped, so the blank line
    is the first LF followed by LF or by CR LF (CRLF CRLF is one case of it)."""
    i = data.find(b'\n\r\n', start)
    j = data.find(b'\n\n', start)
    if i < 0:
        return j + 2 if j >= 0 else -1
    if j < 0 or i < j:
        return i + 3
    return j + 2


def check_head_size(data):
    """Raise 414/431 when a request head still being received is already too big."""
    eol = data.find(b'\n')
    if eol < 0:
        line = len(data) - data.endswith(b'\r')
    else:
        line = eol - (eol > 0 and data[eol - 1] == 0x0D)     # its CR is no part of it
    if line > MAX_REQUEST_LINE:
        raise HTTPError(414, 'request line longer than %d bytes' % MAX_REQUEST_LINE)
    if eol >= 0 and len(data) - eol - 1 > MAX_HEADER_BYTES:
        raise HTTPError(431, 'request headers larger than %d bytes' % MAX_HEADER_BYTES)


def parse_request(head):
    """Parse a complete request head (bytes up to and including the blank line)."""
    check_head_size(head)
    text = head.decode('latin-1')
    lines = text.split('\n')
    lines = [line[:-1] if line.endswith('\r') else line for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HTTPError(400, 'empty request')
    parts = lines[0].split(' ')
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise HTTPError(400, 'malformed request line')
    if has_control_characters(parts[1]):
        raise HTTPError(400, 'control characters in the request target')
    version = _VERSION.match(parts[2])
    if not version:
        raise HTTPError(400, 'malformed HTTP version')
    if len(lines) - 1 > MAX_HEADERS:
        raise HTTPError(431, 'more than %d header lines' % MAX_HEADERS)
    # RFC 9112 §5.2: obs-fold (a line that starts with a space or tab) is refused,
    # never joined. RFC 9110 §5.5: a value holds visible characters, spaces and
    # tabs. One look at the whole head; the lines are searched only to say which.
    if '\n ' in text or '\n\t' in text:
        raise HTTPError(400, 'folded header line (obs-fold)')
    controls = (has_control_characters(text, allow_line_ends=True)
                or text.count('\r') != text.count('\r\n'))
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(':')
        if not colon or not _TOKEN.match(name):
            raise HTTPError(400, 'malformed header line')
        if controls and has_control_characters(value.replace('\t', ' ')):
            raise HTTPError(400, 'control characters in the %s header' % name)
        headers.setdefault(name.lower(), []).append(value.strip(' \t'))
    if len(headers.get('host', ())) > 1:
        raise HTTPError(400, 'more than one Host header')     # RFC 9112 §3.2
    return Request(parts[0], parts[1], (int(version.group(1)), int(version.group(2))),
                   headers)


def accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 step 5.4)."""
    digest = hashlib.sha1(key.encode('ascii') + _WS_GUID).digest()
    return base64.b64encode(digest).decode('ascii')


def is_upgrade(request):
    """True when a request asks for a WebSocket (Upgrade: websocket, any case)."""
    return 'websocket' in request.tokens('upgrade')


def _check_upgrade(request):
    """What every WebSocket handshake needs (RFC 6455 §4.1, draft-76 §4.1): GET,
    HTTP/1.1, a Host, and Connection: Upgrade; raises HTTPError."""
    if request.method != 'GET':
        raise HTTPError(405, 'a WebSocket handshake must use GET', [('Allow', 'GET')])
    if request.version < (1, 1):
        raise HTTPError(400, 'a WebSocket handshake needs HTTP/1.1')
    if not request.header('host'):
        raise HTTPError(400, 'missing Host header')
    if 'upgrade' not in request.tokens('connection'):
        raise HTTPError(400, 'Connection header lacks the "upgrade" token')


def check_hybi_request(request):
    """Validate a HyBi upgrade request (RFC 6455 §4.2.1); return its key or raise HTTPError."""
    _check_upgrade(request)
    version = request.header('sec-websocket-version')
    if version not in HYBI_VERSIONS:
        raise HTTPError(426, 'unsupported WebSocket version %r' % (version,),
                        [('Sec-WebSocket-Version', ', '.join(HYBI_VERSIONS))])
    key = request.header('sec-websocket-key')
    if key is None:
        raise HTTPError(400, 'missing Sec-WebSocket-Key')
    try:
        raw = base64.b64decode(key.encode('ascii'), validate=True)
    except (ValueError, UnicodeEncodeError):
        raw = b''
    if len(raw) != 16:
        raise HTTPError(400, 'Sec-WebSocket-Key is not 16 bytes in base64')
    return key


def choose_subprotocol(offered):
    """Pick from the client's list: binary, then base64, else the first offered, else None."""
    for preferred in ('binary', 'base64'):
        if preferred in offered:
            return preferred
    return offered[0] if offered else None


def offered_subprotocols(request):
    """Sec-WebSocket-Protocol values in order, over all header lines (case kept);
    400 unless each is a token (RFC 6455 §4.1 item 10), since one is echoed."""
    offered = [t.strip() for v in request.headers.get('sec-websocket-protocol', ())
               for t in v.split(',') if t.strip()]
    for value in offered:
        if not _TOKEN.match(value):
            raise HTTPError(400, 'Sec-WebSocket-Protocol offers %r, which is not a token'
                            % value[:40])
    return offered


def response_head(status, headers=(), reason=None):
    """Status line and header lines of an HTTP/1.1 response, up to the blank line:
    the one builder of every answer (refusals, --web files, the 101s)."""
    if reason is None:
        reason = _STATUS_TEXT.get(status) or http.client.responses.get(status, 'Error')
    lines = ['HTTP/1.1 %d %s' % (status, reason)]
    lines.extend('%s: %s' % h for h in headers)
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


def hybi_response(key, protocol):
    """The 101 reply accepting a HyBi handshake (RFC 6455 §4.2.2 step 5)."""
    headers = [('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
               ('Sec-WebSocket-Accept', accept_key(key))]
    if protocol is not None:
        headers.append(('Sec-WebSocket-Protocol', protocol))
    return response_head(101, headers)


def handshake_kind(request):
    """Which handshake an upgrade request uses: 'hybi', 'hixie-76' or 'hixie-75'.

    Sec-WebSocket-Key (or -Version) means HyBi; Sec-WebSocket-Key1 and -Key2 mean
    draft-76; otherwise Connection: Upgrade means draft-75. Anything else is
    checked as HyBi, which answers 400 or 426."""
    if request.header('sec-websocket-key') is not None:
        return 'hybi'
    key1 = request.header('sec-websocket-key1')
    key2 = request.header('sec-websocket-key2')
    if key1 is not None and key2 is not None:
        return 'hixie-76'
    if key1 is not None or key2 is not None:
        # Deliberately stricter than "else draft-75": a half draft-76 request is broken.
        raise HTTPError(400, 'draft-76 handshake needs both Sec-WebSocket-Key1 and -Key2')
    if request.header('sec-websocket-version') is not None:
        return 'hybi'
    if 'upgrade' in request.tokens('connection'):
        return 'hixie-75'
    return 'hybi'


def _echoable(value, what):
    """A client value we repeat in our reply: refuse control characters (no injection)."""
    if has_control_characters(value):
        raise HTTPError(400, '%s contains control characters' % what)
    return value


def check_hixie_request(request):
    """Validate a draft-75/76 upgrade request (draft-76 §5.1); raise HTTPError."""
    _check_upgrade(request)
    _echoable(request.header('host'), 'Host')
    _echoable(request.target, 'request path')
    for name in ('origin', 'sec-websocket-protocol', 'websocket-protocol'):
        value = request.header(name)
        if value is not None:
            _echoable(value, name)


def hixie76_key_number(key, name='key'):
    """The 32-bit number a draft-76 key encodes (draft-76 §5.2); 400 if invalid.

    Its digits read as a decimal number, divided by its number of spaces."""
    digits = ''.join(c for c in key if '0' <= c <= '9')
    spaces = key.count(' ')
    if not digits:
        raise HTTPError(400, '%s has no digits' % name)
    if len(digits) > 20:               # a valid key has at most 11 (2**32 * 12)
        raise HTTPError(400, '%s has too many digits' % name)
    if not spaces:
        raise HTTPError(400, '%s has no spaces' % name)
    number, rest = divmod(int(digits), spaces)
    if rest:
        raise HTTPError(400, '%s is not a multiple of its %d spaces' % (name, spaces))
    if number > 0xFFFFFFFF:
        raise HTTPError(400, '%s does not fit in 32 bits' % name)
    return number


def hixie76_answer(key1, key2, key3):
    """The 16-byte draft-76 challenge response: MD5 of both numbers (big-endian, 32 bits)
    and the 8 bytes of key3 (draft-76 §5.2)."""
    challenge = struct.pack('!II', hixie76_key_number(key1, 'Sec-WebSocket-Key1'),
                            hixie76_key_number(key2, 'Sec-WebSocket-Key2')) + bytes(key3)
    return hashlib.md5(challenge).digest()


#: Status text and first headers of every Hixie reply: draft-75 clients compare
#: the first 85 bytes literally; draft-76 clients require exactly "WebSocket" and
#: "Upgrade" in the two header lines.
HIXIE_REASON = 'Web Socket Protocol Handshake'
HIXIE_HEADERS = (('Upgrade', 'WebSocket'), ('Connection', 'Upgrade'))


def hixie_response(kind, request, secure, answer=b''):
    """The reply accepting a draft-75 or draft-76 handshake (answer: the 16-byte response).

    Origin and protocol are echoed as sent; the location is ws:// or wss:// by the
    connection, with the requested Host and path."""
    location = '%s://%s%s' % ('wss' if secure else 'ws', request.header('host'),
                              request.target)
    origin = request.header('origin')
    if kind == 'hixie-76':
        prefix, protocol = 'Sec-WebSocket-', request.header('sec-websocket-protocol')
    else:
        prefix, protocol = 'WebSocket-', request.header('websocket-protocol')
    headers = list(HIXIE_HEADERS)
    if origin is not None:
        headers.append((prefix + 'Origin', origin))
    headers.append((prefix + 'Location', location))
    if protocol is not None:
        headers.append((prefix + 'Protocol', protocol))
    return response_head(101, headers, HIXIE_REASON) + answer


#: What a Flash player sends first to ask for the socket policy, and our answer:
#: every domain may connect to every port (Adobe's policy file format; the reply
#: ends with a NUL byte as the Flash player requires).
FLASH_POLICY_REQUEST = b'<policy-file-request/>\x00'
FLASH_POLICY = (b'<?xml version="1.0"?>\n'
                b'<!DOCTYPE cross-domain-policy SYSTEM '
                b'"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">\n'
                b'<cross-domain-policy>\n'
                b'<allow-access-from domain="*" to-ports="*" />\n'
                b'</cross-domain-policy>\n\x00')


def http_response(status, body='', headers=(), content_type='text/plain; charset=utf-8'):
    """A complete HTTP/1.1 response that closes the connection."""
    payload = body.encode('utf-8') if isinstance(body, str) else body
    headers = list(headers)
    headers.extend((('Content-Type', content_type), ('Content-Length', str(len(payload))),
                    ('Connection', 'close'), ('Server', SERVER_NAME)))
    return response_head(status, headers) + payload


# RFC 6455 §5.2 opcodes.
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

_pack_short = struct.Struct('!BBH').pack
_pack_long = struct.Struct('!BBQ').pack
_unpack_short = struct.Struct('!H').unpack_from
_unpack_long = struct.Struct('!Q').unpack_from

#: _XOR[k] maps every byte b to b ^ k, for unmasking with bytes.translate.
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]


def frame_header(opcode, length, fin=True):
    """Header of an unmasked server frame (RFC 6455 §5.2)."""
    b0 = opcode | 0x80 if fin else opcode
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return _pack_short(b0, 126, length)
    return _pack_long(b0, 127, length)


def close_payload(code, reason=''):
    """Body of a close frame: the code and a reason cut to fit 125 bytes."""
    if code is None:
        return b''
    data = reason.encode('utf-8')[:123]
    return struct.pack('!H', code) + data.decode('utf-8', 'ignore').encode('utf-8')


def unmask_inplace(buf, start, end, mask):
    """XOR buf[start:end] (a bytearray) with the 4-byte mask, starting at mask[0].

    Four strided slices, each mapped through a 256-byte table: the fastest
    stdlib method measured (see `make bench` and README, Performance). The one
    unmasking routine: payloads, control frames and unmask() use it."""
    if end - start < 16:
        for i in range(start, end):
            buf[i] ^= mask[(i - start) & 3]
        return
    xor = _XOR
    buf[start:end:4] = buf[start:end:4].translate(xor[mask[0]])
    buf[start + 1:end:4] = buf[start + 1:end:4].translate(xor[mask[1]])
    buf[start + 2:end:4] = buf[start + 2:end:4].translate(xor[mask[2]])
    buf[start + 3:end:4] = buf[start + 3:end:4].translate(xor[mask[3]])


def unmask(data, mask):
    """Return data XOR the repeated 4-byte mask (RFC 6455 §5.3)."""
    buf = bytearray(data)
    unmask_inplace(buf, 0, len(buf), mask)
    return bytes(buf)


class _Event:
    """A control frame the client sent, as the codec reports it to the session."""

    __slots__ = ()

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self):
        return '%s(%s)' % (type(self).__name__,
                           ', '.join(repr(getattr(self, name)) for name in self.__slots__))


class PingReceived(_Event):
    """A ping (RFC 6455 §5.5.2): the session answers it with a pong."""

    __slots__ = ('payload',)

    def __init__(self, payload):
        self.payload = payload


class PongReceived(_Event):
    """A pong (RFC 6455 §5.5.3): an answer to a heartbeat ping, or unsolicited."""

    __slots__ = ('payload',)

    def __init__(self, payload):
        self.payload = payload


class CloseReceived(_Event):
    """A close frame (RFC 6455 §5.5.1) with its code (1005: none) and reason."""

    __slots__ = ('code', 'reason')

    def __init__(self, code, reason):
        self.code = code
        self.reason = reason


def _parse_close(payload):
    """Code and reason of a received close frame (RFC 6455 §5.5.1, §7.4)."""
    if not payload:
        return 1005, ''
    if len(payload) == 1:
        raise ProtocolError(1002, 'close frame with a 1-byte payload')
    code = _unpack_short(payload)[0]
    if code not in VALID_CLOSE_CODES:
        raise ProtocolError(1002, 'invalid close code %d' % code)
    try:
        reason = bytes(payload[2:]).decode('utf-8')
    except UnicodeDecodeError:
        raise ProtocolError(1007, 'close reason is not UTF-8') from None
    return code, reason


def utf8_complete_length(data):
    """Length of the longest prefix of data that does not end inside a UTF-8 character."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b < 0x80:
            return n
        if b >= 0xF5 or b in (0xC0, 0xC1):
            return n                      # starts no character: let the decoder refuse it
        if b >= 0xC0:                     # lead byte: how long is its character?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n if back >= need else n - back
    return n


class HybiCodec:
    """RFC 6455 framing for one session: decodes client frames, encodes target data.

    Target data goes out as binary frames, or text frames with text_frames=True
    (then a UTF-8 character split between two reads is held back until whole,
    and invalid UTF-8 from the target raises ProtocolError 1011)."""

    family = 'hybi'
    __slots__ = ('mode', '_remaining', '_mask', '_message', '_fin', '_utf8', '_out_opcode',
                 '_held', '_out_utf8')

    def __init__(self, text_frames=False):
        self.mode = 'text' if text_frames else 'binary'
        #: Payload bytes left in the data frame being received.
        self._remaining = 0
        #: Its mask, rotated so that mask[0] applies to the next payload byte.
        self._mask = b''
        #: Opcode of the data message in progress (text/binary) or None.
        self._message = None
        #: FIN bit of the data frame being received.
        self._fin = True
        #: Incremental UTF-8 check of a text message in progress.
        self._utf8 = None
        self._out_opcode = OP_TEXT if text_frames else OP_BINARY
        self._held = b''          # incomplete UTF-8 tail (text_frames only)
        self._out_utf8 = codecs.getincrementaldecoder('utf-8')() if text_frames else None

    # -- client -> target ------------------------------------------------------

    def decode(self, buf, pos, end, out, events):
        """Consume frames from buf[pos:end] (a bytearray, unmasked in place).

        Appends payload views to out and PingReceived / PongReceived /
        CloseReceived to events; returns the position of the first byte not
        consumed. Stops after a close frame or DECODE_EVENTS events. Raises
        ProtocolError (what was decoded before the error is in out).

        Steps per frame: the header (RFC 6455 §5.2: flags, opcode, mask bit),
        its length (7, 16 or 64 bits), then a control frame whole (_control) or
        the start of a data frame whose payload _payload forwards as it comes.
        Payloads of at most COALESCE_MAX bytes are moved together in buf, so that
        a read full of tiny frames yields a few pieces, not one per frame."""
        view = memoryview(buf)
        run_start = run_end = -1          # buf[run_start:run_end]: small payloads joined
        try:
            while pos < end:
                if self._remaining:
                    first = pos
                    pos = self._payload(buf, view, pos, end)
                else:
                    if end - pos < 2:
                        break
                    b0 = buf[pos]
                    b1 = buf[pos + 1]
                    if b0 & 0x70:
                        raise ProtocolError(1002, 'reserved bits set without an extension')
                    if not b1 & 0x80:
                        raise ProtocolError(1002, 'client frame is not masked')
                    length = b1 & 0x7F
                    if length < 126:
                        first = pos + 6
                        if first > end:
                            break
                    elif length == 126:
                        first = pos + 8
                        if first > end:
                            break
                        length = _unpack_short(buf, pos + 2)[0]
                    else:
                        first = pos + 14
                        if first > end:
                            break
                        length = _unpack_long(buf, pos + 2)[0]
                        if length >> 63:
                            raise ProtocolError(1002, 'frame length has its top bit set')
                    opcode = b0 & 0x0F
                    stop = first + length
                    if opcode == OP_BINARY and b0 & 0x80 and stop <= end and self._message is None:
                        # The common case, kept short: a whole unfragmented binary message.
                        unmask_inplace(buf, first, stop, buf[first - 4:first])
                        pos = stop
                    elif opcode in _CONTROL_OPCODES:
                        if not b0 & 0x80:
                            raise ProtocolError(1002, 'fragmented control frame')
                        if length > 125:
                            raise ProtocolError(1002, 'control frame longer than 125 bytes')
                        if stop > end:
                            break
                        events.append(self._control(opcode, buf, first, length))
                        pos = stop
                        if opcode == OP_CLOSE or len(events) >= DECODE_EVENTS:
                            break
                        continue
                    else:
                        self._start_data(opcode, b0 & 0x80, buf[first - 4:first], length)
                        pos = first
                        continue
                # Forward buf[first:pos], joined to the run when it is small.
                n = pos - first
                if n > COALESCE_MAX:
                    if run_end > run_start:
                        out.append(view[run_start:run_end])
                    run_start = run_end = -1
                    out.append(view[first:pos])
                elif run_end < 0:
                    run_start, run_end = first, pos
                else:
                    buf[run_end:run_end + n] = buf[first:pos]
                    run_end += n
        finally:
            if run_end > run_start:
                out.append(view[run_start:run_end])
        return pos

    def _payload(self, buf, view, pos, end):
        """Unmask and check what buf[pos:end] holds of the current data frame;
        returns the position after it."""
        n = min(self._remaining, end - pos)
        mask = self._mask
        unmask_inplace(buf, pos, pos + n, mask)
        self._remaining -= n
        if n & 3:
            self._mask = mask[n & 3:] + mask[:n & 3]
        done = not self._remaining and self._fin
        if self._utf8 is not None:
            self._check_text(view[pos:pos + n], done)
        if done:
            self._message = None
        return pos + n

    def _start_data(self, opcode, fin, mask, length):
        """A data frame header (RFC 6455 §5.4: fragments continue one message)."""
        if opcode == OP_CONT:
            if self._message is None:
                raise ProtocolError(1002, 'continuation frame without a message')
        elif opcode == OP_BINARY or opcode == OP_TEXT:
            if self._message is not None:
                raise ProtocolError(1002, 'new message inside a fragmented message')
            self._message = opcode
            self._utf8 = (codecs.getincrementaldecoder('utf-8')()
                          if opcode == OP_TEXT else None)
        else:
            raise ProtocolError(1002, 'unknown opcode %d' % opcode)
        self._mask = mask
        self._remaining = length
        self._fin = bool(fin)
        if not length and fin:
            if self._utf8 is not None:
                self._check_text(b'', True)
            self._message = None

    @staticmethod
    def _control(opcode, buf, start, length):
        """The event of a whole control frame whose payload is buf[start:start+length]."""
        payload = buf[start:start + length]
        unmask_inplace(payload, 0, length, buf[start - 4:start])
        if opcode == OP_PING:
            return PingReceived(bytes(payload))
        if opcode == OP_PONG:
            return PongReceived(bytes(payload))
        return CloseReceived(*_parse_close(payload))

    def _check_text(self, piece, final):
        try:
            self._utf8.decode(piece, final)
        except UnicodeDecodeError:
            raise ProtocolError(1007, 'invalid UTF-8 in a text message') from None
        if final:
            self._utf8 = None

    # -- target -> client ------------------------------------------------------

    def encode(self, data):
        """Buffers to send for target bytes (a memoryview): [header, payload...]."""
        if self._out_utf8 is not None:
            return self._encode_text(data)
        return [frame_header(OP_BINARY, len(data)), data]

    def _encode_text(self, data):
        if self._held:
            data = memoryview(self._held + bytes(data))
        cut = utf8_complete_length(data)
        try:
            self._out_utf8.decode(data[:cut])
        except UnicodeDecodeError:
            raise ProtocolError(1011, 'target sent invalid UTF-8 for a text frame') from None
        self._held = bytes(data[cut:])
        if not cut:
            return []
        return [frame_header(OP_TEXT, cut), data[:cut]]

    def control(self, opcode, payload=b''):
        """A complete control frame (ping, pong, close)."""
        return frame_header(opcode, len(payload)) + payload

    def close_frame(self, code, reason=''):
        return self.control(OP_CLOSE, close_payload(code, reason))


_B64_ALPHABET = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'


class Base64Error(ValueError):
    """Invalid base64; `decoded` holds what the whole groups before it decode to."""

    def __init__(self, decoded):
        super().__init__('invalid base64')
        self.decoded = decoded


class Base64Stream:
    """Decodes base64 that arrives cut anywhere (RFC 4648 §4).

    Whole 4-character groups are decoded at once; up to 3 characters wait for the
    next piece. A padded group may be followed by more groups, so messages that are
    each padded decode back to back."""

    __slots__ = ('_carry',)

    def __init__(self):
        self._carry = b''

    def feed(self, piece):
        """The bytes decoded from piece (bytes-like); raises Base64Error if invalid,
        carrying what the groups before the bad one decode to."""
        data = self._carry + bytes(piece) if self._carry else bytes(piece)
        whole = len(data) & ~3
        self._carry = data[whole:]
        parts = []
        start = 0
        while start < whole:
            eq = data.find(b'=', start, whole)
            stop = whole if eq < 0 else (eq | 3) + 1    # end of the padded group
            group = data if start == 0 and stop == len(data) else data[start:stop]
            extra = group.translate(None, _B64_ALPHABET)
            if extra and (extra not in (b'=', b'==') or not group.endswith(extra)):
                bad = min(group.find(bytes((c,))) for c in set(extra))
                good = group[:bad & ~3]
                parts.append(binascii.a2b_base64(good) if good else b'')
                raise Base64Error(b''.join(parts))
            parts.append(binascii.a2b_base64(group))
            start = stop
        return parts[0] if len(parts) == 1 else b''.join(parts)


class HybiBase64Codec(HybiCodec):
    """The HyBi "base64" subprotocol: relayed bytes travel as base64 text both ways.

    Client data frames form one base64 stream (groups may straddle frames and
    reads); each read from the target becomes one text frame of padded base64,
    decodable on its own (websock.js decodes each message by itself)."""

    __slots__ = ('_b64',)

    def __init__(self):
        super().__init__()
        self.mode = 'base64'
        self._b64 = Base64Stream()

    def decode(self, buf, pos, end, out, events):
        pieces = []
        try:
            pos = super().decode(buf, pos, end, pieces, events)
        except ProtocolError:
            self._decode_pieces(pieces, out)      # what came before the error still goes
            raise
        self._decode_pieces(pieces, out)
        return pos

    def _decode_pieces(self, pieces, out):
        for piece in pieces:
            try:
                data = self._b64.feed(piece)
            except Base64Error as exc:
                if exc.decoded:
                    out.append(exc.decoded)
                raise ProtocolError(1007, 'invalid base64 in a message') from None
            if data:
                out.append(data)

    def encode(self, data):
        text = binascii.b2a_base64(data, newline=False)
        return [frame_header(OP_TEXT, len(text)), text]


class HixieCodec:
    """Draft-75/76 framing (draft-76 §4.2, §5.3): 0x00, base64 text, 0xFF, both ways.

    Client frames are streamed through Base64Stream like HybiBase64Codec; each read
    from the target goes out as one frame of padded base64. The drafts have no ping
    or pong, so control() returns nothing. The closing handshake is 0xFF 0x00
    (draft-76 §4.2); draft-75 clients read it as an empty length-prefixed frame and
    ignore it. Length-prefixed frames from the client (type 0x80-0xFF other than
    that) are not supported: nothing sends them."""

    mode = 'base64'
    __slots__ = ('family', '_in_frame', '_frame_length', '_b64')

    def __init__(self, family):
        #: 'hixie-75' or 'hixie-76', for the log.
        self.family = family
        self._in_frame = False
        #: Characters received in the frame in progress.
        self._frame_length = 0
        self._b64 = Base64Stream()

    def decode(self, buf, pos, end, out, events):
        """Same contract as HybiCodec.decode; emits only CloseReceived(1005, '')."""
        while pos < end:
            if self._in_frame:
                stop = buf.find(b'\xff', pos, end)
                last = end if stop < 0 else stop
                self._frame_length += last - pos
                if self._frame_length > HIXIE_MAX_FRAME:
                    raise ProtocolError(1009, 'Hixie frame longer than %d bytes'
                                        % HIXIE_MAX_FRAME)
                if last > pos:
                    try:
                        data = self._b64.feed(memoryview(buf)[pos:last])
                    except Base64Error as exc:
                        if exc.decoded:
                            out.append(exc.decoded)
                        raise ProtocolError(1007, 'invalid base64 in a Hixie frame') from None
                    if data:
                        out.append(data)
                if stop < 0:
                    return end
                pos = stop + 1
                self._in_frame = False
                continue
            b0 = buf[pos]
            if b0 == 0x00:
                self._in_frame = True
                self._frame_length = 0
                pos += 1
            elif b0 & 0x80:
                if b0 == 0xFF:
                    if end - pos < 2:
                        break
                    if buf[pos + 1] == 0x00:
                        events.append(CloseReceived(1005, ''))
                        return pos + 2
                raise ProtocolError(1002, 'length-prefixed Hixie frame (type 0x%02X) '
                                          'is not supported' % b0)
            else:
                raise ProtocolError(1002, 'Hixie frame of unknown type 0x%02X' % b0)
        return pos

    def encode(self, data):
        return [b'\x00', binascii.b2a_base64(data, newline=False), b'\xff']

    def control(self, opcode, payload=b''):
        """Nothing: the drafts have no ping or pong."""
        return b''

    def close_frame(self, code, reason=''):
        """The draft-76 closing handshake; the drafts carry no code or reason."""
        return b'\xff\x00'


# -- the session ------------------------------------------------------------------
#
# A Session is one upgraded connection's WebSocket state, without sockets. The
# pump feeds it what each peer sent and what happened to each socket, and does
# what it says: relay the payload it returns, send `to_client` (pongs, pings,
# close frames), and treat each side as its `client_end` / `target_end` says:
#
#   RELAY    read it and relay what it sends (the session is open);
#   FINISH   relay nothing more from it: send what is queued for it, shut down
#            its writing direction, and read (and drop) until its EOF;
#   DROP     close its socket now.
#
# Ends only move forward (RELAY -> FINISH -> DROP). The session is `finished`
# once both ends are DROP. Its state is OPEN until a close frame is sent or
# received or a side ends, CLOSING until both ends are DROP, then CLOSED. Any
# end leaving RELAY arms the closing deadline (CLOSE_TIMEOUT): past it, tick()
# drops both. `changed` tells the pump that it has something to do.

OPEN, CLOSING, CLOSED = 'open', 'closing', 'closed'
RELAY, FINISH, DROP = 0, 1, 2


class Session:
    """The WebSocket session of one connection: closing handshake (RFC 6455 §7),
    close codes, ping/pong and heartbeat pings, and the closing deadline.

    codec frames the bytes (HybiCodec, HybiBase64Codec, HixieCodec); heartbeat
    is the seconds between pings (0: none); heartbeat_timeout the seconds a ping
    may wait for a pong before the client counts as gone (0: forever);
    idle_timeout the seconds without data either way that end the session (0:
    forever); clock is time.monotonic unless a test gives its own."""

    __slots__ = ('codec', 'heartbeat', 'heartbeat_timeout', 'idle_timeout', 'clock',
                 'client_end', 'target_end', 'close_code', 'close_reason', 'close_sent',
                 'to_client', 'changed', 'deadline', 'next_ping', 'pong_due', 'last_data',
                 '_timed', '_events')

    def __init__(self, codec, heartbeat=0, clock=time.monotonic, heartbeat_timeout=0,
                 idle_timeout=0):
        self.codec = codec
        self.heartbeat = heartbeat
        self.heartbeat_timeout = heartbeat_timeout
        self.idle_timeout = idle_timeout
        self.clock = clock
        #: What the pump does with each side: RELAY, FINISH or DROP (see above).
        self.client_end = RELAY
        self.target_end = RELAY
        #: Close code and reason of the session, for the log (None: none yet).
        self.close_code = None
        self.close_reason = ''
        #: Whether we sent a close frame.
        self.close_sent = False
        #: Frames for the client that the pump has not taken yet.
        self.to_client = []
        #: Set whenever to_client or an end changed; the pump clears it.
        self.changed = False
        #: clock() time by which the closing must be over, once armed.
        self.deadline = None
        now = clock()
        #: clock() time of the next heartbeat ping, or None.
        self.next_ping = now + heartbeat if heartbeat else None
        #: clock() time by which a pong must come (a ping is unanswered), or None.
        self.pong_due = None
        #: clock() time of the last payload either way (for idle_timeout).
        self.last_data = now
        #: Whether a timer other than the closing deadline runs (the pump asks
        #: next_wakeup() and tick() on every turn: without one they cost nothing).
        self._timed = bool(heartbeat or idle_timeout)
        self._events = []

    # -- what the session is doing --------------------------------------------------

    @property
    def state(self):
        if self.client_end == self.target_end == DROP:
            return CLOSED
        if self.close_sent or self.client_end or self.target_end:
            return CLOSING
        return OPEN

    @property
    def finished(self):
        """True once both sides are to be closed: nothing more will happen."""
        return self.client_end == self.target_end == DROP

    def reads_client(self):
        """Whether what the client sends is relayed (else it is drained or gone)."""
        return self.client_end == RELAY

    def reads_target(self):
        """Whether what the target sends is relayed."""
        return self.target_end == RELAY

    def next_wakeup(self):
        """The clock() time at which tick() has something to do, or None."""
        if not self._timed:
            return self.deadline
        times = [self.deadline]
        if not self.close_sent and self.client_end == RELAY:
            times.append(self.next_ping)
            times.append(self.pong_due)
            if self.idle_timeout:
                times.append(self.last_data + self.idle_timeout)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    # -- what happened ----------------------------------------------------------------

    def receive_client(self, buf, end, pos=0):
        """Bytes from the client in buf[pos:end] (a bytearray, unmasked in place).

        Returns (consumed, payload pieces for the target). A protocol error
        closes the session with its code; the payload before it still goes."""
        out = []
        events = self._events
        # RFC 6455 §5.5.3: of several pings not answered yet, answering the last
        # is enough: a read full of pings costs one pong.
        ping = None
        while True:
            try:
                pos = self.codec.decode(buf, pos, end, out, events)
            except ProtocolError as exc:
                events.clear()
                self.fail(exc.code, exc.reason)
                return end, out
            for event in events:
                if type(event) is PingReceived:
                    ping = event
                    continue
                if ping is not None:
                    self._on_ping(ping)
                    ping = None
                self._EVENT_HANDLERS[type(event)](self, event)
            if not events or self.client_end != RELAY:
                break
            events.clear()
        events.clear()
        if ping is not None:
            self._on_ping(ping)
        if out and self.idle_timeout:
            self.last_data = self.clock()
        return pos, out

    def receive_target(self, data):
        """Bytes from the target (a memoryview): the buffers to send to the client."""
        if self.idle_timeout:
            self.last_data = self.clock()
        try:
            return self.codec.encode(data)
        except ProtocolError as exc:
            self.fail(exc.code, exc.reason)
            return []

    def _on_ping(self, event):
        # RFC 6455 §5.5.2: a pong with the same payload, unless we are closing.
        if not self.close_sent:
            self._send(self.codec.control(OP_PONG, event.payload))

    def _on_pong(self, event):
        # The client is alive. An unsolicited pong needs no answer (RFC 6455 §5.5.3).
        self.pong_due = None

    def _on_close(self, event):
        # RFC 6455 §5.5.1: echo the code (none for 1005), then both sides end.
        if self.close_code is None:
            self.close_code, self.close_reason = event.code, event.reason
        if not self.close_sent:
            self.close_sent = True
            self._send(self.codec.close_frame(None if event.code == 1005 else event.code))
        self._end(FINISH, FINISH)

    _EVENT_HANDLERS = {PingReceived: _on_ping, PongReceived: _on_pong,
                       CloseReceived: _on_close}

    def client_eof(self):
        """The client ended its sending direction (TCP FIN)."""
        if self.client_end == RELAY:
            self._note(1006, 'client closed without a close frame')
            self._end(DROP, FINISH)
        else:
            self._end(DROP, None)

    def target_eof(self):
        """The target ended its sending direction: close the session with 1000."""
        if self.target_end == RELAY:
            self.close(1000, 'target closed the connection')
        else:
            self._end(None, DROP)

    def client_lost(self, why):
        """The client connection failed (reset, broken pipe); why names the error."""
        self._note(1006, 'client connection lost (%s)' % why)
        self._end(DROP, FINISH)

    def target_lost(self, why):
        """The target connection failed: close the session with 1011."""
        self._end(None, DROP)
        self.close(1011, 'target connection lost (%s)' % why)

    def close(self, code, reason):
        """End the session from our side (target gone, server stopping): send a
        close frame, stop relaying from the target, await the client's close."""
        if self.close_sent or self.client_end != RELAY:
            self._end(None, FINISH)
            return
        self.close_sent = True
        self._note(code, reason)
        self._send(self.codec.close_frame(code, reason))
        self._end(None, FINISH)

    def fail(self, code, reason):
        """A protocol error (RFC 6455 §7.1.7): close with code, relay nothing more."""
        if self.close_code is None or self.close_code < 1002:
            self.close_code, self.close_reason = code, reason
        if not self.close_sent:
            self.close_sent = True
            self._send(self.codec.close_frame(code, reason))
        self._end(FINISH, FINISH)

    def tick(self):
        """Act on the time: the closing deadline, heartbeat pings and their pongs,
        the idle timeout."""
        if self.deadline is None and not self._timed:
            return
        now = self.clock()
        if self.deadline is not None and now >= self.deadline and not self.finished:
            self._note(1006, 'closing handshake timed out')
            self._end(DROP, DROP)
        if self.close_sent or self.client_end != RELAY:
            return
        if self.pong_due is not None and now >= self.pong_due:
            # A peer that does not answer is gone (asleep, unplugged): no close
            # frame would reach it either.
            self._note(1006, 'no answer to a ping within %g s' % self.heartbeat_timeout)
            self._end(DROP, FINISH)
            return
        if self.idle_timeout and now >= self.last_data + self.idle_timeout:
            self.close(1001, 'no data either way for %g s' % self.idle_timeout)
            return
        if self.next_ping is not None and now >= self.next_ping:
            self.next_ping = now + self.heartbeat
            ping = self.codec.control(OP_PING, b'')
            if ping:
                self._send(ping)
                if self.heartbeat_timeout and self.pong_due is None:
                    self.pong_due = now + self.heartbeat_timeout

    # -- helpers ------------------------------------------------------------------------

    def _note(self, code, reason):
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def _send(self, frame):
        if frame:
            self.to_client.append(frame)
            self.changed = True

    def _end(self, client, target):
        """Move the ends forward (None: unchanged); arm the closing deadline."""
        if client is not None and client > self.client_end:
            self.client_end = client
            self.changed = True
        if target is not None and target > self.target_end:
            self.target_end = target
            self.changed = True
        if self.deadline is None and (self.client_end or self.target_end):
            self.deadline = self.clock() + CLOSE_TIMEOUT


# -- the handshake decision ---------------------------------------------------------

class Acceptance:
    """A WebSocket handshake that may go ahead (what accept() returns for it).

    family: 'hybi', 'hixie-76' or 'hixie-75'; protocol: the subprotocol (HyBi:
    chosen, Hixie: as offered) or None; session: the Session to relay with;
    extra_needed: bytes after the request head the reply depends on (8 for the
    draft-76 key3, else 0), given to reply()."""

    __slots__ = ('family', 'protocol', 'session', 'extra_needed', '_head', '_keys')

    def __init__(self, family, protocol, session, head, keys=None):
        self.family = family
        self.protocol = protocol
        self.session = session
        self._head = head
        self._keys = keys
        self.extra_needed = 8 if keys else 0

    def reply(self, extra=b''):
        """The bytes that accept the handshake; extra: the extra_needed bytes."""
        if self._keys is None:
            return self._head
        return self._head + hixie76_answer(self._keys[0], self._keys[1], extra)


def accept(request, secure=False, serve_web=False, text_frames=False, heartbeat=0,
           heartbeat_timeout=0, idle_timeout=0):
    """Decide a parsed request: an Acceptance, a refusal (an HTTPError, returned,
    not raised: status, reason, headers), or None for a plain HTTP request that
    the --web server answers (serve_web). secure: the connection is TLS (the
    draft-75/76 Location says wss://). heartbeat, heartbeat_timeout and
    idle_timeout go to the Session."""
    timers = {'heartbeat_timeout': heartbeat_timeout, 'idle_timeout': idle_timeout}
    try:
        return _decide(request, secure, serve_web, text_frames, heartbeat, timers)
    except HTTPError as refusal:
        return refusal


def _decide(request, secure, serve_web, text_frames, heartbeat, timers):
    if not is_upgrade(request):
        if serve_web:
            # Another protocol's Upgrade (h2c) may be ignored (RFC 9110 §7.8).
            return None
        if request.header('upgrade') is not None:
            raise HTTPError(400, 'Upgrade header lacks the "websocket" token')
        if request.method != 'GET':
            raise HTTPError(405, 'this port only serves WebSocket connections',
                            [('Allow', 'GET')])
        raise HTTPError(426, 'this port serves WebSocket connections only '
                             '(websockify.py %s)' % __version__, [('Upgrade', 'websocket')])
    kind = handshake_kind(request)
    if kind == 'hybi':
        key = check_hybi_request(request)
        protocol = choose_subprotocol(offered_subprotocols(request))
        codec = HybiBase64Codec() if protocol == 'base64' else HybiCodec(text_frames)
        return Acceptance(kind, protocol, Session(codec, heartbeat, **timers), hybi_response(key, protocol))
    check_hixie_request(request)
    keys = None
    if kind == 'hixie-76':
        keys = (request.header('sec-websocket-key1'), request.header('sec-websocket-key2'))
        hixie76_key_number(keys[0], 'Sec-WebSocket-Key1')    # 400 before key3 is awaited
        hixie76_key_number(keys[1], 'Sec-WebSocket-Key2')
        protocol = request.header('sec-websocket-protocol')
    else:
        protocol = request.header('websocket-protocol')
    return Acceptance(kind, protocol, Session(HixieCodec(kind), heartbeat, **timers),
                      hixie_response(kind, request, secure), keys)


################################################################################
# Connection: first byte, request head, blocking I/O before the upgrade
################################################################################
#
# A client socket until its session starts: reading the request head (and the
# bytes after it), TLS for clients and targets, gentle closes. Calls sections 1-2.

class Connection:
    """A client socket before the WebSocket session: sniffing and the request head.

    Bytes read past the request head (an eager first frame) are kept in
    `extra` and handed to the pump."""

    def __init__(self, sock):
        self.sock = sock
        #: Bytes received after the request head.
        self.extra = b''
        #: True once TLS wraps the socket (set by the TLS layer).
        self.secure = False

    def _call(self, call, args, events, deadline):
        """call(*args) on the socket: a plain one is made non-blocking and waited
        for (events, until the deadline) only when the call would block, which a
        client that sends its request at once never does: no poll(2) before each
        call and no ioctl(2) for each timeout, as socket timeouts cost. A TLS
        socket takes its timeout. Raises socket.timeout at the deadline."""
        sock = self.sock
        if self.secure:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            return call(*args)
        if sock.gettimeout() != 0.0:
            sock.setblocking(False)
        while True:
            try:
                return call(*args)
            except BlockingIOError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _wait_for(sock, events, remaining):
                raise socket.timeout('timed out')

    def peek_first_byte(self, timeout):
        """The first byte the client sends, without consuming it; None on EOF/timeout."""
        try:
            data = self._call(self.sock.recv, (1, socket.MSG_PEEK), _POLLIN,
                              time.monotonic() + timeout)
        except (socket.timeout, OSError):
            return None
        return data or None

    def read_head(self, deadline):
        """Read a request head; raises HTTPError 408/414/431, or returns None on EOF."""
        data = bytearray()
        scanned = 0
        while True:
            end = find_header_end(data, max(0, scanned - 3))
            if end >= 0:
                self.extra = bytes(data[end:])
                return bytes(data[:end])
            scanned = len(data)
            check_head_size(data)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HTTPError(408, 'request head not received in time')
            try:
                chunk = self._call(self.sock.recv, (4096,), _POLLIN, deadline)
            except socket.timeout:
                raise HTTPError(408, 'request head not received in time') from None
            if not chunk:
                return None
            data += chunk

    def read_extra(self, n, deadline):
        """The first n bytes after the request head (the draft-76 key3), which may
        already be in `extra` or still be on the way; the rest stays in `extra`.
        Raises HTTPError 408 at the deadline; returns None on EOF."""
        data = self.extra
        while len(data) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HTTPError(408, 'the %d bytes after the headers did not arrive in time'
                                % n)
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                return None
            data += chunk
        self.extra = data[n:]
        return data[:n]

    def read_policy_request(self, deadline):
        """Read up to len(FLASH_POLICY_REQUEST) bytes, stopping at a NUL; b'' on
        EOF or timeout (nothing to answer then)."""
        data = b''
        while len(data) < len(FLASH_POLICY_REQUEST) and not data.endswith(b'\x00'):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(len(FLASH_POLICY_REQUEST) - len(data))
            except (socket.timeout, OSError):
                break
            if not chunk:
                break
            data += chunk
        return data

    def start_tls(self, context, deadline):
        """Run the server side of a TLS handshake, bounded by deadline; afterwards
        `sock` is the TLS socket. Raises OSError (ssl.SSLError, socket.timeout)."""
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        # On failure the ssl module closes the descriptor it took from self.sock.
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.secure = True

    def send_all(self, data, timeout=CONNECT_TIMEOUT):
        """Send all of data within timeout seconds; raises socket.timeout, OSError."""
        deadline = time.monotonic() + timeout
        if self.secure:
            self._call(self.sock.sendall, (data,), _POLLOUT, deadline)
            return
        view = memoryview(data)
        while view:
            view = view[self._call(self.sock.send, (view,), _POLLOUT, deadline):]


#: SSL errors to catch: none where there is no ssl module.
SSL_ERRORS = (ssl.SSLError,) if ssl is not None else ()
#: Why TLS options fail on an interpreter without the ssl module.
NO_SSL = 'this Python has no ssl module, so TLS (wss://, %s) is not available'


def tls_error_text(exc):
    """A short, log-friendly reason for a failed TLS handshake or load."""
    verify_message = getattr(exc, 'verify_message', None)       # Python 3.7+
    if verify_message:
        return 'certificate verify failed: %s' % verify_message
    if ssl is not None and isinstance(exc, ssl.CertificateError):   # Python 3.6
        return 'certificate verify failed: %s' % exc
    if isinstance(exc, socket.timeout):
        return 'timed out'
    if isinstance(exc, SSL_ERRORS) and exc.reason:
        return exc.reason.lower().replace('_', ' ')
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)) or (
            ssl is not None and isinstance(exc, ssl.SSLEOFError)):
        return 'the peer closed the connection'
    return '%s: %s' % (type(exc).__name__, getattr(exc, 'strerror', None) or exc)


def _set_minimum_version(context, version):
    """Refuse TLS versions older than version ('TLSv1_2'), on every Python."""
    if hasattr(context, 'minimum_version'):
        with warnings.catch_warnings():          # TLS 1.1 is deprecated, and asked for
            warnings.simplefilter('ignore', DeprecationWarning)
            context.minimum_version = getattr(ssl.TLSVersion, version)  # novermin
        return
    for older in TLS_VERSION_ORDER[:TLS_VERSION_ORDER.index(version)]:
        context.options |= getattr(ssl, 'OP_NO_' + older, 0)


def _read_pem(path, what):
    """The text of a PEM file; UsageError naming the file when it cannot be read."""
    try:
        with open(path, 'rb') as f:
            return f.read().decode('latin-1')
    except OSError as exc:
        raise UsageError('cannot read the %s %s: %s' % (what, path, exc.strerror or exc)) from None


def _no_key_password():
    # Passed instead of None so that OpenSSL never prompts on the terminal (an
    # encrypted key without a password is refused before, with a clear reason).
    return b''


def make_server_tls_context(settings):
    """A server SSLContext from the TLS options; UsageError with one clear reason.

    ssl.create_default_context supplies the secure defaults (no SSLv3, no
    compression, server cipher preference); the options only narrow them."""
    cert, key = settings.cert, settings.key or settings.cert
    cert_text = _read_pem(cert, 'certificate')
    key_text = cert_text if key == cert else _read_pem(key, 'key')
    if '-----BEGIN CERTIFICATE-----' not in cert_text:
        raise UsageError('%s holds no PEM certificate' % cert)
    if 'PRIVATE KEY-----' not in key_text:
        raise UsageError('%s holds no PEM private key%s'
                         % (key, '' if settings.key else ' (give the key with --key FILE)'))
    encrypted = 'ENCRYPTED' in key_text
    if encrypted and settings.key_password is None:
        raise UsageError('no password given for the encrypted key: use --key-password, '
                         '--key-password-file or --key-password-env')
    context = _base_server_context(settings)
    password = settings.key_password
    try:
        context.load_cert_chain(cert, settings.key,
                                password if password is not None else _no_key_password)
    except ssl.SSLError as exc:
        if exc.reason == 'KEY_VALUES_MISMATCH':
            raise UsageError('the key in %s does not belong to the certificate in %s'
                             % (key, cert)) from None
        if encrypted and password is not None:
            raise UsageError('cannot decrypt the key in %s: wrong password?' % key) from None
        raise UsageError('cannot load the certificate %s with the key %s: %s'
                         % (cert, key, tls_error_text(exc))) from None
    return context


def _base_server_context(settings):
    """The server context without a certificate: versions, ciphers, client CAs."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.options |= getattr(ssl, 'OP_NO_RENEGOTIATION', 0)
    version = TLS_MIN_VERSIONS[settings.ssl_version]
    if version is not None:
        _set_minimum_version(context, version)
    if settings.ssl_ciphers:
        try:
            context.set_ciphers(settings.ssl_ciphers)
        except ssl.SSLError:
            raise UsageError('--ssl-ciphers %r selects no cipher' % settings.ssl_ciphers) from None
    if settings.verify_client:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            if settings.cafile:
                context.load_verify_locations(cafile=settings.cafile)
            else:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (OSError, ValueError) as exc:
            raise UsageError('cannot load the client CA file %s: %s'
                             % (settings.cafile, tls_error_text(exc))) from None
    return context


def make_target_tls_context(settings):
    """The client SSLContext for --ssl-target: verifies certificate and name unless
    --ssl-target-insecure; --ssl-target-cafile replaces the system CAs."""
    if ssl is None:
        raise UsageError(NO_SSL % '--ssl-target')
    try:
        context = ssl.create_default_context(cafile=settings.ssl_target_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError('cannot load the target CA file %s: %s'
                         % (settings.ssl_target_cafile, tls_error_text(exc))) from None
    context.options |= getattr(ssl, 'OP_NO_RENEGOTIATION', 0)
    if settings.ssl_target_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _file_stamp(path):
    """What changes when a file is rewritten or replaced; None if it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class ServerTLS:
    """The listener's TLS context, reloaded when the certificate or key changes.

    context() is called for each TLS handshake; at most once per
    TLS_RELOAD_INTERVAL it compares the files' mtime, size and inode with those of
    the last load. A new pair that fails to load keeps the old context and is
    logged once; a missing default self.pem leaves TLS off until it appears."""

    def __init__(self, settings):
        self.settings = settings
        #: Plain connections are refused (--ssl-only; --verify-client implies it,
        #: since a plain connection would skip the certificate check).
        self.tls_only = settings.ssl_only or settings.verify_client
        self._lock = threading.Lock()
        self._next_check = time.monotonic() + TLS_RELOAD_INTERVAL
        self._stamp = self._stamps()
        self._context = None
        if settings.cert is None:
            return
        if ssl is None:
            if settings.cert_given or self.tls_only or settings.cafile or settings.ssl_ciphers \
                    or settings.ssl_version != 'default':
                raise UsageError(NO_SSL % 'the TLS options')
            logger.info('this Python has no ssl module: wss:// is off')
            return
        if self._stamp[0] is None and not settings.cert_given:
            if self.tls_only:
                raise UsageError('%s needs a certificate, and there is no %s (give --cert FILE)'
                                 % ('--ssl-only' if settings.ssl_only else '--verify-client',
                                    settings.cert))
            _base_server_context(settings)           # still check the other options
            logger.info('no certificate %s: wss:// is off (see --cert)', settings.cert)
            return
        self._context = make_server_tls_context(settings)
        logger.info('TLS: wss:// enabled with the certificate %s%s', settings.cert,
                    ', plain connections refused' if self.tls_only else '')

    def _stamps(self):
        settings = self.settings
        if settings.cert is None:
            return None, None
        return _file_stamp(settings.cert), settings.key and _file_stamp(settings.key)

    def context(self):
        """The SSLContext for a new handshake, or None without a certificate."""
        if self.settings.cert is None or ssl is None:
            return None
        now = time.monotonic()
        if now >= self._next_check and self._lock.acquire(blocking=False):
            try:
                self._next_check = now + TLS_RELOAD_INTERVAL
                stamp = self._stamps()
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._reload()
            finally:
                self._lock.release()
        return self._context

    def reload(self):
        """Load the certificate files again whatever their stat says (SIGHUP); what
        was loaded, for the log, or None."""
        if self.settings.cert is None or ssl is None:
            return None
        if self._context is None and not self.settings.cert_given \
                and _file_stamp(self.settings.cert) is None:
            return None                       # no default self.pem: TLS stays off
        with self._lock:
            self._stamp = self._stamps()
            self._next_check = time.monotonic() + TLS_RELOAD_INTERVAL
            if self._reload(quiet=True):
                return 'certificate %s' % self.settings.cert
        return None

    def _reload(self, quiet=False):
        cert = self.settings.cert
        try:
            context = make_server_tls_context(self.settings)
        except UsageError as exc:
            logger.warning('TLS: the certificate files were not loaded (%s); %s', exc,
                           'still using the previous certificate' if self._context
                           else 'TLS stays off')
            return False
        self._context = context
        if not quiet:
            logger.info('TLS: certificate %s (re)loaded', cert)
        return True


def _close_gently(sock):
    """Half-close after a response and read what the client still sends, so that
    close() does not reset the connection before the client has read it all."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(DRAIN_TIMEOUT)
        for _ in range(DRAIN_READS):
            if not sock.recv(4096):
                break
    except OSError:
        pass


################################################################################
# Pump: the poll loop relaying one session
################################################################################
#
# The I/O of a session: it owns the two sockets, their buffers and queues, and
# calls the Session (section 2) for every decision; it calls sections 1-3.
#
# One thread per session polls two non-blocking sockets with select.poll
# (no descriptor limit, unlike select.select).
#
# Buffers: each side has a receive buffer that starts at RECV_MIN bytes and
# grows fourfold whenever a read fills it (up to RECV_MAX). A buffer of RECV_MIN
# goes back as soon as a read leaves it empty (the next read takes another from
# the allocator's per-thread cache: far cheaper than a wake-up to release it
# later, which thousands of sessions would all take a second after a burst); a
# grown one is kept for the traffic that grew it and dropped after
# BUFFER_RELEASE_IDLE seconds without traffic. Idle sessions hold almost
# nothing. Each side also has an outgoing queue (a bytearray) for what the
# kernel did not take at once.
#
# Back-pressure: a side is read only while the other side's queue is empty, so
# a peer that stops reading stops the peer feeding it and no more than one read
# waits in memory. The client is also read while its own queue holds target
# data (so client->target keeps flowing when the client does not read), up to
# PUMP_HIGH_WATER, which only pongs and close frames can reach.
#
# Closing: the Session decides (close frames, codes, which side ends how, the
# deadline); the pump reports each EOF and failure to it and carries out its
# ends: a FINISH side gets what is queued for it, a shutdown of its writing
# direction, and reads (dropped) until its EOF, so no unread byte turns close()
# into a reset that would destroy data still in flight; a DROP side is closed.
#
# TLS sides (a wss:// client, an --ssl-target target) differ in three ways.
# OpenSSL may hold decrypted bytes that poll cannot see, so a side with
# sock.pending() is served without waiting (under the same back-pressure
# rules). A send is all or nothing and goes out as one joined buffer (no
# sendmsg); SSLWantRead/SSLWantWrite mean "not now", never a lost peer. Closing
# shuts down the TCP socket after the queue is flushed, without a TLS
# close_notify: the WebSocket close frame (or the target's EOF) already ended the
# stream, and SSLSocket.shutdown drops the TLS state, so draining reads raw bytes.
#
# Fairness: every thread needs the interpreter lock (GIL) after each system call,
# and one that waits for it while another thread computes waits a whole switch
# interval (5 ms). A session flooding tiny frames computes for milliseconds per
# read, so without care a quiet session's echo (several system calls) would
# take tens to hundreds of milliseconds. So a large client read is decoded under
# FAIR_LOCK (one bulk decoder per process; the others wait on the lock, not on
# the GIL) in FAIR_SLICE pieces, and while other sessions are active
# (WAKES: who woke last) the decoder pauses FAIR_PAUSE after every FAIR_BURST
# of work, leaving the GIL to them. A session alone never pauses, and a read of
# big frames costs microseconds, far below FAIR_BURST.

class _WakeBoard:
    """Which session (or handshake) woke last, and when another one did: a hint
    for fairness, written without a lock (a lost update only delays a pause)."""

    __slots__ = ('last', 'last_at', 'other_at')

    def __init__(self):
        self.last = None
        self.last_at = self.other_at = float('-inf')

    def note(self, who, now):
        if self.last is not who:
            self.other_at = self.last_at
            self.last = who
        self.last_at = now

    def others_since(self, who, since):
        """Has anyone but who woke at or after since?"""
        return (self.last_at if self.last is not who else self.other_at) >= since


#: Held by the one session decoding a large read (see Fairness above).
FAIR_LOCK = threading.Lock()
WAKES = _WakeBoard()

_POLLIN = select.POLLIN | select.POLLPRI
_POLLOUT = select.POLLOUT
_POLLDONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
_LOST = (ConnectionError, TimeoutError, OSError)

#: "Not now" from a non-blocking socket. A TLS socket says SSLWantRead when a
#: record is incomplete and SSLWantWrite when the kernel buffer is full; both are
#: OSErrors, so they are caught before _LOST.
_WAIT = (BlockingIOError,) + ((ssl.SSLWantReadError, ssl.SSLWantWriteError)
                              if ssl is not None else ())


def _wait_for(sock, events, timeout):
    """Wait up to timeout seconds (rounded up to the millisecond) for events on
    one socket; its poll(2) events, 0 when the time ran out."""
    poll = select.poll()
    poll.register(sock, events)
    ready = poll.poll(int(timeout * 1000) + 1)
    return ready[0][1] if ready else 0


class _Side:
    """One socket of a session: its buffer, its queue and its closing state."""

    __slots__ = ('name', 'sock', 'fd', 'buf', 'view', 'end', 'queue', 'use_sendmsg', 'tls',
                 'reading', 'draining', 'shut', 'closed', 'mask', 'received', 'sent')

    #: Receive buffers all sessions have released so far (read by _MallocTrim).
    released = 0

    def __init__(self, name, sock):
        self.name = name
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = None
        self.view = None
        #: Bytes of buf holding data not consumed yet.
        self.end = 0
        self.queue = bytearray()
        #: A TLS socket: no sendmsg, and OpenSSL may hold decrypted bytes poll cannot see.
        self.tls = ssl is not None and isinstance(sock, ssl.SSLSocket)
        self.use_sendmsg = hasattr(sock, 'sendmsg') and not self.tls
        #: Relay what this side sends.
        self.reading = True
        #: Read and drop what this side sends until its EOF.
        self.draining = False
        #: Shut down writing once the queue is empty.
        self.shut = False
        self.closed = False
        self.mask = -1
        self.received = 0
        self.sent = 0

    def ensure_buffer(self):
        if self.buf is None:
            self.buf = bytearray(RECV_MIN)
            self.view = memoryview(self.buf)

    def grow(self):
        """Make the receive buffer four times bigger, keeping unconsumed bytes."""
        old = self.buf
        self.buf = bytearray(min(RECV_MAX, len(old) * 4))
        self.buf[:self.end] = old[:self.end]
        self.view.release()
        self.view = memoryview(self.buf)

    def release_buffer(self):
        if self.buf is not None and not self.end:
            self.view.release()
            self.buf = self.view = None
            _Side.released += 1       # unlocked: a lost count only delays a trim

    def recv(self):
        """Read into the buffer: the byte count, 0 at EOF, None if nothing is ready.

        A TLS socket returns one record at most per call, so it is read again while
        the buffer has room (each read costs no system call once the kernel is
        empty: OpenSSL answers SSLWantRead)."""
        try:
            n = self.sock.recv_into(self.view[self.end:])
        except _WAIT:
            return None
        if not self.tls or not n:
            return n
        total, size = n, len(self.buf)
        while self.end + total < size:
            try:
                n = self.sock.recv_into(self.view[self.end + total:])
            except _WAIT:
                break
            if not n:                   # EOF: poll reports it again next time
                break
            total += n
        return total

    def write(self, parts):
        """Send buffers now, queueing what the kernel does not take. Raises on loss.

        A TLS send takes all of its buffer or raises SSLWantWrite having taken
        none of it as far as we are concerned; OpenSSL then expects the same bytes
        again, which the queue provides (Python sets
        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, so the queue may be a different,
        longer buffer with the same bytes first)."""
        if self.queue:
            for p in parts:
                self.queue += p
            return
        if self.use_sendmsg and len(parts) <= SENDMSG_MAX_BUFFERS:
            try:
                done = self.sock.sendmsg(parts)
            except BlockingIOError:
                done = 0
        else:
            data = parts[0] if len(parts) == 1 else b''.join(parts)
            try:
                done = self.sock.send(data)
            except _WAIT:
                done = 0
        self.sent += done
        for p in parts:
            n = len(p)
            if done >= n:
                done -= n
                continue
            self.queue += memoryview(p)[done:] if done else p
            done = 0

    def flush(self):
        """Send queued bytes; True when the queue is empty."""
        try:
            done = self.sock.send(self.queue)
        except _WAIT:
            return False
        self.sent += done
        del self.queue[:done]
        if self.queue:
            return False
        self.queue = bytearray()
        return True


class Pump:
    """Relays one WebSocket session between a client and a target socket: the
    I/O of a Session, which decides everything else.

    initial: bytes the client sent after its request head (an eager first
    frame); wake_fd: a descriptor that becomes readable when the server stops
    (the session then closes with 1001); traffic: print the --traffic markers;
    observer: an object whose client(pieces) and target(data) see what each
    side sends (a SessionRecorder), or None."""

    __slots__ = ('client', 'target', 'session', 'wake_fd', 'traffic', 'observer', '_poll')

    def __init__(self, client_sock, target_sock, session, initial=b'', wake_fd=None,
                 traffic=False, observer=None):
        self.client = _Side('client', client_sock)
        self.target = _Side('target', target_sock)
        self.session = session
        self.wake_fd = wake_fd
        self.traffic = traffic
        self.observer = observer
        self._poll = select.poll()
        if initial:
            self.client.ensure_buffer()
            while len(self.client.buf) < len(initial) and len(self.client.buf) < RECV_MAX:
                self.client.grow()
            self.client.buf[:len(initial)] = initial
            self.client.end = len(initial)

    # -- main loop ----------------------------------------------------------------

    def run(self):
        """Relay until both sides are closed; returns (code, reason) for the log."""
        client, target, session = self.client, self.target, self.session
        for side in (client, target):
            if side.sock.gettimeout() != 0.0:       # one ioctl(2) each time
                side.sock.setblocking(False)
        poll = self._poll
        if self.wake_fd is not None:
            poll.register(self.wake_fd, _POLLIN)
        if client.end:
            self._decode_client()
            self._sync()
        tls_sides = [side for side in (client, target) if side.tls]
        last_activity = time.monotonic()
        while not (client.closed and target.closed):
            self._update_masks()
            now = time.monotonic()
            wake = session.next_wakeup()
            if ((client.buf is not None and not client.end)
                    or (target.buf is not None and not target.end)):
                release = last_activity + BUFFER_RELEASE_IDLE
                if wake is None or release < wake:
                    wake = release
            timeout = None if wake is None else max(0, int((wake - now) * 1000) + 1)
            # Bytes OpenSSL already decrypted wake no poll: serve them now.
            pending = [side for side in tls_sides
                       if side.mask & _POLLIN and side.sock.pending()] if tls_sides else None
            events = poll.poll(0 if pending else timeout)
            if pending:
                merged = dict(events)
                for side in pending:
                    merged[side.fd] = merged.get(side.fd, 0) | _POLLIN
                events = list(merged.items())
            now = time.monotonic()
            if events:
                last_activity = now
                WAKES.note(self, now)
            for fd, ev in events:
                if fd == client.fd:
                    self._service(client, ev)
                elif fd == target.fd:
                    self._service(target, ev)
                elif fd == self.wake_fd:
                    poll.unregister(fd)
                    self.wake_fd = None
                    session.close(1001, 'server shutting down')
                if session.changed:
                    self._sync()
            session.tick()
            if session.changed:
                self._sync()
            if not events and now - last_activity >= BUFFER_RELEASE_IDLE:
                client.release_buffer()
                target.release_buffer()
        return session.close_code, session.close_reason

    def _update_masks(self):
        for side, other in ((self.client, self.target), (self.target, self.client)):
            if side.closed:
                mask = 0
            else:
                mask = _POLLOUT if side.queue else 0
                if side.draining:
                    mask |= _POLLIN
                elif side.reading:
                    if side is self.client:
                        ok = not other.queue and len(side.queue) <= PUMP_HIGH_WATER
                    else:
                        ok = not other.queue
                    if ok:
                        mask |= _POLLIN
            if mask != side.mask:
                if mask:
                    self._poll.register(side.fd, mask)
                elif side.mask > 0:
                    self._poll.unregister(side.fd)
                side.mask = mask

    def _service(self, side, ev):
        try:
            if ev & _POLLOUT and side.queue:
                if side.flush():
                    self._after_flush(side)
            if side.closed:
                return
            if ev & (_POLLIN | _POLLDONE) and (side.reading or side.draining):
                self._read(side)
            elif ev & _POLLDONE and not ev & _POLLOUT:
                self._lost(side, None)
        except _LOST as exc:
            self._lost(side, exc)

    def _sync(self):
        """Do what the session asks: send its frames, finish or drop the sides."""
        session = self.session
        while session.changed:
            session.changed = False
            if session.to_client:
                frames, session.to_client = session.to_client, []
                self._send_client(frames)
            for side, end in ((self.client, session.client_end),
                              (self.target, session.target_end)):
                if end == RELAY or side.closed:
                    continue
                if end == FINISH:
                    if not side.shut:
                        self._finish(side)
                else:
                    self._close_side(side)

    # -- reading ----------------------------------------------------------------------

    def _read(self, side):
        side.ensure_buffer()
        space = len(side.buf) - side.end
        n = side.recv()
        if n is None:
            return
        if not n:
            self._eof(side)
            return
        side.received += n
        if side.draining:
            return
        if self.traffic:
            _traffic('}' if side is self.client else '{')
        side.end += n
        if side is self.client:
            self._decode_client()
        else:
            self._relay_target()
        if side.buf is None:
            return
        if n == space and len(side.buf) < RECV_MAX:
            side.grow()
        elif not side.end and len(side.buf) == RECV_MIN:
            side.release_buffer()

    def _decode_client(self):
        client = self.client
        if client.end < FAIR_READ:
            pos, parts = self.session.receive_client(client.buf, client.end)
            if parts:
                self._to_target(parts)
            parts = None
        else:
            with FAIR_LOCK:
                pos = self._decode_fairly(client.end)
        rest = client.end - pos
        if rest:
            client.buf[:rest] = client.buf[pos:client.end]
        client.end = rest

    def _decode_fairly(self, end):
        """Decode client.buf[:end] in FAIR_SLICE pieces, pausing while other
        sessions are active (see Fairness above); returns the end of what was used.
        Payload goes to the target before each pause and at the end."""
        session, buf = self.session, self.client.buf
        pos = limit = 0
        size = FAIR_SLICE
        pending = []
        burst_start = then = time.monotonic()
        while True:
            limit = min(end, max(limit, pos) + size)
            used, parts = session.receive_client(buf, limit, pos)
            pending += parts
            if used == end or session.client_end != RELAY or (used == pos and limit == end):
                break
            pos = used
            now = time.monotonic()
            # Big frames cost little per byte: a quick slice doubles the next one.
            size = size * 2 if now - then < FAIR_BURST / 4 else FAIR_SLICE
            then = now
            if now - burst_start >= FAIR_BURST and WAKES.others_since(self, now - FAIR_WINDOW):
                if pending:
                    self._to_target(pending)
                    pending = []
                time.sleep(FAIR_PAUSE)
                burst_start = then = time.monotonic()
        if pending:
            self._to_target(pending)
        return used

    def _to_target(self, parts):
        target = self.target
        if target.shut or target.closed:
            return
        if self.observer is not None:
            self.observer.client(parts)
        try:
            target.write(parts)
        except _LOST as exc:
            self._lost(target, exc)
            return
        if self.traffic:
            _traffic('>' if not target.queue else '>.')

    def _relay_target(self):
        target = self.target
        data = target.view[:target.end]
        if self.observer is not None:
            self.observer.target(data)
        parts = self.session.receive_target(data)
        target.end = 0
        if parts:
            self._send_client(parts)

    def _send_client(self, parts):
        client = self.client
        if client.shut or client.closed:
            return
        try:
            client.write(parts)
        except _LOST as exc:
            self._lost(client, exc)
            return
        if self.traffic:
            _traffic('<' if not client.queue else '<.')

    # -- closing ----------------------------------------------------------------------

    def _eof(self, side):
        """A side closed its sending direction: the session decides what follows."""
        side.reading = False
        if side is self.client:
            self.session.client_eof()
        else:
            self.session.target_eof()

    def _lost(self, side, exc):
        """A side failed (reset, broken pipe): drop it; the session decides the rest."""
        self._close_side(side)
        if side is self.client:
            self.session.client_lost(_errname(exc))
        else:
            self.session.target_lost(_errname(exc))

    def _finish(self, side):
        """Stop relaying from side; shut down writing once its queue is sent; drain."""
        side.reading = False
        side.draining = True
        side.shut = True
        side.end = 0
        if not side.queue:
            self._after_flush(side)

    def _after_flush(self, side):
        if side.shut and not side.queue:
            try:
                side.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self._lost(side, exc)

    def _close_side(self, side):
        if side.closed:
            return
        side.closed = True
        side.reading = side.draining = False
        side.queue = bytearray()
        if side.mask > 0:
            self._poll.unregister(side.fd)
        side.mask = 0
        side.release_buffer()
        if side.view is not None:
            side.view.release()
        side.buf = side.view = None
        try:
            side.sock.close()
        except OSError:
            pass


def _errname(exc):
    if exc is None:
        return 'hang-up'
    return type(exc).__name__


def _traffic(marker):
    sys.stderr.write(marker)
    sys.stderr.flush()


################################################################################
# Static web server
################################################################################
#
# --web DIR serves files on the WebSocket port, so a page and its WebSocket share
# one origin. Requests that are not WebSocket upgrades come here; an upgrade is
# never answered with a file.
#
# Path rules (the upstream server's CVE-2021-3654 open redirect and its listings
# are the reasons for every one of them):
#   * The query string is dropped, the path is split on '/' *before* percent-
#     decoding, empty segments are ignored, and every segment is decoded exactly
#     once as strict UTF-8. A segment that is '.' or '..', that decodes to a '/'
#     or a backslash, that holds a control character (NUL included) or a broken
#     escape, or that is not UTF-8 (overlong forms such as %c0%ae included) is
#     refused with 403 before the file system is touched.
#   * The joined path is resolved (symlinks followed) and must still lie inside
#     the resolved DIR; anything else, and anything missing, unreadable or not a
#     regular file or directory, is 404, so nothing about the world outside DIR
#     can be learnt from the answer.
#   * A directory is served by its index.html (resolved by the same rules); a
#     listing only with --web-listing; else 404.
#   * A directory named without its trailing slash gets a 301 to an absolute path
#     rebuilt from the decoded segments: it starts with '/' and a non-empty
#     segment free of '/' and '\', so no browser can read it as '//host'.
#
# Files go out with sendfile on plain sockets and in WEB_CHUNK pieces on TLS, so a
# file of any size costs one chunk of memory. Each response closes the
# connection (no keep-alive): browsers open a few connections in parallel.

#: Content types by file extension: our own table, not the host's registry, so
#: the same file gets the same type everywhere (browsers refuse a script served
#: as text/plain when nosniff is set).
MIME_TYPES = {
    'html': 'text/html', 'htm': 'text/html', 'js': 'text/javascript',
    'mjs': 'text/javascript', 'css': 'text/css', 'json': 'application/json',
    'map': 'application/json', 'txt': 'text/plain', 'xml': 'application/xml',
    'svg': 'image/svg+xml', 'png': 'image/png', 'jpg': 'image/jpeg',
    'jpeg': 'image/jpeg', 'gif': 'image/gif', 'webp': 'image/webp',
    'ico': 'image/vnd.microsoft.icon', 'bmp': 'image/bmp', 'avif': 'image/avif',
    'wasm': 'application/wasm', 'woff': 'font/woff', 'woff2': 'font/woff2',
    'ttf': 'font/ttf', 'otf': 'font/otf', 'pdf': 'application/pdf',
    'mp3': 'audio/mpeg', 'ogg': 'audio/ogg', 'wav': 'audio/wav', 'mp4': 'video/mp4',
    'webm': 'video/webm', 'webmanifest': 'application/manifest+json',
    'md': 'text/markdown', 'csv': 'text/csv',
}
#: Types that are text, served with '; charset=utf-8'.
_TEXT_TYPES = frozenset(('application/json', 'application/xml', 'image/svg+xml',
                         'application/manifest+json'))
#: Type of files whose extension is not in MIME_TYPES: never rendered or run.
DEFAULT_MIME_TYPE = 'application/octet-stream'
#: Methods served from --web DIR.
WEB_METHODS = ('GET', 'HEAD')
#: Cache policy: browsers and appliances may keep a copy but revalidate it
#: (If-Modified-Since) before each use, so an updated file is seen at once.
WEB_CACHE_CONTROL = 'no-cache'

_BAD_ESCAPE = re.compile(rb'%(?![0-9A-Fa-f]{2})')
#: Characters left as they are in a redirect's path segments.
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"


def content_type(name):
    """The Content-Type for a file name, from MIME_TYPES; text types get charset=utf-8."""
    ext = name.rpartition('.')[2].lower() if '.' in name else ''
    ctype = MIME_TYPES.get(ext, DEFAULT_MIME_TYPE)
    if ctype.startswith('text/') or ctype in _TEXT_TYPES:
        ctype += '; charset=utf-8'
    return ctype


def web_path_segments(target):
    """Decoded path segments of a request target, or HTTPError 400/403 (see above)."""
    path = target.partition('?')[0].partition('#')[0]
    if not path.startswith('/'):
        raise HTTPError(400, 'the request target must be a path starting with /')
    segments = []
    for raw in path.split('/'):
        if not raw:
            continue
        data = raw.encode('latin-1')
        if _BAD_ESCAPE.search(data):
            raise HTTPError(403, 'malformed percent-encoding in the path')
        try:
            segment = urllib.parse.unquote_to_bytes(data).decode('utf-8')
        except UnicodeDecodeError:
            raise HTTPError(403, 'the path is not UTF-8') from None
        if segment in ('.', '..'):
            raise HTTPError(403, 'dot segments are not allowed in the path')
        if '/' in segment or '\\' in segment:
            raise HTTPError(403, 'encoded slashes and backslashes are not allowed in the path')
        if has_control_characters(segment):
            raise HTTPError(403, 'control characters are not allowed in the path')
        segments.append(segment)
    return segments


def _inside(root, path):
    """Whether the resolved path is root or lies under it."""
    try:
        return os.path.commonpath((root, path)) == root
    except ValueError:
        return False


def _resolve(root, parts):
    """(real path, stat) of root/parts when it stays inside root, else HTTPError 404."""
    real = os.path.realpath(os.path.join(root, *parts))
    if not _inside(root, real):
        raise HTTPError(404, 'not found')
    try:
        st = os.stat(real)
    except (OSError, ValueError):
        raise HTTPError(404, 'not found') from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise HTTPError(404, 'not found')
    return real, st


def _redirect_location(segments, target):
    """Absolute path of a directory with its trailing slash, query kept if harmless."""
    location = '/' + '/'.join(urllib.parse.quote(s, safe=_SEGMENT_SAFE) for s in segments)
    if segments:
        location += '/'
    query = target.partition('?')[2].partition('#')[0]
    if query and re.match(r'[\x21-\x7e]+\Z', query):
        location += '?' + query
    return location


def _http_date(timestamp):
    """An IMF-fixdate (RFC 9110 §5.6.7)."""
    return email.utils.formatdate(timestamp, usegmt=True)


def web_response_head(status, headers):
    """Status line and headers (no body) of a --web response that closes the connection."""
    headers = list(headers)
    headers.extend((('Date', _http_date(time.time())), ('Connection', 'close'),
                    ('Server', SERVER_NAME)))
    return response_head(status, headers)


def _not_modified_since(request, mtime):
    """True when If-Modified-Since is a valid date no older than mtime (RFC 9110 §13.1.3)."""
    value = request.header('if-modified-since')
    if not value or request.header('if-none-match'):
        return False
    try:
        since = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    if since is None or since.tzinfo is None:
        return False
    return int(mtime) <= since.timestamp()


def _listing(real, segments):
    """An HTML page naming the entries of a directory (--web-listing)."""
    try:
        with os.scandir(real) as it:
            entries = []
            for entry in it:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                entries.append((entry.name, is_dir))
                if len(entries) > WEB_LISTING_MAX:
                    break
    except OSError:
        raise HTTPError(404, 'not found (directory unreadable)') from None
    entries.sort()
    title = html.escape('/' + ''.join(s + '/' for s in segments))
    rows = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
            '<title>Index of %s</title></head><body>' % title,
            '<h1>Index of %s</h1><ul>' % title]
    if segments:
        rows.append('<li><a href="../">../</a></li>')
    for name, is_dir in entries[:WEB_LISTING_MAX]:
        suffix = '/' if is_dir else ''
        rows.append('<li><a href="./%s%s">%s%s</a></li>' % (
            html.escape(urllib.parse.quote(os.fsencode(name), safe=_SEGMENT_SAFE)), suffix,
            html.escape(name), suffix))
    if len(entries) > WEB_LISTING_MAX:
        rows.append('<li>(only the first %d entries are shown)</li>' % WEB_LISTING_MAX)
    rows.append('</ul></body></html>\n')
    return '\n'.join(rows).encode('utf-8', 'surrogateescape')


def send_file(sock, fileobj, size):
    """Send size bytes of fileobj; returns how many went out (fewer if it shrank).

    sendfile(2) on plain sockets; a bounded read/send loop on TLS sockets, whose
    data must pass through the TLS layer."""
    if not hasattr(sock, 'cipher') and hasattr(os, 'sendfile'):
        return sock.sendfile(fileobj, 0, size)
    buf = bytearray(min(WEB_CHUNK, max(size, 1)))
    view = memoryview(buf)
    sent = 0
    while sent < size:
        n = fileobj.readinto(view[:min(len(buf), size - sent)])
        if not n:
            break
        sock.sendall(view[:n])
        sent += n
    return sent


def serve_web(conn, request, root, listing):
    """Answer a plain HTTP request from the directory root (--web).

    Raises HTTPError for refusals; returns (status, body bytes sent, note) for
    the handler's log line, note being '' when all went well."""
    if request.method not in WEB_METHODS:
        raise HTTPError(405, 'only GET and HEAD are served', [('Allow', ', '.join(WEB_METHODS))])
    segments = web_path_segments(request.target)
    root = os.path.realpath(root)
    real, st = _resolve(root, segments)
    path = request.target.partition('?')[0]
    head_only = request.method == 'HEAD'
    name = segments[-1] if segments else ''
    if stat.S_ISDIR(st.st_mode):
        if not path.endswith('/'):
            location = _redirect_location(segments, request.target)
            body = ('moved to %s\n' % location).encode('utf-8')
            conn.send_all(web_response_head(301, [
                ('Location', location), ('Content-Type', 'text/plain; charset=utf-8'),
                ('Content-Length', str(len(body)))]) + (b'' if head_only else body))
            _close_gently(conn.sock)
            return 301, 0 if head_only else len(body), ''
        try:
            real, st = _resolve(root, segments + ['index.html'])
        except HTTPError:
            if not listing:
                raise HTTPError(404, 'not found (no index.html, and listings are off)') from None
            body = _listing(real, segments)
            conn.send_all(web_response_head(200, [
                ('Content-Type', 'text/html; charset=utf-8'),
                ('Content-Length', str(len(body))), ('Cache-Control', WEB_CACHE_CONTROL),
                ('X-Content-Type-Options', 'nosniff')]) + (b'' if head_only else body))
            _close_gently(conn.sock)
            return 200, 0 if head_only else len(body), ''
        if stat.S_ISDIR(st.st_mode):
            raise HTTPError(404, 'not found (index.html is a directory)')
        name = 'index.html'
    elif path.endswith('/'):
        raise HTTPError(404, 'not found (a file named as a directory)')
    flags = os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_NONBLOCK', 0)
    try:
        fd = os.open(real, flags)
    except OSError:
        raise HTTPError(404, 'not found (cannot open)') from None
    with open(fd, 'rb', buffering=0) as fileobj:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HTTPError(404, 'not found (not a regular file)')
        headers = [('Last-Modified', _http_date(st.st_mtime)),
                   ('Cache-Control', WEB_CACHE_CONTROL), ('X-Content-Type-Options', 'nosniff')]
        if _not_modified_since(request, st.st_mtime):
            conn.send_all(web_response_head(304, headers))
            _close_gently(conn.sock)
            return 304, 0, ''
        size = st.st_size
        headers[:0] = [('Content-Type', content_type(name)), ('Content-Length', str(size))]
        conn.send_all(web_response_head(200, headers))
        sent = 0
        if not head_only and size:
            conn.sock.settimeout(WEB_SEND_TIMEOUT)
            try:
                sent = send_file(conn.sock, fileobj, size)
            except (OSError, socket.timeout) as exc:
                return 200, fileobj.tell(), 'client lost before the end of %d bytes (%s)' % (
                    size, type(exc).__name__)
            if sent < size:
                return 200, sent, 'the file shrank to %d of %d bytes while sent' % (sent, size)
    _close_gently(conn.sock)
    return 200, sent, ''


################################################################################
# Targets
################################################################################
#
# Owns where a session goes: the Target, the one host:port parser (command line,
# token files, token back ends, the Host header), the token of a request,
# resolve_target (token -> Target through a token plugin's lookup) and
# open_target (TCP or Unix connect, TLS for --ssl-target). Calls only sections
# 1-3 (errors, has_control_characters, tls_error_text); token plugins, auth
# plugins and the wrapped program are the sections after this one.
#
# Without a token option every session goes to the one target of the command
# line. With --token-plugin (or --target-config FILE, which is --token-plugin
# TokenFile --token-source FILE) each WebSocket request carries a token and the
# plugin maps it to that session's target, before the handshake is answered:
#
#   request_token()   the token: Host with --host-token, else ?token=, else a cookie
#   plugin.lookup()   token -> (host, port), ('unix_socket', path), a Target or None
#   resolve_target()  either of those -> a Target, or HTTPError: 404 no such token,
#                     403 a token that fails its check (JWT), 502 a back end down

class Target:
    """Where one session goes: a TCP host and port, or a Unix socket path."""

    __slots__ = ('host', 'port', 'unix', 'token')

    def __init__(self, host=None, port=None, unix=None, token=None):
        self.host = host
        self.port = port
        self.unix = unix
        #: The token that named this target (for log lines), or None.
        self.token = token

    def __str__(self):
        where = 'unix:' + self.unix if self.unix else format_address(self.host, self.port)
        if self.token is not None:
            where += ' (token %s)' % _printable(self.token, 80)
        return where

    def __repr__(self):
        return 'Target(%r, %r, %r)' % (self.host, self.port, self.unix)

    # Upstream's plugins return [host, port] (['unix_socket', path] for a Unix
    # socket), and plugins written for it subclass TokenFile and unpack
    # `host, port = super().lookup(token)`: a Target reads as that pair too.
    def _pair(self):
        return (UNIX_SOCKET_HOST, self.unix) if self.unix else (self.host, self.port)

    def __iter__(self):
        return iter(self._pair())

    def __getitem__(self, index):
        return self._pair()[index]

    def __len__(self):
        return 2


#: The host part upstream's plugins give for a Unix socket target.
UNIX_SOCKET_HOST = 'unix_socket'


#: Highest TCP port number.
MAX_PORT = 65535
_DIGITS = re.compile(r'[0-9]+\Z')


def parse_port(value, what='target', zero=False):
    """A port number from text (ASCII digits only) or an int, in 1..MAX_PORT, or
    0..MAX_PORT with zero=True (a listening port the OS picks); ValueError naming
    `what` ('target', 'listening', ...) and the problem if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError('invalid %s port %r: not a number' % (what, value))
    shown = value
    if isinstance(value, str):
        if not value:
            raise ValueError('no %s port' % what)
        if not _DIGITS.match(value):
            raise ValueError('invalid %s port %r: digits only' % (what, value))
        # Past ten digits it is out of range anyway: do not convert a huge string.
        value = int(value) if len(value) <= 10 else -1
    lowest = 0 if zero else 1
    if not lowest <= value <= MAX_PORT:
        raise ValueError('invalid %s port %s: not in %d-%d' % (what, shown, lowest, MAX_PORT))
    return value


def parse_host(text, what='target'):
    """A host name or address; '[v6]' loses its brackets. ValueError naming `what`
    for an empty host, stray brackets, whitespace, control or other unprintable
    characters. Host names may hold underscores (DNS allows any byte)."""
    if text.startswith('[') and text.endswith(']'):
        text = text[1:-1]
    if not text:
        raise ValueError('no %s host' % what)
    if '[' in text or ']' in text:
        raise ValueError('%s host %r: brackets go around a whole IPv6 address only'
                         % (what, text))
    if has_control_characters(text):
        raise ValueError('%s host %r contains control characters' % (what, text))
    if any(c.isspace() for c in text):
        raise ValueError('%s host %r contains whitespace' % (what, text))
    if not text.isprintable():
        raise ValueError('%s host %r contains unprintable characters' % (what, text))
    return text


def parse_host_port(text, what='target', need_host=True, need_port=True, zero_port=False):
    """Split 'host:port' or '[v6]:port' into (host, port): the one parser of
    host:port text, for the command line, token files, token back ends and the Host
    header. The port follows the last colon (an IPv6 address without brackets,
    'fe80::1:5900', still splits right); parse_host and parse_port check the parts.

    need_host=False also takes ':port' and 'port', giving host ''; need_port=False
    also takes 'host', giving port None. ValueError says what is wrong."""
    if text.startswith('['):
        end = text.find(']')
        if end < 0:
            raise ValueError('%s address %r: "[" without "]"' % (what, text))
        host, rest = text[:end + 1], text[end + 1:]
        if rest and not rest.startswith(':'):
            raise ValueError('%s address %r: only ":port" may follow "]"' % (what, text))
        port = rest[1:] if rest else None
    elif ':' in text:
        host, _, port = text.rpartition(':')
    elif need_port and not need_host:
        host, port = '', text
    else:
        host, port = text, None
    if need_host and host in ('', '[]'):
        raise ValueError('%s address %r has no host' % (what, text))
    if port is not None:
        port = parse_port(port, what, zero_port)
    elif need_port:
        raise ValueError('%s address %r has no port: give host:port' % (what, text))
    if host or need_host:
        host = parse_host(host, what)
    return host, port


def parse_target_text(text):
    """'host:port', '[v6]:port' or 'unix_socket:/path' -> Target; ValueError if not.
    Whitespace around the whole text is ignored (token files, answers of back ends)."""
    text = text.strip()
    if text.startswith(UNIX_SOCKET_HOST + ':'):
        return make_target(UNIX_SOCKET_HOST, text[len(UNIX_SOCKET_HOST) + 1:])
    host, port = parse_host_port(text)
    return Target(host, port)


def _text(value, what):
    """A plugin's str or ASCII bytes as str; ValueError otherwise."""
    if isinstance(value, bytes):
        try:
            return value.decode('ascii')
        except UnicodeDecodeError:
            raise ValueError('%s %r is not ASCII' % (what, value)) from None
    return value


def make_target(host, port):
    """A Target from a plugin's host and port (strings, bytes, or a number for the
    port; for a Unix socket a path object too, as upstream's plugins give), checked
    as parse_host_port checks text; ValueError if not one."""
    host, port = _text(host, 'target host'), _text(port, 'target port')
    if not isinstance(host, str):
        raise ValueError('target host %r is not text' % (host,))
    if host == UNIX_SOCKET_HOST:
        if isinstance(port, os.PathLike):
            port = _text(os.fspath(port), 'socket path')
        if not isinstance(port, str) or not port:
            raise ValueError('no socket path after unix_socket')
        if has_control_characters(port):
            raise ValueError('socket path %r contains control characters' % port)
        return Target(unix=port)
    return Target(parse_host(host), parse_port(port))


def _token_from_host(request):
    """--host-token: the host name of the Host header, without its port; 400 if the
    header is not host[:port]."""
    host = request.header('host')
    if not host:
        return None
    try:
        return parse_host_port(host, 'Host header', need_port=False)[0]
    except ValueError as exc:
        raise HTTPError(400, 'the Host header is not host[:port]', detail=str(exc)) from None


def request_token(request, settings):
    """The token of an upgrade request, or None: the Host name with --host-token,
    else the first `token` query parameter (what noVNC sends), else a `token` cookie."""
    if settings.host_token:
        return _token_from_host(request) or None
    # Not urlsplit: it raises ValueError on a malformed authority ('//[x?token=a').
    query = request.target.partition('?')[2].partition('#')[0]
    values = urllib.parse.parse_qs(query).get('token')
    if values and values[0].rstrip('\n'):
        return values[0].rstrip('\n')
    # RFC 6265 §4.2.1: name=value pairs separated by '; ' (one header line or several).
    for line in request.headers.get('cookie', ()):
        for pair in line.split(';'):
            name, equals, value = pair.strip().partition('=')
            if equals and name.strip() == 'token':
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                if value:
                    return urllib.parse.unquote(value)
    return None


def resolve_target(request, settings, plugin):
    """The Target of this request's token; None without a token plugin.

    Raises HTTPError: 404 for a missing or unknown token, the plugin's own answer
    (403 for a JWT that fails its check), 502 when the lookup itself fails."""
    if plugin is None:
        return None
    token = request_token(request, settings)
    if token is None:
        raise HTTPError(404, 'no token in the request: connect to a URL like '
                             '/websockify?token=NAME (or send a token cookie)')
    shown = 'token %s' % _printable(token, 120)
    try:
        answer = _lookup(plugin, token)
    except HTTPError as exc:
        exc.detail = shown + ('; ' + exc.detail if exc.detail else '')
        raise
    except Exception as exc:   # a custom plugin's failure is the back end's, not the client's
        raise HTTPError(502, 'the token lookup failed', detail='%s; %s: %s' % (
            shown, type(exc).__name__, exc)) from None
    if answer is None:
        raise HTTPError(404, 'unknown token', detail=shown)
    try:
        if isinstance(answer, Target):
            target = Target(answer.host, answer.port, answer.unix)
        else:
            host, port = answer
            target = make_target(host, port)
    except (TypeError, ValueError) as exc:
        raise HTTPError(502, 'the token lookup gave an invalid target',
                        detail='%s; %s gave %r: %s' % (shown, type(plugin).__name__,
                                                       answer, exc)) from None
    target.token = token
    return target


def _lookup(plugin, token):
    """plugin.lookup(token) in this connection thread. Upstream calls plugins in a
    process's main thread, where asyncio.get_event_loop() works, and plugins
    written for it may call it; here it would fail for want of a loop. So once
    asyncio is imported, a lookup outside the main thread runs with an event loop
    of its own, closed when it returns: no loop outlives its lookup. A plugin that
    imports asyncio only during its first lookup gets that lookup tried again."""
    asyncio = sys.modules.get('asyncio')
    if threading.get_ident() == threading.main_thread().ident:
        return plugin.lookup(token)
    if asyncio is None:
        try:
            return plugin.lookup(token)
        except RuntimeError as exc:
            asyncio = sys.modules.get('asyncio')
            if asyncio is None or 'event loop' not in str(exc):
                raise
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return plugin.lookup(token)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def open_target(target, tls_context=None):
    """Connect to a Target (TLS with tls_context, for --ssl-target): (sock, where),
    where naming it for the log; raises HTTPError 502 naming the target."""
    where = str(target)
    try:
        if target.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect(target.unix)
            except BaseException:
                sock.close()
                raise
        else:
            family = _ip_literal_family(target.host)
            if family is None:
                # create_connection tries every getaddrinfo address in order.
                sock = socket.create_connection((target.host, target.port), CONNECT_TIMEOUT)
            else:
                # An address needs no getaddrinfo(), whose C stack (a page more
                # in every connection thread) and time are saved.
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    _connect(sock, (target.host, target.port))
                except BaseException:
                    sock.close()
                    raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        _refuse_target(target, 'cannot connect to target %s: %s' % (where, exc.strerror or exc))
    if tls_context is not None:
        try:
            sock = start_target_tls(sock, tls_context, target.host, where)
        except HTTPError as exc:
            _refuse_target(target, exc.reason)
    return sock, where


def _connect(sock, address):
    """Connect a TCP socket within CONNECT_TIMEOUT and leave it non-blocking, as
    the pump wants it: no getsockopt(2) when poll(2) says it connected, and no
    mode switch before the relay. Raises OSError (socket.timeout)."""
    sock.setblocking(False)
    error = sock.connect_ex(address)
    if error == errno.EINPROGRESS:
        ready = _wait_for(sock, _POLLOUT, CONNECT_TIMEOUT)
        if not ready:
            raise socket.timeout('timed out')
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ready & _POLLDONE else 0
    if error:
        raise OSError(error, os.strerror(error))


def _ip_literal_family(host):
    """AF_INET or AF_INET6 when host is an address (no zone), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


def _refuse_target(target, problem):
    """Raise the 502 for a target that failed. A token's back end is not the
    client's business: its problem goes to the log only."""
    if target.token is not None:
        raise HTTPError(502, 'cannot connect to the target of this token',
                        detail=problem) from None
    raise HTTPError(502, problem) from None


def start_target_tls(sock, context, host, where):
    """Wrap a connected target socket in TLS, SNI and name check with host.

    The handshake runs here, before the relay: a TLS 1.3 server that waits for
    the client to speak first would otherwise wait forever for a pump that only
    writes what the WebSocket client sends."""
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        return context.wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as exc:   # the ssl module closed the socket
        raise HTTPError(502, 'TLS to target %s failed: %s' % (where, tls_error_text(exc))) from None


################################################################################
# Token plugins
################################################################################
#
# Owns the --token-plugin classes: the built-in ones (token files, a directory of
# Unix sockets, a token API, Redis with its small RESP client, HMAC JWTs), the
# loading of custom ones, and make_token_plugin, which the prepare step calls
# once. Calls sections 1-3 and Targets (make_target, parse_target_text,
# parse_port, Target); the handler reaches a plugin through resolve_target only.
#
# Plugins are built once per server and called from many connection threads at
# once: each keeps its state thread-safe. The interface is upstream websockify's:
# Class(source) and lookup(token), so its plugins and the names of its built-in
# ones (websockify.token_plugins.TokenFile) work here.

def _lookup_failed(what, exc):
    """The 502 of a token back end that cannot be asked (its details are logged only)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return HTTPError(502, 'the token lookup failed', detail='%s: %s' % (what, text or
                                                                        type(exc).__name__))


class TokenPlugin:
    """Base of the token plugins (upstream's websockify.token_plugins.BasePlugin):
    made once with the --token-source string (None without one), then
    lookup(token) from any connection thread. Override lookup()."""

    #: True when the source names a file or directory (shown in the start-up line).
    source_is_path = False
    #: True when the plugin cannot work without a source (the built-in ones).
    needs_source = False

    def __init__(self, source=None):
        if self.needs_source and not source:
            raise UsageError('--token-plugin %s needs --token-source' % type(self).__name__)
        self.source = source

    def lookup(self, token):
        """(host, port), a Target, or None for an unknown token; may raise HTTPError."""
        return None

    def reload(self):
        """Read the source again (SIGHUP); what was read, for the log, or None when
        there is nothing to read again. Override if the plugin caches its source."""
        return None


_TOKEN_LINE = re.compile(r'(.*?)\s*(?:(:\s)(.*))?\Z')


class ReadOnlyTokenFile(TokenPlugin):
    """Token file (or a directory of them) read once at start-up.

    Lines are `token: host:port`, `token: [v6addr]:port` or `token:
    unix_socket:/path`; `#` starts a comment line. A bad line is logged and skipped."""

    source_is_path = True
    needs_source = True

    def __init__(self, source):
        super().__init__(source)
        try:
            self._targets = self._load()
        except OSError as exc:
            raise UsageError('--token-source %s: %s' % (source, exc.strerror or exc)) from None

    def _files(self):
        """The token files: the source, or the regular files of the source directory."""
        if not os.path.isdir(self.source):
            os.stat(self.source)                    # FileNotFoundError if missing
            return [self.source]
        names = sorted(os.listdir(self.source))
        paths = [os.path.join(self.source, name) for name in names]
        return [path for path in paths if os.path.isfile(path)]

    def _load(self):
        targets = {}
        for path in self._files():
            with open(path, encoding='utf-8', errors='replace') as f:
                text = f.read()
            for number, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith('#'):
                    continue
                # Upstream splits at the first colon followed by white space.
                token, sep, target = _TOKEN_LINE.match(line).groups()
                try:
                    if not sep or not token:
                        raise ValueError('expected "token: host:port"')
                    targets[token] = parse_target_text(target)
                except ValueError as exc:
                    logger.warning('token file %s line %d ignored: %s', path, number, exc)
        return targets

    def lookup(self, token):
        return self._targets.get(token)

    def reload(self):
        try:
            self._targets = self._load()
        except OSError as exc:
            logger.warning('token file %s not read again: %s; still using its %d tokens',
                           self.source, exc.strerror or exc, len(self._targets))
            return None
        return 'token file %s (%d tokens)' % (self.source, len(self._targets))


class TokenFile(ReadOnlyTokenFile):
    """ReadOnlyTokenFile that reads its files again when they change: each lookup
    compares their stat (size, time, inode) with the last reading, so edits and
    added or removed files take effect without a restart."""

    def __init__(self, source):
        self._lock = threading.Lock()
        #: The files' stat when last read; None makes the first lookup read them
        #: again, so that an edit made during start-up is not missed.
        self._stamp = None
        super().__init__(source)

    def _stamps(self):
        paths = self._files()
        if os.path.isdir(self.source):
            paths.append(self.source)
        stamps = []
        for path in paths:
            st = os.stat(path)
            stamps.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
        return stamps

    def lookup(self, token):
        with self._lock:
            try:
                stamp = self._stamps()
                if stamp != self._stamp:
                    self._targets = self._load()
                    self._stamp = stamp
                    logger.info('token file %s read again: %d tokens', self.source,
                                len(self._targets))
            except OSError as exc:
                raise _lookup_failed('token file %s' % self.source, exc) from None
            return self._targets.get(token)

    def reload(self):
        # Even when nothing in the files' stat changed (an edit that kept the size
        # and had its time set back).
        with self._lock:
            done = super().reload()
            if done is not None:
                try:
                    self._stamp = self._stamps()
                except OSError:
                    self._stamp = None
            return done


def _directory_entry(directory, token, what):
    """The path of the entry a token names in a directory; 400 for a token that
    could name anything else (a '/', '..', control characters)."""
    if '/' in token or '..' in token or token in ('', '.') or has_control_characters(token):
        raise HTTPError(400, 'a token names a %s in one directory: no "/", ".." '
                             'or control characters' % what)
    return os.path.join(directory, token)


class UnixDomainSocketDirectory(TokenPlugin):
    """The token is the name of a Unix socket in the --token-source directory."""

    source_is_path = True
    needs_source = True

    def __init__(self, source):
        super().__init__(source)
        self.source = os.path.abspath(source)
        if not os.path.isdir(self.source):
            raise UsageError('--token-source %s is not a directory' % source)

    def lookup(self, token):
        path = _directory_entry(self.source, token, 'socket')
        try:
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                return None
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _lookup_failed('socket %s' % path, exc) from None
        return Target(unix=path)


class TokenFileName(UnixDomainSocketDirectory):
    """The token is the name of a file in the --token-source directory that holds
    its target: `host:port`, `[v6addr]:port` or `unix_socket:/path` (upstream's
    TokenFileName). The file is read at each lookup: files added, edited or
    removed take effect at once."""

    def lookup(self, token):
        path = _directory_entry(self.source, token, 'file')
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):     # never open a FIFO
                return None
            with open(path, 'rb') as f:
                data = f.read(TOKEN_ANSWER_MAX + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _lookup_failed('token file %s' % path, exc) from None
        try:
            if len(data) > TOKEN_ANSWER_MAX:
                raise ValueError('larger than %d bytes' % TOKEN_ANSWER_MAX)
            return parse_target_text(data.decode('utf-8'))
        except ValueError as exc:          # UnicodeDecodeError is one
            raise HTTPError(502, 'the token lookup gave an invalid target',
                            detail='token file %s: %s' % (path, exc)) from None


class _TokenAnswer:
    """A token API's 200 answer as upstream's plugins see it (the requests
    Response they were written for): content, text, json(), ok, status_code."""

    ok = True
    status_code = 200

    def __init__(self, content):
        self.content = content

    @property
    def text(self):
        return self.content.decode('utf-8')

    def json(self):
        return json.loads(self.text)


class BaseTokenAPI(TokenPlugin):
    """Asks a web service: GET the --token-source URL with its %s replaced by the
    token (URL-quoted); 200 with `host:port` is the target, a 4xx an unknown token.
    Subclasses override parse_answer(body), or upstream's process_result(resp)."""

    needs_source = True

    def __init__(self, source):
        super().__init__(source)
        try:
            url = source % ('token',)
        except (TypeError, ValueError):
            raise UsageError('--token-source of %s must be a URL with one %%s where the '
                             'token goes' % type(self).__name__) from None
        if urllib.parse.urlsplit(url).scheme not in ('http', 'https'):
            raise UsageError('--token-source of %s must be an http:// or https:// URL'
                             % type(self).__name__)

    def lookup(self, token):
        url = self.source % (urllib.parse.quote(token, safe=''),)
        # Never log a user name or password given in the URL.
        where = 'token API at %s' % urllib.parse.urlsplit(url).netloc.rpartition('@')[2]
        deadline = time.monotonic() + TOKEN_LOOKUP_TIMEOUT
        body = bytearray()
        try:
            with urllib.request.urlopen(url, timeout=TOKEN_LOOKUP_TIMEOUT) as answer:
                while len(body) <= TOKEN_ANSWER_MAX:
                    if time.monotonic() > deadline:
                        raise socket.timeout('no whole answer within %g s'
                                             % TOKEN_LOOKUP_TIMEOUT)
                    piece = answer.read1(16384)
                    if not piece:
                        break
                    body += piece
        except urllib.error.HTTPError as exc:
            exc.close()
            if 400 <= exc.code < 500:
                return None
            raise HTTPError(502, 'the token lookup failed',
                            detail='%s answered %d' % (where, exc.code)) from None
        except urllib.error.URLError as exc:
            raise _lookup_failed(where, exc.reason if isinstance(exc.reason, OSError)
                                 else OSError(str(exc.reason))) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _lookup_failed(where, exc) from None
        if len(body) > TOKEN_ANSWER_MAX:
            raise HTTPError(502, 'the token lookup failed',
                            detail='%s: answer larger than %d bytes' % (where, TOKEN_ANSWER_MAX))
        try:
            return self.process_result(_TokenAnswer(bytes(body)))
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise HTTPError(502, 'the token lookup gave an invalid target',
                            detail='%s: %s: %s' % (where, type(exc).__name__, exc)) from None

    def process_result(self, resp):
        """The target in a 200 answer (resp.content, resp.text, resp.json()):
        upstream's hook, kept for its subclasses; ours calls parse_answer."""
        return self.parse_answer(resp.content)

    def parse_answer(self, body):
        """The Target in a 200 answer's body: here `host:port`."""
        return parse_target_text(body.decode('utf-8'))


class JSONTokenApi(BaseTokenAPI):
    """BaseTokenAPI whose answer is JSON: {"host": "...", "port": ...}."""

    def parse_answer(self, body):
        answer = json.loads(body.decode('utf-8'))
        return make_target(answer['host'], answer['port'])


#: Redis's port when --token-source does not name one.
REDIS_PORT = 6379


def _redis_command(*args):
    """One command in RESP, the Redis protocol: an array of bulk strings."""
    out = [b'*%d\r\n' % len(args)]
    for arg in args:
        data = arg.encode('utf-8') if isinstance(arg, str) else arg
        out.append(b'$%d\r\n%s\r\n' % (len(data), data))
    return b''.join(out)


class _RedisReader:
    """Reads RESP replies (simple string, error, integer, bulk string) from a socket."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()

    def _fill(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout('no answer within %g s' % TOKEN_LOOKUP_TIMEOUT)
        self.sock.settimeout(remaining)
        data = self.sock.recv(16384)
        if not data:
            raise ConnectionError('Redis closed the connection')
        self.buffer += data
        if len(self.buffer) > TOKEN_ANSWER_MAX + 64:
            raise ValueError('answer larger than %d bytes' % TOKEN_ANSWER_MAX)

    def _line(self):
        while True:
            end = self.buffer.find(b'\r\n')
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[:end + 2]
                return line
            self._fill()

    def reply(self):
        """(kind, value): kind is one of '+-:$'; a nil bulk string is ('$', None)."""
        line = self._line()
        kind, rest = line[:1].decode('latin-1'), line[1:]
        if kind and kind in '+-:':
            return kind, rest.decode('utf-8', 'replace')
        if kind != '$':
            raise ValueError('unexpected Redis reply %r' % line[:40])
        size = int(rest)
        if size < 0:
            return kind, None
        if size > TOKEN_ANSWER_MAX:
            raise ValueError('value larger than %d bytes' % TOKEN_ANSWER_MAX)
        while len(self.buffer) < size + 2:
            self._fill()
        value = bytes(self.buffer[:size])
        del self.buffer[:size + 2]
        return kind, value


def parse_source_args(source):
    """A --token-source split at its colons, as upstream's TokenRedis splits it: a
    part in double quotes may hold colons ('h::::"a:b"' -> ['h', '', '', '', 'a:b'])."""
    parts = []
    pos = 0
    while True:
        if source.startswith('"', pos):
            close = source.find('"', pos + 1)
            if close > pos + 1 and source[close + 1:close + 2] in (':', ''):
                parts.append(source[pos + 1:close])
                if close + 1 == len(source):
                    return parts
                pos = close + 2
                continue
        colon = source.find(':', pos)
        if colon < 0:
            parts.append(source[pos:])
            return parts
        parts.append(source[pos:colon])
        pos = colon + 1


class TokenRedis(TokenPlugin):
    """Looks the token up in Redis, over a new connection per lookup.

    --token-source is host[:port[:db[:password[:namespace]]]] (empty parts keep
    the defaults 6379, 0, none, none); a part in double quotes may hold colons,
    and so may the namespace; with a namespace the key is namespace:token. A
    value is JSON, {"host": "h", "port": p} or {"host": "h:p"}, or plain `h:p`."""

    needs_source = True

    def __init__(self, source):
        super().__init__(source)
        parts = parse_source_args(source)
        parts[4:] = [':'.join(parts[4:])]
        parts += [''] * 4
        self.host, port, db, self._password, self.namespace = parts[:5]
        if not self.host:
            raise UsageError('--token-source of TokenRedis is '
                             'host[:port[:db[:password[:namespace]]]], not %r' % source)
        try:
            self.port = parse_port(port, 'Redis') if port else REDIS_PORT
            self.db = int(db) if db else 0
            if self.db < 0:
                raise ValueError('negative database number')
        except ValueError as exc:
            raise UsageError('--token-source of TokenRedis: bad port or database number in '
                             'host[:port[:db[:password[:namespace]]]]: %s' % exc) from None

    def lookup(self, token):
        key = '%s:%s' % (self.namespace, token) if self.namespace else token
        where = 'Redis at %s' % format_address(self.host, self.port)
        commands = []
        if self._password:
            commands.append(_redis_command('AUTH', self._password))
        if self.db:
            commands.append(_redis_command('SELECT', str(self.db)))
        commands.append(_redis_command('GET', key))
        deadline = time.monotonic() + TOKEN_LOOKUP_TIMEOUT
        try:
            with socket.create_connection((self.host, self.port),
                                          TOKEN_LOOKUP_TIMEOUT) as sock:
                sock.sendall(b''.join(commands))
                reader = _RedisReader(sock, deadline)
                for _ in commands:
                    kind, value = reader.reply()
                    if kind == '-':
                        raise HTTPError(502, 'the token lookup failed',
                                        detail='%s: %s' % (where, value))
        except (OSError, ValueError) as exc:
            raise _lookup_failed(where, exc) from None
        if value is None:
            return None
        if kind != '$':
            raise HTTPError(502, 'the token lookup failed',
                            detail='%s: GET answered %s%s' % (where, kind, value))
        return self.parse_value(value)

    @staticmethod
    def parse_value(value):
        """A stored value as a Target: JSON with host (and port), or host:port."""
        text = value.decode('utf-8', 'replace').strip()
        try:
            stored = json.loads(text)
        except (ValueError, RecursionError):
            return parse_target_text(text)
        if not isinstance(stored, dict) or 'host' not in stored:
            raise ValueError('JSON value without "host"')
        if 'port' in stored:
            return make_target(stored['host'], stored['port'])
        return parse_target_text(str(stored['host']))


def _b64url_decode(text):
    """base64url without padding (RFC 7515 §2); ValueError if not."""
    if not re.match(r'[A-Za-z0-9_-]*\Z', text) or len(text) % 4 == 1:
        raise ValueError('not base64url')
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


# -- JWT signatures with public keys: RS*, PS*, ES* (RFC 7518 §3.3-3.5) ------------
#
# Pure Python, so that a PEM public key works without a crypto library:
# load_public_key(pem) -> RSAPublicKey | ECPublicKey (ValueError says why not),
# verify_signature(alg, key, signing_input, signature) -> bool, is_jwe(). From
# RFC 8017 (PKCS#1 v1.5, PSS), SEC 1 §4.1.4 / FIPS 186-4 §6.4 (ECDSA, P-256,
# P-384, P-521), RFC 5280 / RFC 5480 (SubjectPublicKeyInfo), RFC 7468 (PEM) and
# X.690 (DER). Every value here is public: nothing needs constant time.

#: Smallest RSA modulus accepted: NIST SP 800-131A disallows shorter keys.
JWT_MIN_RSA_BITS = 2048
#: Largest RSA modulus accepted, so that a key cannot make each check slow.
JWT_MAX_RSA_BITS = 16384


class RSAPublicKey:
    """An RSA public key (RFC 8017 §3.1), checked when made."""

    __slots__ = ('n', 'e')

    def __init__(self, n, e):
        bits = n.bit_length()
        if not JWT_MIN_RSA_BITS <= bits <= JWT_MAX_RSA_BITS:
            raise ValueError('RSA key of %d bits: %d to %d bits are accepted'
                             % (bits, JWT_MIN_RSA_BITS, JWT_MAX_RSA_BITS))
        # FIPS 186-4 B.3.1 asks 2**16 < e < 2**256; e = 3 keys are still around.
        if n % 2 == 0 or e % 2 == 0 or not 3 <= e < 1 << 256:
            raise ValueError('not an RSA public key: even modulus or bad exponent')
        #: The modulus and the public exponent.
        self.n, self.e = n, e

    def __repr__(self):
        return '<RSAPublicKey of %d bits>' % self.n.bit_length()


class _Curve:
    """A NIST curve y^2 = x^3 - 3x + b over GF(p) with a generator (gx, gy) of
    prime order n and cofactor 1 (FIPS 186-4 D.1.2)."""

    def __init__(self, name, oid, p, b, gx, gy, n):
        self.name, self.oid = name, oid
        self.p, self.b, self.gx, self.gy, self.n = (
            int(v, 16) for v in (p, b, gx, gy, n))
        #: Bytes in a coordinate, and in each of r and s (RFC 7518 §3.4).
        self.size = (self.p.bit_length() + 7) // 8

    def contains(self, x, y):
        """Whether (x, y) is a point of the curve (SEC 1 §3.2.2.1)."""
        p = self.p
        return 0 <= x < p and 0 <= y < p and (y * y - x * x * x + 3 * x - self.b) % p == 0


# The curves of ES256, ES384 and ES512 (RFC 7518 §3.4), whose p = 3 (mod 4):
# a square root is a power (for compressed points).
_P256 = _Curve('P-256', '1.2.840.10045.3.1.7',
               'ffffffff00000001000000000000000000000000ffffffffffffffffffffffff',
               '5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b',
               '6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296',
               '4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5',
               'ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551')
_P384 = _Curve('P-384', '1.3.132.0.34',
               'fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe'
               'ffffffff0000000000000000ffffffff',
               'b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875a'
               'c656398d8a2ed19d2a85c8edd3ec2aef',
               'aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a38'
               '5502f25dbf55296c3a545e3872760ab7',
               '3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c0'
               '0a60b1ce1d7e819d7a431d7c90ea0e5f',
               'ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf'
               '581a0db248b0a77aecec196accc52973')
_P521 = _Curve('P-521', '1.3.132.0.35',
               '1' + 'f' * 130,
               '051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef10'
               '9e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00',
               '0c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3d'
               'baa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66',
               '11839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e66'
               '2c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650',
               '1fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff'
               'a51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409')
#: The named curves by OID (RFC 5480 §2.1.1.1).
_CURVES = {c.oid: c for c in (_P256, _P384, _P521)}


class ECPublicKey:
    """An EC public key: a point of one of the curves above, checked when made
    (SEC 1 §3.2.2.1; cofactor 1, so a point of the curve is in the group)."""

    __slots__ = ('curve', 'x', 'y')

    def __init__(self, curve, x, y):
        if not curve.contains(x, y):
            raise ValueError('EC public key: the point is not on %s' % curve.name)
        #: The _Curve, and the point's affine coordinates.
        self.curve, self.x, self.y = curve, x, y

    def __repr__(self):
        return '<ECPublicKey on %s>' % self.curve.name


# -- DER (X.690 §8, §10) and PEM (RFC 7468) -----------------------------------

_SEQUENCE, _INTEGER, _BIT_STRING, _NULL, _OID = 0x30, 0x02, 0x03, 0x05, 0x06
_RSA_OID, _EC_OID = '1.2.840.113549.1.1.1', '1.2.840.10045.2.1'


def _der_elements(data, count=-1):
    """The (tag, contents) of the DER elements (count of them, if given) that
    fill data: definite lengths in their shortest form (X.690 §8.1.3, §10.1)."""
    elements, pos = [], 0
    while pos < len(data) and len(elements) != count:
        if len(data) < pos + 2:
            raise ValueError('malformed DER: truncated')
        tag, length, pos = data[pos], data[pos + 1], pos + 2
        if length & 0x80:
            octets = length & 0x7f
            length = int.from_bytes(data[pos:pos + octets], 'big')
            if not 0 < octets <= 4 or len(data) < pos + octets or length < 0x80 \
                    or data[pos] == 0:
                raise ValueError('malformed DER: bad length')
            pos += octets
        if len(data) < pos + length:
            raise ValueError('malformed DER: truncated')
        elements.append((tag, data[pos:pos + length]))
        pos += length
    if pos != len(data):
        raise ValueError('malformed DER: trailing bytes')
    return elements


def _der_read(data, tags):
    """The contents of the DER elements that fill data, of these tags in order."""
    elements = _der_elements(data, len(tags))
    if [tag for tag, _ in elements] != list(tags):
        raise ValueError('malformed DER: missing or unexpected elements')
    return [value for _, value in elements]


def _der_uint(value):
    """A non-negative INTEGER in its shortest form (X.690 §8.3)."""
    if not value or value[0] & 0x80 or value[0] == 0 and len(value) > 1 \
            and not value[1] & 0x80:
        raise ValueError('malformed DER: bad INTEGER')
    return int.from_bytes(value, 'big')


def _der_oid(value):
    """An OBJECT IDENTIFIER in dotted form (X.690 §8.19)."""
    arcs, arc, start = [], 0, True
    for byte in value:
        if start and byte == 0x80:
            raise ValueError('malformed DER: bad OBJECT IDENTIFIER')
        arc, start = arc << 7 | byte & 0x7f, not byte & 0x80
        if start:
            arcs.append(arc)
            arc = 0
    if not arcs or not start:
        raise ValueError('malformed DER: bad OBJECT IDENTIFIER')
    top = min(arcs[0] // 40, 2)
    return '.'.join(map(str, [top, arcs[0] - 40 * top] + arcs[1:]))


def _rsa_public_key(der):
    """PKCS#1 RSAPublicKey (RFC 8017 A.1.1): SEQUENCE {n INTEGER, e INTEGER}."""
    n, e = _der_read(_der_read(der, [_SEQUENCE])[0], [_INTEGER, _INTEGER])
    return RSAPublicKey(_der_uint(n), _der_uint(e))


def _ec_point(curve, octets):
    """An uncompressed (04 X Y) or compressed (02/03 X) point, SEC 1 §2.3.4."""
    size = curve.size
    x = int.from_bytes(octets[1:size + 1], 'big')
    if len(octets) == 1 + 2 * size and octets[0] == 4:
        return ECPublicKey(curve, x, int.from_bytes(octets[size + 1:], 'big'))
    if len(octets) == 1 + size and octets[0] in (2, 3) and x < curve.p:
        p = curve.p
        y = pow((x * x * x - 3 * x + curve.b) % p, (p + 1) // 4, p)
        return ECPublicKey(curve, x, p - y if (y ^ octets[0]) & 1 else y)
    raise ValueError('EC public key: not a %s point encoding' % curve.name)


def _subject_public_key_info(der):
    """SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of an RSA (RFC 3279 §2.3.1) or
    EC named-curve (RFC 5480 §2) key."""
    algorithm, bits = _der_read(_der_read(der, [_SEQUENCE])[0], [_SEQUENCE, _BIT_STRING])
    if bits[:1] != b'\0':
        raise ValueError('malformed DER: BIT STRING with unused bits')
    algorithm = _der_elements(algorithm)
    if not algorithm or algorithm[0][0] != _OID:
        raise ValueError('malformed DER: no algorithm OID')
    oid, parameters = _der_oid(algorithm[0][1]), algorithm[1:]
    if oid == _RSA_OID:
        if parameters != [(_NULL, b'')]:
            raise ValueError('RSA public key: its parameters must be NULL')
        return _rsa_public_key(bits[1:])
    if oid == _EC_OID:
        if len(parameters) != 1 or parameters[0][0] != _OID:
            raise ValueError('EC public key: its parameters must name a curve')
        curve_oid = _der_oid(parameters[0][1])
        if curve_oid not in _CURVES:
            raise ValueError('EC public key on curve %s: P-256, P-384 and P-521 '
                             'are supported' % curve_oid)
        return _ec_point(_CURVES[curve_oid], bits[1:])
    raise ValueError('public key of algorithm %s: RSA (%s) and EC (%s) are supported'
                     % (oid, _RSA_OID, _EC_OID))


def load_public_key(pem_text):
    """The key in a PEM "PUBLIC KEY" (SPKI) or "RSA PUBLIC KEY" (PKCS#1) block
    (RFC 7468 §13, §5); ValueError saying why for anything else."""
    if isinstance(pem_text, bytes):
        try:
            pem_text = pem_text.decode('ascii')
        except UnicodeDecodeError:
            raise ValueError('a PEM file is ASCII text') from None
    blocks = re.findall(r'-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END \1-----', pem_text)
    count = pem_text.count('-----BEGIN')
    if count != 1:
        raise ValueError('expected one PEM block such as "-----BEGIN PUBLIC KEY-----", '
                         'found %d' % count)
    if not blocks:
        raise ValueError('malformed PEM block: no matching END line, or headers')
    label, body = blocks[0]
    if 'CERTIFICATE' in label:
        raise ValueError('PEM %s: give the public key instead '
                         '(openssl x509 -pubkey -noout -in FILE)' % label)
    if 'PRIVATE' in label:
        raise ValueError('PEM %s: give the public key instead '
                         '(openssl pkey -pubout -in FILE)' % label)
    if label not in ('PUBLIC KEY', 'RSA PUBLIC KEY'):
        raise ValueError('PEM %s: not a public key' % label)
    try:
        der = base64.b64decode(re.sub(r'\s+', '', body), validate=True)
    except ValueError:
        raise ValueError('PEM %s: the body is not base64' % label) from None
    return _subject_public_key_info(der) if label == 'PUBLIC KEY' else _rsa_public_key(der)


# -- Signatures: RSASSA-PKCS1-v1_5, RSASSA-PSS, ECDSA --------------------------

def _rsa_message(key, signature):
    """RSAVP1 (RFC 8017 §5.2.2) of a signature of the modulus' length, else None."""
    if len(signature) != (key.n.bit_length() + 7) // 8:
        return None
    s = int.from_bytes(signature, 'big')
    return pow(s, key.e, key.n) if s < key.n else None


def _verify_pkcs1(key, digest, prefix, message, signature):
    """RSASSA-PKCS1-v1_5-VERIFY (RFC 8017 §8.2.2, EMSA-PKCS1-v1_5 §9.2)."""
    m = _rsa_message(key, signature)
    if m is None:
        return False
    t = prefix + digest(message).digest()
    expected = b'\0\1' + b'\xff' * (len(signature) - len(t) - 3) + b'\0' + t
    return hmac.compare_digest(m.to_bytes(len(signature), 'big'), expected)


def _verify_pss(key, digest, message, signature):
    """RSASSA-PSS-VERIFY (RFC 8017 §8.1.2, EMSA-PSS-VERIFY §9.1.2) with MGF1 of
    the same hash and a salt as long as the hash (RFC 7518 §3.5)."""
    m = _rsa_message(key, signature)
    em_bits = key.n.bit_length() - 1
    # m must fit in em_bits: I2OSP of §8.1.2 step 2c, and step 6 of §9.1.2.
    if m is None or m.bit_length() > em_bits:
        return False
    h_len = s_len = digest().digest_size
    em = m.to_bytes((em_bits + 7) // 8, 'big')
    db_len = len(em) - h_len - 1
    if len(em) < h_len + s_len + 2 or em[-1] != 0xbc:
        return False
    h = em[db_len:-1]
    mask = b''.join(digest(h + i.to_bytes(4, 'big')).digest()      # MGF1, B.2.1
                    for i in range((db_len + h_len - 1) // h_len))[:db_len]
    db = int.from_bytes(em[:db_len], 'big') ^ int.from_bytes(mask, 'big')
    db = (db & ((1 << em_bits - 8 * h_len - 8) - 1)).to_bytes(db_len, 'big')
    padding_length = db_len - s_len
    if not hmac.compare_digest(db[:padding_length],
                               bytes(padding_length - 1) + b'\1'):
        return False
    m_prime = bytes(8) + digest(message).digest() + db[padding_length:]
    return hmac.compare_digest(h, digest(m_prime).digest())


def _ec_double(point, p):
    """2P in Jacobian coordinates (X/Z^2, Y/Z^3) for a = -3; None is infinity."""
    if point is None:
        return None
    x, y, z = point
    delta, gamma = z * z % p, y * y % p
    beta = x * gamma % p
    alpha = 3 * (x - delta) * (x + delta) % p
    x3 = (alpha * alpha - 8 * beta) % p
    z3 = 2 * y * z % p
    return ((x3, (alpha * (4 * beta - x3) - 8 * gamma * gamma) % p, z3)
            if z3 else None)


def _ec_add(a, b, p):
    """A + B in Jacobian coordinates; None is the point at infinity."""
    if a is None or b is None:
        return b if a is None else a
    (x1, y1, z1), (x2, y2, z2) = a, b
    z1z1, z2z2 = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2z2 % p, x2 * z1z1 % p
    s1, s2 = y1 * z2 * z2z2 % p, y2 * z1 * z1z1 % p
    h, r = (u2 - u1) % p, (s2 - s1) % p
    if h == 0:
        return _ec_double(a, p) if r == 0 else None
    hh = h * h % p
    hhh, v = h * hh % p, u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    return x3, (r * (v - x3) - s1 * hhh) % p, z1 * z2 * h % p


def _verify_ecdsa(key, digest, message, signature):
    """ECDSA verification (SEC 1 §4.1.4, FIPS 186-4 §6.4) of R || S, each the
    curve's size (RFC 7518 §3.4)."""
    curve = key.curve
    n, p, size = curve.n, curve.p, curve.size
    if len(signature) != 2 * size:
        return False
    r = int.from_bytes(signature[:size], 'big')
    s = int.from_bytes(signature[size:], 'big')
    if not (0 < r < n and 0 < s < n):
        return False
    hashed = digest(message).digest()
    e = int.from_bytes(hashed, 'big') >> max(0, 8 * len(hashed) - n.bit_length())
    w = pow(s, n - 2, n)
    u1, u2 = e * w % n, r * w % n
    # u1 G + u2 Q, both at once (Shamir's trick): one doubling per bit.
    g, q = (curve.gx, curve.gy, 1), (key.x, key.y, 1)
    table = (None, g, q, _ec_add(g, q, p))
    point = None
    for i in range(max(u1.bit_length(), u2.bit_length()) - 1, -1, -1):
        point = _ec_add(_ec_double(point, p), table[(u1 >> i & 1) | (u2 >> i & 1) << 1], p)
    if point is None:
        return False
    x, _, z = point
    z_inverse = pow(z, p - 2, p)
    v = x * z_inverse * z_inverse % p % n
    return hmac.compare_digest(v.to_bytes(size, 'big'), signature[:size])


#: JWS "alg" (RFC 7518 §3.1) → key type, hash, and the DigestInfo prefix of
#: EMSA-PKCS1-v1_5 (RFC 8017 §9.2 note 1) or the curve.
_JWS_ALGORITHMS = {
    'RS256': ('RSA', hashlib.sha256, bytes.fromhex('3031300d060960864801650304020105000420')),
    'RS384': ('RSA', hashlib.sha384, bytes.fromhex('3041300d060960864801650304020205000430')),
    'RS512': ('RSA', hashlib.sha512, bytes.fromhex('3051300d060960864801650304020305000440')),
    'PS256': ('RSA', hashlib.sha256, None),
    'PS384': ('RSA', hashlib.sha384, None),
    'PS512': ('RSA', hashlib.sha512, None),
    'ES256': ('EC', hashlib.sha256, _P256),
    'ES384': ('EC', hashlib.sha384, _P384),
    'ES512': ('EC', hashlib.sha512, _P521),
}

#: The "alg" values verify_signature checks.
JWT_ASYMMETRIC_ALGORITHMS = frozenset(_JWS_ALGORITHMS)


def verify_signature(alg, key, signing_input, signature):
    """Whether signature is alg's signature of signing_input (RFC 7515 §5.2
    step 8) by key; ValueError if alg is unknown or needs another key."""
    entry = _JWS_ALGORITHMS.get(alg) if isinstance(alg, str) else None
    if entry is None:
        raise ValueError('JWS algorithm %.40r: %s are supported with a public key'
                         % (alg, ', '.join(sorted(JWT_ASYMMETRIC_ALGORITHMS))))
    kind, digest, extra = entry
    if kind == 'RSA' and not isinstance(key, RSAPublicKey) or kind == 'EC' and \
            not (isinstance(key, ECPublicKey) and key.curve is extra):
        raise ValueError('a %s signature needs %s key, not %s' % (
            alg, 'an RSA' if kind == 'RSA' else 'a %s' % extra.name,
            key if isinstance(key, (RSAPublicKey, ECPublicKey)) else type(key).__name__))
    signing_input, signature = bytes(signing_input), bytes(signature)
    if kind == 'EC':
        return _verify_ecdsa(key, digest, signing_input, signature)
    if extra is None:
        return _verify_pss(key, digest, signing_input, signature)
    return _verify_pkcs1(key, digest, extra, signing_input, signature)


def is_jwe(token, header=None):
    """Whether a compact token is encrypted (JWE), not signed: it has five parts,
    or its header names an "enc" (RFC 7516 §9)."""
    return token.count('.') == 4 or isinstance(header, dict) and 'enc' in header


#: JWS "alg" values we verify (RFC 7518 §3.2) and their digests.
JWT_HMAC_ALGORITHMS = {'HS256': hashlib.sha256, 'HS384': hashlib.sha384,
                       'HS512': hashlib.sha512}


class JWTTokenApi(TokenPlugin):
    """The token is a JWT (RFC 7519) whose claims hold host and port; exp and nbf
    are checked. --token-source is the key file: an HMAC secret in base64url (a
    JWK "k" value, as upstream reads it) for HS256/384/512, or a PEM public key
    (RSA of 2048 bits or more, or EC on P-256/384/521) for RS*, PS* and ES*.
    Encrypted tokens (JWE) are refused."""

    source_is_path = True
    needs_source = True

    def __init__(self, source):
        super().__init__(source)
        #: The HMAC secret, or None when the file holds a public key; the
        #: RSAPublicKey or ECPublicKey of a PEM file, else None.
        self._key, self._public = self._read_key()

    def _read_key(self):
        """(HMAC secret, None) or (None, public key) from the key file; UsageError."""
        source = self.source
        try:
            with open(source, 'rb') as f:
                data = f.read()
        except OSError as exc:
            raise UsageError('--token-source %s: %s' % (source, exc.strerror or exc)) from None
        if b'-----BEGIN' in data:
            try:
                return None, load_public_key(data)
            except ValueError as exc:
                raise UsageError('--token-source %s: %s' % (source, exc)) from None
        try:
            key = _b64url_decode(data.decode('ascii').strip())
        except ValueError:
            raise UsageError('--token-source %s must hold the HMAC secret in base64url '
                             'or a PEM public key' % source) from None
        if not key:
            raise UsageError('--token-source %s is empty' % source)
        return key, None

    def reload(self):
        try:
            self._key, self._public = self._read_key()
        except UsageError as exc:
            logger.warning('%s; still using the previous key', exc)
            return None
        return 'JWT key %s' % self.source

    def lookup(self, token):
        parts = token.split('.')
        if len(parts) == 5:
            raise HTTPError(403, 'encrypted tokens (JWE) are not supported: send a signed '
                                 'token (JWS)')
        if len(parts) != 3:
            raise HTTPError(403, 'the token is not a JWT')
        try:
            header = json.loads(_b64url_decode(parts[0]))
            _b64url_decode(parts[1])
            signature = _b64url_decode(parts[2])
            alg = header.get('alg')
            signed = ('%s.%s' % (parts[0], parts[1])).encode('ascii')
        except (ValueError, AttributeError, RecursionError):   # UnicodeError is a ValueError
            raise HTTPError(403, 'the token is not a JWT') from None
        if is_jwe(token, header):
            raise HTTPError(403, 'encrypted tokens (JWE) are not supported: send a signed '
                                 'token (JWS)')
        self._check_signature(alg, signed, signature)
        try:
            claims = json.loads(_b64url_decode(parts[1]))
            if not isinstance(claims, dict):
                raise ValueError
        except (ValueError, RecursionError):
            raise HTTPError(403, 'the token\'s claims are not a JSON object') from None
        now = time.time()
        # RFC 7519 §4.1.4-5: numeric dates; no leeway, as upstream.
        for name, late in (('nbf', False), ('exp', True)):
            when = claims.get(name)
            if when is None:
                continue
            if isinstance(when, bool) or not isinstance(when, (int, float)):
                raise HTTPError(403, 'the token\'s %s claim is not a number' % name)
            if (now > when) if late else (now < when):
                raise HTTPError(403, 'the token has expired' if late
                                else 'the token is not valid yet')
        if 'host' not in claims or 'port' not in claims:
            raise HTTPError(403, 'the token has no host and port claims')
        return claims['host'], claims['port']

    def _check_signature(self, alg, signed, signature):
        """403 unless signature is alg's signature of signed with our key."""
        name = _printable(alg, 20) if isinstance(alg, str) else 'no algorithm'
        if self._key is not None:
            digest = JWT_HMAC_ALGORITHMS.get(alg) if isinstance(alg, str) else None
            if digest is None:
                raise HTTPError(403, 'token signed with %s, but --token-source holds an '
                                     'HMAC secret (HS256, HS384, HS512)' % name)
            good = hmac.compare_digest(hmac.new(self._key, signed, digest).digest(), signature)
        else:
            try:
                good = verify_signature(alg, self._public, signed, signature)
            except ValueError as exc:
                raise HTTPError(403, 'token signed with %s: %s' % (name, exc)) from None
        if not good:
            raise HTTPError(403, 'the token\'s signature does not match')


#: --token-plugin names of the built-in plugins; upstream's module path before
#: them (websockify.token_plugins.TokenFile) means the same.
TOKEN_PLUGINS = {cls.__name__: cls for cls in (
    ReadOnlyTokenFile, TokenFile, TokenFileName, UnixDomainSocketDirectory, BaseTokenAPI,
    JSONTokenApi, TokenRedis, JWTTokenApi)}
UPSTREAM_PLUGIN_MODULE = 'websockify.token_plugins.'


def import_plugin_class(flag, name):
    """The class of a custom plugin, `package.module.Class` on the Python path, for
    the option `flag`; UsageError if it cannot be imported."""
    # Plugins written for upstream import websockify.token_plugins (or
    # .auth_plugins): section Upstream's Python API registers those modules.
    module_name, _, class_name = name.rpartition('.')
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:      # ImportError, or whatever the plugin's module raises
        raise UsageError('%s %s: cannot import %s: %s: %s'
                         % (flag, name, module_name, type(exc).__name__, exc)) from None
    cls = getattr(module, class_name, None)
    if not callable(cls):
        raise UsageError('%s %s: module %s has no class %s' % (flag, name, module_name,
                                                              class_name))
    return cls


def make_token_plugin(settings):
    """The --token-plugin object, made once when the server starts; UsageError if
    the class cannot be found or made, or has no lookup()."""
    name = settings.token_plugin
    builtin = TOKEN_PLUGINS.get(name)
    if builtin is not None:
        return builtin(settings.token_source)
    cls = import_plugin_class('--token-plugin', name)
    try:
        plugin = cls(settings.token_source)
    except Exception as exc:
        raise UsageError('--token-plugin %s failed to start: %s: %s'
                         % (name, type(exc).__name__, exc)) from None
    if not callable(getattr(plugin, 'lookup', None)):
        raise UsageError('--token-plugin %s has no lookup(token) method' % name)
    return plugin


################################################################################
# Auth plugins
################################################################################
#
# Owns --auth-plugin: the built-in plugins (BasicHTTPAuth, ExpectOrigin,
# ClientCertCNAuth), load_auth_plugin (called once by the prepare step) and
# authenticate, which the handler calls for each request it checks. Calls
# sections 1-3 and import_plugin_class (Token plugins).
#
# --auth-plugin CLASS --auth-source ARG: the plugin is built once, at start-up,
# with ARG; its authenticate(headers, target_host, target_port) runs for every
# WebSocket handshake (and every --web request with --web-auth) before the
# target is connected: returning allows, raising refuses. This is upstream
# websockify's interface, so its plugins run here unchanged: AuthenticationError
# (code, headers, msg) gives the answer; any other exception is a failing plugin,
# answered 500 and logged, never a traceback.

#: Header through which plugins see the common name of a verified client
#: certificate (upstream's name, after Apache's SSL_CLIENT_S_DN_CN). A client
#: sending it itself is ignored: only we set it.
CLIENT_CN_HEADER = 'SSL_CLIENT_S_DN_CN'
#: Headers of our own in every answer, which plugins cannot replace.
_OWN_HEADERS = frozenset(('content-type', 'content-length', 'connection', 'server'))
#: Module name under which upstream's plugins are found; accepted for the built-in ones.
UPSTREAM_AUTH_MODULE = 'websockify.auth_plugins'


class BasePlugin:
    """Base class of auth plugins: built with the --auth-source string (or None)."""

    def __init__(self, src=None):
        self.source = src

    def authenticate(self, headers, target_host, target_port):
        """Return to allow the request, raise AuthenticationError to refuse it. Override."""


class BasicHTTPAuth(BasePlugin):
    """HTTP Basic authentication (RFC 7617) with --auth-source USER:PASSWORD."""

    #: The realm a browser names when it asks for the password (upstream's).
    realm = 'Websockify'

    def __init__(self, src=None):
        if not src or ':' not in src:
            raise ValueError('BasicHTTPAuth needs --auth-source USER:PASSWORD')
        super().__init__(src)
        # RFC 7617 §2.1: browsers send UTF-8 nowadays, older ones ISO-8859-1.
        self._expected = [src.encode('utf-8')]
        latin = src.encode('latin-1', 'replace')
        if latin != self._expected[0]:
            self._expected.append(latin)

    def authenticate(self, headers, target_host, target_port):
        challenge = {'WWW-Authenticate': 'Basic realm="%s"' % self.realm}
        value = headers.get('Authorization')
        if value is None:
            raise AuthenticationError('no credentials', 401, challenge,
                                      'authentication required')
        scheme, _, token = value.strip().partition(' ')
        if scheme.lower() != 'basic':
            raise AuthenticationError('%s credentials, not Basic' % _printable(scheme), 401,
                                      challenge, 'Basic authentication required')
        try:
            given = base64.b64decode(token.strip().encode('ascii'), validate=True)
        except (ValueError, UnicodeEncodeError):
            given = b''
        if b':' not in given:
            raise AuthenticationError(response_code=400,
                                      response_msg='malformed Basic credentials')
        # Every candidate is compared, in constant time, whatever the first gives.
        matches = [hmac.compare_digest(given, expected) for expected in self._expected]
        if not any(matches):
            user = given.partition(b':')[0].decode('latin-1')
            raise AuthenticationError('wrong password for user %s' % _printable(user), 401,
                                      challenge, 'wrong user name or password')


class InvalidOriginError(AuthenticationError):
    """ExpectOrigin's refusal (upstream's class): 403, with the allowed origins in
    expected_origin and the Origin given in actual_origin (None: no header)."""

    def __init__(self, expected, actual):
        self.expected_origin = expected
        self.actual_origin = actual
        super().__init__('origin %s is not allowed' % ('missing' if actual is None else
                                                       repr(_printable(actual))),
                         403, None, 'origin not allowed')


class ExpectOrigin(BasePlugin):
    """Allows requests whose Origin is one of the space-separated --auth-source origins."""

    def __init__(self, src=None):
        super().__init__(src)
        self.origins = frozenset((src or '').split())
        if not self.origins:
            raise ValueError('ExpectOrigin needs --auth-source "ORIGIN ..." '
                             '(such as https://example.com)')

    def authenticate(self, headers, target_host, target_port):
        # HyBi 7 and 8 clients name it Sec-WebSocket-Origin (draft-ietf-hybi-10 §4.1).
        origin = headers.get('Origin') or headers.get('Sec-WebSocket-Origin')
        if origin not in self.origins:
            raise InvalidOriginError(sorted(self.origins), origin)


class ClientCertCNAuth(BasePlugin):
    """Allows TLS clients whose verified certificate has one of the space-separated
    --auth-source common names (needs --verify-client)."""

    def __init__(self, src=None):
        super().__init__(src)
        self.names = frozenset((src or '').split())
        if not self.names:
            raise ValueError('ClientCertCNAuth needs --auth-source "NAME ..." '
                             '(common names of client certificates)')

    def authenticate(self, headers, target_host, target_port):
        name = headers.get(CLIENT_CN_HEADER)
        if name is None:
            raise AuthenticationError('no verified client certificate with a common name',
                                      403, None, 'client certificate required')
        if name not in self.names:
            raise AuthenticationError('client certificate %r is not allowed' % _printable(name),
                                      403, None, 'client certificate not allowed')


#: The built-in plugins, by upstream's names.
AUTH_PLUGINS = {cls.__name__: cls for cls in (BasicHTTPAuth, ExpectOrigin, ClientCertCNAuth)}


# -- the origin allow-list (--origin) -----------------------------------------------
#
# A browser names the page that opens a WebSocket in Origin (RFC 6455 §4.1 and
# §10.2; Sec-WebSocket-Origin in HyBi 7/8; Origin in the Hixie drafts), and
# WebSockets are not bound by the same-origin policy: any page the browser shows
# can open ws://127.0.0.1:PORT. --origin lists the pages that may. A request
# without Origin comes from a program, not a browser page, and is let through.

#: Ports a serialised origin leaves out (RFC 6454 §4: the scheme's default).
DEFAULT_PORTS = {'http': 80, 'https': 443, 'ws': 80, 'wss': 443}
_SCHEME = re.compile(r'[a-z][a-z0-9+.-]*\Z')


def parse_origin(text):
    """An origin as browsers send it, 'scheme://host[:port]' (RFC 6454 §6.2), as
    (scheme, host, port): lowercase, the scheme's default port filled in (None for
    schemes without one). ValueError for anything else (a path, user info, 'null')."""
    scheme, sep, rest = text.partition('://')
    scheme = scheme.lower()
    if not sep or not _SCHEME.match(scheme):
        raise ValueError('origin %r is not scheme://host[:port]' % text)
    if not rest or any(c in rest for c in '/?#@\\') or has_control_characters(rest):
        raise ValueError('origin %r: only scheme://host[:port], no path, query or user' % text)
    host, port = parse_host_port(rest, 'origin', need_port=False)
    if port is None:
        port = DEFAULT_PORTS.get(scheme)
    return scheme, host.lower(), port


class OriginPolicy:
    """--origin values: serialised origins, 'same' (the origin whose host and port
    are the request's Host) and 'null' (opaque origins: sandboxed frames, file://
    pages). Built by parse_args; ValueError names a bad value."""

    def __init__(self, values):
        self.values = tuple(values)
        self.same = 'same' in self.values
        self.null = 'null' in self.values
        self.origins = frozenset(parse_origin(v) for v in self.values
                                 if v not in ('same', 'null'))

    def refusal(self, request):
        """None when the request may go on, else the HTTPError 403 to answer."""
        origin = request.header('origin')
        if origin is None:
            origin = request.header('sec-websocket-origin')
        if origin is None or self.allows(origin, request.header('host')):
            return None
        return HTTPError(403, 'origin not allowed',
                         log_reason='origin %s not allowed (--origin %s)' % (
                             _printable(origin), ' '.join(self.values)))

    def allows(self, origin, host=None):
        if origin.strip().lower() == 'null':
            return self.null
        try:
            scheme, name, port = parse_origin(origin.strip())
        except ValueError:
            return False
        if (scheme, name, port) in self.origins:
            return True
        if not self.same or host is None or scheme not in ('http', 'https'):
            return False
        # The Host of a request that reached us through a TLS terminator has the
        # terminator's port, or none: no port means the origin's scheme's default.
        try:
            host_name, host_port = parse_host_port(host.strip(), 'Host', need_port=False)
        except ValueError:
            return False
        return (host_name.lower() == name
                and (host_port if host_port is not None else DEFAULT_PORTS[scheme]) == port)


def load_auth_plugin(name, source):
    """The plugin for --auth-plugin NAME --auth-source SOURCE; UsageError if it cannot be.

    NAME is a built-in one (also as websockify.auth_plugins.NAME) or
    package.module.Class, imported from the Python path."""
    module_name, dot, class_name = name.rpartition('.')
    if not dot or module_name == UPSTREAM_AUTH_MODULE:
        cls = AUTH_PLUGINS.get(class_name)
        if cls is None:
            raise UsageError('unknown --auth-plugin %s: give one of %s, or package.module.Class'
                             % (name, ', '.join(AUTH_PLUGINS)))
    else:
        cls = import_plugin_class('--auth-plugin', name)
    try:
        plugin = cls(source)
    except Exception as exc:
        raise UsageError('--auth-plugin %s: %s' % (name, exc)) from None
    if not callable(getattr(plugin, 'authenticate', None)):
        raise UsageError('--auth-plugin %s has no authenticate() method' % name)
    return plugin


def _certificate_cn(cert):
    """The common name of a verified peer certificate (the last one, as upstream), or None."""
    names = [value for rdn in (cert or {}).get('subject', ())
             for key, value in rdn if key == 'commonName']
    return names[-1] if names else None


def _plugin_headers(headers):
    """The headers a refusing plugin asked for that are safe to send: names are
    tokens, values hold no control characters, our own headers stay ours."""
    try:
        items = list(headers.items() if hasattr(headers, 'items') else headers or ())
    except (TypeError, ValueError):
        return []
    safe = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        name, value = str(name), str(value)
        if (_TOKEN.match(name) and name.lower() not in _OWN_HEADERS
                and not has_control_characters(value)):
            safe.append((name, value))
    return safe


def _auth_refusal(plugin, exc):
    """The HTTPError answering a plugin's exception: its status if it gave one."""
    name = type(plugin).__name__
    if isinstance(exc, HTTPError):
        return HTTPError(exc.status, exc.reason, exc.headers,
                         '%s: %s' % (name, exc.log_reason))
    # By name too: a plugin may raise upstream's class, or another copy of ours.
    if not any(c.__name__ == 'AuthenticationError' for c in type(exc).__mro__):
        return HTTPError(500, 'authentication failed: internal error',
                         log_reason='%s failed: %s: %s' % (name, type(exc).__name__,
                                                           _printable(str(exc))))
    code = getattr(exc, 'code', None)
    detail = _printable(str(exc) or '(no reason given)')
    if not isinstance(code, int) or isinstance(code, bool) or not 300 <= code <= 599:
        return HTTPError(403, 'authentication failed',
                         log_reason='%s refused with the invalid status %r: %s'
                                    % (name, code, detail))
    reason = getattr(exc, 'msg', None) or http.client.responses.get(code, 'refused')
    return HTTPError(code, _printable(str(reason)), _plugin_headers(getattr(exc, 'headers', ())),
                     '%s refused: %s' % (name, detail))


def authenticate(plugin, request, peer_cert, target_host, target_port):
    """Run an auth plugin on a request; raises HTTPError with the answer if it refuses.

    peer_cert is the client's verified certificate (getpeercert()) or None."""
    headers = http.client.HTTPMessage()
    for name, values in request.headers.items():
        if name != CLIENT_CN_HEADER.lower():
            for value in values:
                headers[name] = value
    name = _certificate_cn(peer_cert)
    if name is not None:
        headers[CLIENT_CN_HEADER] = name
    try:
        plugin.authenticate(headers=headers, target_host=target_host, target_port=target_port)
    except Exception as exc:             # the plugin's code: anything can come out
        raise _auth_refusal(plugin, exc) from None


################################################################################
# Program wrapping
################################################################################
#
# Owns `-- PROGRAM`: finding or building rebind.so, running the program, the
# ports it reports, --wrap-mode, the restart policy (RestartBackoff, which the
# --workers supervisor uses too), and connect_target, the handler's one call to
# reach its target: the wrapped program, or open_target for any other. Calls
# sections 1-3 and Targets.
#
# `websockify.py PORT -- PROGRAM ARGS`: websockify listens on PORT itself and
# runs PROGRAM in a process group of its own with rebind.so preloaded. When
# PROGRAM, or anything it starts, binds a TCP socket to PORT, rebind.so binds it
# to loopback on a port the kernel picks and sends that port to a Unix datagram
# socket in a private (0700) directory; the reader thread here records it, and
# ProgramWrapper.connect connects each session to any recorded port that
# accepts. A program binding IPv4 and IPv6 reports two ports.
#
# When PROGRAM exits, --wrap-mode decides:
#   exit     websockify stops and exits with PROGRAM's status (128+N for signal N).
#   ignore   websockify keeps serving, for programs that daemonize (vncserver):
#            the ports their daemon reported stay valid.
#   respawn  PROGRAM starts again. A run that served a session or lasted
#            RESPAWN_QUICK_EXIT seconds restarts at once, however often (telnetd
#            exits after every connection). A run that ended sooner without a
#            session failed to start: after RESPAWN_IMMEDIATE_RETRIES such failures
#            in a row the restart waits RESPAWN_FIRST_DELAY seconds, doubling up
#            to RESPAWN_MAX_DELAY, with one warning, until a run succeeds (the
#            RestartBackoff below, which --workers uses too). Sessions arriving
#            meanwhile wait for the new run, up to WRAP_CONNECT_WAIT s.
# Whenever websockify stops (signal, error, --timeout, exit mode), every process
# group it started gets SIGTERM, then SIGKILL after WRAP_KILL_GRACE seconds.

class RestartBackoff:
    """When to restart something that ended: the one policy of --wrap-mode=respawn
    (ProgramWrapper) and of --workers (the supervisor, section Server).

    A run that lived min_life seconds, or did its job (succeeded), is restarted at
    once and clears the record. A run that ended sooner is a failure: after
    `immediate` of them in a row, each further one waits first_delay seconds,
    doubling up to max_delay. One object per restarted thing; not thread-safe."""

    def __init__(self, min_life, first_delay, max_delay, immediate=0):
        self.min_life = min_life
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.immediate = immediate
        #: Runs in a row that ended before min_life without succeeding.
        self.failures = 0

    @property
    def backing_off(self):
        """True once failures are past the immediate retries (the next one waits)."""
        return self.failures > self.immediate

    def next_delay(self, lived, succeeded=False):
        """Record a run that lasted `lived` seconds; the seconds to wait before the next."""
        if succeeded or lived >= self.min_life:
            self.failures = 0
            return 0.0
        self.failures += 1
        if not self.backing_off:
            return 0.0
        # The exponent is capped so that the float cannot overflow, whatever the count.
        doublings = min(self.failures - self.immediate - 1, 64)
        return min(self.max_delay, self.first_delay * 2 ** doublings)


#: Environment variable naming rebind.so when --rebind is not given.
REBIND_ENV = 'WEBSOCKIFY_REBIND'

_REPORT = re.compile(rb'rebind ([46]) (\d{1,5}) (\d{1,10})\Z')


def find_rebind(given=None):
    """Path of rebind.so: `given` (--rebind), else $WEBSOCKIFY_REBIND, else next to
    this file, else built there from rebind.c; raises WrapError saying what to do."""
    here = os.path.dirname(os.path.abspath(__file__))
    named = given or os.environ.get(REBIND_ENV)
    if named:
        origin = '--rebind' if given else '$' + REBIND_ENV
        path = os.path.abspath(named)
        if not os.path.isfile(path):
            raise WrapError('rebind.so not found at %s (from %s): build it with `make` in %s, '
                            'or fix the path' % (path, origin, here))
    else:
        path = os.path.join(here, 'rebind.so')
        if not os.path.isfile(path):
            path = _build_rebind(here)
    try:
        with open(path, 'rb') as f:
            magic = f.read(4)
    except OSError as exc:
        raise WrapError('cannot read %s: %s' % (path, exc.strerror or exc)) from None
    if magic != b'\x7fELF':
        raise WrapError('%s is not a shared library: rebuild it with `make` in %s'
                        % (path, here))
    if ':' in path or ' ' in path:
        raise WrapError('LD_PRELOAD cannot name %r (it contains a space or colon): '
                        'copy rebind.so elsewhere and give --rebind PATH' % path)
    return path


def _build_rebind(here):
    """Compile rebind.c next to this file (or in a temporary directory) and return the path."""
    source = os.path.join(here, 'rebind.c')
    compiler = shutil.which('cc') or shutil.which('gcc')
    if not os.path.isfile(source) or not compiler:
        raise WrapError('rebind.so not found in %s, and it cannot be built here (%s): run '
                        '`make` in %s, or give --rebind PATH or $%s'
                        % (here, 'no rebind.c' if compiler else 'no C compiler', here,
                           REBIND_ENV))
    out_dir = here
    if not os.access(here, os.W_OK):
        out_dir = tempfile.mkdtemp(prefix='websockify-rebind-')
        atexit.register(shutil.rmtree, out_dir, True)
    partial = os.path.join(out_dir, '.rebind.so.%d' % os.getpid())
    try:
        result = subprocess.run(
            [compiler, '-O2', '-shared', '-fPIC', '-o', partial, source, '-ldl'],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=REBIND_BUILD_TIMEOUT)
        failure = None if result.returncode == 0 else (
            result.stdout.decode('utf-8', 'replace').strip().splitlines() or ['?'])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    if failure is not None:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise WrapError('rebind.so not found and building it failed (%s): run `make` in %s'
                        % (failure, here))
    path = os.path.join(out_dir, 'rebind.so')
    os.replace(partial, path)
    logger.info('built %s from rebind.c with %s', path, compiler)
    return path


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_groups(groups, signum):
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
        except OSError:
            pass


def _describe_status(status):
    if status < 0:
        try:
            return 'was killed by %s' % signal.Signals(-status).name
        except ValueError:
            return 'was killed by signal %d' % -status
    return 'exited with status %d' % status


class ProgramWrapper:
    """Runs the wrapped program, records the ports rebind.so reports, applies --wrap-mode.

    Created by main(); the handler threads call connect() (through connect_target)."""

    def __init__(self, settings, rebind, on_exit):
        self.settings = settings
        self.rebind = rebind
        self.name = _printable(os.path.basename(settings.wrap_cmd[0]))
        #: Called from the watcher thread when --wrap-mode=exit ends websockify.
        self._on_exit = on_exit
        self._cond = threading.Condition()
        #: (host, port) of the listeners reported, newest first.
        self._listeners = []
        #: Bumped whenever _listeners or the program's state changes.
        self._version = 0
        self._proc = None
        self._started = 0.0
        #: True once a session connected to the current run.
        self._served = False
        #: When to respawn (--wrap-mode=respawn).
        self._restarts = RestartBackoff(RESPAWN_QUICK_EXIT, RESPAWN_FIRST_DELAY,
                                        RESPAWN_MAX_DELAY, RESPAWN_IMMEDIATE_RETRIES)
        #: Process groups started that may still have members.
        self._groups = set()
        self._stop = threading.Event()
        self._watcher = None
        self._reader = None
        #: Set by stop(); sessions stop waiting for the program.
        self.stopping = False
        #: The status websockify exits with under --wrap-mode=exit, once known.
        self.exit_status = None
        self._dir = self._reports = None
        try:
            self._dir = tempfile.mkdtemp(prefix='websockify-wrap-')
            self._report_path = os.path.join(self._dir, 'ports')
            self._reports = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._reports.bind(self._report_path)
        except OSError as exc:
            if self._reports is not None:
                self._reports.close()
            if self._dir is not None:
                shutil.rmtree(self._dir, True)
            raise WrapError('cannot create the socket rebind.so reports to: %s'
                            % (exc.strerror or exc)) from None

    def start(self):
        """Start the program (WrapError if it cannot run) and the threads watching it."""
        with self._cond:
            self._spawn()
        self._reader = threading.Thread(target=self._read_reports, name='rebind-reports',
                                        daemon=True)
        self._watcher = threading.Thread(target=self._watch, name='wrapped-program',
                                         daemon=True)
        self._reader.start()
        self._watcher.start()

    def _spawn(self):
        """Start one run of the program; called with self._cond held."""
        settings = self.settings
        env = dict(os.environ)
        preload = env.get('LD_PRELOAD')
        env['LD_PRELOAD'] = self.rebind + (':' + preload if preload else '')
        env['WEBSOCKIFY_WRAP_PORT'] = str(settings.listen_port)
        env['WEBSOCKIFY_WRAP_REPORT'] = self._report_path
        if settings.verbose:
            env['WEBSOCKIFY_WRAP_DEBUG'] = '1'
        out = None
        try:
            if settings.log_file:
                out = open(settings.log_file, 'ab')
            elif settings.daemon:
                out = subprocess.DEVNULL
            # start_new_session: a process group of its own (and no terminal), so
            # that stop() can signal everything the program started.
            proc = subprocess.Popen(list(settings.wrap_cmd), env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, start_new_session=True)
        except OSError as exc:
            raise WrapError('cannot run %s: %s' % (_printable(settings.wrap_cmd[0]),
                                                   exc.strerror or exc)) from None
        finally:
            if out not in (None, subprocess.DEVNULL):
                out.close()
        self._groups = {g for g in self._groups if _group_alive(g)}
        self._groups.add(proc.pid)
        self._proc = proc
        self._started = time.monotonic()
        self._served = False
        self._version += 1
        self._cond.notify_all()
        logger.info('started %s (pid %d), its port %d moved to loopback', self.name,
                    proc.pid, settings.listen_port)

    # -- what sessions use ------------------------------------------------------------

    def listeners(self):
        """(version, [(host, port), ...]) of the reported listeners, newest first."""
        with self._cond:
            return self._version, list(self._listeners)

    def wait_listeners(self, version, timeout):
        """Wait up to timeout s for a change after `version`; return listeners()."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != version, timeout)
            return self._version, list(self._listeners)

    def session_connected(self):
        """A session reached the program: this run works, whenever it exits."""
        with self._cond:
            self._served = True

    def connect(self):
        """Connect to any listener the program reported, newest first: (sock, where).

        While none accepts (the program is starting, restarting, or serving its one
        connection), wait for a new report or retry, for up to WRAP_CONNECT_WAIT s;
        then HTTPError 502."""
        deadline = time.monotonic() + WRAP_CONNECT_WAIT
        version, listeners = self.listeners()
        problem = 'it has not bound port %d yet' % self.settings.listen_port
        while True:
            for host, port in listeners:
                remaining = deadline - time.monotonic()
                try:
                    sock = socket.create_connection((host, port),
                                                    max(0.5, min(CONNECT_TIMEOUT, remaining)))
                except OSError as exc:
                    problem = '%s: %s' % (format_address(host, port), exc.strerror or exc)
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.session_connected()
                return sock, 'program %s at %s' % (self.name, format_address(host, port))
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping:
                raise HTTPError(502, 'wrapped program %s is not accepting connections: %s'
                                % (self.name, problem))
            version, listeners = self.wait_listeners(
                version, min(remaining, WRAP_RETRY) if listeners else remaining)

    # -- threads ----------------------------------------------------------------------

    def _read_reports(self):
        while True:
            try:
                data = self._reports.recv(256)
            except OSError:
                return
            if self.stopping:
                return
            match = _REPORT.match(data)
            port = int(match.group(2)) if match else 0
            if not 0 < port <= MAX_PORT:
                logger.warning('ignoring a malformed report from rebind.so: %r', data[:80])
                continue
            host = '::1' if match.group(1) == b'6' else '127.0.0.1'
            with self._cond:
                if (host, port) in self._listeners:
                    self._listeners.remove((host, port))
                self._listeners.insert(0, (host, port))
                del self._listeners[8:]
                self._version += 1
                self._cond.notify_all()
            logger.info('%s (pid %s) listens on %s', self.name, match.group(3).decode(),
                        format_address(host, port))

    def _watch(self):
        try:
            self._watch_runs()
        except Exception as exc:    # one guard for the thread
            logger.error('watching %s failed: %s: %s', self.name, type(exc).__name__, exc,
                         exc_info=logger.isEnabledFor(logging.DEBUG))

    def _watch_runs(self):
        mode = self.settings.wrap_mode
        while True:
            with self._cond:
                proc = self._proc
            status = proc.wait()
            with self._cond:
                ran = time.monotonic() - self._started
                served = self._served
                self._proc = None
                if mode == 'respawn':
                    self._listeners = []
                self._version += 1
                self._cond.notify_all()
                if self.stopping:
                    return
            how = _describe_status(status)
            if mode == 'exit':
                logger.info('%s %s: stopping (--wrap-mode=exit)', self.name, how)
                self.exit_status = 128 - status if status < 0 else status
                self._on_exit()
                return
            if mode == 'ignore':
                logger.info('%s %s: still serving (--wrap-mode=ignore)', self.name, how)
                return
            delay = self._respawn_delay(served, ran, how)
            while True:
                if self._stop.wait(delay):
                    return
                with self._cond:
                    if self.stopping:
                        return
                    try:
                        self._spawn()
                        break
                    except WrapError as exc:
                        how = str(exc)
                delay = self._respawn_delay(False, 0.0, how)

    def _respawn_delay(self, served, ran, how):
        """Seconds to wait before the next run (the rule in this section's comment)."""
        was_backing_off = self._restarts.backing_off
        delay = self._restarts.next_delay(ran, served)
        if not self._restarts.failures:
            if was_backing_off:
                logger.info('%s ran normally again: restarts are immediate again', self.name)
            logger.info('%s %s: restarting (--wrap-mode=respawn)', self.name, how)
            return delay
        if not self._restarts.backing_off:
            logger.info('%s %s after %.1f s without a session: restarting', self.name, how, ran)
            return delay
        if not was_backing_off:
            logger.warning('%s keeps failing within %g s of starting without a session (%s): '
                           'restarting it with a back-off from %g s doubling up to %g s',
                           self.name, RESPAWN_QUICK_EXIT, how, delay, RESPAWN_MAX_DELAY)
        else:
            logger.debug('%s %s: restarting in %g s', self.name, how, delay)
        return delay

    # -- stopping ---------------------------------------------------------------------

    def stop(self):
        """Terminate every process group started: SIGTERM, then SIGKILL after a grace."""
        with self._cond:
            if self.stopping:
                return
            self.stopping = True
            self._version += 1
            self._cond.notify_all()
            groups = set(self._groups)
        self._stop.set()
        deadline = time.monotonic() + WRAP_KILL_GRACE
        _signal_groups(groups, signal.SIGTERM)
        if self._watcher is not None:
            self._watcher.join(max(0.0, deadline - time.monotonic()))
        while True:
            groups = {g for g in groups if _group_alive(g)}
            if not groups or time.monotonic() >= deadline:
                break
            time.sleep(WRAP_RETRY)
        if groups:
            logger.info('%s: process group(s) %s still alive after SIGTERM: SIGKILL', self.name,
                        ', '.join(str(g) for g in sorted(groups)))
            _signal_groups(groups, signal.SIGKILL)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as wake:
                wake.sendto(b'', self._report_path)
        except OSError:
            pass
        for thread in (self._watcher, self._reader):
            if thread is not None:
                thread.join(1.0)
        self._reports.close()
        shutil.rmtree(self._dir, True)


def connect_target(settings, tls_context=None, wrapper=None, target=None):
    """Open the session's target socket (TLS with tls_context, for --ssl-target):
    (sock, where); raises HTTPError 502 naming the target.

    `target` is the Target a token chose (resolve_target); without one the fixed
    target of settings is used. The target of a wrapped program is a loopback
    port that its rebind.so reported to `wrapper` (a ProgramWrapper)."""
    if target is None and settings.wrap_cmd:
        if wrapper is None:
            raise HTTPError(502, 'wrapped program %s is not running'
                            % _printable(os.path.basename(settings.wrap_cmd[0])))
        sock, where = wrapper.connect()
        if tls_context is not None:
            sock = start_target_tls(sock, tls_context, None, where)
        return sock, where
    if target is None:
        target = Target(settings.target_host, settings.target_port, settings.unix_target)
    return open_target(target, tls_context)


################################################################################
# Recording
################################################################################
#
# --record FILE writes each WebSocket session to FILE.N, N being the session's
# connection number in the log ('w2.7' under --workers), created with mode 0600.
# The file is the JavaScript that noVNC's playback page (tests/vnc_playback.html,
# loading playback-ui.js) reads, in the layout upstream websockify writes:
#
#     var VNC_frame_encoding = 'binary';
#     var VNC_frame_data = [
#     '{2{RFB 003.008\n',              target -> client: '{' MS '{' BYTES
#     '}9}RFB 003.008\n',              client -> target: '}' MS '}' BYTES
#     '{11{\x01\x02',
#     'EOF'];
#
# MS is the time since the session opened, in milliseconds. BYTES are what a peer
# sent, one entry per chunk relayed: the target's as read, the client's once
# unframed, unmasked and base64-decoded, so HyBi, base64 and Hixie sessions
# record alike. They form a single-quoted JavaScript string whose character
# codes are the bytes ('binary' encoding): printable ASCII as itself, the rest
# as \xNN, \t, \n, \r, \\ and \'. Older noVNC pages require VNC_frame_encoding;
# newer ones use it when present. Playback replays the '{' entries.
#
# Recording costs nothing when off: the pump calls a SessionRecorder, its
# observer, only when there is one. A write that fails (disk full) is logged once and ends the recording,
# never the session.

#: Start and end of a recording file.
RECORD_HEAD = b"var VNC_frame_encoding = 'binary';\nvar VNC_frame_data = [\n"
RECORD_TAIL = b"'EOF'];\n"
#: Names tried for one session when FILE.N exists already: FILE.N, FILE.N.1, ...
RECORD_NAME_TRIES = 100


def js_string_body(data):
    """Bytes as the inside of a single-quoted JavaScript string, one character per byte."""
    return codecs.latin_1_decode(data)[0].encode('unicode_escape').replace(b"'", b"\\'")


class SessionRecorder:
    """Writes one session to its recording file (see above); opened by the handler."""

    def __init__(self, path, log_prefix):
        self.path = path
        self._log_prefix = log_prefix
        self._start = time.monotonic()
        # A new file only (no symlink followed, no FIFO waited for, nothing
        # overwritten): connection numbers start again at 1 after a restart, so
        # FILE.N may exist; the session then goes to FILE.N.1, FILE.N.2, ...
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0)
        for attempt in range(RECORD_NAME_TRIES):
            try:
                fd = os.open(self.path, flags, 0o600)
                break
            except FileExistsError:
                if attempt == RECORD_NAME_TRIES - 1:
                    raise
                self.path = '%s.%d' % (path, attempt + 1)
        try:
            self._file = open(fd, 'wb')
        except BaseException:
            os.close(fd)
            raise
        self._write(RECORD_HEAD)

    def client(self, parts):
        """Record what the client sent (payload views)."""
        self._entry(b'}', parts)

    def target(self, data):
        """Record what the target sent."""
        self._entry(b'{', (data,))

    def _entry(self, marker, parts):
        if self._file is None:
            return
        head = b"'%s%d%s" % (marker, (time.monotonic() - self._start) * 1000, marker)
        for part in parts:
            if len(part):
                self._write(head + js_string_body(part) + b"',\n")

    def _write(self, data):
        if self._file is None:
            return
        try:
            self._file.write(data)
        except (OSError, ValueError) as exc:
            self._stop(exc)

    def close(self):
        """End the file (called once the session is over)."""
        if self._file is None:
            return
        self._write(RECORD_TAIL)
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.close()
        except OSError as exc:
            self._file = file
            self._stop(exc)

    def _stop(self, exc):
        logger.warning('%s: recording to %s stopped: %s', self._log_prefix, self.path,
                       getattr(exc, 'strerror', None) or exc)
        file, self._file = self._file, None
        try:
            file.close()          # closes the descriptor even when the flush fails
        except (OSError, ValueError):
            pass


################################################################################
# Server and command line
################################################################################
#
# Owns the options and the process: Settings (plain values) from parse_args
# (syntax, one place), prepare() turning them into the Runtime (TLS, plugins,
# rebind.so; UsageError), the servers that hand the Runtime's parts to each
# connection, the handler, logging and syslog, signals, -D, --workers (with
# RestartBackoff) and main(). May call every section above.

def _tls_summary(sock):
    """'TLSv1.3', plus the common name of a verified client certificate."""
    name = _certificate_cn(sock.getpeercert())
    return sock.version() + (', client %s' % _printable(name) if name else '')


class Settings:
    """Everything the command line decides, as plain values; built once by
    parse_args(), read-only after. prepare() builds the objects they name (the
    Runtime). Settings(name=value, ...) takes any of the fields below; the others
    keep their defaults."""

    #: (name, default) of every field, in the order of the options.
    FIELDS = (
        ('listen_host', ''),
        ('listen_port', 0),
        ('unix_listen', None),
        ('unix_listen_mode', 0o600),
        ('inetd', False),
        ('prefer_ipv6', False),
        ('target_host', None),
        ('target_port', None),
        ('unix_target', None),
        ('verbose', False),
        ('traffic', False),
        ('run_once', False),
        ('timeout', 0),
        ('idle_timeout', 0),
        ('heartbeat', 0),
        #: Seconds a heartbeat ping may go unanswered before the client is dropped (0: never).
        ('heartbeat_timeout', 0),
        #: Seconds without data either way that end a session with 1001 (0: never).
        ('session_idle_timeout', 0),
        ('handshake_timeout', 10.0),
        ('text_frames', False),
        ('log_file', None),
        #: Absolute path of the --web directory, or None.
        ('web', None),
        ('web_listing', False),
        #: Absolute path of the certificate (may hold the key too); None: no TLS.
        ('cert', None),
        #: True when --cert or --key was given: a missing file is then an error, not "TLS off".
        ('cert_given', False),
        ('key', None),
        ('key_password', None),
        ('ssl_only', False),
        ('verify_client', False),
        ('cafile', None),
        ('ssl_version', 'default'),
        ('ssl_ciphers', None),
        ('ssl_target', False),
        ('ssl_target_cafile', None),
        ('ssl_target_insecure', False),
        #: The program to run and relay to (`-- PROGRAM ARGS`), else None.
        ('wrap_cmd', None),
        ('wrap_mode', 'exit'),
        ('rebind', None),
        ('daemon', False),
        ('pid_file', None),
        ('workers', 1),
        #: A built-in token plugin's name (TokenFile) or an importable module.Class;
        #: None: the fixed target above.
        ('token_plugin', None),
        #: The plugin's argument (a file, directory, URL or Redis address).
        ('token_source', None),
        ('host_token', False),
        #: Absolute path that recording files are named after (FILE of FILE.N), or None.
        ('record', None),
        #: Where to send the log too: a Unix socket path, or a (host, port) for UDP.
        ('syslog', None),
        ('legacy_syslog', False),
        #: --auth-plugin: a built-in plugin's name (BasicHTTPAuth) or an importable
        #: module.Class; prepare() builds it. None: no authentication.
        ('auth_plugin_name', None),
        #: --auth-source, the argument the auth plugin is built with.
        ('auth_source', None),
        ('web_auth', False),
        #: --origin: the OriginPolicy WebSocket handshakes must meet, or None (any origin).
        ('origins', None),
        #: Open connections (all workers) beyond which a new one gets 503 (0: no limit).
        ('max_connections', 0),
        #: Open connections from one client address (all workers); beyond: 429.
        ('max_connections_per_ip', 0),
        #: Live sessions of one token (all workers); beyond: 429.
        ('max_sessions_per_token', 0),
        #: The path that serves Prometheus metrics, or None.
        ('metrics_path', None),
        #: ipaddress networks whose clients may read the metrics.
        ('metrics_allow', ()),
        #: Warnings about options that have no effect here (logged by main()).
        ('notices', ()),
    )
    #: Fields kept out of repr(): passwords and token sources may hold secrets.
    SECRET = frozenset(('key_password', 'token_source', 'auth_source'))
    __slots__ = tuple(name for name, _ in FIELDS)

    def __init__(self, **values):
        for name, default in self.FIELDS:
            object.__setattr__(self, name, values.pop(name, default))
        if values:
            raise TypeError('no such settings: %s' % ', '.join(sorted(values)))

    def __setattr__(self, name, value):
        raise AttributeError('Settings are read-only: use replace()')

    def __eq__(self, other):
        return type(other) is Settings and self.as_dict() == other.as_dict()

    __hash__ = None

    def __repr__(self):
        return 'Settings(%s)' % ', '.join(
            '%s=%r' % (name, getattr(self, name)) for name, _ in self.FIELDS
            if name not in self.SECRET)

    def as_dict(self):
        """Every field by name."""
        return {name: getattr(self, name) for name, _ in self.FIELDS}

    def replace(self, **changes):
        """A copy with some fields changed."""
        values = self.as_dict()
        values.update(changes)
        return Settings(**values)


class WebSockifyHandler(socketserver.BaseRequestHandler):
    """Serves one client connection: sniff, handshake, then relay."""

    def handle(self):
        server = self.server
        #: The connection's number in the log (and in --record file names).
        self.conn_id = '%s%d' % (server.id_prefix, next(server.ids))
        if isinstance(self.client_address, tuple):
            peer = format_address(*self.client_address[:2])
        else:
            peer = 'unix'
        self.log_prefix = '%s %s' % (self.conn_id, peer)
        self.conn = Connection(self.request)
        try:
            self._handle()
        except Exception as exc:   # one guard per connection thread
            logger.error('%s: internal error: %s: %s', self.log_prefix,
                         type(exc).__name__, exc, exc_info=logger.isEnabledFor(logging.DEBUG))

    def finish(self):
        try:
            self.request.close()
        except OSError:
            pass

    def _handle(self):
        settings = self.server.settings
        start = time.monotonic()
        WAKES.note(self, start)           # a handshake is a session waking (Pump: Fairness)
        first = self.conn.peek_first_byte(settings.handshake_timeout)
        if first is None:
            logger.debug('%s: closed before sending anything', self.log_prefix)
            return
        self.deadline = start + settings.handshake_timeout
        if first == FLASH_POLICY_REQUEST[:1]:
            self._serve_flash_policy()
            return
        if self.server.is_tcp:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if first in TLS_FIRST_BYTES and not self._start_tls(self.deadline):
            return
        request = None
        try:
            head = self.conn.read_head(self.deadline)
            if head is None:
                logger.debug('%s: closed during the request head', self.log_prefix)
                return
            request = parse_request(head)
            del head
            if self.server.tls.tls_only and not self.conn.secure:
                raise HTTPError(403, 'this port accepts TLS connections only: '
                                     'use wss:// or https://')
            if (settings.metrics_path is not None and not is_upgrade(request)
                    and request.target.partition('?')[0] == settings.metrics_path):
                self._serve_metrics(request)
                return
            self._serve_request(request)
        except HTTPError as exc:
            self._refuse(request, exc)
        except (ConnectionError, socket.timeout) as exc:
            logger.info('%s: connection lost during the handshake: %s',
                        self.log_prefix, type(exc).__name__)
        except SSL_ERRORS as exc:
            logger.info('%s: TLS error during the handshake: %s',
                        self.log_prefix, tls_error_text(exc))

    def _start_tls(self, deadline):
        """Wrap the client socket in TLS; False (and one log line) if that fails."""
        context = self.server.tls.context()
        if context is None:
            why = ('this Python has no ssl module' if ssl is None else
                   'no certificate loaded (%s)' % (self.server.settings.cert or 'no --cert'))
            logger.info('%s: TLS handshake refused: %s', self.log_prefix, why)
            return False
        try:
            self.conn.start_tls(context, deadline)
        except (OSError, ValueError) as exc:
            logger.info('%s: TLS handshake failed: %s', self.log_prefix, tls_error_text(exc))
            return False
        self.request = self.conn.sock
        logger.debug('%s: TLS %s, %s', self.log_prefix, self.request.version(),
                     self.request.cipher()[0])
        return True

    def _serve_request(self, request):
        """Decide (accept), then for a WebSocket: resolve the target, authenticate,
        read the draft-76 key3, connect, reply and relay."""
        server = self.server
        settings = server.settings
        decision = accept(request, self.conn.secure, serve_web=bool(settings.web),
                          text_frames=settings.text_frames, heartbeat=settings.heartbeat,
                          heartbeat_timeout=settings.heartbeat_timeout,
                          idle_timeout=settings.session_idle_timeout)
        if decision is None:
            if settings.web_auth:
                self._authenticate(request)
            self._serve_file(request)
            return
        if isinstance(decision, HTTPError):
            raise decision
        if settings.origins is not None:
            refusal = settings.origins.refusal(request)
            if refusal is not None:
                raise refusal
        try:
            chosen = resolve_target(request, settings, server.token_plugin)
        except HTTPError as exc:
            if exc.status == 502 and server.token_plugin is not None:
                server.count('lookup_failures')
            raise
        if server.auth_plugin is not None:
            self._authenticate(request, chosen)
        token = (server.take_token(request_token(request, settings))
                 if server.token_plugin is not None else None)
        try:
            extra = self._read_key3(decision)
            if extra is None:
                return
            target, where = connect_target(settings, server.target_tls, server.wrapper, chosen)
            try:
                self.conn.send_all(decision.reply(extra))
                self._relay(request, target, where, decision)
            finally:
                target.close()
        finally:
            server.release_token(token)

    def _read_key3(self, decision):
        """The 8 bytes a draft-76 client sends after its head (b'' for every other
        protocol), or None, logged, when it closes first."""
        if not decision.extra_needed:
            return b''
        extra = self.conn.read_extra(decision.extra_needed, self.deadline)
        if extra is None:
            logger.info('%s: closed before sending the draft-76 key3', self.log_prefix)
        return extra

    def _authenticate(self, request, chosen=None):
        """Run --auth-plugin on a request (before any target is connected), with the
        target its token chose if any; HTTPError."""
        settings = self.server.settings
        cert = self.request.getpeercert() if self.conn.secure else None
        host, port = ((chosen.host, chosen.port) if chosen is not None
                      else (settings.target_host, settings.target_port))
        authenticate(self.server.auth_plugin, request, cert, host, port)

    def _serve_flash_policy(self):
        """Answer a Flash socket policy request on this port, then close."""
        data = self.conn.read_policy_request(self.deadline)
        if data != FLASH_POLICY_REQUEST:
            logger.info('%s: closed: %r is neither HTTP nor a Flash policy request',
                        self.log_prefix, data[:32])
            return
        logger.info('%s: Flash socket policy served', self.log_prefix)
        try:
            self.conn.send_all(FLASH_POLICY, 2.0)
        except OSError:
            return
        _close_gently(self.request)           # await the player's close: no reset

    def _serve_file(self, request):
        """A plain HTTP request with --web: serve it and log one line."""
        settings = self.server.settings
        status, sent, note = serve_web(self.conn, request, settings.web, settings.web_listing)
        log = logger.info if note else logger.debug
        log('%s: %d %s %s, %d bytes%s', self.log_prefix, status, request.method,
            _printable(request.target), sent, ': ' + note if note else '')

    def _relay(self, request, target, where, acceptance):
        server = self.server
        settings = server.settings
        session = acceptance.session
        protocol = acceptance.protocol
        path = _printable(request.target)
        logger.info('%s: session open: path %s, target %s, %s/%s%s%s', self.log_prefix, path,
                    where, session.codec.family, session.codec.mode,
                    ', protocol %s' % _printable(protocol) if protocol else '',
                    ', ' + _tls_summary(self.request) if self.conn.secure else '')
        # A relaying session needs nothing more of its request (1 kB an idle session).
        request.headers = {}
        recorder = self._open_recording() if settings.record else None
        pump = Pump(self.request, target, session, initial=self.conn.extra,
                    wake_fd=server.wake_fd, traffic=settings.traffic, observer=recorder)
        started = time.monotonic()
        server.session_started(self.conn.secure)
        try:
            code, reason = pump.run()
        finally:
            server.session_ended(pump.target.sent, pump.target.received)
            if recorder is not None:
                recorder.close()
        logger.info('%s: session closed: path %s, target %s, %d bytes from client, '
                    '%d bytes to client, %.1f s, close %s%s', self.log_prefix, path, where,
                    pump.target.sent, pump.target.received, time.monotonic() - started,
                    code, ' (%s)' % _printable(reason) if reason else '')

    def _serve_metrics(self, request):
        """--metrics-path: the Tally in Prometheus text format, to allowed clients."""
        ip = client_ip(self.client_address)
        if ip is not None and not any(ip in net for net in self.server.settings.metrics_allow):
            raise HTTPError(403, 'metrics are not served to this address',
                            log_reason='metrics refused to %s (--metrics-allow)' % ip)
        if request.method not in ('GET', 'HEAD'):
            raise HTTPError(405, 'metrics are read with GET', [('Allow', 'GET, HEAD')])
        body = metrics_text(self.server).encode()
        head = response_head(200, [('Content-Type', METRICS_CONTENT_TYPE),
                                   ('Content-Length', str(len(body))),
                                   ('Cache-Control', 'no-store'), ('Connection', 'close')])
        self.conn.send_all(head + (body if request.method == 'GET' else b''), 5.0)
        logger.debug('%s: metrics served (%d bytes)', self.log_prefix, len(body))
        _close_gently(self.request)

    def _open_recording(self):
        """The SessionRecorder of this session (--record), or None if the file cannot
        be made: the session goes on unrecorded."""
        path = '%s.%s' % (self.server.settings.record, self.conn_id)
        try:
            recorder = SessionRecorder(path, self.log_prefix)
        except OSError as exc:
            logger.warning('%s: cannot record to %s: %s', self.log_prefix, path,
                           exc.strerror or exc)
            return None
        logger.info('%s: recording to %s', self.log_prefix, recorder.path)
        return recorder

    def _refuse(self, request, exc):
        """Answer a refused request with its status, log it, and close gently."""
        self.server.count(self.server.tally.refusal_key(exc.status))
        what = ('%s %s' % (request.method, _printable(request.target))
                if request is not None else 'request')
        logger.info('%s: %d %s: %s%s', self.log_prefix, exc.status, what, exc.log_reason,
                    ' (%s)' % exc.detail if exc.detail else '')
        try:
            self.conn.send_all(http_response(exc.status, _printable(exc.reason, None) + '\n',
                                             exc.headers), 2.0)
        except OSError:
            return
        _close_gently(self.request)


#: The answer to a connection no thread could be started for (the process is out
#: of threads or memory): sent without reading the request, then closed.
NO_THREAD_ANSWER = (b'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n'
                    b'Retry-After: 1\r\nContent-Length: 0\r\n\r\n')


def _bucket(text):
    """The Tally bucket of a client address or a token: the same in every worker
    (forked, they share the string hash's seed), unknown to clients."""
    return hash(text) % TALLY_BUCKETS


def client_ip(address):
    """The ipaddress of a client's (host, port, ...) address, IPv4-mapped IPv6 as
    IPv4; None for a Unix socket client."""
    if not isinstance(address, tuple):
        return None
    ip = ipaddress.ip_address(address[0].partition('%')[0])
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


class Tally:
    """Counts every --workers process adds to and any can read: a row of cells
    per worker in shared memory (a plain buffer with one process), each row
    written only by its worker under that server's lock, so no lock between
    processes is needed; a total is the sum over rows. Two workers can pass a
    limit at the same instant: a limit may be exceeded by workers-1 at most."""

    #: Counters and gauges, in row order; then the buckets of client addresses
    #: (open connections) and of tokens (live sessions).
    FIELDS = ('alive', 'connections', 'sessions', 'sessions_plain', 'sessions_tls',
              'bytes_to_target', 'bytes_to_client', 'refused_connections',
              'refused_connections_per_ip', 'refused_sessions_per_token',
              'lookup_failures', 'no_thread')
    #: Refusal statuses counted by their number; any other is counted as 'other'.
    STATUSES = (400, 401, 403, 404, 405, 414, 426, 429, 431, 500, 502, 503, 504)
    #: Gauges: what a dead worker's row must not go on counting.
    GAUGES = ('alive', 'connections', 'sessions')

    def __init__(self, rows, shared):
        self.index = {name: i for i, name in enumerate(self.FIELDS)}
        for i, status in enumerate(self.STATUSES + ('other',)):
            self.index[status] = len(self.FIELDS) + i
        self.ip_base = len(self.index)
        self.token_base = self.ip_base + TALLY_BUCKETS
        self.width = self.token_base + TALLY_BUCKETS
        size = 8 * self.width * rows
        memory = mmap.mmap(-1, size) if shared else bytearray(size)
        self.cells = memoryview(memory).cast('Q')
        self.rows = rows

    def add(self, row, key, n=1):
        """Add n (may be negative) to a cell of row: a field name or a status."""
        self.cells[row * self.width + self.index[key]] += n

    def add_at(self, row, offset, n):
        self.cells[row * self.width + offset] += n

    def total(self, key):
        i = self.index[key]
        return sum(self.cells[row * self.width + i] for row in range(self.rows))

    def total_at(self, offset):
        return sum(self.cells[row * self.width + offset] for row in range(self.rows))

    def refusal_key(self, status):
        return status if status in self.STATUSES else 'other'

    def clear_gauges(self, row):
        """A worker died: its open connections and sessions died with it."""
        base = row * self.width
        for name in self.GAUGES:
            self.cells[base + self.index[name]] = 0
        for offset in range(self.ip_base, self.width):
            self.cells[base + offset] = 0


def _limit_answer(status, why):
    return response_head(status, [('Retry-After', str(LIMIT_RETRY_AFTER)),
                                  ('Content-Type', 'text/plain; charset=utf-8'),
                                  ('Content-Length', str(len(why) + 1)),
                                  ('Connection', 'close')]) + why.encode() + b'\n'


#: Prometheus text exposition format 0.0.4.
METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'


def metrics_text(server):
    """The metrics page: totals over every worker's Tally row. Every label value
    is a constant or one of our numbers, never client text."""
    tally = server.tally
    plugin = type(server.token_plugin).__name__ if server.token_plugin is not None else None
    lines = []

    def metric(name, kind, text, samples):
        lines.append('# HELP websockify_%s %s' % (name, text))
        lines.append('# TYPE websockify_%s %s' % (name, kind))
        for labels, value in samples:
            lines.append('websockify_%s%s %d' % (name, labels, value))
    metric('workers', 'gauge', 'Processes serving (--workers; 1 without).',
           [('', tally.total('alive'))])
    metric('connections_open', 'gauge', 'Client connections open now (handshakes, web '
           'requests, sessions).', [('', tally.total('connections'))])
    metric('sessions_open', 'gauge', 'WebSocket sessions being relayed now.',
           [('', tally.total('sessions'))])
    metric('sessions_total', 'counter', 'WebSocket sessions opened, by client transport.',
           [('{transport="plain"}', tally.total('sessions_plain')),
            ('{transport="tls"}', tally.total('sessions_tls'))])
    metric('bytes_total', 'counter', 'Payload bytes relayed by ended sessions, by direction.',
           [('{direction="client_to_target"}', tally.total('bytes_to_target')),
            ('{direction="target_to_client"}', tally.total('bytes_to_client'))])
    metric('refusals_total', 'counter', 'Requests answered with an HTTP error, by status.',
           [('{status="%s"}' % key, tally.total(key))
            for key in Tally.STATUSES + ('other',)])
    metric('limit_refusals_total', 'counter', 'Connections or sessions refused at a limit.',
           [('{limit="max_connections"}', tally.total('refused_connections')),
            ('{limit="max_connections_per_ip"}', tally.total('refused_connections_per_ip')),
            ('{limit="max_sessions_per_token"}', tally.total('refused_sessions_per_token')),
            ('{limit="threads"}', tally.total('no_thread'))])
    if plugin is not None:
        metric('token_lookup_failures_total', 'counter', 'Token lookups that failed (502).',
               [('{plugin="%s"}' % plugin, tally.total('lookup_failures'))])
    return '\n'.join(lines) + '\n'


#: Answers to connections beyond --max-connections and --max-connections-per-ip,
#: sent without reading the request.
OVER_CONNECTIONS = _limit_answer(503, 'too many connections: try again')
OVER_CONNECTIONS_PER_IP = _limit_answer(429, 'too many connections from your address')


class _Episode:
    """Connections answered in a row for one reason (a limit reached, no thread to
    start): the first is logged, and the count when the episode ends. Any thread."""

    __slots__ = ('_lock', '_count')

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self._count = None

    def count(self):
        """Count one connection; True if it begins the episode."""
        with self._lock:
            first = self._count is None
            self._count = (self._count or 0) + 1
        return first

    def end(self):
        """End the episode: the connections it counted, or None if none was going on."""
        if self._count is None:         # the usual case, without the lock
            return None
        with self._lock:
            counted, self._count = self._count, None
        return counted


class _ConnectionThread:
    """A connection thread as main() starts them: _thread's, without the Thread
    object, its Event and Condition and the wait in Thread.start() for the new
    thread to run (2.5 kB and two context switches a connection). Like a daemon
    Thread, it ends with the process. Takes Thread's target/args/daemon.

    A thread whose connection has ended waits up to THREAD_PARK_IDLE seconds for
    the next one (at most THREAD_PARK_MAX threads wait at a time) before it ends:
    starting and ending a thread cost 55-65 us of CPU a connection, a quarter of a
    short session's. Each connection still has a thread of its own while it lasts."""

    __slots__ = ('_run',)
    #: Parked threads, the latest last: [lock held until a job is given, job].
    _parked = []
    _parked_lock = _thread.allocate_lock()

    def __init__(self, target, args=(), daemon=True):
        self._run = (target, args)

    def start(self):
        """Hand the job to a parked thread, or start one; RuntimeError when none
        can be started."""
        cls = _ConnectionThread
        with cls._parked_lock:
            seat = cls._parked.pop() if cls._parked else None
        if seat is None:
            _thread.start_new_thread(cls._serve, (self._run,))
        else:
            seat[1] = self._run
            seat[0].release()

    @staticmethod
    def _serve(job):
        cls = _ConnectionThread
        seat = None
        while True:
            target, args = job
            job = None
            target(*args)
            target = args = None        # the request, its handler: not kept while parked
            if seat is None:
                seat = [_thread.allocate_lock(), None]
                seat[0].acquire()
            with cls._parked_lock:
                if len(cls._parked) >= THREAD_PARK_MAX:
                    return
                cls._parked.append(seat)
            if not seat[0].acquire(timeout=THREAD_PARK_IDLE):
                with cls._parked_lock:
                    if seat in cls._parked:     # a seat equals only itself (its lock)
                        cls._parked.remove(seat)
                        return
                seat[0].acquire()       # taken meanwhile: its job is being handed over
            job, seat[1] = seat[1], None


class _ServerMixin:
    """What the TCP and Unix listeners share: settings, ids, session accounting."""

    daemon_threads = True
    #: The class of connection threads.
    thread_class = threading.Thread
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG
    is_tcp = True
    #: Whether connection threads accept connections themselves (_accept_loop)
    #: instead of an acceptor thread handing each one over: main() sets it in one
    #: process on Linux, on a listening socket of its own (shutdown() wakes the
    #: threads waiting in accept() by shutting it, which other processes share).
    accept_in_threads = False

    def _setup(self, runtime):
        #: What prepare() built for these settings; the attributes below are its parts.
        self.runtime = runtime
        self.settings = runtime.settings
        #: Client SSLContext for --ssl-target, else None.
        self.target_tls = runtime.target_tls
        #: The --token-plugin object (shared by every connection thread), else None.
        self.token_plugin = runtime.token_plugin
        #: The --auth-plugin object (shared by every connection thread), else None.
        self.auth_plugin = runtime.auth_plugin
        #: TLS for clients (the context may be None: no certificate).
        self.tls = runtime.server_tls
        self.ids = itertools.count(1)
        #: Put before connection numbers in log lines ('w2.' in worker 2).
        self.id_prefix = ''
        #: With --workers: the open connection count of every worker, in memory
        #: the processes share (slot `worker_slot` is ours), else None.
        self.load_board = None
        self.worker_slot = 0
        #: In a --workers worker, the supervisor's pid: a worker stops when it dies.
        self.supervisor = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        #: Sessions being relayed now.
        self.active = 0
        #: Accepted connections not closed yet (handshakes, --web, sessions).
        self.connections = 0
        #: time.monotonic() of the first accept() of an episode that failed for
        #: want of descriptors (None before the first), and the pauses since; the
        #: episode is over when accept() has worked since _fed_since for
        #: STARVED_EPISODE_GAP seconds.
        self._starved_since = None
        self._starved_pauses = 0
        self._fed_since = None
        #: Connections answered 503 because no connection thread could start.
        self._threadless = _Episode()
        #: time.monotonic() of the last session end (or of start-up).
        self.last_active = time.monotonic()
        #: Set when the process should stop (signal, --run-once, timeouts).
        self.stop_event = threading.Event()
        self.wake_fd = self._wake_w = None
        self.renew_wake_pipe()
        #: The ProgramWrapper of `-- PROGRAM` (set by main()), else None.
        self.wrapper = None
        #: Connections, sessions, refusals and bytes of every worker (our row:
        #: worker_slot), for the limits and --metrics-path.
        self.tally = Tally(self.settings.workers, self.settings.workers > 1)
        #: The address bucket of each open connection (request -> bucket).
        self._ip_buckets = {}
        #: Connections answered at a limit (--max-connections, -per-ip).
        self._limited = _Episode()
        #: Who passed the listening socket ('inetd', 'systemd'), else None: bound here.
        self.passed_by = None
        #: With accept_in_threads: the threads waiting in accept() now, an event
        #: shutdown() sets for them, and one set while serve_forever() is not running.
        self._acceptors = 0
        self._accepting_stopped = threading.Event()
        self._serving_done = threading.Event()
        self._serving_done.set()

    def renew_wake_pipe(self):
        """Make the pipe whose read end every pump polls: one byte written wakes
        them all to close. A forked worker calls this to get a pipe of its own."""
        for fd in (self.wake_fd, self._wake_w):
            if fd is not None:
                os.close(fd)
        self.wake_fd, self._wake_w = os.pipe()

    def reload(self):
        """SIGHUP: open --log-file again, read token files, the JWT key and the
        certificate again; live sessions go on untouched. One log line."""
        done = []
        log_file = _reopen_log_file()
        if log_file:
            done.append('log file %s' % log_file)
        reload_plugin = getattr(self.token_plugin, 'reload', None)
        if reload_plugin is not None:
            what = reload_plugin()
            if what:
                done.append(what)
        what = self.tls.reload()
        if what:
            done.append(what)
        if self.settings.ssl_target and self.settings.ssl_target_cafile:
            try:
                self.target_tls = make_target_tls_context(self.settings)
                done.append('--ssl-target CA certificates')
            except UsageError as exc:
                logger.warning('--ssl-target: %s; still using the previous CA certificates',
                               exc)
        logger.info('%sSIGHUP: %s', self._worker_label(),
                    'reloaded ' + ', '.join(done) if done else
                    'nothing to reload (no log file, token file or certificate)')

    def session_started(self, secure=False):
        with self._lock:
            self.active += 1
            row = self.worker_slot
            self.tally.add(row, 'sessions')
            self.tally.add(row, 'sessions_tls' if secure else 'sessions_plain')

    def session_ended(self, to_target=0, to_client=0):
        """A session ended, having relayed these payload bytes each way."""
        with self._lock:
            self.active -= 1
            row = self.worker_slot
            self.tally.add(row, 'sessions', -1)
            self.tally.add(row, 'bytes_to_target', to_target)
            self.tally.add(row, 'bytes_to_client', to_client)
            self.last_active = time.monotonic()
            self._idle.notify_all()
        if self.settings.run_once:
            self.stop_event.set()

    def close_sessions(self, grace):
        """Ask live sessions to close (1001) and wait up to grace seconds for them."""
        os.write(self._wake_w, b'x')
        end = time.monotonic() + grace
        with self._lock:
            while self.active and time.monotonic() < end:
                self._idle.wait(end - time.monotonic())
            return self.active

    def wait_idle(self, timeout=None):
        """Wait until no session is live; True if none is."""
        with self._lock:
            return self._idle.wait_for(lambda: not self.active, timeout)

    def get_request(self):
        # With --workers the kernel wakes every worker for a new connection; one
        # busier than the least busy gives that one a head start. The loser of the
        # race gets BlockingIOError, which socketserver ignores.
        board = self.load_board
        if board is not None and board[self.worker_slot] > min(board):
            time.sleep(ACCEPT_YIELD)
        try:
            accepted = super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._pause_accepting(exc)
            raise
        self._count_accepted(*accepted)
        return accepted

    def _count_accepted(self, request, client_address):
        """Count a connection accept() returned (until shutdown_request)."""
        if self._starved_since is not None and self._fed_since is None:
            with self._lock:
                first = self._fed_since is None      # the first accept() since
                if first:
                    self._fed_since = time.monotonic()
                    starved, pauses = self._fed_since - self._starved_since, self._starved_pauses
            if first:
                logger.debug('%saccepting again after %.1f s without descriptors (%d pauses)',
                             self._worker_label(), starved, pauses)
        bucket = None
        if self.settings.max_connections_per_ip:
            ip = client_ip(client_address)
            bucket = None if ip is None else _bucket(str(ip))
        board = self.load_board
        with self._lock:
            self.connections += 1
            if board is not None:
                board[self.worker_slot] += 1
            self.tally.add(self.worker_slot, 'connections')
            if bucket is not None:
                self._ip_buckets[request] = bucket
                self.tally.add_at(self.worker_slot, self.tally.ip_base + bucket, 1)

    def serve_forever(self, poll_interval=0.5):
        """socketserver's accept loop; with accept_in_threads, start the first
        accepting thread instead and call service_actions() every poll_interval
        seconds until shutdown()."""
        if not self.accept_in_threads:
            super().serve_forever(poll_interval)
            return
        self._serving_done.clear()
        try:
            try:
                self.thread_class(target=self._accept_loop, daemon=True).start()
            except RuntimeError:
                self._accept_loop()     # no thread to spare: this one accepts
            while not self._accepting_stopped.wait(poll_interval):
                self.service_actions()
        finally:
            self._serving_done.set()

    def shutdown(self):
        """Stop accepting; return once serve_forever() has (socketserver's contract).
        With accept_in_threads, shutting the listening socket for reading makes
        accept() fail in every thread waiting in it (Linux); clients that connect
        later are refused rather than left in the backlog."""
        if not self.accept_in_threads:
            super().shutdown()
            return
        self._accepting_stopped.set()
        try:
            self.socket.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        self._serving_done.wait()

    def _accept_loop(self):
        """A connection thread's life with accept_in_threads: wait in accept() beside
        the other idle threads, serve the connection the kernel hands it, come back.
        The thread that takes the last waiting one's place first starts (or wakes) a
        successor, so that one always waits; with ACCEPTING_THREADS_MAX waiting, a
        thread returns (a _ConnectionThread then parks). Saved per connection: the
        acceptor's wake-up, the hand-over to a thread and the GIL passing between
        them (CPU per short session with four clients 355 -> 328 us, measured)."""
        listener, lock, stopped = self.socket, self._lock, self._accepting_stopped
        while not stopped.is_set():
            with lock:
                if self._acceptors >= ACCEPTING_THREADS_MAX:
                    return
                self._acceptors += 1
            try:
                request, client_address = listener.accept()
            except OSError as exc:
                with lock:
                    self._acceptors -= 1
                if not stopped.is_set():
                    self._accept_failed(exc)
                continue
            with lock:
                self._acceptors -= 1
                last = not self._acceptors
            self._count_accepted(request, client_address)
            if stopped.is_set():
                self.shutdown_request(request)
                return
            if last and not self._start_thread(request, self._accept_loop):
                continue            # answered 503: this thread goes on accepting
            try:                    # as socketserver's loop: no error ends the thread
                if self.verify_request(request, client_address):
                    self.process_request_thread(request, client_address)
                else:
                    self.shutdown_request(request)
            except Exception:
                self.handle_error(request, client_address)
                self.shutdown_request(request)

    def _accept_failed(self, exc):
        """accept() failed in an accepting thread: a connection reset in the backlog
        is skipped; want of descriptors pauses (_pause_accepting); any other error
        pauses too, rather than spin on a failing socket."""
        if exc.errno == errno.ECONNABORTED:
            return
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            self._pause_accepting(exc)
            return
        logger.debug('%saccept() failed: %s', self._worker_label(), exc)
        self._accepting_stopped.wait(ACCEPT_PAUSE)

    def verify_request(self, request, client_address):
        """Beyond --max-connections (503) or --max-connections-per-ip (429): answer
        without reading the request and close; one log line per episode."""
        settings, tally = self.settings, self.tally
        answer = None
        if settings.max_connections and tally.total('connections') > settings.max_connections:
            answer, key, limit = OVER_CONNECTIONS, 'refused_connections', 'connections'
        elif settings.max_connections_per_ip:
            bucket = self._ip_buckets.get(request)
            if bucket is not None and (tally.total_at(tally.ip_base + bucket)
                                       > settings.max_connections_per_ip):
                answer, key, limit = (OVER_CONNECTIONS_PER_IP, 'refused_connections_per_ip',
                                      'connections from one address')
        if answer is None:
            answered = self._limited.end()
            if answered is not None:
                logger.info('%sbelow the limits again (%d connections answered at a limit)',
                            self._worker_label(), answered)
            return True
        with self._lock:
            tally.add(self.worker_slot, key)
            tally.add(self.worker_slot, tally.refusal_key(int(answer[9:12])))
        if self._limited.count():
            logger.warning('%slimit of %s reached (%s): answering %s until below it',
                           self._worker_label(), limit, format_address(*client_address[:2])
                           if isinstance(client_address, tuple) else 'unix',
                           answer[9:12].decode())
        try:
            request.send(answer, socket.MSG_DONTWAIT)
        except OSError:
            pass
        return False

    def _worker_label(self):
        return 'worker %s: ' % self.id_prefix[1:-1] if self.id_prefix else ''

    def _pause_accepting(self, exc):
        """accept() failed for want of descriptors: wait ACCEPT_PAUSE seconds (the
        client waits in the backlog) instead of retrying at once; the first failure
        of an episode is logged, with the counts."""
        now = time.monotonic()
        with self._lock:
            fed = self._fed_since
            self._fed_since = None
            new_episode = self._starved_since is None or (fed is not None and
                                                          now - fed >= STARVED_EPISODE_GAP)
            if new_episode:
                self._starved_since = now
                self._starved_pauses = 0
            self._starved_pauses += 1
        if new_episode:
            soft = _nofile_limits()[0]
            logger.warning('%sout of file descriptors (%s) with %d connections, %d of them '
                           'relaying, descriptor limit %s: pausing accept() for %.1f s at '
                           'a time until connections end', self._worker_label(),
                           errno.errorcode.get(exc.errno, exc.errno), self.connections,
                           self.active, soft if soft is not None else 'unknown',
                           ACCEPT_PAUSE)
        self.stop_event.wait(ACCEPT_PAUSE)

    def process_request(self, request, client_address):
        """Relay the connection in a thread of its own (daemon threads, as
        ThreadingMixIn's with daemon_threads). If none can be started, answer
        NO_THREAD_ANSWER and close: one log line per episode, no traceback."""
        self._start_thread(request, self.process_request_thread, (request, client_address))

    def _start_thread(self, request, target, args=()):
        """Start a connection thread running target(*args); True if it started. If
        none can be, answer request NO_THREAD_ANSWER and close it: one log line
        per episode."""
        try:
            self.thread_class(target=target, args=args, daemon=True).start()
        except RuntimeError as exc:     # "can't start new thread"
            with self._lock:
                self.tally.add(self.worker_slot, 'no_thread')
                self.tally.add(self.worker_slot, 503)
            if self._threadless.count():
                logger.warning('%scannot start a connection thread (%s) with %d '
                               'connections, %d of them relaying: answering 503 until '
                               'one starts', self._worker_label(), exc, self.connections,
                               self.active)
            try:
                request.send(NO_THREAD_ANSWER, socket.MSG_DONTWAIT)
            except OSError:
                pass
            self.shutdown_request(request)
            return False
        answered = self._threadless.end()
        if answered is not None:
            logger.debug('%sconnection threads start again (%d connections answered 503)',
                         self._worker_label(), answered)
        return True

    def finish_request(self, request, client_address):
        """What BaseRequestHandler.__init__ does (setup, handle, finish), run here
        rather than from inside the constructor when the handler class keeps that
        __init__: a call through a constructor nests the interpreter once more on
        the C stack, which made every connection thread touch a third stack page
        (4 kB a session). A handler with its own __init__ is constructed as usual."""
        cls = self.RequestHandlerClass
        if cls.__init__ is not socketserver.BaseRequestHandler.__init__:
            super().finish_request(request, client_address)
            return
        handler = cls.__new__(cls)
        handler.request, handler.client_address, handler.server = (request, client_address,
                                                                   self)
        handler.setup()
        try:
            handler.handle()
        finally:
            handler.finish()

    def service_actions(self):
        """Called by serve_forever() after each accept and every half second."""
        if _MallocTrim.active is not None:
            _MallocTrim.active.maybe()

    def shutdown_request(self, request):
        # The handler's finish() has closed the request (a TLS wrap detached it):
        # TCPServer's shutdown() would only fail with EBADF, once per connection.
        if request.fileno() != -1:
            super().shutdown_request(request)
        with self._lock:
            self.connections -= 1
            if self.load_board is not None:
                self.load_board[self.worker_slot] -= 1
            self.tally.add(self.worker_slot, 'connections', -1)
            bucket = self._ip_buckets.pop(request, None)
            if bucket is not None:
                self.tally.add_at(self.worker_slot, self.tally.ip_base + bucket, -1)

    def count(self, key, n=1):
        """Add n to one of our Tally cells (a field name or a refusal status)."""
        with self._lock:
            self.tally.add(self.worker_slot, key, n)

    def take_token(self, token):
        """Count a live session of token; HTTPError 429 beyond
        --max-sessions-per-token. Returns what release_token() takes."""
        limit = self.settings.max_sessions_per_token
        if not limit or token is None:
            return None
        offset = self.tally.token_base + _bucket(token)
        with self._lock:
            if self.tally.total_at(offset) >= limit:
                self.tally.add(self.worker_slot, 'refused_sessions_per_token')
                raise HTTPError(429, 'too many sessions for this token',
                                [('Retry-After', str(LIMIT_RETRY_AFTER))],
                                log_reason='%d sessions of token %s already open '
                                '(--max-sessions-per-token)' % (limit, _printable(token)))
            self.tally.add_at(self.worker_slot, offset, 1)
        return offset

    def release_token(self, offset):
        if offset is not None:
            with self._lock:
                self.tally.add_at(self.worker_slot, offset, -1)

    def handle_error(self, request, client_address):
        logger.error('error serving %s', client_address, exc_info=True)

    def server_close(self):
        super().server_close()
        for fd in (self.wake_fd, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class WebSockifyServer(_ServerMixin, socketserver.ThreadingTCPServer):
    """The TCP listener: one thread per connection."""

    def __init__(self, runtime, address, family, sock=None):
        self.address_family = family
        self._setup(runtime)
        super().__init__(address, WebSockifyHandler, bind_and_activate=sock is None)
        if sock is not None:
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()

    def server_bind(self):
        if self.address_family == socket.AF_INET6 and self.server_address[0] == '::':
            # Accept IPv4 too where the OS allows (IPv4-mapped addresses).
            try:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:
                pass
        super().server_bind()


class WebSockifyUnixServer(_ServerMixin, socketserver.ThreadingUnixStreamServer):
    """The --unix-listen listener, or a Unix socket systemd passed (sock)."""

    is_tcp = False

    def __init__(self, runtime, sock=None):
        self._setup(runtime)
        #: The socket file is ours to create and remove (not when systemd passed it).
        self.owns_path = sock is None
        super().__init__(runtime.settings.unix_listen if sock is None else None,
                         WebSockifyHandler, bind_and_activate=sock is None)
        if sock is not None:
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()

    def server_bind(self):
        path = self.server_address
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)          # a stale socket from an earlier run
        except FileNotFoundError:
            pass
        old = os.umask(0o177)            # never exposed wider than 0600, even briefly
        try:
            super().server_bind()
        finally:
            os.umask(old)
        os.chmod(path, self.settings.unix_listen_mode)

    def server_close(self):
        super().server_close()
        if not self.owns_path:
            return
        try:
            os.unlink(self.server_address)
        except OSError:
            pass


def _listen_family(host, port, prefer_ipv6):
    """(family, address) to bind: '' means every address, IPv6 and IPv4 if possible."""
    if not host:
        if socket.has_ipv6:
            try:
                socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
                return socket.AF_INET6, ('::', port)
            except OSError:
                pass
        return socket.AF_INET, ('0.0.0.0', port)
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    preferred = socket.AF_INET6 if prefer_ipv6 else socket.AF_INET
    infos.sort(key=lambda info: info[0] != preferred)
    family, _, _, _, address = infos[0]
    return family, address[:2]


#: The first descriptor of the sockets systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3


def adopt_listening_socket(fd, what):
    """A socket object for a listening stream socket someone passed us as fd
    (inetd, systemd), its family read from the kernel; UsageError otherwise."""
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
    except OSError as exc:
        raise UsageError('%s: descriptor %d is not a socket (%s)' % (what, fd,
                                                                   exc.strerror or exc))
    try:
        family = probe.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        kind = probe.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError as exc:
        probe.detach()
        raise UsageError('%s: descriptor %d is not a socket (%s)' % (what, fd,
                                                                   exc.strerror or exc))
    probe.detach()
    if kind != socket.SOCK_STREAM or not listening or family not in (
            socket.AF_INET, socket.AF_INET6, getattr(socket, 'AF_UNIX', None)):
        raise UsageError('%s: descriptor %d is not a listening TCP or Unix stream socket '
                         '(ListenStream= in the .socket unit)' % (what, fd))
    return socket.socket(family, socket.SOCK_STREAM, 0, fd)


def systemd_socket():
    """The listening socket systemd passed (socket activation: LISTEN_PID is our
    pid, LISTEN_FDS is 1), or None. The variables are removed from the
    environment, so a wrapped program does not take them as its own. UsageError."""
    pid, count = os.environ.get('LISTEN_PID'), os.environ.get('LISTEN_FDS')
    if pid is None or count is None or pid.strip() != str(os.getpid()):
        return None                   # not for us (a parent's, or none)
    for name in ('LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'):
        os.environ.pop(name, None)
    if count.strip() != '1':
        raise UsageError('systemd passed %s sockets (LISTEN_FDS): websockify.py serves '
                         'one; give the .socket unit one ListenStream=' % count.strip())
    os.set_inheritable(SD_LISTEN_FDS_START, False)
    return adopt_listening_socket(SD_LISTEN_FDS_START, 'systemd socket activation')


def make_server(settings, runtime=None):
    """Create the listening server (bound, listening) for these settings and what
    prepare() built from them (prepared here when not given: UsageError). The
    socket comes from inetd (--inetd), from systemd, or is bound here."""
    if runtime is None:
        runtime = prepare(settings)
    if settings.inetd:
        sock = adopt_listening_socket(os.dup(sys.stdin.fileno()), '--inetd')
        server = WebSockifyServer(runtime, ('', 0), sock.family, sock)
        server.passed_by = 'inetd'
        return server
    sock = systemd_socket()
    if sock is not None:
        if sock.family == getattr(socket, 'AF_UNIX', None):
            server = WebSockifyUnixServer(runtime, sock)
        else:
            server = WebSockifyServer(runtime, ('', 0), sock.family, sock)
        server.passed_by = 'systemd'
        return server
    if settings.unix_listen:
        return WebSockifyUnixServer(runtime)
    family, address = _listen_family(settings.listen_host, settings.listen_port,
                                     settings.prefer_ipv6)
    return WebSockifyServer(runtime, address, family)


def describe_target(settings):
    """The fixed target as a log string (or how tokens choose it)."""
    if settings.token_plugin:
        path = TOKEN_PLUGINS.get(settings.token_plugin, TokenPlugin).source_is_path
        return 'the target of each token (%s%s%s)' % (
            settings.token_plugin, ' ' + settings.token_source if path else '',
            ', token from Host' if settings.host_token else '')
    if settings.wrap_cmd:
        return 'program %s (its port %d moved to loopback)' % (
            _printable(' '.join(settings.wrap_cmd)), settings.listen_port)
    if settings.unix_target:
        return 'unix:' + settings.unix_target
    return format_address(settings.target_host, settings.target_port)


def describe_listener(server):
    passed = ' (socket from %s)' % server.passed_by if server.passed_by else ''
    if isinstance(server, WebSockifyUnixServer):
        return 'unix:' + server.server_address + passed
    return format_address(*server.server_address[:2]) + passed




class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit status 2)."""

    def error(self, message):
        self.exit(2, '%s: error: %s (see --help)\n' % (self.prog, message))


def _build_parser():
    p = _Parser(
        prog='websockify.py',
        usage='%(prog)s [options] [source_addr:]source_port target_addr:target_port\n'
              '       %(prog)s [options] --token-plugin CLASS --token-source ARG '
              '[source_addr:]source_port\n'
              '       %(prog)s [options] --unix-target FILE [source_addr:]source_port\n'
              '       %(prog)s [options] --unix-listen FILE target_addr:target_port\n'
              '       %(prog)s [options] [source_addr:]source_port -- PROGRAM ARGS',
        description='Relay WebSocket connections to a TCP or Unix socket target.')
    p.add_argument('addresses', nargs='*', help=argparse.SUPPRESS)
    p.add_argument('--version', action='version', version='%(prog)s ' + __version__)
    a = p.add_argument
    a('-v', '--verbose', action='store_true', help='log debug detail')
    a('--traffic', action='store_true',
      help='print a marker per read/write: } client in, < client out, { target in, '
           '> target out, . partial send')
    a('--record', metavar='FILE',
      help='record each WebSocket session to FILE.N (N: its connection number in the '
           'log), a script noVNC\'s playback page replays; FILE\'s directory must exist')
    a('-D', '--daemon', action='store_true',
      help='run in the background once listening (errors before that reach the terminal)')
    a('--pid-file', metavar='FILE', help='write the process id to FILE (removed at exit)')
    a('--run-once', action='store_true', help='exit after the first WebSocket session')
    a('--timeout', type=float, default=0, metavar='SECONDS',
      help='after SECONDS stop accepting connections and exit when no session is live')
    a('--idle-timeout', type=float, default=0, metavar='SECONDS',
      help='exit after SECONDS without a live session')
    a('--handshake-timeout', type=float, default=10.0, metavar='SECONDS',
      help='time a client has to send its first byte and whole request (default 10)')
    a('--heartbeat', type=float, default=0, metavar='SECONDS',
      help='send a ping to the client every SECONDS')
    a('--heartbeat-timeout', type=float, default=0, metavar='SECONDS',
      help='close a client (and its target connection) that has not answered a '
           '--heartbeat ping within SECONDS (needs --heartbeat)')
    a('--session-idle-timeout', type=float, default=0, metavar='SECONDS',
      help='end a session (close 1001) after SECONDS without data either way')
    a('--text-frames', action='store_true',
      help='send target data in text frames (target data must be UTF-8)')
    a('--cert', metavar='FILE',
      help='TLS certificate (PEM, may hold the key too) for wss:// on the same port; '
           'default self.pem in the working directory, TLS off if it is missing')
    a('--key', metavar='FILE', help='TLS private key (PEM) if not in the --cert file')
    a('--key-password', metavar='PASSWORD',
      help='password of an encrypted key (visible in ps: prefer the next two)')
    a('--key-password-file', metavar='FILE', help='read the key password from FILE')
    a('--key-password-env', metavar='VAR',
      help='read the key password from environment variable VAR')
    a('--ssl-only', action='store_true',
      help='refuse unencrypted connections (they get a 403 answer)')
    a('--verify-client', action='store_true',
      help='require a client certificate signed by --cafile (implies --ssl-only)')
    a('--cafile', metavar='FILE',
      help='CA certificates for --verify-client (default: the system CAs)')
    a('--ssl-version', choices=tuple(TLS_MIN_VERSIONS), default='default',
      help='lowest TLS version accepted from clients (default: TLS 1.2 on current systems)')
    a('--ssl-ciphers', metavar='CIPHERS',
      help='OpenSSL cipher list for TLS 1.2 and below')
    a('--ssl-target', action='store_true',
      help='connect to the target with TLS, verifying its certificate and name')
    a('--ssl-target-cafile', metavar='FILE',
      help='CA certificates that sign the target\'s certificate (instead of the system CAs)')
    a('--ssl-target-insecure', action='store_true',
      help='do not verify the target\'s certificate (self-signed appliances)')
    a('--unix-listen', metavar='FILE', help='listen on a Unix socket instead of a port')
    a('--unix-listen-mode', metavar='OCTAL', default='600',
      help='permissions of the --unix-listen socket (default 600)')
    a('--unix-target', metavar='FILE', help='connect to a Unix socket target')
    a('--inetd', action='store_true',
      help='take the listening socket from standard input (inetd/systemd style)')
    a('--web', metavar='DIR', help='serve the files of DIR to plain HTTP GET/HEAD requests '
                                   'on the same port')
    a('--web-listing', action='store_true',
      help='with --web: list the files of a directory that has no index.html')
    a('--web-auth', action='store_true',
      help='with --web and --auth-plugin: authenticate file requests too (otherwise only '
           'WebSocket handshakes are)')
    a('--file-only', action='store_true',
      help='no directory listings (accepted for compatibility: this is the default)')
    a('--wrap-mode', choices=('exit', 'ignore', 'respawn'),
      help='when the program of -- PROGRAM exits: exit (default) with its status, '
           'ignore it and keep serving, or respawn it')
    a('--rebind', metavar='PATH',
      help='rebind.so for -- PROGRAM (default: $%s, else next to websockify.py, '
           'else built from rebind.c)' % REBIND_ENV)
    a('-6', '--prefer-ipv6', action='store_true', help='prefer IPv6 when resolving source_addr')
    a('--libserver', action='store_true',
      help='accepted for compatibility: this server is always socketserver-based')
    a('--target-config', metavar='FILE_OR_DIR',
      help='token file (lines "token: host:port") or a directory of them, read again '
           'when changed: same as --token-plugin TokenFile --token-source FILE_OR_DIR')
    a('--token-plugin', metavar='CLASS',
      help='choose each session\'s target by the token of its request (?token=NAME): '
           '%s, or an importable module.Class with lookup(token)' % ', '.join(TOKEN_PLUGINS))
    a('--token-source', metavar='ARG',
      help='the token plugin\'s argument: a token file or directory, a URL with %%s, '
           'host[:port[:db[:password[:namespace]]]] for TokenRedis, a key file for JWTTokenApi')
    a('--host-token', action='store_true',
      help='take the token from the Host header\'s name instead of the URL')
    a('--auth-plugin', metavar='CLASS',
      help='check every WebSocket handshake with CLASS: BasicHTTPAuth (ARG user:password), '
           'ExpectOrigin (ARG: allowed origins), ClientCertCNAuth (ARG: allowed common names '
           'of --verify-client certificates), or package.module.Class')
    a('--auth-source', metavar='ARG', help='the argument the --auth-plugin is built with')
    a('--max-connections', type=int, default=0, metavar='N',
      help='answer 503 (Retry-After) to connections beyond N open ones, counted over all '
           '--workers (default 0: no limit)')
    a('--max-connections-per-ip', type=int, default=0, metavar='N',
      help='answer 429 (Retry-After) to connections beyond N open ones from one client '
           'address (default 0: no limit)')
    a('--max-sessions-per-token', type=int, default=0, metavar='N',
      help='refuse (429) a WebSocket session beyond N live ones with the same token '
           '(default 0: no limit)')
    a('--metrics-path', metavar='PATH',
      help='serve Prometheus metrics at PATH (such as /metrics) on the same port')
    a('--metrics-allow', action='append', metavar='CIDR',
      help='clients of CIDR may read --metrics-path (repeatable; default: loopback only)')
    a('--origin', action='append', metavar='ORIGIN',
      help='let browser pages of ORIGIN (scheme://host[:port]) open WebSockets; "same": pages '
           'of the Host the request names; "null": opaque origins. Repeatable; others get '
           '403, requests without Origin (programs) are accepted. Default: any origin')
    a('--log-file', metavar='FILE', help='append log lines to FILE instead of stderr')
    a('--workers', type=int, default=1, metavar='N',
      help='serve with N processes sharing the listening socket, to use N cores '
           '(default 1); a worker that dies is replaced')
    a('--syslog', metavar='SERVER',
      help='log to syslog too: SERVER is a Unix socket such as /dev/log, or UDP host:port '
           '(RFC 5424 messages, facility daemon with -D, else user)')
    a('--legacy-syslog', action='store_true',
      help='with --syslog: the older BSD format (RFC 3164, as syslog(3)) instead of RFC 5424')
    return p


def _split_hostport(parser, text, what):
    """parse_host_port for a command-line address, a usage error if it fails: the
    listening address may omit its host ('6080', ':6080') and have port 0 (the OS
    picks one); a target needs host:port."""
    listening = what == 'listening'
    try:
        return parse_host_port(text, what, need_host=not listening, zero_port=listening)
    except ValueError as exc:
        parser.error(str(exc))


def _key_password(parser, opts):
    """The key password from --key-password, --key-password-file or --key-password-env."""
    given = [flag for flag in ('key_password', 'key_password_file', 'key_password_env')
             if getattr(opts, flag) is not None]
    if len(given) > 1:
        parser.error('give only one of --key-password, --key-password-file, --key-password-env')
    if opts.key_password_env is not None:
        if opts.key_password_env not in os.environ:
            parser.error('--key-password-env: the environment has no %s'
                         % opts.key_password_env)
        return os.environ[opts.key_password_env]
    if opts.key_password_file is not None:
        try:
            with open(opts.key_password_file, encoding='utf-8') as f:
                return f.readline().rstrip('\r\n')
        except (OSError, UnicodeDecodeError) as exc:
            parser.error('--key-password-file: cannot read %s: %s'
                         % (opts.key_password_file, getattr(exc, 'strerror', None) or exc))
    return opts.key_password


def _token_options(parser, opts, wrap, notices):
    """(plugin name, source) from --target-config, --token-plugin, --token-source."""
    name, source = opts.token_plugin, opts.token_source
    if opts.target_config is not None:
        # --target-config FILE is --token-plugin TokenFile --token-source FILE, and
        # upstream lets it replace those two options.
        for flag in ('token_plugin', 'token_source'):
            if getattr(opts, flag) is not None:
                notices.append(_no_effect(flag, 'with --target-config (it means '
                                                '--token-plugin TokenFile --token-source FILE)'))
        name, source = 'TokenFile', os.path.abspath(opts.target_config)
    if name is None:
        if source is not None:
            parser.error('--token-source needs --token-plugin')
        if opts.host_token:
            parser.error('--host-token needs --token-plugin (or --target-config)')
        return None, None
    flag = '--target-config' if opts.target_config is not None else '--token-plugin'
    if name.startswith(UPSTREAM_PLUGIN_MODULE) and name[len(UPSTREAM_PLUGIN_MODULE):] \
            in TOKEN_PLUGINS:
        name = name[len(UPSTREAM_PLUGIN_MODULE):]
    if name in TOKEN_PLUGINS:
        if not source:
            parser.error('--token-plugin %s needs --token-source' % name)
    elif '.' not in name.strip('.'):
        parser.error('unknown --token-plugin %r: use one of %s, or module.Class'
                     % (name, ', '.join(TOKEN_PLUGINS)))
    if wrap is not None:
        parser.error('%s and -- PROGRAM contradict each other: the wrapped program is '
                     'the target' % flag)
    if opts.unix_target:
        parser.error('--unix-target and %s contradict each other: each token names its '
                     'target (a token file can name unix_socket:/path)' % flag)
    return name, source


def _syslog_address(parser, text):
    """--syslog SERVER: a Unix socket path (it has a '/' or no ':'), else UDP host:port."""
    if '/' in text or ':' not in text:
        path = os.path.abspath(text)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            parser.error('--syslog %s: %s' % (text, exc.strerror or exc))
        if not stat.S_ISSOCK(mode):
            parser.error('--syslog %s is not a socket' % text)
        return path
    try:
        host, port = parse_host_port(text, 'syslog')
    except ValueError as exc:
        parser.error('--syslog needs HOST:PORT (UDP) or the path of a Unix socket: %s' % exc)
    try:
        socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except OSError as exc:
        parser.error('--syslog: cannot resolve %s: %s' % (host, exc.strerror or exc))
    return host, port


def _record_prefix(parser, name):
    """The absolute FILE of --record FILE, whose directory must exist and be writable."""
    path = os.path.abspath(name)
    if name.endswith(('/', os.sep)) or os.path.isdir(path):
        parser.error('--record %s is a directory: give a file name (sessions go to FILE.N)'
                     % name)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        parser.error('--record %s: the directory %s does not exist' % (name, folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        parser.error('--record %s: the directory %s is not writable' % (name, folder))
    return path


def _no_effect(flag, why):
    return '--%s has no effect %s: ignored' % (flag.replace('_', '-'), why)


def parse_args(argv):
    """Build Settings from a command line (without the program name)."""
    #: Options that have no effect in this combination: logged as warnings once
    #: logging is set up (upstream accepts them silently; refusing to start
    #: would break command lines that work with upstream).
    notices = []
    argv = list(argv)
    wrap = None
    if '--' in argv:
        cut = argv.index('--')
        argv, wrap = argv[:cut], argv[cut + 1:]
    parser = _build_parser()
    opts = parser.parse_args(argv)
    if wrap is not None:
        if not wrap:
            parser.error('-- must be followed by the PROGRAM to run (and its ARGS)')
        if opts.unix_target:
            parser.error('--unix-target and -- PROGRAM contradict each other: '
                         'the wrapped program is the target')
        if opts.unix_listen or opts.inetd:
            parser.error('-- PROGRAM needs a listening port (the one PROGRAM binds), '
                         'not --unix-listen or --inetd')
    else:
        for flag in ('wrap_mode', 'rebind'):
            if getattr(opts, flag):
                notices.append(_no_effect(flag, 'without -- PROGRAM ARGS'))
    token_plugin, token_source = _token_options(parser, opts, wrap, notices)
    args = list(opts.addresses)
    try:
        mode = int(opts.unix_listen_mode, 8)
    except ValueError:
        parser.error('--unix-listen-mode must be octal, like 600')
    listen_host, listen_port = '', 0
    if not opts.unix_listen and not opts.inetd:
        if not args:
            parser.error('missing the listening [source_addr:]source_port')
        listen_host, listen_port = _split_hostport(parser, args.pop(0), 'listening')
    if wrap is not None:
        if args:
            parser.error('a target (%r) and -- PROGRAM contradict each other: the wrapped '
                         'program is the target' % args[0])
        if not listen_port:
            parser.error('-- PROGRAM needs a fixed listening port (the port PROGRAM binds), '
                         'not 0')
    target_host = target_port = None
    if token_plugin and args:
        parser.error('a target (%r) and %s contradict each other: each token names its '
                     'target' % (args[0], '--target-config' if opts.target_config
                                 else '--token-plugin'))
    if not opts.unix_target and wrap is None and not token_plugin:
        if not args:
            parser.error('missing the target_addr:target_port')
        target_host, target_port = _split_hostport(parser, args.pop(0), 'target')
    if args:
        parser.error('unexpected argument %r' % args[0])
    for name in ('timeout', 'idle_timeout', 'heartbeat', 'handshake_timeout',
                 'heartbeat_timeout', 'session_idle_timeout'):
        if getattr(opts, name) < 0:
            parser.error('--%s cannot be negative' % name.replace('_', '-'))
    if opts.handshake_timeout == 0:
        parser.error('--handshake-timeout must be positive')
    if opts.heartbeat_timeout and not opts.heartbeat:
        parser.error('--heartbeat-timeout needs --heartbeat SECONDS (no pings, no answers)')
    web = None
    if opts.web is not None:
        web = os.path.abspath(opts.web)
        if not os.path.isdir(web):
            parser.error('--web %s is not a directory' % opts.web)
    if opts.web_listing and web is None:
        notices.append(_no_effect('web_listing', 'without --web DIR'))
    if opts.web_listing and opts.file_only:
        parser.error('--file-only and --web-listing contradict each other')
    key_password = _key_password(parser, opts)
    if opts.cafile and not opts.verify_client:
        notices.append(_no_effect('cafile', 'without --verify-client'))
    ssl_target = opts.ssl_target
    if ssl_target and opts.unix_target and not opts.ssl_target_insecure:
        # Upstream speaks to a Unix socket without TLS whatever --ssl-target says.
        notices.append(_no_effect('ssl_target', 'with --unix-target and without '
                                  '--ssl-target-insecure (a socket has no host name to '
                                  'verify; upstream speaks to it without TLS too)'))
        ssl_target = False
    for flag in ('ssl_target_cafile', 'ssl_target_insecure'):
        if getattr(opts, flag) and not ssl_target:
            notices.append(_no_effect(flag, 'without --ssl-target'))
    if ssl_target and opts.ssl_target_cafile and opts.ssl_target_insecure:
        parser.error('--ssl-target-cafile and --ssl-target-insecure exclude each other')
    if ssl_target and wrap is not None and not opts.ssl_target_insecure:
        parser.error('--ssl-target to a wrapped program has no host name to verify: '
                     'add --ssl-target-insecure')
    if not 1 <= opts.workers <= MAX_WORKERS:
        parser.error('--workers must be between 1 and %d' % MAX_WORKERS)
    if opts.workers > 1 and opts.run_once:
        parser.error('--run-once serves one session: it cannot use --workers')
    if opts.workers > 1 and wrap is not None:
        parser.error('-- PROGRAM runs one program for one server: it cannot use --workers')
    if opts.auth_source is not None and not opts.auth_plugin:
        notices.append(_no_effect('auth_source', 'without --auth-plugin'))
    if opts.web_auth and not opts.auth_plugin:
        parser.error('--web-auth needs --auth-plugin')
    if opts.web_auth and web is None:
        notices.append(_no_effect('web_auth', 'without --web DIR'))
    if opts.legacy_syslog and not opts.syslog:
        notices.append(_no_effect('legacy_syslog', 'without --syslog'))
    for name in ('max_connections', 'max_connections_per_ip', 'max_sessions_per_token'):
        if getattr(opts, name) < 0:
            parser.error('--%s cannot be negative' % name.replace('_', '-'))
    if opts.max_sessions_per_token and not token_plugin:
        notices.append(_no_effect('max_sessions_per_token', 'without a token plugin'))
    if opts.metrics_path is not None and (not opts.metrics_path.startswith('/')
                                          or has_control_characters(opts.metrics_path)
                                          or '?' in opts.metrics_path):
        parser.error('--metrics-path must be a path such as /metrics')
    try:
        metrics_allow = tuple(ipaddress.ip_network(net, strict=False) for net in
                              (opts.metrics_allow or METRICS_ALLOW_DEFAULT))
    except ValueError as exc:
        parser.error('--metrics-allow: %s' % exc)
    if opts.metrics_allow and opts.metrics_path is None:
        notices.append(_no_effect('metrics_allow', 'without --metrics-path'))
    origins = None
    if opts.origin:
        try:
            origins = OriginPolicy(opts.origin)
        except ValueError as exc:
            parser.error('--origin: %s' % exc)
    record = _record_prefix(parser, opts.record) if opts.record is not None else None
    syslog = _syslog_address(parser, opts.syslog) if opts.syslog is not None else None

    def absolute(path):
        return os.path.abspath(path) if path else None
    return Settings(
        listen_host=listen_host, listen_port=listen_port, unix_listen=opts.unix_listen,
        unix_listen_mode=mode, inetd=opts.inetd, prefer_ipv6=opts.prefer_ipv6,
        target_host=target_host, target_port=target_port, unix_target=opts.unix_target,
        verbose=opts.verbose, traffic=opts.traffic, run_once=opts.run_once,
        timeout=opts.timeout, idle_timeout=opts.idle_timeout, heartbeat=opts.heartbeat,
        heartbeat_timeout=opts.heartbeat_timeout,
        session_idle_timeout=opts.session_idle_timeout,
        handshake_timeout=opts.handshake_timeout, text_frames=opts.text_frames,
        log_file=opts.log_file, web=web, web_listing=opts.web_listing,
        cert=absolute(opts.cert or 'self.pem'),
        cert_given=opts.cert is not None or opts.key is not None, key=absolute(opts.key),
        key_password=key_password,
        ssl_only=opts.ssl_only, verify_client=opts.verify_client, cafile=absolute(opts.cafile),
        ssl_version=opts.ssl_version, ssl_ciphers=opts.ssl_ciphers, ssl_target=ssl_target,
        ssl_target_cafile=absolute(opts.ssl_target_cafile),
        ssl_target_insecure=opts.ssl_target_insecure,
        wrap_cmd=tuple(wrap) if wrap is not None else None,
        wrap_mode=opts.wrap_mode or 'exit', rebind=opts.rebind, daemon=opts.daemon,
        pid_file=opts.pid_file, workers=opts.workers, token_plugin=token_plugin,
        token_source=token_source, host_token=opts.host_token, record=record, syslog=syslog,
        legacy_syslog=opts.legacy_syslog, auth_plugin_name=opts.auth_plugin,
        auth_source=opts.auth_source, web_auth=opts.web_auth, origins=origins,
        max_connections=opts.max_connections,
        max_connections_per_ip=opts.max_connections_per_ip,
        max_sessions_per_token=opts.max_sessions_per_token, metrics_path=opts.metrics_path,
        metrics_allow=metrics_allow, notices=tuple(notices))


class Runtime:
    """What prepare() builds from the Settings, once, before serving: the objects
    the servers hand to every connection. Set once, then only read."""

    def __init__(self, settings, server_tls, target_tls=None, token_plugin=None,
                 auth_plugin=None, rebind=None):
        self.settings = settings
        #: The listener's ServerTLS (its context is None without a certificate).
        self.server_tls = server_tls
        #: Client SSLContext for --ssl-target, else None.
        self.target_tls = target_tls
        #: The --token-plugin object, else None.
        self.token_plugin = token_plugin
        #: The --auth-plugin object, else None.
        self.auth_plugin = auth_plugin
        #: Path of rebind.so for -- PROGRAM, else None.
        self.rebind = rebind


def prepare(settings):
    """Turn the plain values of parse_args() into the Runtime: plugins, rebind.so,
    TLS contexts. The one place after parsing where options can still fail:
    UsageError for every problem (exit_status 1 for a missing rebind.so)."""
    auth_plugin = None
    if settings.auth_plugin_name:
        auth_plugin = load_auth_plugin(settings.auth_plugin_name, settings.auth_source)
        if isinstance(auth_plugin, ClientCertCNAuth) and not settings.verify_client:
            raise UsageError('ClientCertCNAuth checks client certificates: it needs '
                             '--verify-client')
    if settings.workers > 1 and mmap is None:
        raise UsageError('--workers needs the mmap module, which this Python lacks')
    rebind = None
    if settings.wrap_cmd:
        try:
            rebind = find_rebind(settings.rebind)
        except WrapError as exc:
            raise UsageError(str(exc), exit_status=1) from None
    target_tls = make_target_tls_context(settings) if settings.ssl_target else None
    token_plugin = make_token_plugin(settings) if settings.token_plugin else None
    return Runtime(settings, ServerTLS(settings), target_tls, token_plugin, auth_plugin, rebind)


#: APP-NAME of our syslog messages (upstream's).
SYSLOG_IDENT = 'websockify'
_MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')


class _SyslogFormatter(logging.Formatter):
    """What follows <PRI> in a syslog message: RFC 5424 §6
    ('1 TIMESTAMP HOSTNAME APP-NAME PROCID - - MSG'), or with --legacy-syslog the
    BSD form of RFC 3164 §4.1 that syslog(3) sends ('Mmm dd hh:mm:ss APP[PID]: MSG')."""

    def __init__(self, legacy):
        super().__init__('%(message)s')
        self.legacy = legacy
        host = socket.gethostname()
        # RFC 5424 §6.2.4: printable US-ASCII, at most 255 characters, else '-'.
        ok = host and len(host) <= 255 and all('!' <= c <= '~' for c in host)
        self.hostname = host if ok else '-'

    def format(self, record):
        text = super().format(record).replace('\r', ' ').replace('\n', ' ')
        if self.legacy:
            t = time.localtime(record.created)
            return '%s %2d %02d:%02d:%02d %s[%d]: %s' % (
                _MONTHS[t.tm_mon - 1], t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                SYSLOG_IDENT, os.getpid(), text)
        stamp = '%s.%03dZ' % (time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created)),
                              record.msecs)
        if not all(c < '\x80' for c in text):
            text = '\ufeff' + text        # RFC 5424 §6.4: UTF-8 text starts with a BOM
        return '1 %s %s %s %d - - %s' % (stamp, self.hostname, SYSLOG_IDENT, os.getpid(),
                                          text)


class _SyslogHandler(logging.handlers.SysLogHandler):
    """SysLogHandler that reports a syslog it cannot reach with one line on stderr
    (again only after a message got through), not a traceback per message."""

    _failed = _reported = False

    def emit(self, record):
        self._failed = False
        super().emit(record)
        if not self._failed:
            self._reported = False

    def handleError(self, record):
        self._failed = True
        if not self._reported:
            self._reported = True
            exc = sys.exc_info()[1]
            sys.stderr.write('websockify.py: cannot log to syslog %s: %s\n'
                             % (self.address, getattr(exc, 'strerror', None) or exc))


class _LogFormatter(logging.Formatter):
    """'DATE TIME,MSEC LEVEL MESSAGE' in local time, as logging.Formatter writes
    it, with the date and time of day made once a second rather than every line."""

    def __init__(self):
        super().__init__('%(asctime)s %(levelname)s %(message)s')
        self._stamp = (None, '')

    def formatTime(self, record, datefmt=None):
        second = int(record.created)
        last, text = self._stamp            # one tuple: threads see a matching pair
        if second != last:
            text = time.strftime('%Y-%m-%d %H:%M:%S', self.converter(second))
            self._stamp = (second, text)
        return '%s,%03d' % (text, record.msecs)


def _configure_logging(settings):
    """Log to stderr (or --log-file), and to --syslog; UsageError if syslog cannot be."""
    if settings.log_file:
        handler = logging.FileHandler(settings.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter())
    logger.addHandler(handler)
    if settings.syslog is not None:
        facility = (_SyslogHandler.LOG_DAEMON if settings.daemon
                    else _SyslogHandler.LOG_USER)
        try:
            syslog = _SyslogHandler(settings.syslog, facility)
        except OSError as exc:
            raise UsageError('cannot log to syslog %s: %s'
                             % (settings.syslog, exc.strerror or exc)) from None
        # A datagram is one message; a stream needs a terminator.
        syslog.append_nul = syslog.socktype == socket.SOCK_STREAM
        syslog.setFormatter(_SyslogFormatter(settings.legacy_syslog))
        logger.addHandler(syslog)
    logger.setLevel(logging.DEBUG if settings.verbose else logging.INFO)
    logger.propagate = False


def _reopen_log_file():
    """Open --log-file again under its name (logrotate renamed the old one); the
    path, or None without a log file or when it cannot be opened (logged)."""
    for handler in logger.handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        try:
            stream = open(handler.baseFilename, handler.mode, encoding=handler.encoding)
        except OSError as exc:
            logger.warning('cannot open the log file %s again: %s; still writing to the '
                           'old one', handler.baseFilename, exc.strerror or exc)
            return None
        handler.acquire()
        try:
            old, handler.stream = handler.stream, stream
        finally:
            handler.release()
        if old is not None:
            old.close()
        return handler.baseFilename
    return None


class _SignalPipe:
    """Signals for the main thread, with no lock taken in the handler.

    A handler that set a threading.Event could deadlock: it runs in the main
    thread, which may hold that Event's lock at that moment. The handler only
    notes the signal; signal.set_wakeup_fd writes a byte to a pipe that wait()
    polls, so a sleeping main thread wakes at once."""

    def __init__(self, signals):
        #: Signal numbers received, oldest first.
        self.received = []
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)
        self._previous = signal.set_wakeup_fd(self._write)
        for sig in signals:
            signal.signal(sig, self._note)

    def _note(self, signum, frame):
        self.received.append(signum)

    def take(self, signum):
        """Remove signum from those received; True if it was there."""
        if signum not in self.received:
            return False
        self.received[:] = [sig for sig in self.received if sig != signum]
        return True

    def wait(self, timeout):
        """Sleep up to timeout seconds, less when a signal arrives."""
        self._poll.poll(max(0, int(timeout * 1000)))
        try:
            os.read(self._read, 512)
        except BlockingIOError:
            pass

    def close(self):
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)


def _wait_for_stop(server, settings, signals):
    """Block until a signal, --run-once, --timeout or --idle-timeout ends the server;
    SIGHUP (when it does not stop the server) reloads it."""
    started = time.monotonic()
    reload_signal = None if settings.wrap_cmd else signal.SIGHUP

    def stopping():
        if reload_signal is not None and signals.take(reload_signal):
            server.reload()
        return server.stop_event.is_set() or signals.received
    while not stopping():
        if server.supervisor and os.getppid() != server.supervisor:
            logger.error('the supervisor process (pid %d) is gone: stopping', server.supervisor)
            return
        now = time.monotonic()
        deadlines = []
        if settings.timeout:
            if now - started >= settings.timeout:
                logger.info('--timeout %g reached: no new connections', settings.timeout)
                server.shutdown()
                while not (server.wait_idle(MAIN_WAKE_INTERVAL) or stopping()):
                    pass
                return
            deadlines.append(started + settings.timeout)
        if settings.idle_timeout:
            with server._lock:
                active, last = server.active, server.last_active
            if not active and now - last >= settings.idle_timeout:
                logger.info('--idle-timeout %g reached without a session', settings.idle_timeout)
                return
            deadlines.append(last + settings.idle_timeout if not active else now + 1.0)
        wait = max(0.01, min(deadlines) - now) if deadlines else MAIN_WAKE_INTERVAL
        signals.wait(min(wait, MAIN_WAKE_INTERVAL))


def _daemonize():
    """Detach from the terminal: fork, new session, fork again, umask 022.

    The foreground process waits for the daemon to call _finish_daemonizing()
    and exits 0, or exits 1 if the daemon ends first (its errors reach the
    terminal, which it keeps until then). No descriptor is closed blindly:
    Python opens them close-on-exec. Returns the descriptor to report on."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, ready_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_fd)
        ready = False
        deadline = time.monotonic() + DAEMON_READY_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
                sys.stderr.write('websockify.py: the daemon did not report within %g s\n'
                                 % DAEMON_READY_TIMEOUT)
                break
            data = os.read(read_fd, 64)
            if not data:
                break
            ready = ready or b'R' in data
        os.waitpid(pid, 0)
        os._exit(0 if ready else 1)
    os.close(read_fd)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.umask(0o022)
    return ready_fd


def _finish_daemonizing(ready_fd):
    """Give up the terminal (stdio to /dev/null), then release the foreground process."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.write(ready_fd, b'R')
    os.close(ready_fd)


def _write_pid_file(path):
    with open(path, 'w') as f:
        f.write('%d\n' % os.getpid())


def _remove_pid_file(path):
    """Remove the pid file if it still names this process."""
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass


def _nofile_limits():
    """(soft, hard) RLIMIT_NOFILE, None where unknown or unlimited."""
    if resource is None:
        return None, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return tuple(None if v == resource.RLIM_INFINITY else v for v in (soft, hard))


def _raise_nofile_limit():
    """Raise the soft descriptor limit to the hard one (called by main(), never on
    import): every session holds FDS_PER_SESSION descriptors, and distributions
    still start services with a soft limit of 1,024. Logs both if still low."""
    if resource is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an unlimited soft limit: fs.nr_open is the ceiling.
        try:
            with open('/proc/sys/fs/nr_open') as f:
                hard = int(f.read())
        except (OSError, ValueError):
            hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        except (OSError, ValueError) as exc:
            logger.debug('cannot raise the descriptor limit to %d: %s', hard, exc)
    soft, hard = _nofile_limits()
    if soft is not None and soft < NOFILE_LOW:
        logger.warning('descriptor limit %d (hard limit %s): about %d sessions at once',
                       soft, hard if hard is not None else 'unlimited',
                       soft // FDS_PER_SESSION)


#: The signals main() and every worker handle. SIGHUP reloads (_wait_for_stop),
#: but stops a wrapped program and us with it: a closed terminal must not orphan
#: the program. SIGCHLD matters to the --workers supervisor only.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


def _serve(server, settings, signals=None):
    """Serve until a signal, the wrapped program (exit mode) or a timeout stops us.
    signals: main()'s _SignalPipe (a worker makes its own)."""
    if signals is None:
        signals = _SignalPipe(HANDLED_SIGNALS[:3])
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})     # see _fork_worker
    server.count('alive')
    acceptor = threading.Thread(target=server.serve_forever, name='acceptor', daemon=True)
    acceptor.start()
    try:
        _wait_for_stop(server, settings, signals)
    finally:
        signals.close()
        server.shutdown()
        left = server.close_sessions(SHUTDOWN_GRACE)
        if left:
            logger.info('stopping with %d session(s) still closing', left)
        server.server_close()
    return 0


def _fork_worker(server, settings, index, signals):
    """Start worker `index` in a child process; returns its pid in the parent, or
    None if fork failed (logged)."""
    supervisor = os.getpid()
    # SIGHUP waits (blocked) until the worker's _serve can reload on it: a worker
    # starting while the supervisor passes one on must not miss it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        logger.error('cannot start worker %d: %s', index, exc.strerror or exc)
        return None
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        return pid
    status = 1
    try:
        # The supervisor's signal handling is not the worker's: a signal arriving
        # before _serve sets its own takes the default action (stop).
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signals.close()
        server.renew_wake_pipe()
        server.id_prefix = 'w%d.' % index
        server.worker_slot = index - 1
        server.supervisor = supervisor
        server.load_board[index - 1] = 0
        status = _serve(server, settings)
    except BaseException as exc:      # a worker must never return into the parent's loop
        logger.error('worker %d failed: %s: %s', index, type(exc).__name__, exc)
    finally:
        logging.shutdown()
        os._exit(status)


def _supervise(server, settings, signals):
    """Run --workers copies of the server and replace any that dies.

    Workers share the listening socket. One that exits with status 0 (--timeout,
    --idle-timeout) is done; one that dies otherwise is restarted, after a
    doubling back-off when it keeps dying within WORKER_MIN_LIFE seconds
    (RestartBackoff, the policy of --wrap-mode=respawn without its immediate retry).
    SIGTERM/SIGINT are passed on to every worker; the parent waits for them.
    SIGHUP: the parent reloads (its log file, and the state later workers start
    from) and passes it on: each worker reloads."""
    server.socket.setblocking(False)      # a worker that loses the accept race returns
    # A dead worker's slot holds the largest count until its successor starts.
    dead_slot = (1 << 32) - 1
    server.load_board = memoryview(mmap.mmap(-1, 4 * settings.workers)).cast('I')
    workers = {}                          # pid -> (index, start time)
    pending = {}                          # index -> time to (re)start it
    restarts = {index: RestartBackoff(WORKER_MIN_LIFE, WORKER_FIRST_DELAY, WORKER_BACKOFF_MAX)
                for index in range(1, settings.workers + 1)}
    now = time.monotonic()
    for index in range(1, settings.workers + 1):
        pending[index] = now
    kill_at = None
    stopping = False
    while True:
        if signals.take(signal.SIGHUP) and not stopping:
            server.reload()               # what workers started from now on inherit
            logger.info('SIGHUP: passed on to %d workers', len(workers))
            for pid in workers:
                os.kill(pid, signal.SIGHUP)
        stopping = stopping or any(sig != signal.SIGCHLD for sig in signals.received)
        if not workers and (stopping or not pending):
            break
        while True:                        # reap every worker that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            index, started = workers.pop(pid, (None, 0))
            if index is None or stopping:
                continue
            server.load_board[index - 1] = dead_slot
            server.tally.clear_gauges(index - 1)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                logger.info('worker %d finished', index)
                continue
            delay = restarts[index].next_delay(time.monotonic() - started)
            logger.error('worker %d (pid %d) died (%s); restarting it in %.1f s', index, pid,
                         'signal %d' % os.WTERMSIG(status) if os.WIFSIGNALED(status)
                         else 'status %d' % os.WEXITSTATUS(status), delay)
            pending[index] = time.monotonic() + delay
        now = time.monotonic()
        if stopping and kill_at is None:
            kill_at = now + SHUTDOWN_GRACE + CLOSE_TIMEOUT
            pending.clear()
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
        if kill_at is not None and now >= kill_at:
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            kill_at = now + 1.0
        for index, when in list(pending.items()):
            if when <= now:
                pid = _fork_worker(server, settings, index, signals)
                if pid is None:
                    pending[index] = now + WORKER_BACKOFF_MAX
                    continue
                del pending[index]
                workers[pid] = (index, time.monotonic())
        deadlines = list(pending.values()) + ([kill_at] if kill_at else [])
        if workers or pending:
            signals.wait(min([MAIN_WAKE_INTERVAL] + [d - now for d in deadlines]))
    signals.close()
    server.server_close()
    return 0


def _tune_process():
    """What main() sets for thousands of connection threads. Process-wide, so the
    program's to decide: never done on import, by make_server or by the Python
    APIs (section Upstream's Python API). Each is measured in the README's
    "Performance" section."""
    threading.stack_size(THREAD_STACK_SIZE)
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    # Connection threads without threading.Thread's bookkeeping: no log format
    # of ours names a thread, a process id (syslog asks os.getpid()) or a source line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None             # the documented way to skip findCaller()
    _ServerMixin.thread_class = _ConnectionThread
    functions = _glibc_malloc()
    if functions is not None:
        mallopt, malloc_trim = functions
        mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
        _MallocTrim.active = _MallocTrim(malloc_trim)


def _glibc_malloc():
    """(mallopt, malloc_trim) of the C library when it is glibc and ctypes is
    there (imported only here), else None: elsewhere nothing is changed."""
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (ImportError, OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    malloc_trim.argtypes = (ctypes.c_size_t,)
    return mallopt, malloc_trim


class _MallocTrim:
    """Gives what sessions freed back to the system: malloc_trim() from the
    accepting thread (service_actions) once MALLOC_TRIM_AFTER receive buffers
    were released, at most every MALLOC_TRIM_INTERVAL seconds. A 1 KiB buffer
    goes back after each read that empties it, so under steady traffic that is
    one trim every MALLOC_TRIM_INTERVAL (about a millisecond of malloc lock per
    100 MB of heap). ctypes lets go of the GIL during the call."""

    #: The one instance main() makes (with glibc and ctypes), else None.
    active = None

    def __init__(self, trim):
        self._trim = trim
        self._last = time.monotonic()
        self._released = _Side.released

    def maybe(self):
        now = time.monotonic()
        released = _Side.released
        if (released - self._released >= MALLOC_TRIM_AFTER
                and now - self._last >= MALLOC_TRIM_INTERVAL):
            self._released, self._last = released, now
            self._trim(0)


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _configure_logging(settings)
        for notice in settings.notices:
            logger.warning('%s', notice)
        runtime = prepare(settings)
    except UsageError as exc:
        sys.stderr.write('websockify.py: error: %s\n' % exc)
        if settings.log_file:
            logger.error('%s', exc)
        return exc.exit_status
    _tune_process()
    try:
        server = make_server(settings, runtime)
    except UsageError as exc:
        logger.error('%s', exc)
        return exc.exit_status
    except OSError as exc:
        where = settings.unix_listen or format_address(settings.listen_host or '*',
                                                       settings.listen_port)
        logger.error('cannot listen on %s: %s', where, exc.strerror or exc)
        return 1
    # One process on Linux, on a socket of its own: connection threads accept.
    server.accept_in_threads = (settings.workers <= 1 and server.passed_by is None and
                                sys.platform.startswith('linux'))
    _raise_nofile_limit()
    ready_fd = _daemonize() if settings.daemon else None
    wrapper = None
    pid_written = False
    try:
        failure = None
        if settings.pid_file:
            try:
                _write_pid_file(settings.pid_file)
                pid_written = True
            except OSError as exc:
                failure = 'cannot write the pid file %s: %s' % (settings.pid_file,
                                                                exc.strerror or exc)
        if runtime.rebind and failure is None:
            try:
                wrapper = ProgramWrapper(settings, runtime.rebind, server.stop_event.set)
                server.wrapper = wrapper
                wrapper.start()
            except WrapError as exc:
                failure = str(exc)
        if failure is not None:
            logger.error('%s', failure)
            server.server_close()
            return 1
        # Handled from here on: a signal sent once the log says "listening" is
        # never the default action.
        signals = _SignalPipe(HANDLED_SIGNALS if settings.workers > 1 else HANDLED_SIGNALS[:3])
        logger.info('websockify.py %s listening on %s, relaying to %s%s', __version__,
                    describe_listener(server), describe_target(settings),
                    ' over TLS' if settings.ssl_target else '')
        if settings.workers > 1:
            logger.info('serving with %d worker processes', settings.workers)
        if settings.web:
            logger.info('serving files from %s%s', settings.web,
                        ' (with directory listings)' if settings.web_listing else '')
        if runtime.auth_plugin is not None:
            logger.info('auth plugin %s checks WebSocket handshakes%s',
                        type(runtime.auth_plugin).__name__,
                        ' and --web requests' if settings.web_auth else '')
        if settings.record:
            logger.info('recording sessions to %s.N', settings.record)
        if ready_fd is not None:
            _finish_daemonizing(ready_fd)
        if settings.workers > 1:
            _supervise(server, settings, signals)
        else:
            _serve(server, settings, signals)
    finally:
        if wrapper is not None:
            wrapper.stop()
        if pid_written:
            _remove_pid_file(settings.pid_file)
    logger.info('stopped')
    if wrapper is not None and wrapper.exit_status is not None:
        return wrapper.exit_status
    return 0


################################################################################
# Upstream's Python API
################################################################################
#
# Owns what Python programs written for upstream websockify 0.13 use, as thin
# adapters to the sections above (which never call this one), and the native API
# for embedding:
#
#   websockify.websocketproxy    WebSocketProxy (its start_server() blocks until
#                                stopped), ProxyRequestHandler, websockify_init()
#                                (main() under upstream's name), select_ssl_version
#   websockify.websockifyserver  WebSockifyServer (UpstreamServer here: the
#                                options, socket(), msg/vmsg/warn, started/poll/
#                                terminate hooks), WebSockifyRequestHandler
#                                (UpstreamRequestHandler here)
#   websockify.token_plugins     the token plugins; BasePlugin is TokenPlugin
#   websockify.auth_plugins      the auth plugins, AuthenticationError, InvalidOriginError
#   Proxy                        the native API: a proxy in a thread of the program,
#                                with no process-wide side effect
#
# Upstream forks a process per connection and calls the handler's hooks in it;
# here a thread serves each connection, through WebSockifyHandler (section
# Server) up to the parsed request, then UpstreamRequestHandler._serve_request:
#
#   validate_connection()   before the upgrade: the token plugin's target
#   auth_connection()       before the upgrade: the auth plugin
#                           (an exception refuses the request: its status for an
#                           AuthenticationError, 403 for EClose, else 500)
#   101 reply, then new_websocket_client(): by default, connect the target with
#                           socket() and relay with do_proxy(), a Pump
#
# A handler's self.server is a copy of the WebSocketProxy made for its
# connection (as a fork would make it), so what one connection sets there
# (upstream's validate_connection sets target_host) is its own. Before
# do_proxy, recv_frames() and send_frames() speak to the client through the
# same Session that the pump then uses, with blocking I/O.

def _header_name(name):
    """A lower-case header name as browsers spell it ('sec-websocket-key' ->
    'Sec-Websocket-Key'): how upstream's plugins and handlers see names."""
    return '-'.join(part[:1].upper() + part[1:] for part in name.split('-'))


def upstream_headers(request):
    """The headers of a Request as the http.client.HTTPMessage upstream's handlers
    read (self.headers: get(), [], in, items(), case-insensitive)."""
    headers = http.client.HTTPMessage()
    for name, values in request.headers.items():
        for value in values:
            headers[_header_name(name)] = value
    return headers


class UpstreamClose(Exception):
    """Raised by an upstream-style handler after the upgrade (upstream's
    CClose(code, reason)): the session is closed with that code and reason."""


class UpstreamRefusal(Exception):
    """Raised by an upstream-style handler before the upgrade (upstream's
    EClose(message)): the request is refused with 403, the message logged."""


class UpstreamTerminate(Exception):
    """Raised by terminate() (upstream's Terminate): start_server() stops."""


class _RequestBody:
    """The rfile of a plain HTTP request that a subclass answers itself: the bytes
    read past the request head, then the socket."""

    def __init__(self, sock, extra):
        self._sock = sock
        self._buffer = bytearray(extra)

    def _fill(self):
        data = self._sock.recv(API_RECV)
        self._buffer += data
        return bool(data)

    def read(self, size=-1):
        while (size is None or size < 0 or len(self._buffer) < size) and self._fill():
            pass
        size = len(self._buffer) if size is None or size < 0 else size
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self, size=-1):
        size = -1 if size is None else size
        while b'\n' not in self._buffer and (size < 0 or len(self._buffer) < size) \
                and self._fill():
            pass
        end = self._buffer.find(b'\n') + 1 or len(self._buffer)
        if size >= 0:
            end = min(end, size)
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data


class UpstreamRequestHandler(WebSockifyHandler, http.server.BaseHTTPRequestHandler):
    """Upstream's WebSockifyRequestHandler: one connection, with the hooks and
    calls its subclasses use. Subclass it (or ProxyRequestHandler) and override
    new_websocket_client(); validate_connection() and auth_connection() run
    before the upgrade; do_GET() and the other do_* answer plain HTTP requests."""

    #: Upstream's Server header and HTTP version (http.server's attributes).
    server_version = 'WebSockify'
    protocol_version = 'HTTP/1.1'
    CClose = UpstreamClose

    def __init__(self, request, client_address, server):
        # server is this connection's copy of the WebSocketProxy; the listener's
        # parts (WebSockifyHandler's self.server) are its _core until the request
        # is parsed.
        self._view = server
        self.only_upgrade = not server.web
        self.verbose = server.verbose
        self.daemon = server.daemon
        self.record = server.record
        self.run_once = server.run_once
        self.rec = None
        self.handler_id = 0
        self.file_only = server.file_only
        self.traffic = server.traffic
        self.web_auth = server.web_auth
        self.host_token = getattr(server, 'host_token', False)
        self.logger = server.logger
        self._core = server._core
        self._session = None
        self._pump = None
        self._recorder = None
        super().__init__(request, client_address, server._core)

    def setup(self):
        # Not http.server's: rfile and wfile are made once the request is read
        # (after TLS), for a do_* method of a subclass.
        self.rfile = self.wfile = None

    # -- logging (upstream's names) --------------------------------------------------

    def msg(self, msg, *args, **kwargs):
        """Log msg % args at INFO with this connection's prefix."""
        self.logger.info('%s: ' % self.log_prefix + msg, *args, **kwargs)

    def vmsg(self, msg, *args, **kwargs):
        """msg() at DEBUG."""
        self.logger.debug('%s: ' % self.log_prefix + msg, *args, **kwargs)

    def warn(self, msg, *args, **kwargs):
        """msg() at WARNING."""
        self.logger.warning('%s: ' % self.log_prefix + msg, *args, **kwargs)

    def log_message(self, format, *args):
        self.logger.info('%s: %s', self.log_prefix, format % args)

    def log_request(self, code='-', size='-'):
        if self.verbose:
            super().log_request(code, size)

    def address_string(self):
        address = self.client_address
        return address[0] if isinstance(address, tuple) else 'unix'

    def print_traffic(self, token='.'):
        """Write a --traffic marker (see traffic_legend) when traffic is on."""
        if self.traffic:
            _traffic(token)

    # -- the request -------------------------------------------------------------------

    def _serve_request(self, request):
        """Upstream's request handling: set self.path and self.headers; a plain
        request goes to a subclass's do_<METHOD> (or the web directory); an
        upgrade passes validate_connection and auth_connection, is answered 101,
        and then new_websocket_client serves it."""
        # Upstream's code reads self.server; WebSockifyHandler's code, around this
        # call, reads the listener there.
        core, self.server = self.server, self._view
        try:
            self._serve_upstream(request, core.settings)
        finally:
            self.server = core

    def _serve_upstream(self, request, settings):
        number = self.conn_id.rpartition('.')[2]
        self.handler_id = self.server.handler_id = int(number) if number.isdigit() else 0
        self.command = request.method
        self.path = request.target
        self.request_version = 'HTTP/%d.%d' % request.version
        self.requestline = '%s %s %s' % (self.command, self.path, self.request_version)
        self.headers = upstream_headers(request)
        self.close_connection = True
        self._request = request
        answer = self._http_method(request.method)
        decision = accept(request, self.conn.secure,
                          serve_web=bool(settings.web) or answer is not None,
                          text_frames=settings.text_frames, heartbeat=settings.heartbeat,
                          heartbeat_timeout=settings.heartbeat_timeout,
                          idle_timeout=settings.session_idle_timeout)
        if decision is None:
            self._serve_http(request, answer)
            return
        if isinstance(decision, HTTPError):
            raise decision
        self._before_upgrade(self.validate_connection)
        self._before_upgrade(self.auth_connection)
        extra = self._read_key3(decision)
        if extra is None:
            return
        self.conn.send_all(decision.reply(extra))
        self._websocket(decision)

    def _before_upgrade(self, hook):
        """Run validate_connection or auth_connection: an exception refuses the
        request (HTTPError as it is; AuthenticationError with its status)."""
        try:
            hook()
        except HTTPError:
            raise
        except UpstreamRefusal as exc:
            raise HTTPError(403, 'connection refused', log_reason='%s refused: %s' % (
                hook.__name__, _printable(str(exc)))) from None
        except Exception as exc:     # the subclass's code: anything can come out
            raise _auth_refusal(self, exc) from None

    def validate_connection(self):
        """Check the request before the upgrade and choose its target; raise to
        refuse it (upstream's hook). Does nothing here."""

    def auth_connection(self):
        """Authenticate the request before the upgrade; raise to refuse it
        (upstream's hook). Does nothing here."""

    def new_websocket_client(self):
        """Serve the upgraded connection (upstream's hook): override it."""
        raise NotImplementedError('%s must define new_websocket_client()'
                                  % type(self).__name__)

    def _websocket(self, acceptance):
        """After the 101: new_websocket_client(), then an orderly end."""
        core = self._core
        self._session = acceptance.session
        #: Client bytes received and not decoded yet (the pump gets them).
        self._client_data = bytearray(self.conn.extra)
        self.conn.extra = b''
        if core.settings.record:
            self._recorder = self._open_record_file(core.settings.record)
        self.server.ws_connection = True
        logger.info('%s: session open: path %s, %s/%s%s', self.log_prefix,
                    _printable(self.path), self._session.codec.family,
                    self._session.codec.mode,
                    ', ' + _tls_summary(self.request) if self.conn.secure else '')
        started = time.monotonic()
        core.session_started()
        try:
            self.new_websocket_client()
        except UpstreamClose as exc:
            code, reason = (tuple(exc.args) + (1000, ''))[:2]
            self.send_close(code, str(reason))
        except Exception as exc:     # the subclass's code: anything can come out
            self._failed(exc)
        finally:
            try:
                if self._pump is None:
                    self._end_without_pump()
            finally:
                core.session_ended()
                if self._recorder is not None:
                    self._recorder.close()
        session, pump = self._session, self._pump
        logger.info('%s: session closed: path %s, %s%.1f s, close %s%s', self.log_prefix,
                    _printable(self.path), '%d bytes from client, %d bytes to client, ' % (
                        pump.target.sent, pump.target.received) if pump else '',
                    time.monotonic() - started, session.close_code,
                    ' (%s)' % _printable(session.close_reason) if session.close_reason else '')

    def _failed(self, exc):
        """new_websocket_client raised: log it, and close the session with 1011."""
        if isinstance(exc, OSError) and (self._pump is not None or self._session.finished):
            # Upstream's handlers close the target after do_proxy(), which has done it.
            logger.debug('%s: after the session: %s: %s', self.log_prefix,
                         type(exc).__name__, exc)
            return
        logger.info('%s: %s.new_websocket_client failed: %s: %s', self.log_prefix,
                    type(self).__name__, type(exc).__name__, _printable(str(exc)),
                    exc_info=logger.isEnabledFor(logging.DEBUG))
        if self._pump is None:
            try:
                self.send_close(1011, 'internal error')
            except OSError:
                pass

    def _open_record_file(self, record):
        path = '%s.%s' % (record, self.conn_id)
        try:
            recorder = SessionRecorder(path, self.log_prefix)
        except OSError as exc:
            logger.warning('%s: cannot record to %s: %s', self.log_prefix, path,
                           exc.strerror or exc)
            return None
        logger.info('%s: recording to %s', self.log_prefix, recorder.path)
        return recorder

    # -- the client before do_proxy (upstream's frame calls) ---------------------------

    def recv_frames(self):
        """Wait for data from the client: (list of payloads, closed), closed being
        False, or {'code': ..., 'reason': ...} once the client has closed."""
        self._check_session()
        session = self._session
        bufs = []
        while session.client_end == RELAY:
            if self._client_data:
                buf = bytearray(self._client_data)
                consumed, pieces = session.receive_client(buf, len(buf))
                data = [bytes(piece) for piece in pieces]
                del pieces
                self._client_data = buf[consumed:]
                self._send_session_frames()
                data = [piece for piece in data if piece]
                if data and self._recorder is not None:
                    self._recorder.client(data)
                bufs.extend(data)
                if session.client_end != RELAY:
                    return bufs, {'code': session.close_code, 'reason': session.close_reason}
                if bufs:
                    self.print_traffic('}')
                    return bufs, False
                if consumed:
                    continue
            chunk = self._recv_client()
            if chunk is None:
                break
            self._client_data += chunk
        return bufs, {'code': session.close_code, 'reason': session.close_reason}

    def send_frames(self, bufs=None):
        """Send each buffer (bytes) to the client as one message; returns False
        (all sent: upstream's True meant 'call again')."""
        self._check_session()
        for buf in bufs or ():
            if not buf:
                continue
            data = bytes(buf)
            if self._recorder is not None:
                self._recorder.target(data)
            self._send_client(self._session.receive_target(memoryview(data)))
            self.print_traffic('<')
        return False

    def send_close(self, code=1000, reason=''):
        """Close the session with code and reason (before do_proxy, or instead
        of it); nothing once it is closing."""
        if self._session is None or self._pump is not None:
            return
        self._session.close(code, reason)
        self._send_session_frames()

    def send_ping(self, data=b''):
        """Send a ping to the client."""
        self._check_session()
        self._send_client([self._session.codec.control(OP_PING, bytes(data))])

    def send_pong(self, data=b''):
        """Send a pong to the client."""
        self._check_session()
        self._send_client([self._session.codec.control(OP_PONG, bytes(data))])

    def _check_session(self):
        if self._session is None:
            raise RuntimeError('no WebSocket session: the request was not upgraded')
        if self._pump is not None:
            raise RuntimeError('the session was relayed by do_proxy() and is over')

    def _send_session_frames(self):
        session = self._session
        session.changed = False
        if session.to_client:
            frames, session.to_client = session.to_client, []
            self._send_client(frames)

    def _send_client(self, parts):
        parts = [bytes(part) for part in parts if part]
        if parts:
            self.request.settimeout(WEB_SEND_TIMEOUT)
            self.request.sendall(b''.join(parts))

    def _recv_client(self):
        """The next bytes from the client (blocking); None once it is gone or the
        server stops (the session then knows why)."""
        sock, session = self.request, self._session
        poll = select.poll()
        poll.register(sock.fileno(), _POLLIN)
        poll.register(self._core.wake_fd, _POLLIN)
        tls = ssl is not None and isinstance(sock, ssl.SSLSocket)
        while True:
            if not (tls and sock.pending()):
                ready = dict(poll.poll())
                if self._core.wake_fd in ready:
                    session.close(1001, 'server shutting down')
                    self._send_session_frames()
                    return None
            try:
                sock.settimeout(None)
                data = sock.recv(API_RECV)
            except (ssl.SSLWantReadError if ssl is not None else BlockingIOError):
                continue
            except OSError as exc:
                session.client_lost(_errname(exc))
                return None
            if data:
                return data
            session.client_eof()
            return None

    def _end_without_pump(self):
        """new_websocket_client returned without do_proxy: send what the session
        still has for the client, and close without a reset."""
        session = self._session
        if session.client_end == RELAY:
            session.close(1000, '')
        try:
            self._send_session_frames()
        except OSError:
            return
        _close_gently(self.request)

    def do_proxy(self, target):
        """Relay between the client and target (a connected socket, from
        socket()) until the session ends; target is closed then. Upstream's
        do_proxy ended by raising CClose; this one returns."""
        self._check_session()
        core = self._core
        settings = core.settings
        if target.family in (socket.AF_INET, socket.AF_INET6):
            try:
                target.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.print_traffic(self.traffic_legend)
        self._pump = Pump(self.request, target, self._session, initial=bytes(self._client_data),
                          wake_fd=core.wake_fd, traffic=settings.traffic,
                          observer=self._recorder)
        self._client_data = bytearray()
        self._pump.run()

    #: What the --traffic markers mean (printed as a session starts relaying).
    traffic_legend = ('\nTraffic legend:\n'
                      '    }  - client sent data   {  - target sent data\n'
                      '    <  - sent to the client >  - sent to the target\n'
                      '    .  - a send that the kernel took in part\n')

    # -- plain HTTP requests -------------------------------------------------------------

    def _http_method(self, method):
        """The do_<method> a subclass defined, or None (we answer then)."""
        name = 'do_' + method
        mine = getattr(UpstreamRequestHandler, name, None)
        theirs = getattr(type(self), name, None)
        if theirs is None or theirs is mine or not _TOKEN.match(method):
            return None
        return getattr(self, name)

    def _serve_http(self, request, answer):
        """A plain HTTP request: a subclass's do_<METHOD>, else the web directory."""
        if answer is None:
            if self.web_auth:
                self._before_upgrade(self.auth_connection)
            self._serve_web_file()
            return
        self.rfile = _RequestBody(self.request, self.conn.extra)
        self.request.settimeout(WEB_SEND_TIMEOUT)
        self.wfile = self.request.makefile('wb')
        self._connection_header = False
        try:
            answer()
            self.wfile.flush()
        finally:
            self.wfile.close()
        _close_gently(self.request)

    def _serve_web_file(self):
        settings = self._core.settings
        status, sent, note = serve_web(self.conn, self._request, settings.web,
                                       settings.web_listing)
        log = logger.info if note else logger.debug
        log('%s: %d %s %s, %d bytes%s', self.log_prefix, status, self.command,
            _printable(self.path), sent, ': ' + note if note else '')

    def send_header(self, keyword, value):
        if keyword.lower() == 'connection':
            self._connection_header = True
        super().send_header(keyword, value)

    def end_headers(self):
        # One request per connection: say so, unless the subclass did.
        if not getattr(self, '_connection_header', True):
            self.send_header('Connection', 'close')
        super().end_headers()

    def do_GET(self):
        """What a subclass's do_GET reaches with super().do_GET(): a file of the
        web directory (after auth_connection with web_auth), or 405 without one."""
        if self.web_auth:
            self._before_upgrade(self.auth_connection)
        if not self._core.settings.web:
            self.send_error(405)
            return
        self.wfile.flush()
        self._serve_web_file()

    do_HEAD = do_GET


class ProxyRequestHandler(UpstreamRequestHandler):
    """Upstream's ProxyRequestHandler: the token plugin chooses the target
    (validate_connection), the auth plugin checks the request (auth_connection),
    new_websocket_client connects the target and relays. Subclasses override
    these, call get_target(), socket(), do_proxy(), recv_frames(), send_frames()."""

    buffer_size = 65536

    def validate_connection(self):
        """With a token plugin: the token's target becomes this connection's
        server.target_host and target_port (or unix_target); 404 for no token or
        an unknown one."""
        server = self.server
        if not server.token_plugin:
            return
        host, port = self.get_target(server.token_plugin)
        if host == UNIX_SOCKET_HOST:
            server.unix_target = port
        else:
            server.target_host, server.target_port = host, port

    def get_target(self, target_plugin):
        """[host, port] of the request's token (['unix_socket', path] for a Unix
        socket); HTTPError 404 without a token or for an unknown one."""
        settings = self._core.settings.replace(host_token=bool(self.server.host_token))
        target = resolve_target(self._request, settings, target_plugin)
        self._token_target = target
        return list(target)

    def auth_connection(self):
        """With an auth plugin: authenticate(headers, target_host, target_port);
        an AuthenticationError refuses the request with its status and headers."""
        server = self.server
        if not server.auth_plugin:
            return
        cert = self.request.getpeercert() if self.conn.secure else None
        authenticate(server.auth_plugin, self._request, cert, server.target_host,
                     server.target_port)

    def new_websocket_client(self):
        """Connect to this connection's target (server.target_host and
        target_port, unix_target, or the wrapped program) and relay."""
        server, core = self.server, self._core
        token = getattr(self, '_token_target', None)
        try:
            if server.wrap_cmd:
                target, where = connect_target(core.settings, core.target_tls, core.wrapper)
            else:
                chosen = Target(server.target_host, server.target_port, server.unix_target,
                                token.token if token is not None else None)
                target, where = open_target(chosen, core.target_tls)
        except HTTPError as exc:
            logger.info('%s: %s%s', self.log_prefix, exc.reason,
                        ' (%s)' % exc.detail if exc.detail else '')
            raise UpstreamClose(1011, 'failed to connect to the target') from None
        logger.info('%s: relaying to %s', self.log_prefix, where)
        try:
            target.settimeout(None)
            self.do_proxy(target)
        finally:
            target.close()



def _keepalive(sock, count=None, idle=None, interval=None):
    """TCP keepalive on sock, with the probe count, idle time and interval given."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for value, option in ((count, 'TCP_KEEPCNT'), (idle, 'TCP_KEEPIDLE'),
                          (interval, 'TCP_KEEPINTVL')):
        if value and hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


#: select_ssl_version()'s answers: SSLContext.options that refuse the TLS
#: versions below each --ssl-version (upstream's values).
SSL_OPTIONS = {}
if ssl is not None:
    SSL_OPTIONS['default'] = ssl.OP_ALL
    _refused = ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3
    for _version, _older in (('tlsv1_1', 'OP_NO_TLSv1'), ('tlsv1_2', 'OP_NO_TLSv1_1'),
                             ('tlsv1_3', 'OP_NO_TLSv1_2')):
        _refused |= getattr(ssl, _older)
        SSL_OPTIONS[_version] = _refused
    del _refused, _version, _older


def select_ssl_version(version):
    """SSLContext options for a --ssl-version name (upstream's function: nova
    passes its result to WebSocketProxy as ssl_options); an unknown name gets
    the strictest, with a warning."""
    if not SSL_OPTIONS:
        raise UsageError(NO_SSL % 'select_ssl_version()')
    if version in SSL_OPTIONS:
        return SSL_OPTIONS[version]
    strictest = max(SSL_OPTIONS)
    logger.warning('TLS version %s is unknown: using %s', _printable(str(version)), strictest)
    return SSL_OPTIONS[strictest]


def _ssl_version_of(options):
    """The --ssl-version that select_ssl_version's options mean."""
    for version in ('tlsv1_3', 'tlsv1_2', 'tlsv1_1'):
        if options and ssl is not None and \
                (options & SSL_OPTIONS[version]) == SSL_OPTIONS[version]:
            return version
    return 'default'


class UpstreamServer:
    """Upstream's WebSockifyServer: the options of a server, start_server() to
    run it (blocking), socket() to open sockets, msg()/vmsg()/warn(), and hooks
    to override: started(), poll() (about once a second), terminate()."""

    #: Upstream's logger names start with this.
    log_prefix = 'websocket'
    EClose = UpstreamRefusal
    Terminate = UpstreamTerminate

    def __init__(self, RequestHandlerClass, listen_fd=None, listen_host='', listen_port=None,
                 source_is_ipv6=False, verbose=False, cert='', key='', key_password=None,
                 ssl_only=None, verify_client=False, cafile=None, daemon=False, record='',
                 web='', web_auth=False, file_only=False, run_once=False, timeout=0,
                 idle_timeout=0, traffic=False, tcp_keepalive=True, tcp_keepcnt=None,
                 tcp_keepidle=None, tcp_keepintvl=None, ssl_ciphers=None, ssl_options=0,
                 unix_listen=None, unix_listen_mode=None, **unknown):
        if unknown:
            raise TypeError('%s: no such option in upstream websockify 0.13: %s'
                            % (type(self).__name__, ', '.join(sorted(unknown))))
        self.RequestHandlerClass = RequestHandlerClass
        self.listen_fd = listen_fd
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.prefer_ipv6 = source_is_ipv6
        self.verbose = verbose
        self.cert = os.path.abspath(cert) if cert else ''
        self.key = os.path.abspath(key) if key else None
        self.key_password = key_password
        self.ssl_only = ssl_only
        self.verify_client = verify_client
        self.cafile = os.path.abspath(cafile) if cafile else ''
        self.daemon = daemon
        self.record = os.path.abspath(record) if record else ''
        self.web = os.path.abspath(web) if web else ''
        self.web_auth = web_auth
        self.file_only = file_only
        self.only_upgrade = not self.web
        self.run_once = run_once
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.traffic = traffic
        self.tcp_keepalive = tcp_keepalive
        self.tcp_keepcnt = tcp_keepcnt
        self.tcp_keepidle = tcp_keepidle
        self.tcp_keepintvl = tcp_keepintvl
        self.ssl_ciphers = ssl_ciphers
        self.ssl_options = ssl_options
        self.unix_listen = unix_listen
        self.unix_listen_mode = unix_listen_mode
        self.launch_time = time.time()
        self.ws_connection = False
        self.handler_id = 1
        self.terminating = False
        self.logger = self.get_logger()
        #: The listening server while start_server() runs, else None.
        self._core = None

    @staticmethod
    def get_logger():
        """The logger of msg(), vmsg() and warn() (nova overrides this)."""
        return logging.getLogger('%s.WebSockifyServer' % UpstreamServer.log_prefix)

    def msg(self, *args, **kwargs):
        """Log at INFO (self.logger)."""
        self.logger.info(*args, **kwargs)

    def vmsg(self, *args, **kwargs):
        """Log at DEBUG."""
        self.logger.debug(*args, **kwargs)

    def warn(self, *args, **kwargs):
        """Log at WARNING."""
        self.logger.warning(*args, **kwargs)

    def started(self):
        """Called once listening, before serving (upstream's hook)."""

    def poll(self):
        """Called about once a second while serving (upstream's hook)."""

    def terminate(self):
        """Called on SIGTERM and SIGINT: stop serving (upstream's hook)."""
        if not self.terminating:
            self.terminating = True
            raise UpstreamTerminate()

    def do_SIGTERM(self, signum, frame):
        self.terminate()

    do_SIGINT = do_SIGTERM

    @staticmethod
    def socket(host, port=None, connect=False, prefer_ipv6=False, unix_socket=None,
               unix_socket_mode=None, unix_socket_listen=False, use_ssl=False,
               tcp_keepalive=True, tcp_keepcnt=None, tcp_keepidle=None, tcp_keepintvl=None):
        """A blocking socket connected to host:port (connect=True; TLS with a
        verified certificate with use_ssl) or listening there, or the same on the
        Unix socket unix_socket: upstream's helper, with which handlers open
        their target. IPv4 addresses first, IPv6 first with prefer_ipv6."""
        if unix_socket:
            return _unix_socket(unix_socket, unix_socket_listen, unix_socket_mode)
        if connect and not port:
            raise ValueError('socket(): connecting needs a port')
        if use_ssl and (not connect or ssl is None):
            raise ValueError('socket(): use_ssl is for connecting, with the ssl module')
        infos = socket.getaddrinfo(host or None, port, 0, socket.SOCK_STREAM,
                                   socket.IPPROTO_TCP, 0 if connect else socket.AI_PASSIVE)
        infos.sort(key=lambda info: info[0], reverse=bool(prefer_ipv6))
        failure = None
        for family, kind, proto, _, address in infos if connect else infos[:1]:
            sock = socket.socket(family, kind, proto)
            try:
                if tcp_keepalive:
                    _keepalive(sock, tcp_keepcnt, tcp_keepidle, tcp_keepintvl)
                if not connect:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(address)
                    sock.listen(LISTEN_BACKLOG)
                    return sock
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect(address)
                sock.settimeout(None)
                if use_ssl:
                    sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
                return sock
            except OSError as exc:
                sock.close()
                failure = exc
        raise failure

    # -- running ------------------------------------------------------------------------

    def _settings(self):
        """The Settings these options mean (read when start_server() runs, so
        attributes changed after __init__ count, as upstream's do)."""
        unix_target = getattr(self, 'unix_target', None)
        ssl_target = bool(getattr(self, 'ssl_target', False))
        if ssl_target and unix_target:
            logger.warning('ssl_target has no effect with unix_target: ignored, as upstream '
                           'ignores it')
            ssl_target = False
        return Settings(
            listen_host=self.listen_host or '', listen_port=int(self.listen_port or 0),
            unix_listen=self.unix_listen,
            unix_listen_mode=0o600 if self.unix_listen_mode is None else self.unix_listen_mode,
            prefer_ipv6=bool(self.prefer_ipv6),
            target_host=getattr(self, 'target_host', None),
            target_port=getattr(self, 'target_port', None), unix_target=unix_target,
            verbose=bool(self.verbose), traffic=bool(self.traffic),
            run_once=bool(self.run_once), timeout=self.timeout or 0,
            idle_timeout=self.idle_timeout or 0, heartbeat=getattr(self, 'heartbeat', 0) or 0,
            web=self.web or None, web_listing=bool(self.web) and not self.file_only,
            cert=self.cert or None, key=self.key, key_password=self.key_password,
            ssl_only=bool(self.ssl_only), verify_client=bool(self.verify_client),
            cafile=self.cafile or None, ssl_version=_ssl_version_of(self.ssl_options),
            ssl_ciphers=self.ssl_ciphers, ssl_target=ssl_target,
            wrap_cmd=tuple(getattr(self, 'wrap_cmd', None) or ()) or None,
            wrap_mode=getattr(self, 'wrap_mode', None) or 'exit', daemon=bool(self.daemon),
            host_token=bool(getattr(self, 'host_token', False)), record=self.record or None,
            web_auth=bool(self.web_auth))

    def _listen(self, runtime):
        """The listening server, handing each connection to RequestHandlerClass with
        a copy of self as its server."""
        if self.listen_fd is not None:
            sock = socket.socket(fileno=os.dup(self.listen_fd))
            core = WebSockifyServer(runtime, ('', 0), sock.family, sock)
        else:
            core = make_server(runtime.settings, runtime)
        if self.tcp_keepalive and core.is_tcp:
            _keepalive(core.socket, self.tcp_keepcnt, self.tcp_keepidle, self.tcp_keepintvl)
        handler = self.RequestHandlerClass

        def serve(request, client_address, listener):
            view = object.__new__(type(self))
            view.__dict__.update(self.__dict__)
            return handler(request, client_address, view)
        core.RequestHandlerClass = serve
        return core

    def start_server(self):
        """Listen, then serve until a signal (SIGTERM, SIGINT: terminate()),
        run_once, timeout, idle_timeout or the wrapped program (exit mode) ends
        it; returns then, as upstream's does. UsageError for options that
        cannot work; SystemExit(1) if the address cannot be listened on."""
        settings = self._settings()
        runtime = prepare(settings)
        runtime.token_plugin = getattr(self, 'token_plugin', None)
        runtime.auth_plugin = getattr(self, 'auth_plugin', None)
        try:
            core = self._listen(runtime)
        except OSError as exc:
            self.msg('Opening socket failed: %s', exc.strerror or exc)
            raise SystemExit(1) from None
        ready_fd = _daemonize() if settings.daemon else None
        restore = {}
        wrapper = acceptor = None
        self._core = core
        try:
            if runtime.rebind:
                wrapper = ProgramWrapper(settings, runtime.rebind, core.stop_event.set)
                core.wrapper = wrapper
                wrapper.start()
            logger.info('websockify.py %s listening on %s (%s)', __version__,
                        describe_listener(core), type(self).__name__)
            if ready_fd is not None:
                _finish_daemonizing(ready_fd)
            self.started()
            if threading.current_thread() is threading.main_thread():
                for signum, handler in ((signal.SIGTERM, self.do_SIGTERM),
                                        (signal.SIGINT, self.do_SIGINT)):
                    restore[signum] = signal.signal(signum, handler)
            acceptor = threading.Thread(target=core.serve_forever, name='acceptor',
                                        daemon=True)
            acceptor.start()
            self._wait(core, settings)
        except (UpstreamTerminate, SystemExit, KeyboardInterrupt):
            logger.info('stopping')
        finally:
            try:
                if acceptor is not None:
                    core.shutdown()
                core.close_sessions(SHUTDOWN_GRACE)
                core.server_close()
                if wrapper is not None:
                    wrapper.stop()
                self._core = None
            finally:
                # Last: a second Ctrl-C while stopping finds terminate() again.
                for signum, handler in restore.items():
                    signal.signal(signum, handler)

    def _wait(self, core, settings):
        """Until something ends the server, calling poll() about once a second."""
        started = time.monotonic()
        while not core.stop_event.is_set():
            self.poll()
            now = time.monotonic()
            if settings.timeout and now - started >= settings.timeout:
                logger.info('timeout %g reached: no new connections', settings.timeout)
                core.shutdown()
                while not core.wait_idle(MAIN_WAKE_INTERVAL):
                    self.poll()
                return
            if settings.idle_timeout and not core.active \
                    and now - core.last_active >= settings.idle_timeout:
                logger.info('idle_timeout %g reached without a session', settings.idle_timeout)
                return
            core.stop_event.wait(MAIN_WAKE_INTERVAL)


def _unix_socket(path, listen, mode):
    """UpstreamServer.socket() for a Unix socket: connected, or listening at path
    (a stale socket there replaced) with permissions mode (default 0600)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not listen:
            sock.connect(path)
            return sock
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        sock.bind(path)
        os.chmod(path, 0o600 if mode is None else mode)
        sock.listen(LISTEN_BACKLOG)
        return sock
    except BaseException:
        sock.close()
        raise


class WebSocketProxy(UpstreamServer):
    """Upstream's WebSocketProxy: relays to target_host:target_port, unix_target,
    the wrapped program (wrap_cmd) or a token_plugin's targets, checked by an
    auth_plugin; WebSocketProxy(**options).start_server() runs it. Unknown
    options are a TypeError naming them."""

    buffer_size = 65536

    def __init__(self, RequestHandlerClass=ProxyRequestHandler, *args, target_host=None,
                 target_port=None, wrap_cmd=None, wrap_mode=None, unix_target=None,
                 ssl_target=None, heartbeat=None, token_plugin=None, host_token=None,
                 auth_plugin=None, **options):
        self.target_host = target_host
        self.target_port = target_port
        self.wrap_cmd = wrap_cmd
        self.wrap_mode = wrap_mode
        self.unix_target = unix_target
        self.ssl_target = ssl_target
        self.heartbeat = heartbeat
        self.token_plugin = token_plugin
        self.host_token = host_token
        self.auth_plugin = auth_plugin
        super().__init__(RequestHandlerClass, *args, **options)


def websockify_init():
    """Upstream's command-line entry point (websockify.websocketproxy.websockify_init,
    what its `websockify` script runs): main() with sys.argv, exiting with its
    status unless 0. Handlers the program gave the root logger (a log file) get
    our log lines too, as upstream logs to the root logger."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, 'stream', None) not in (sys.stderr, sys.stdout):
            logger.addHandler(handler)
    status = main()
    if status:
        sys.exit(status)


# -- the native API ---------------------------------------------------------------------

#: Settings that only a program has (main()): Proxy refuses them.
PROGRAM_ONLY_SETTINGS = ('daemon', 'pid_file', 'workers', 'log_file', 'syslog', 'timeout',
                         'idle_timeout', 'inetd')


class Proxy:
    """websockify.py in a Python program: listens when start() returns, serves
    each connection in a thread of this process, stops with stop(). Changes
    nothing process-wide (no signal handler, thread stack size, working
    directory or logging configuration): the log goes to the `websockify`
    logger, for the program to route.

        with websockify.Proxy(listen_host='127.0.0.1', listen_port=0,
                              target_host='127.0.0.1', target_port=5900) as proxy:
            port = proxy.address[1]
            ...

    Options are the fields of Settings (or a Settings, such as parse_args()'s);
    token_plugin and auth_plugin may also be plugin objects."""

    def __init__(self, settings=None, **options):
        plugins = {}
        for name, field in (('token_plugin', 'token_plugin'), ('auth_plugin', 'auth_plugin_name')):
            value = options.pop(name, None)
            if value is not None and not isinstance(value, str):
                plugins[name] = value
            elif value is not None:
                options[field] = value
        settings = (settings or Settings()).replace(**options)
        used = [name for name in PROGRAM_ONLY_SETTINGS
                if getattr(settings, name) != dict(Settings.FIELDS)[name]]
        if used:
            raise UsageError('Proxy serves in this program: %s belong to the websockify.py '
                             'program (main())' % ', '.join(used))
        #: The Settings it runs with.
        self.settings = settings
        self._plugins = plugins
        #: The listening server (section Server) while it runs, else None.
        self.server = None
        self._thread = None
        self._wrapper = None

    def start(self):
        """Listen and start serving; returns self. UsageError for options that
        cannot work, OSError if the address cannot be listened on."""
        if self.server is not None:
            raise RuntimeError('this Proxy is running already')
        runtime = prepare(self.settings)
        for name, plugin in self._plugins.items():
            setattr(runtime, name, plugin)
        server = make_server(self.settings, runtime)
        try:
            if runtime.rebind:
                self._wrapper = ProgramWrapper(self.settings, runtime.rebind,
                                               server.stop_event.set)
                server.wrapper = self._wrapper
                self._wrapper.start()
        except BaseException:
            server.server_close()
            raise
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name='websockify',
                                        kwargs={'poll_interval': 0.1}, daemon=True)
        self._thread.start()
        return self

    @property
    def address(self):
        """Where it listens: (host, port, ...), or the Unix socket path."""
        return self.server.server_address

    def wait(self, timeout=None):
        """Wait until it should stop (run_once after its session, the wrapped
        program gone in exit mode): True then, False after timeout seconds."""
        return self.server.stop_event.wait(timeout)

    def stop(self, grace=SHUTDOWN_GRACE):
        """Stop listening, close live sessions (1001, waiting up to grace
        seconds), and stop the wrapped program. Does nothing if not running."""
        server, self.server = self.server, None
        if server is None:
            return
        server.shutdown()
        server.close_sessions(grace)
        server.server_close()
        self._thread.join()
        if self._wrapper is not None:
            self._wrapper.stop()
            self._wrapper = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# -- upstream's modules ---------------------------------------------------------------

#: Upstream's modules and the names they hold: a name, or (upstream's name, ours).
UPSTREAM_MODULES = {
    'websocketproxy': ('WebSocketProxy', 'ProxyRequestHandler', 'websockify_init',
                       'select_ssl_version', 'SSL_OPTIONS'),
    'websockifyserver': (('WebSockifyServer', 'UpstreamServer'),
                         ('WebSockifyRequestHandler', 'UpstreamRequestHandler'), 'ssl'),
    'token_plugins': (('BasePlugin', 'TokenPlugin'), 'ReadOnlyTokenFile', 'TokenFile',
                      'TokenFileName', 'BaseTokenAPI', 'JSONTokenApi', 'JWTTokenApi',
                      'TokenRedis', 'UnixDomainSocketDirectory', 'parse_source_args'),
    'auth_plugins': ('BasePlugin', 'AuthenticationError', 'InvalidOriginError',
                     'BasicHTTPAuth', 'ExpectOrigin', 'ClientCertCNAuth'),
}


def install_upstream_modules(module, package):
    """Make module (this file) the package `package` with upstream's modules:
    `import websockify.token_plugins`, `from websockify.websocketproxy import
    WebSocketProxy` then work. Done when this file is imported as websockify, or
    run as a program (then `websockify` names it too, for plugins); imported under
    another name, it is that name's package."""
    modules = {}
    for name, names in UPSTREAM_MODULES.items():
        sub = type(sys)('%s.%s' % (package, name), "upstream websockify's %s module, from %s"
                        % (name, getattr(module, '__file__', module.__name__)))
        sub.__package__ = package
        for entry in names:
            theirs, ours = entry if isinstance(entry, tuple) else (entry, entry)
            setattr(sub, theirs, getattr(module, ours))
        modules[name] = sub
    modules['websocketproxy'].websockifyserver = modules['websockifyserver']
    modules['websocketproxy'].auth = modules['auth_plugins']
    module.__path__ = []              # a package, for the import system
    if package != module.__name__:
        sys.modules.setdefault(package, module)
    for name, sub in modules.items():
        setattr(module, name, sub)
        if sys.modules.get(package) is module:
            sys.modules[sub.__name__] = sub


install_upstream_modules(sys.modules[__name__],
                         'websockify' if __name__ == '__main__' else __name__)


if __name__ == '__main__':
    sys.exit(main())
