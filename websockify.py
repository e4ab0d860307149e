#!/usr/bin/env python3
"""websockify.py: a WebSocket-to-TCP proxy in one file, standard library only.

    python3 websockify.py [options] [source_addr:]source_port target_addr:target_port
    python3 websockify.py [options] --unix-target FILE [source_addr:]source_port
    python3 websockify.py [options] --unix-listen FILE target_addr:target_port
    python3 websockify.py [options] [source_addr:]source_port -- PROGRAM ARGS

A browser opens a WebSocket to this server; every byte it sends reaches the TCP (or
Unix socket) target, and every byte the target sends comes back in WebSocket frames.
The command line is that of websockify 0.13, so this file is a drop-in replacement.
With `-- PROGRAM ARGS` it runs PROGRAM with rebind.so preloaded (see rebind.c), which
moves PROGRAM's listening port to loopback, and relays to it (section Program wrapping).

Specifications:
    RFC 6455 (HyBi 13; drafts 07/08 frame the same way)
        https://www.rfc-editor.org/rfc/rfc6455
    RFC 9110 / RFC 9112 (HTTP semantics and message syntax)
"""

import argparse
import atexit
import base64
import codecs
import dataclasses
import hashlib
import itertools
import logging
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

__version__ = '0.1.0'

logger = logging.getLogger('websockify')


################################################################################
# Constants and errors
################################################################################

#: Longest request line accepted (414 beyond): URLs carry at most a token.
MAX_REQUEST_LINE = 8192
#: Largest header block accepted (431 beyond): browsers send 1-4 KiB with cookies.
MAX_HEADER_BYTES = 16384
#: Most header lines accepted (431 beyond).
MAX_HEADERS = 100
#: First read of a receive buffer; idle sessions stay this small.
RECV_MIN = 8192
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
#: Seconds live sessions get to close after SIGTERM/SIGINT.
SHUTDOWN_GRACE = 2.0
#: Seconds without traffic after which a session gives back its big buffers.
BUFFER_RELEASE_IDLE = 1.0
#: Seconds allowed to connect to a target.
CONNECT_TIMEOUT = 10.0
#: Stack size of connection threads: deep enough for ssl and logging, small
#: enough that ten thousand idle sessions cost little address space.
THREAD_STACK_SIZE = 512 * 1024
#: Listen backlog; the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024
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
#: First and longest delay before restarting a program that keeps failing to start.
RESPAWN_FIRST_DELAY = 0.5
RESPAWN_MAX_DELAY = 30.0
#: Seconds a wrapped program's process group has between SIGTERM and SIGKILL.
WRAP_KILL_GRACE = 3.0
#: Seconds allowed to compile rebind.so on the fly.
REBIND_BUILD_TIMEOUT = 60.0
#: Seconds the foreground process of -D waits for the daemon to report that it serves.
DAEMON_READY_TIMEOUT = 30.0
#: WebSocket versions we speak (RFC 6455 §4.4).
HYBI_VERSIONS = ('13', '8', '7')

#: Received close codes that are valid on the wire (RFC 6455 §7.4).
VALID_CLOSE_CODES = frozenset(itertools.chain(
    (1000, 1001, 1002, 1003), range(1007, 1015), range(3000, 5000)))


class HTTPError(Exception):
    """A request refused before the upgrade: an HTTP status and a one-line reason."""

    def __init__(self, status, reason, headers=()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)


class ProtocolError(Exception):
    """A WebSocket session ended by us: the close code and reason to send."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class UsageError(Exception):
    """A command line that cannot work; main() prints it and exits 2."""


class WrapError(Exception):
    """The wrapped program cannot be run (no rebind.so, no such program); main() exits 1."""


################################################################################
# Protocol (Sans-I/O): requests, handshakes, frames
################################################################################
#
# Nothing here touches a socket, a logger or the settings: bytes in, results out.
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
    101: 'Switching Protocols', 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found',
    405: 'Method Not Allowed', 408: 'Request Timeout', 414: 'URI Too Long',
    426: 'Upgrade Required', 431: 'Request Header Fields Too Large',
    500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable',
}

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
    """Index just past the blank line ending a request head, or -1 if not there yet."""
    i = data.find(b'\r\n\r\n', start)
    j = data.find(b'\n\n', start)
    if i < 0:
        return j + 2 if j >= 0 else -1
    if j < 0 or i + 2 < j:
        return i + 4
    return j + 2


def check_head_size(data):
    """Raise 414/431 when a request head still being received is already too big."""
    eol = data.find(b'\n')
    if (eol < 0 and len(data) > MAX_REQUEST_LINE) or eol > MAX_REQUEST_LINE:
        raise HTTPError(414, 'request line longer than %d bytes' % MAX_REQUEST_LINE)
    if len(data) > MAX_REQUEST_LINE + MAX_HEADER_BYTES:
        raise HTTPError(431, 'request headers larger than %d bytes' % MAX_HEADER_BYTES)


def parse_request(head):
    """Parse a complete request head (bytes up to and including the blank line)."""
    check_head_size(head)
    lines = head.decode('latin-1').split('\n')
    lines = [line[:-1] if line.endswith('\r') else line for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HTTPError(400, 'empty request')
    parts = lines[0].split(' ')
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise HTTPError(400, 'malformed request line')
    version = _VERSION.match(parts[2])
    if not version:
        raise HTTPError(400, 'malformed HTTP version')
    if len(lines) - 1 > MAX_HEADERS:
        raise HTTPError(431, 'more than %d header lines' % MAX_HEADERS)
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(':')
        if not colon or not _TOKEN.match(name):
            raise HTTPError(400, 'malformed header line')
        headers.setdefault(name.lower(), []).append(value.strip(' \t'))
    return Request(parts[0], parts[1], (int(version.group(1)), int(version.group(2))),
                   headers)


def accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 step 5.4)."""
    digest = hashlib.sha1(key.encode('ascii') + _WS_GUID).digest()
    return base64.b64encode(digest).decode('ascii')


