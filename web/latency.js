/*
 * latency.js - measures the proxy with an echo target behind it:
 *   1. round trips: `n` messages of `size` bytes, one in flight at a time
 *      (after a few unrecorded warm-up trips), giving min/median/p99;
 *   2. throughput: `bulk` bytes streamed with a bounded window in flight.
 * Every echoed byte is checked. Results go in the table and, for tests,
 * in window.latencyResults ({error: ...} if the run failed).
 */
(function (win) {
    'use strict';

    var doc = win.document, ws = null, form, watchdog = null, count, msgSize, bulkBytes;
    var WARMUP = 5;
    var CHUNK = 64 * 1024;
    // Enough in flight to keep both directions busy, small enough that
    // neither the proxy nor the browser has to buffer much.
    var WINDOW = 1024 * 1024;
    var TIMEOUT_MS = 120000;
    // The bulk pattern repeats every 251 bytes (a prime), so chunk and
    // message boundaries never line up with it.
    var PERIOD = 251;

    var now = win.performance && win.performance.now ?
        function () { return win.performance.now(); } : function () { return Date.now(); };

    function field(id, param, fallback) {
        var el = doc.getElementById(id);
        if (form.params[param] !== undefined) { el.value = form.params[param]; }
        return function () {
            var v = parseInt(el.value, 10);
            return isNaN(v) || v < 0 ? fallback : v;
        };
    }

    function quantile(sorted, q) {
        return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
    }

    function showResults(r) {
        var rows = [['Mode', r.mode], ['Messages', r.count], ['Message size (bytes)', r.size],
                    ['Min (\u00b5s)', r.minUs], ['Median (\u00b5s)', r.medianUs],
                    ['p99 (\u00b5s)', r.p99Us], ['Mean (\u00b5s)', r.meanUs],
                    ['Bulk bytes', r.bulkBytes], ['Bulk time (s)', r.bulkSeconds],
                    ['Throughput (MB/s)', r.mbps], ['Bad bytes', r.badBytes]];
        var html = ['<tr><th>Measure</th><th>Value</th></tr>'], i;
        for (i = 0; i < rows.length; i++) {
            html.push('<tr><th>' + rows[i][0] + '</th><td>' + rows[i][1] + '</td></tr>');
        }
        doc.getElementById('results').innerHTML = html.join('');
    }

    // Phase 1: one message in flight; the clock runs from send to the
    // last byte of its echo.
    function roundTrips(sock, n, size, done) {
        var payload = new Uint8Array(size), times = [], i = -WARMUP, t0 = 0, bad = 0, j;
        for (j = 0; j < size; j++) { payload[j] = (j * 31 + 7) & 255; }
        function next() {
            t0 = now();
            sock.send(payload);
        }
        function onMessage() {
            var t, got, k;
            if (sock.rQlen() < size) { return; }
            t = now() - t0;
            got = sock.rQshiftBytes(size);
            for (k = 0; k < size; k++) { if (got[k] !== payload[k]) { bad++; } }
            if (i >= 0) { times.push(t * 1000); }
            i++;
            if (i < n) {
                next();
            } else {
                sock.off('message', onMessage);
                done(times, bad);
            }
        }
        sock.on('message', onMessage);
        if (n > 0 && size > 0) { next(); } else { done([], 0); }
    }

    // Phase 2: stream total bytes, at most WINDOW unanswered.
    function bulk(sock, total, done) {
        var base = new Uint8Array(CHUNK + PERIOD), sent = 0, received = 0, bad = 0, start, j;
        for (j = 0; j < base.length; j++) { base[j] = j % PERIOD; }
        function pump() {
            var len;
            while (sent < total && sent - received < WINDOW) {
                len = Math.min(CHUNK, total - sent);
                sock.send(base.subarray(sent % PERIOD, sent % PERIOD + len));
                sent += len;
            }
        }
        function onMessage() {
            var got = sock.rQshiftBytes(), expect = received % PERIOD, k;
            for (k = 0; k < got.length; k++) {
                if (got[k] !== expect) { bad++; }
                if (++expect === PERIOD) { expect = 0; }
            }
            received += got.length;
            if (received >= total) {
                sock.off('message', onMessage);
                done((now() - start) / 1000, bad + (received - total));
            } else {
                pump();
            }
        }
        sock.on('message', onMessage);
        start = now();
        if (total > 0) { pump(); } else { done(0, 0); }
    }

    function finish(results) {
        clearTimeout(watchdog);
        win.latencyResults = results;
        if (!results.error) { showResults(results); }
        if (ws) { ws.close(); }
    }

    function connect(uri) {
        var sock = new Websock(), n = count(), size = msgSize(), total = bulkBytes();
        ws = sock;
        win.latencyResults = null;
        watchdog = setTimeout(function () { finish({ error: 'timed out' }); }, TIMEOUT_MS);
        sock.on('open', function () {
            form.setState('connected', 'measuring round trips');
            roundTrips(sock, n, size, function (times, badPings) {
                var sorted = times.slice().sort(function (a, b) { return a - b; }), sum = 0, i;
                for (i = 0; i < sorted.length; i++) { sum += sorted[i]; }
                form.setState('connected', 'measuring throughput');
                bulk(sock, total, function (seconds, badBulk) {
                    finish({
                        done: true,
                        mode: sock.mode,
                        count: sorted.length,
                        size: size,
                        minUs: sorted.length ? Math.round(sorted[0]) : null,
                        medianUs: sorted.length ? Math.round(quantile(sorted, 0.5)) : null,
                        p99Us: sorted.length ? Math.round(quantile(sorted, 0.99)) : null,
                        meanUs: sorted.length ? Math.round(sum / sorted.length) : null,
                        bulkBytes: total,
                        bulkSeconds: Math.round(seconds * 1000) / 1000,
                        mbps: seconds > 0 ? Math.round(total / seconds / 1e4) / 100 : null,
                        badBytes: badPings + badBulk
                    });
                });
            });
        });
        sock.on('close', function (e) {
            if (ws !== sock) { return; }
            ws = null;
            if (!win.latencyResults) {
                finish({ error: 'closed before the end (code ' + e.code + ')' });
            }
            form.setState('disconnected', win.latencyResults.error || 'done');
        });
        sock.open(uri);
    }

    function disconnect() {
        if (ws) { ws.close(); }
    }

    form = new WsPage.ConnectionForm(win, { connect: connect, disconnect: disconnect },
                                     { connect: 'Run', disconnect: 'Stop' });
    count = field('count', 'n', 1000);
    msgSize = field('size', 'size', 64);
    bulkBytes = field('bulk', 'bulk', 8 * 1024 * 1024);

    // Null until a run ends; then its results, or {error: message}.
    win.latencyResults = null;
    form.autoconnect();
}(this));
