#!/usr/bin/env python3
"""make soak: websockify.py under a long mixed load, one table row per period.

    python3 .ci/soak.py [--seconds 120] [--period 10] [--floods 8] [--slow 200] [--good 10]

Runs websockify.py as a program in front of an echo target (a thread per
connection, in this process) and, all at once until the time is up:
  floods  clients sending masked frames of 1-byte payloads as fast as they can
          (reading the echo back so that back-pressure does not stall them);
  slow    slowloris clients sending their request head one byte a second,
          reconnecting when the proxy drops them (--handshake-timeout);
  good    clients sending a 64-byte message every 50 ms and timing its echo;
  new     one client connecting every 200 ms, timing connect + handshake +
          its first echo (a newcomer during the floods).
Each row: the proxy's RSS (MB), CPU (% of one core), threads and descriptors,
the floods' MB/s, the slowloris connections dropped, and the good clients'
round trips (count, p50, p99, max in ms; misses: no echo within 5 s) and the
newcomers' p50 and max (ms). At the end the floods stop first and the proxy's
CPU is sampled for 2 s: the work a flood caused must end with it. Not part
of `make test`: it reports, it does not judge. Loopback only; every loop ends
at the deadline.
"""

import argparse
import os
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.environ.get('SOAK_SCRIPT') or os.path.join(HERE, 'websockify.py')
KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
ECHO_TIMEOUT = 5.0


def frame(payload, opcode=0x2):
    """A masked client frame; the all-zero mask leaves the payload as it is."""
    n = len(payload)
    if n < 126:
        head = struct.pack('!BB', 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack('!BBH', 0x80 | opcode, 0xFE, n)
    return head + b'\0\0\0\0' + payload


def upgrade(path='/soak'):
    return ('GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n'
            'Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n'
            'Sec-WebSocket-Version: 13\r\n\r\n' % (path, KEY)).encode()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.misses = 0
        self.flood_bytes = 0
        self.slow_dropped = 0
        self.newcomers = []

    def take(self):
        with self.lock:
            taken = (self.latencies, self.misses, self.flood_bytes, self.slow_dropped,
                     self.newcomers)
            self.latencies, self.misses, self.flood_bytes, self.slow_dropped = [], 0, 0, 0
            self.newcomers = []
            return taken


def echo_target(stop):
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1024)
    listener.settimeout(0.5)

    def serve(sock):
        sock.settimeout(1.0)
        with sock:
            while not stop.is_set():
                try:
                    data = sock.recv(262144)
                    if not data:
                        return
                    sock.sendall(data)
                except socket.timeout:
                    continue
                except OSError:
                    return

    def accept():
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(sock,), daemon=True).start()
        listener.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def open_ws(port, timeout=10.0):
    sock = socket.create_connection(('127.0.0.1', port), timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(upgrade())
    head = b''
    while b'\r\n\r\n' not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError('closed during the handshake')
        head += chunk
    if not head.startswith(b'HTTP/1.1 101'):
        raise ConnectionError(head.split(b'\r\n')[0].decode('latin-1'))
    return sock, head.split(b'\r\n\r\n', 1)[1]


def flood(port, stop, stats):
    blob = frame(b'x') * 16384          # 16,384 one-byte frames, 98 KiB
    while not stop.is_set():
        try:
            sock, _ = open_ws(port)
        except OSError:
            time.sleep(0.5)
            continue
        sock.settimeout(1.0)

        def drain():
            while not stop.is_set():
                try:
                    if not sock.recv(262144):
                        return
                except socket.timeout:
                    continue
                except OSError:
                    return
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            while not stop.is_set():
                try:
                    sock.sendall(blob)
                except socket.timeout:
                    continue
                with stats.lock:
                    stats.flood_bytes += 16384
        except OSError:
            pass
        finally:
            sock.close()
            reader.join(2.0)


def slowloris(port, count, stop, stats):
    request = upgrade('/slow')
    socks = {}
    while not stop.is_set():
        while len(socks) < count and not stop.is_set():
            try:
                sock = socket.create_connection(('127.0.0.1', port), 5.0)
            except OSError:
                break
            sock.setblocking(False)
            socks[sock] = 0
        for sock, sent in list(socks.items()):
            try:
                sock.send(request[sent % len(request):sent % len(request) + 1])
                socks[sock] = sent + 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                del socks[sock]
                sock.close()
                with stats.lock:
                    stats.slow_dropped += 1
        stop.wait(1.0)
    for sock in socks:
        sock.close()


def echo_round(sock, buf, message, n):
    """Send one frame and read its n-byte echo into buf (removed from it)."""
    sock.sendall(message)
    while len(buf) < n:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError('closed')
        buf += chunk
    del buf[:n]


def good_client(port, stop, stats):
    payload = os.urandom(64)
    message = frame(payload)
    while not stop.is_set():
        try:
            sock, extra = open_ws(port)
        except OSError:
            time.sleep(0.5)
            continue
        sock.settimeout(ECHO_TIMEOUT)
        buf = bytearray(extra)
        try:
            while not stop.is_set():
                started = time.monotonic()
                echo_round(sock, buf, message, 2 + len(payload))
                with stats.lock:
                    stats.latencies.append(time.monotonic() - started)
                stop.wait(0.05)
        except socket.timeout:
            with stats.lock:
                stats.misses += 1
        except OSError:
            pass
        finally:
            sock.close()


def newcomer(port, stop, stats):
    payload = os.urandom(64)
    message = frame(payload)
    while not stop.wait(0.2):
        started = time.monotonic()
        try:
            sock, extra = open_ws(port, ECHO_TIMEOUT)
        except OSError:
            with stats.lock:
                stats.misses += 1
            continue
        buf = bytearray(extra)
        try:
            sock.settimeout(ECHO_TIMEOUT)
            echo_round(sock, buf, message, 2 + len(payload))
            with stats.lock:
                stats.newcomers.append(time.monotonic() - started)
        except OSError:
            with stats.lock:
                stats.misses += 1
        finally:
            sock.close()


def proc_sample(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    rss = 0
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1]) / 1024
    return (cpu, rss, len(os.listdir('/proc/%d/task' % pid)),
            len(os.listdir('/proc/%d/fd' % pid)))