def is_upgrade(request):
    """True when a request asks for a WebSocket (Upgrade: websocket, any case)."""
    return 'websocket' in request.tokens('upgrade')


def check_hybi_request(request):
    """Validate a HyBi upgrade request (RFC 6455 §4.2.1); return its key or raise HTTPError."""
    if request.method != 'GET':
        raise HTTPError(405, 'a WebSocket handshake must use GET', [('Allow', 'GET')])
    if request.version < (1, 1):
        raise HTTPError(400, 'a WebSocket handshake needs HTTP/1.1')
    if not request.header('host'):
        raise HTTPError(400, 'missing Host header')
    if 'upgrade' not in request.tokens('connection'):
        raise HTTPError(400, 'Connection header lacks the "upgrade" token')
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
    """Sec-WebSocket-Protocol values in order, over all header lines (case kept)."""
    return [t.strip() for v in request.headers.get('sec-websocket-protocol', ())
            for t in v.split(',') if t.strip()]


def hybi_response(key, protocol):
    """The 101 reply accepting a HyBi handshake."""
    lines = ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket',
             'Connection: Upgrade', 'Sec-WebSocket-Accept: ' + accept_key(key)]
    if protocol is not None:
        lines.append('Sec-WebSocket-Protocol: ' + protocol)
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


def http_response(status, body='', headers=(), content_type='text/plain; charset=utf-8'):
    """A complete HTTP/1.1 response that closes the connection."""
    payload = body.encode('utf-8') if isinstance(body, str) else body
    lines = ['HTTP/1.1 %d %s' % (status, _STATUS_TEXT.get(status, 'Error'))]
    lines.extend('%s: %s' % h for h in headers)
    lines.extend(('Content-Type: ' + content_type, 'Content-Length: %d' % len(payload),
                  'Connection: close', 'Server: websockify.py/' + __version__))
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + payload


# RFC 6455 §5.2 opcodes.
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = (OP_CONT, OP_TEXT, OP_BINARY)
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
    stdlib method measured (see `make bench` and README, Performance)."""
    if end - start < 16:
        for i in range(start, end):
            buf[i] ^= mask[(i - start) & 3]
        return
    for k in range(4):
        s = slice(start + k, end, 4)
        buf[s] = buf[s].translate(_XOR[mask[k]])


def unmask(data, mask):
    """Return data XOR the repeated 4-byte mask (RFC 6455 §5.3)."""
    buf = bytearray(data)
    unmask_inplace(buf, 0, len(buf), mask)
    return bytes(buf)


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

        Appends payload views to out and ('ping'|'pong'|'close', ...) tuples to
        events; returns the position of the first byte not consumed. Stops after a
        close frame. Raises ProtocolError."""
        view = memoryview(buf)
        while pos < end:
            if self._remaining:
                n = min(self._remaining, end - pos)
                mask = self._mask
                unmask_inplace(buf, pos, pos + n, mask)
                self._remaining -= n
                if n & 3:
                    self._mask = mask[n & 3:] + mask[:n & 3]
                piece = view[pos:pos + n]
                pos += n
                if self._utf8 is not None:
                    self._check_text(piece, not self._remaining and self._fin)
                out.append(piece)
                if not self._remaining and self._fin:
                    self._message = None
                continue
            avail = end - pos
            if avail < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            head = 6
            if length == 126:
                head = 8
            elif length == 127:
                head = 14
            if avail < head:
                break
            if b0 & 0x70:
                raise ProtocolError(1002, 'reserved bits set without an extension')
            if not b1 & 0x80:
                raise ProtocolError(1002, 'client frame is not masked')
            if length == 126:
                length = _unpack_short(buf, pos + 2)[0]
            elif length == 127:
                length = _unpack_long(buf, pos + 2)[0]
                if length >> 63:
                    raise ProtocolError(1002, 'frame length has its top bit set')
            fin = b0 & 0x80
            if opcode in _CONTROL_OPCODES:
                if not fin:
                    raise ProtocolError(1002, 'fragmented control frame')
                if length > 125:
                    raise ProtocolError(1002, 'control frame longer than 125 bytes')
                if avail < head + length:
                    break
                payload = buf[pos + head:pos + head + length]
                unmask_inplace(payload, 0, length, buf[pos + head - 4:pos + head])
                pos += head + length
                if opcode == OP_PING:
                    events.append(('ping', bytes(payload)))
                elif opcode == OP_PONG:
                    events.append(('pong', bytes(payload)))
                else:
                    code, reason = _parse_close(payload)
                    events.append(('close', code, reason))
                    return pos
                continue
            if opcode == OP_CONT:
                if self._message is None:
                    raise ProtocolError(1002, 'continuation frame without a message')
            elif opcode in (OP_TEXT, OP_BINARY):
                if self._message is not None:
                    raise ProtocolError(1002, 'new message inside a fragmented message')
                self._message = opcode
                self._utf8 = (codecs.getincrementaldecoder('utf-8')()
                              if opcode == OP_TEXT else None)
            else:
                raise ProtocolError(1002, 'unknown opcode %d' % opcode)
            self._mask = bytes(buf[pos + head - 4:pos + head])
            self._remaining = length
            self._fin = bool(fin)
            pos += head
            if not length and fin:
                if self._utf8 is not None:
                    self._check_text(b'', True)
                self._message = None
        return pos

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


################################################################################
# Connection: first byte, request head, blocking I/O before the upgrade
################################################################################

class Connection:
    """A client socket before the WebSocket session: sniffing and the request head.

    Bytes read past the request head (an eager first frame) are kept in
    `extra` and handed to the pump."""

    def __init__(self, sock, peer):
        self.sock = sock
        #: "host:port" or "unix" for logging.
        self.peer = peer
        #: Bytes received after the request head.
        self.extra = b''
        #: True once TLS wraps the socket (set by the TLS layer).
        self.secure = False

    def peek_first_byte(self, timeout):
        """The first byte the client sends, without consuming it; None on EOF/timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
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
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                raise HTTPError(408, 'request head not received in time') from None
            if not chunk:
                return None
            data += chunk

    def send_all(self, data, timeout=CONNECT_TIMEOUT):
        self.sock.settimeout(timeout)
        self.sock.sendall(data)


################################################################################
# Pump: the select loop relaying one session
################################################################################
#
# One thread per session polls two non-blocking sockets with select.poll
# (no descriptor limit, unlike select.select).
#
# Buffers: each side has a receive buffer that starts at RECV_MIN bytes, grows
# fourfold whenever a read fills it (up to RECV_MAX) and is dropped after
# BUFFER_RELEASE_IDLE seconds without traffic, so idle sessions hold almost
# nothing. Each side also has an outgoing queue (a bytearray) for what the
# kernel did not take at once.
#
# Back-pressure: a side is read only while the other side's queue is empty, so
# a peer that stops reading stops the peer feeding it and no more than one read
# waits in memory. The client is also read while its own queue holds target
# data (so client->target keeps flowing when the client does not read), up to
# PUMP_HIGH_WATER, which only pongs and close frames can reach.
#
# Closing: whoever ends the session, the pump sends what it holds, sends or
# answers the close frame, shuts down writing on each socket and reads (and
# drops) until the peer's EOF, so no unread byte turns close() into a reset that
# would destroy data still in flight. CLOSE_TIMEOUT bounds all of it.

_POLLIN = select.POLLIN | select.POLLPRI
_POLLOUT = select.POLLOUT
_POLLDONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
_LOST = (ConnectionError, TimeoutError, OSError)


class _Side:
    """One socket of a session: its buffer, its queue and its closing state."""

    __slots__ = ('name', 'sock', 'fd', 'buf', 'view', 'end', 'queue', 'use_sendmsg',
                 'reading', 'draining', 'shut', 'closed', 'mask', 'received', 'sent')

    def __init__(self, name, sock):
        self.name = name
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = None
        self.view = None
        #: Bytes of buf holding data not consumed yet.
        self.end = 0
        self.queue = bytearray()
        self.use_sendmsg = hasattr(sock, 'sendmsg') and not hasattr(sock, 'cipher')
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

    def write(self, parts):
        """Send buffers now, queueing what the kernel does not take. Raises on loss."""
        if self.queue:
            for p in parts:
                self.queue += p
            return
        if self.use_sendmsg:
            try:
                done = self.sock.sendmsg(parts)
            except BlockingIOError:
                done = 0
        else:
            data = parts[0] if len(parts) == 1 else b''.join(parts)
            try:
                done = self.sock.send(data)
            except BlockingIOError:
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
        except BlockingIOError:
            return False
        self.sent += done
        del self.queue[:done]
        if self.queue:
            return False
        self.queue = bytearray()
        return True


class Pump:
    """Relays one WebSocket session between a client and a target socket."""

    def __init__(self, client_sock, target_sock, codec, initial=b'', heartbeat=0,
                 wake_fd=None, traffic=False):
        self.client = _Side('client', client_sock)
        self.target = _Side('target', target_sock)
        self.codec = codec
        self.heartbeat = heartbeat
        self.wake_fd = wake_fd
        self.traffic = traffic
        #: Close code and reason of the session, for the log.
        self.close_code = None
        self.close_reason = ''
        #: Whether we sent / received a close frame.
        self.close_sent = False
        self.close_received = False
        self.deadline = None
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
        client, target = self.client, self.target
        for side in (client, target):
            side.sock.setblocking(False)
        poll = self._poll
        if self.wake_fd is not None:
            poll.register(self.wake_fd, _POLLIN)
        if client.end:
            self._decode_client()
        now = time.monotonic()
        next_ping = now + self.heartbeat if self.heartbeat else None
        last_activity = now
        while not (client.closed and target.closed):
            self._update_masks()
            timeout = None
            now = time.monotonic()
            deadlines = []
            if self.deadline is not None:
                deadlines.append(self.deadline)
            if next_ping is not None and not self.close_sent:
                deadlines.append(next_ping)
            if ((client.buf is not None and not client.end)
                    or (target.buf is not None and not target.end)):
                deadlines.append(last_activity + BUFFER_RELEASE_IDLE)
            if deadlines:
                timeout = max(0, int((min(deadlines) - now) * 1000) + 1)
            events = poll.poll(timeout)
            now = time.monotonic()
            if events:
                last_activity = now
            for fd, ev in events:
                if fd == client.fd:
                    self._service(client, ev)
                elif fd == target.fd:
                    self._service(target, ev)
                elif fd == self.wake_fd:
                    poll.unregister(fd)
                    self.wake_fd = None
                    self.start_close(1001, 'server shutting down')
            if self.deadline is not None and now >= self.deadline:
                self._abort_all('closing handshake timed out')
            if next_ping is not None and now >= next_ping:
                next_ping = now + self.heartbeat
                if not self.close_sent and not client.shut:
                    self._send_client([self.codec.control(OP_PING, b'')])
            if not events and now - last_activity >= BUFFER_RELEASE_IDLE:
                client.release_buffer()
                target.release_buffer()
        return self.close_code, self.close_reason

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

    # -- reading ----------------------------------------------------------------------

    def _read(self, side):
        side.ensure_buffer()
        space = len(side.buf) - side.end
        n = side.sock.recv_into(side.view[side.end:])
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
        if n == space and len(side.buf) < RECV_MAX:
            side.grow()

    def _decode_client(self):
        client = self.client
        out, events = [], []
        try:
            pos = self.codec.decode(client.buf, 0, client.end, out, events)
        except ProtocolError as exc:
            self._to_target(out)
            out = None
            self._fail(exc.code, exc.reason)
            return
        if out:
            self._to_target(out)
        out = None
        rest = client.end - pos
        if rest:
            client.buf[:rest] = client.buf[pos:client.end]
        client.end = rest
        for event in events:
            if event[0] == 'ping':
                if not self.close_sent:
                    self._send_client([self.codec.control(OP_PONG, event[1])])
            elif event[0] == 'close':
                self._client_closed(event[1], event[2])

    def _to_target(self, parts):
        target = self.target
        if not parts or target.shut or target.closed:
            return
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
        try:
            parts = self.codec.encode(data)
        except ProtocolError as exc:
            target.end = 0
            self._fail(exc.code, exc.reason)
            return
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

    def _client_closed(self, code, reason):
        """The client sent a close frame: answer it and shut both sides down."""
        self.close_received = True
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if not self.close_sent:
            self.close_sent = True
            echo = None if code == 1005 else code
            self._send_client([self.codec.close_frame(echo)])
        self._finish(self.client)
        self._finish(self.target)

    def start_close(self, code, reason):
        """End the session from our side: send a close frame and await the reply."""
        if self.close_sent or self.client.closed:
            self._finish(self.target)
            return
        self.close_sent = True
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._send_client([self.codec.close_frame(code, reason)])
        self._finish(self.target)
        self._arm_deadline()
        if self.client.shut:
            self._finish(self.client)

    def _fail(self, code, reason):
        """A protocol error: close with code, stop relaying from the client."""
        if self.close_code is None or self.close_code < 1002:
            self.close_code, self.close_reason = code, reason
        if not self.close_sent:
            self.close_sent = True
            self._send_client([self.codec.close_frame(code, reason)])
        self._finish(self.client)
        self._finish(self.target)

    def _eof(self, side):
        """A side closed its sending direction."""
        if side.draining or side.shut:
            self._close_side(side)
            return
        side.reading = False
        if side is self.target:
            self.start_close(1000, 'target closed the connection')
        else:
            if self.close_code is None:
                self.close_code, self.close_reason = 1006, 'client closed without a close frame'
            self._finish(self.target)
            self._close_side(self.client)

    def _lost(self, side, exc):
        """A side failed (reset, broken pipe): drop it and close the other."""
        self._close_side(side)
        if side is self.client:
            if self.close_code is None:
                self.close_code = 1006
                self.close_reason = 'client connection lost (%s)' % _errname(exc)
            self._finish(self.target)
        else:
            self.start_close(1011, 'target connection lost (%s)' % _errname(exc))

    def _finish(self, side):
        """Stop relaying from side; shut down writing once its queue is sent; drain."""
        if side.closed:
            return
        side.reading = False
        side.draining = True
        side.shut = True
        side.end = 0
        self._arm_deadline()
        if not side.queue:
            self._after_flush(side)

    def _after_flush(self, side):
        if side.shut and not side.queue:
            try:
                side.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._close_side(side)

    def _arm_deadline(self):
        if self.deadline is None:
            self.deadline = time.monotonic() + CLOSE_TIMEOUT

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

    def _abort_all(self, reason):
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, reason
        self._close_side(self.client)
        self._close_side(self.target)


def _errname(exc):
    if exc is None:
        return 'hang-up'
    return type(exc).__name__


def _traffic(marker):
    sys.stderr.write(marker)
    sys.stderr.flush()


################################################################################
# Targets
################################################################################

def describe_target(settings):
    """The fixed target as a log string."""
    if settings.wrap_cmd:
        return 'program %s (its port %d moved to loopback)' % (
            _printable(' '.join(settings.wrap_cmd)), settings.listen_port)
    if settings.unix_target:
        return 'unix:' + settings.unix_target
    return format_address(settings.target_host, settings.target_port)


def connect_target(settings, wrapper=None):
    """Open the session's target socket; raises HTTPError 502 naming the target.

    The target of a wrapped program is a loopback port that its rebind.so
    reported to `wrapper` (a ProgramWrapper)."""
    if settings.wrap_cmd:
        return _connect_wrapped(settings, wrapper)
    where = describe_target(settings)
    try:
        if settings.unix_target:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect(settings.unix_target)
            except BaseException:
                sock.close()
                raise
        else:
            # create_connection tries every getaddrinfo address in order.
            sock = socket.create_connection((settings.target_host, settings.target_port),
                                            CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise HTTPError(502, 'cannot connect to target %s: %s'
                        % (where, exc.strerror or exc)) from None
    return sock, where


def _connect_wrapped(settings, wrapper):
    """Connect to any listener the wrapped program reported, newest first.

    While none accepts (the program is starting, restarting, or serving its one
    connection), wait for a new report or retry, for up to WRAP_CONNECT_WAIT s."""
    name = os.path.basename(settings.wrap_cmd[0])
    if wrapper is None:
        raise HTTPError(502, 'wrapped program %s is not running' % name)
    deadline = time.monotonic() + WRAP_CONNECT_WAIT
    version, listeners = wrapper.listeners()
    problem = 'it has not bound port %d yet' % settings.listen_port
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
            wrapper.session_connected()
            return sock, 'program %s at %s' % (_printable(name), format_address(host, port))
        remaining = deadline - time.monotonic()
        if remaining <= 0 or wrapper.stopping:
            raise HTTPError(502, 'wrapped program %s is not accepting connections: %s'
                            % (_printable(name), problem))
        version, listeners = wrapper.wait_listeners(
            version, min(remaining, WRAP_RETRY) if listeners else remaining)


################################################################################
# Program wrapping
################################################################################
#
# `websockify.py PORT -- PROGRAM ARGS`: websockify listens on PORT itself and
# runs PROGRAM in a process group of its own with rebind.so preloaded. When
# PROGRAM, or anything it starts, binds a TCP socket to PORT, rebind.so binds it
# to loopback on a port the kernel picks and sends that port to a Unix datagram
# socket in a private (0700) directory; the reader thread here records it, and
# `_connect_wrapped` (Targets) connects each session to any recorded port that
# accepts. A program binding IPv4 and IPv6 reports two ports.
#
# When PROGRAM exits, --wrap-mode decides:
#   exit     websockify stops and exits with PROGRAM's status (128+N for signal N).
#   ignore   websockify keeps serving, for programs that daemonize (vncserver):
#            the ports their daemon reported stay valid.
#   respawn  PROGRAM starts again. A run that served a session or lasted
#            RESPAWN_QUICK_EXIT seconds restarts at once, however often (telnetd
#            exits after every connection). A run that ended sooner without a
#            session failed to start: from the second such failure in a row the
#            restart waits RESPAWN_FIRST_DELAY seconds, doubling up to
#            RESPAWN_MAX_DELAY, with one warning, until a run succeeds. Sessions
#            arriving meanwhile wait for the new run, up to WRAP_CONNECT_WAIT s.
# Whenever websockify stops (signal, error, --timeout, exit mode), every process
# group it started gets SIGTERM, then SIGKILL after WRAP_KILL_GRACE seconds.

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

    Created by main(); the handler threads call listeners(), wait_listeners() and
    session_connected() (through connect_target)."""

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
        self._quick_failures = 0
        self._backoff_logged = False
        #: Process groups started that may still have members.
        self._groups = set()
        self._stop = threading.Event()
        self._watcher = None
        self._reader = None
        #: Set by stop(); sessions stop waiting for the program.
        self.stopping = False
        #: The status websockify exits with under --wrap-mode=exit, once known.
        self.exit_status = None
        try:
            self._dir = tempfile.mkdtemp(prefix='websockify-wrap-')
            self._report_path = os.path.join(self._dir, 'ports')
            self._reports = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._reports.bind(self._report_path)
        except OSError as exc:
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
            if not 0 < port < 65536:
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
        if served or ran >= RESPAWN_QUICK_EXIT:
            if self._backoff_logged:
                logger.info('%s ran normally again: restarts are immediate again', self.name)
            self._quick_failures = 0
            self._backoff_logged = False
            logger.info('%s %s: restarting (--wrap-mode=respawn)', self.name, how)
            return 0
        self._quick_failures += 1
        if self._quick_failures < 2:
            logger.info('%s %s after %.1f s without a session: restarting', self.name, how, ran)
            return 0
        delay = min(RESPAWN_MAX_DELAY,
                    RESPAWN_FIRST_DELAY * 2 ** min(self._quick_failures - 2, 16))
        if not self._backoff_logged:
            self._backoff_logged = True
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