def percentile(values, share):
    if not values:
        return float('nan')
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))]


def main():
    parser = argparse.ArgumentParser(description='websockify.py under a mixed load')
    parser.add_argument('--seconds', type=float, default=120)
    parser.add_argument('--period', type=float, default=10)
    parser.add_argument('--floods', type=int, default=8)
    parser.add_argument('--slow', type=int, default=200)
    parser.add_argument('--good', type=int, default=10)
    opts = parser.parse_args()
    stop = threading.Event()
    flood_stop = threading.Event()
    target = echo_target(stop)
    proxy = subprocess.Popen([sys.executable, SCRIPT, '127.0.0.1:0', '127.0.0.1:%d' % target],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    port = None
    tracebacks = [0]
    deadline = time.monotonic() + 10
    while port is None and time.monotonic() < deadline:
        line = proxy.stderr.readline().decode('utf-8', 'replace')
        if 'listening on' in line:
            port = int(line.split('listening on ')[1].split(',')[0].rsplit(':', 1)[1])
    if port is None:
        proxy.kill()
        sys.exit('websockify.py did not start')

    def read_log():
        for raw in proxy.stderr:
            if b'Traceback' in raw or b'internal error' in raw:
                tracebacks[0] += 1
    threading.Thread(target=read_log, daemon=True).start()

    stats = Stats()
    floods = [threading.Thread(target=flood, args=(port, flood_stop, stats), daemon=True)
              for _ in range(opts.floods)]
    workers = list(floods)
    workers.append(threading.Thread(target=newcomer, args=(port, stop, stats), daemon=True))
    workers += [threading.Thread(target=good_client, args=(port, stop, stats), daemon=True)
                for _ in range(opts.good)]
    workers.append(threading.Thread(target=slowloris, args=(port, opts.slow, stop, stats),
                                    daemon=True))
    print('websockify.py pid %d: %d floods, %d slowloris, %d good clients, %g s'
          % (proxy.pid, opts.floods, opts.slow, opts.good, opts.seconds))
    print('%6s %8s %6s %7s %5s %9s %9s %6s %8s %8s %8s %6s %8s %8s' % (
        't (s)', 'RSS (MB)', 'CPU %', 'threads', 'fds', 'flood MB/s', 'slow drop',
        'echoes', 'p50 ms', 'p99 ms', 'max ms', 'misses', 'new p50', 'new max'))
    for worker in workers:
        worker.start()
    started = time.monotonic()
    end = started + opts.seconds
    last_cpu, last_time = proc_sample(proxy.pid)[0], started
    try:
        while time.monotonic() < end and proxy.poll() is None:
            time.sleep(max(0.0, min(opts.period, end - time.monotonic())))
            now = time.monotonic()
            cpu, rss, threads, fds = proc_sample(proxy.pid)
            latencies, misses, flooded, dropped, newcomers = stats.take()
            print('%6.0f %8.1f %6.0f %7d %5d %9.2f %9d %6d %8.2f %8.2f %8.2f %6d %8.2f %8.2f' % (
                now - started, rss, 100 * (cpu - last_cpu) / (now - last_time), threads, fds,
                flooded * 7 / 1e6 / (now - last_time), dropped, len(latencies),
                1000 * percentile(latencies, 0.5), 1000 * percentile(latencies, 0.99),
                1000 * max(latencies or [float('nan')]), misses,
                1000 * percentile(newcomers, 0.5), 1000 * max(newcomers or [float('nan')])))
            sys.stdout.flush()
            last_cpu, last_time = cpu, now
        flood_stop.set()
        for worker in floods:
            worker.join(5.0)
        time.sleep(1.0)
        before, at = proc_sample(proxy.pid)[0], time.monotonic()
        time.sleep(2.0)
        print('proxy CPU in the 2 s from 1 s after the floods stopped: %.0f %%'
              % (100 * (proc_sample(proxy.pid)[0] - before) / (time.monotonic() - at)))
    finally:
        flood_stop.set()
        stop.set()
        for worker in workers:
            worker.join(5.0)
        proxy.terminate()
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(5)
    print('log lines with a traceback or an internal error: %d' % tracebacks[0])
    return 1 if tracebacks[0] else 0


if __name__ == '__main__':
    sys.exit(main())