################################################################################
# Server and command line
################################################################################

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


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the command line decides; built once by parse_args()."""
    listen_host: str = ''
    listen_port: int = 0
    unix_listen: str = None
    unix_listen_mode: int = 0o600
    inetd: bool = False
    prefer_ipv6: bool = False
    target_host: str = None
    target_port: int = None
    unix_target: str = None
    verbose: bool = False
    traffic: bool = False
    run_once: bool = False
    timeout: float = 0
    idle_timeout: float = 0
    heartbeat: float = 0
    handshake_timeout: float = 10.0
    text_frames: bool = False
    log_file: str = None
    #: The program to run and relay to (`-- PROGRAM ARGS`), else None.
    wrap_cmd: tuple = None
    wrap_mode: str = 'exit'
    rebind: str = None
    daemon: bool = False
    pid_file: str = None


class WebSockifyHandler(socketserver.BaseRequestHandler):
    """Serves one client connection: sniff, handshake, then relay."""

    def handle(self):
        server = self.server
        conn_id = next(server.ids)
        if isinstance(self.client_address, tuple):
            peer = format_address(*self.client_address[:2])
        else:
            peer = 'unix'
        self.log_prefix = '%d %s' % (conn_id, peer)
        self.conn = Connection(self.request, peer)
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
        first = self.conn.peek_first_byte(settings.handshake_timeout)
        if first is None:
            logger.debug('%s: closed before sending anything', self.log_prefix)
            return
        if first in (b'\x16', b'\x80'):
            logger.info('%s: TLS handshake refused: TLS (wss://) is not supported yet',
                        self.log_prefix)
            return
        if self.server.is_tcp:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = None
        try:
            head = self.conn.read_head(start + settings.handshake_timeout)
            if head is None:
                logger.debug('%s: closed during the request head', self.log_prefix)
                return
            request = parse_request(head)
            self._serve_request(request)
        except HTTPError as exc:
            self._refuse(request, exc)
        except (ConnectionError, socket.timeout) as exc:
            logger.info('%s: connection lost during the handshake: %s',
                        self.log_prefix, type(exc).__name__)

    def _serve_request(self, request):
        settings = self.server.settings
        if not is_upgrade(request):
            if request.method != 'GET':
                raise HTTPError(405, 'this port only serves WebSocket connections',
                                [('Allow', 'GET')])
            raise HTTPError(426, 'this port serves WebSocket connections only '
                                 '(websockify.py %s)' % __version__,
                            [('Upgrade', 'websocket')])
        key = check_hybi_request(request)
        protocol = choose_subprotocol(offered_subprotocols(request))
        if protocol == 'base64':
            raise HTTPError(400, 'the base64 subprotocol is not supported yet')
        target, where = connect_target(settings, self.server.wrapper)
        try:
            self.conn.send_all(hybi_response(key, protocol))
            codec = HybiCodec(text_frames=settings.text_frames)
            self._relay(request, target, where, codec, protocol)
        finally:
            target.close()

    def _relay(self, request, target, where, codec, protocol):
        server = self.server
        settings = server.settings
        path = _printable(request.target)
        logger.info('%s: session open: path %s, target %s, %s/%s%s', self.log_prefix, path,
                    where, codec.family, codec.mode,
                    ', protocol %s' % _printable(protocol) if protocol else '')
        pump = Pump(self.request, target, codec, initial=self.conn.extra,
                    heartbeat=settings.heartbeat, wake_fd=server.wake_fd,
                    traffic=settings.traffic)
        started = time.monotonic()
        server.session_started()
        try:
            code, reason = pump.run()
        finally:
            server.session_ended()
        logger.info('%s: session closed: path %s, target %s, %d bytes from client, '
                    '%d bytes to client, %.1f s, close %s%s', self.log_prefix, path, where,
                    pump.target.sent, pump.client.sent, time.monotonic() - started,
                    code, ' (%s)' % _printable(reason) if reason else '')

    def _refuse(self, request, exc):
        """Answer a refused request with its status, log it, and close gently."""
        what = ('%s %s' % (request.method, _printable(request.target))
                if request is not None else 'request')
        logger.info('%s: %d %s: %s', self.log_prefix, exc.status, what, exc.reason)
        try:
            self.conn.send_all(http_response(exc.status, exc.reason + '\n', exc.headers), 2.0)
            self.request.shutdown(socket.SHUT_WR)
            # Read what the client still sends so that close() does not reset the
            # connection and destroy the response before the client reads it.
            self.request.settimeout(1.0)
            for _ in range(16):
                if not self.request.recv(4096):
                    break
        except OSError:
            pass


class _ServerMixin:
    """What the TCP and Unix listeners share: settings, ids, session accounting."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG
    is_tcp = True

    def _setup(self, settings):
        self.settings = settings
        self.ids = itertools.count(1)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        #: Sessions being relayed now.
        self.active = 0
        #: time.monotonic() of the last session end (or of start-up).
        self.last_active = time.monotonic()
        #: Set when the process should stop (signal, --run-once, timeouts).
        self.stop_event = threading.Event()
        # Every pump polls the read end; one byte written wakes them all to close.
        self.wake_fd, self._wake_w = os.pipe()
        #: The ProgramWrapper of `-- PROGRAM` (set by main()), else None.
        self.wrapper = None

    def session_started(self):
        with self._lock:
            self.active += 1

    def session_ended(self):
        with self._lock:
            self.active -= 1
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

    def __init__(self, settings, address, family, sock=None):
        self.address_family = family
        self._setup(settings)
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
    """The --unix-listen listener."""

    is_tcp = False

    def __init__(self, settings):
        self._setup(settings)
        super().__init__(settings.unix_listen, WebSockifyHandler)

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


def make_server(settings):
    """Create the listening server (bound, listening) for these settings."""
    threading.stack_size(THREAD_STACK_SIZE)
    if settings.unix_listen:
        return WebSockifyUnixServer(settings)
    if settings.inetd:
        sock = socket.socket(fileno=os.dup(sys.stdin.fileno()))
        return WebSockifyServer(settings, ('', 0), sock.family, sock)
    family, address = _listen_family(settings.listen_host, settings.listen_port,
                                     settings.prefer_ipv6)
    return WebSockifyServer(settings, address, family)


def describe_listener(server):
    if isinstance(server, WebSockifyUnixServer):
        return 'unix:' + server.server_address
    return format_address(*server.server_address[:2])


#: Options of upstream websockify that later work will implement; until then
#: giving one is a usage error, never a silent no-op.
_NOT_YET = (
    ('record', '--record'), ('cert', '--cert'), ('key', '--key'),
    ('key_password', '--key-password'), ('ssl_only', '--ssl-only'),
    ('ssl_target', '--ssl-target'), ('verify_client', '--verify-client'),
    ('cafile', '--cafile'), ('ssl_version', '--ssl-version'),
    ('ssl_ciphers', '--ssl-ciphers'), ('web', '--web'), ('web_auth', '--web-auth'),
    ('target_config', '--target-config'),
    ('token_plugin', '--token-plugin'), ('token_source', '--token-source'),
    ('host_token', '--host-token'), ('auth_plugin', '--auth-plugin'),
    ('auth_source', '--auth-source'), ('syslog', '--syslog'),
    ('legacy_syslog', '--legacy-syslog'), ('file_only', '--file-only'),
)


def _build_parser():
    p = argparse.ArgumentParser(
        prog='websockify.py',
        usage='%(prog)s [options] [source_addr:]source_port target_addr:target_port\n'
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
    a('--record', metavar='FILE', help='record sessions to FILE.N (not supported yet)')
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
    a('--text-frames', action='store_true',
      help='send target data in text frames (target data must be UTF-8)')
    a('--cert', metavar='FILE', help='TLS certificate file (not supported yet)')
    a('--key', metavar='FILE', help='TLS key file (not supported yet)')
    a('--key-password', metavar='PASSWORD', help='TLS key password (not supported yet)')
    a('--ssl-only', action='store_true', help='refuse unencrypted clients (not supported yet)')
    a('--ssl-target', action='store_true', help='connect to the target with TLS '
                                                 '(not supported yet)')
    a('--verify-client', action='store_true', help='require client certificates '
                                                    '(not supported yet)')
    a('--cafile', metavar='FILE', help='CAs for client certificates (not supported yet)')
    a('--ssl-version', metavar='VERSION', help='minimum TLS version (not supported yet)')
    a('--ssl-ciphers', metavar='CIPHERS', help='TLS cipher list (not supported yet)')
    a('--unix-listen', metavar='FILE', help='listen on a Unix socket instead of a port')
    a('--unix-listen-mode', metavar='OCTAL', default='600',
      help='permissions of the --unix-listen socket (default 600)')
    a('--unix-target', metavar='FILE', help='connect to a Unix socket target')
    a('--inetd', action='store_true',
      help='take the listening socket from standard input (inetd/systemd style)')
    a('--web', metavar='DIR', help='serve files from DIR on the same port (not supported yet)')
    a('--web-auth', action='store_true', help='authenticate web requests too '
                                               '(not supported yet)')
    a('--file-only', action='store_true', help='no directory listings (not supported yet)')
    a('--wrap-mode', choices=('exit', 'ignore', 'respawn'),
      help='when the program of -- PROGRAM exits: exit (default) with its status, '
           'ignore it and keep serving, or respawn it')
    a('--rebind', metavar='PATH',
      help='rebind.so for -- PROGRAM (default: $%s, else next to websockify.py, '
           'else built from rebind.c)' % REBIND_ENV)
    a('-6', '--prefer-ipv6', action='store_true', help='prefer IPv6 when resolving source_addr')
    a('--libserver', action='store_true',
      help='accepted for compatibility: this server is always socketserver-based')
    a('--target-config', metavar='FILE', help='token file (not supported yet)')
    a('--token-plugin', metavar='CLASS', help='token plugin (not supported yet)')
    a('--token-source', metavar='ARG', help='token plugin argument (not supported yet)')
    a('--host-token', action='store_true', help='token from Host (not supported yet)')
    a('--auth-plugin', metavar='CLASS', help='auth plugin (not supported yet)')
    a('--auth-source', metavar='ARG', help='auth plugin argument (not supported yet)')
    a('--log-file', metavar='FILE', help='append log lines to FILE instead of stderr')
    a('--syslog', metavar='SERVER', help='log to syslog (not supported yet)')
    a('--legacy-syslog', action='store_true', help='old syslog format (not supported yet)')
    return p


def _split_hostport(parser, text, what):
    """'host:port', ':port', 'port', '[v6]:port', 'v6:port' -> (host, port)."""
    if ':' in text:
        host, port = text.rsplit(':', 1)
        host = host.strip('[]')
    else:
        host, port = '', text
    try:
        port = int(port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        parser.error('invalid %s port in %r' % (what, text))
    return host, port


def parse_args(argv):
    """Build Settings from a command line (without the program name)."""
    argv = list(argv)
    wrap = None
    if '--' in argv:
        cut = argv.index('--')
        argv, wrap = argv[:cut], argv[cut + 1:]
    parser = _build_parser()
    opts = parser.parse_args(argv)
    for dest, flag in _NOT_YET:
        if getattr(opts, dest) not in (None, False):
            parser.error('%s is not supported yet' % flag)
    if wrap is not None:
        if not wrap:
            parser.error('-- must be followed by the PROGRAM to run (and its ARGS)')
        if opts.unix_target:
            parser.error('--unix-target and -- PROGRAM contradict each other: '
                         'the wrapped program is the target')
        if opts.unix_listen or opts.inetd:
            parser.error('-- PROGRAM needs a listening port (the one PROGRAM binds), '
                         'not --unix-listen or --inetd')
    elif opts.wrap_mode or opts.rebind:
        parser.error('--wrap-mode and --rebind only apply to -- PROGRAM ARGS')
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
    if not opts.unix_target and wrap is None:
        if not args:
            parser.error('missing the target_addr:target_port')
        target = args.pop(0)
        if ':' not in target:
            parser.error('the target must be target_addr:target_port, not %r' % target)
        target_host, target_port = _split_hostport(parser, target, 'target')
        if not target_host:
            parser.error('the target %r has no host' % target)
    if args:
        parser.error('unexpected argument %r' % args[0])
    for name in ('timeout', 'idle_timeout', 'heartbeat', 'handshake_timeout'):
        if getattr(opts, name) < 0:
            parser.error('--%s cannot be negative' % name.replace('_', '-'))
    if opts.handshake_timeout == 0:
        parser.error('--handshake-timeout must be positive')
    return Settings(
        listen_host=listen_host, listen_port=listen_port, unix_listen=opts.unix_listen,
        unix_listen_mode=mode, inetd=opts.inetd, prefer_ipv6=opts.prefer_ipv6,
        target_host=target_host, target_port=target_port, unix_target=opts.unix_target,
        verbose=opts.verbose, traffic=opts.traffic, run_once=opts.run_once,
        timeout=opts.timeout, idle_timeout=opts.idle_timeout, heartbeat=opts.heartbeat,
        handshake_timeout=opts.handshake_timeout, text_frames=opts.text_frames,
        log_file=opts.log_file, wrap_cmd=tuple(wrap) if wrap is not None else None,
        wrap_mode=opts.wrap_mode or 'exit', rebind=opts.rebind, daemon=opts.daemon,
        pid_file=opts.pid_file)


def _configure_logging(settings):
    if settings.log_file:
        handler = logging.FileHandler(settings.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if settings.verbose else logging.INFO)
    logger.propagate = False


def _wait_for_stop(server, settings):
    """Block until a signal, --run-once, --timeout or --idle-timeout ends the server."""
    started = time.monotonic()
    while not server.stop_event.is_set():
        now = time.monotonic()
        deadlines = []
        if settings.timeout:
            if now - started >= settings.timeout:
                logger.info('--timeout %g reached: no new connections', settings.timeout)
                server.shutdown()
                server.wait_idle()
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
        server.stop_event.wait(min(wait, MAIN_WAKE_INTERVAL))


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


def _serve(server, settings):
    """Serve until a signal, the wrapped program (exit mode) or a timeout stops us."""

    def on_signal(signum, frame):
        server.stop_event.set()

    signals = [signal.SIGTERM, signal.SIGINT]
    if settings.wrap_cmd:
        signals.append(signal.SIGHUP)     # a closed terminal must not orphan the program
    for sig in signals:
        signal.signal(sig, on_signal)
    acceptor = threading.Thread(target=server.serve_forever, name='acceptor', daemon=True)
    acceptor.start()
    try:
        _wait_for_stop(server, settings)
    finally:
        server.shutdown()
        left = server.close_sessions(SHUTDOWN_GRACE)
        if left:
            logger.info('stopping with %d session(s) still closing', left)
        server.server_close()


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    _configure_logging(settings)
    try:
        rebind = find_rebind(settings.rebind) if settings.wrap_cmd else None
    except WrapError as exc:
        logger.error('%s', exc)
        return 1
    try:
        server = make_server(settings)
    except OSError as exc:
        where = settings.unix_listen or format_address(settings.listen_host or '*',
                                                       settings.listen_port)
        logger.error('cannot listen on %s: %s', where, exc.strerror or exc)
        return 1
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
        if rebind and failure is None:
            try:
                wrapper = ProgramWrapper(settings, rebind, server.stop_event.set)
                server.wrapper = wrapper
                wrapper.start()
            except WrapError as exc:
                failure = str(exc)
        if failure is not None:
            logger.error('%s', failure)
            server.server_close()
            return 1
        logger.info('websockify.py %s listening on %s, relaying to %s', __version__,
                    describe_listener(server), describe_target(settings))
        if ready_fd is not None:
            _finish_daemonizing(ready_fd)
        _serve(server, settings)
    finally:
        if wrapper is not None:
            wrapper.stop()
        if pid_written:
            _remove_pid_file(settings.pid_file)
    logger.info('stopped')
    if wrapper is not None and wrapper.exit_status is not None:
        return wrapper.exit_status
    return 0


if __name__ == '__main__':
    sys.exit(main())
