// Unit tests for websock.js: node --test web/tests/
'use strict';

var test = require('node:test');
var assert = require('node:assert');
var fs = require('node:fs');
var path = require('node:path');
var vm = require('node:vm');

var Websock = require('../websock.js');
var SOURCE = fs.readFileSync(path.join(__dirname, '..', 'websock.js'), 'utf8');

// A stand-in for a browser WebSocket: the test decides when it opens, what
// arrives and what the buffer holds; sent messages are recorded.
function FakeSocket(protocol, hixie) {
    this.readyState = 0;
    this.protocol = protocol;
    this.bufferedAmount = 0;
    this.sent = [];
    this.closed = 0;
    if (!hixie) { this.binaryType = 'blob'; }
}
FakeSocket.prototype.send = function (data) {
    assert.strictEqual(this.readyState, 1, 'send on a socket that is not open');
    this.sent.push(data);
};
FakeSocket.prototype.close = function () {
    this.closed++;
    this.readyState = 3;
    if (this.onclose) { this.onclose({ code: 1005, reason: '' }); }
};
FakeSocket.prototype.fakeOpen = function () {
    this.readyState = 1;
    this.onopen({});
};
FakeSocket.prototype.deliver = function (data) {
    this.onmessage({ data: data });
};
// Deliver bytes the way the server would in this socket's mode.
FakeSocket.prototype.deliverBytes = function (bytes) {
    var buf = Buffer.from(bytes);
    if (this.protocol === 'base64' || !('binaryType' in this)) {
        this.deliver(buf.toString('base64'));
    } else {
        this.deliver(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
    }
};
// What the client sent, as one Buffer, decoding base64 text messages.
FakeSocket.prototype.sentBytes = function () {
    return Buffer.concat(this.sent.map(function (m) {
        return typeof m === 'string' ? Buffer.from(m, 'base64') : Buffer.from(m);
    }));
};

function openWs(protocol, hixie) {
    var ws = new Websock(), sock = new FakeSocket(protocol, hixie);
    ws.attach(sock);
    sock.fakeOpen();
    return { ws: ws, sock: sock };
}

function pattern(n, seed) {
    var b = Buffer.alloc(n), i;
    for (i = 0; i < n; i++) { b[i] = (i * 7 + (seed || 0) + (i >> 9)) & 255; }
    return b;
}

test('receive queue readers', function () {
    var c = openWs('binary'), ws = c.ws;
    c.sock.deliverBytes([1, 2, 3, 0xfe, 0xdc, 0xff, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0x78,
                         0x41, 0x42, 0xe9, 9, 10, 11, 12, 13, 14, 15]);
    assert.strictEqual(ws.rQlen(), 23);
    assert.strictEqual(ws.rQpeek8(), 1);
    assert.strictEqual(ws.rQlen(), 23, 'peek does not consume');
    assert.strictEqual(ws.rQshift8(), 1);
    ws.rQskip8();
    assert.strictEqual(ws.rQshift8(), 3);
    assert.strictEqual(ws.rQshift16(), 0xfedc);
    assert.strictEqual(ws.rQshift32(), 0xffffffff, 'unsigned, not -1');
    assert.strictEqual(ws.rQshift32(), 0x12345678);
    assert.strictEqual(ws.rQshiftStr(3), 'AB\u00e9');
    assert.deepStrictEqual(Array.from(ws.rQslice(0, 2)), [9, 10]);
    assert.deepStrictEqual(Array.from(ws.rQslice(1)), [10, 11, 12, 13, 14, 15]);
    assert.strictEqual(ws.rQlen(), 7, 'slice does not consume');
    ws.rQskipBytes(2);
    var bytes = ws.rQshiftBytes(2);
    assert.ok(bytes instanceof Uint8Array);
    assert.deepStrictEqual(Array.from(bytes), [11, 12]);
    ws.rQunshift8(0x99);
    assert.strictEqual(ws.rQpeek8(), 0x99);
    assert.deepStrictEqual(Array.from(ws.rQshiftBytes()), [0x99, 13, 14, 15]);
    assert.strictEqual(ws.rQlen(), 0);
    assert.strictEqual(ws.rQshiftStr(), '');
});

test('readers past the end throw and consume nothing', function () {
    var c = openWs('binary'), ws = c.ws;
    c.sock.deliverBytes([1, 2, 3]);
    assert.throws(function () { ws.rQshift32(); }, RangeError);
    assert.throws(function () { ws.rQshiftBytes(4); }, RangeError);
    assert.throws(function () { ws.rQshiftStr(4); }, RangeError);
    assert.throws(function () { ws.rQskipBytes(4); }, RangeError);
    assert.throws(function () { ws.rQslice(0, 4); }, RangeError);
    assert.strictEqual(ws.rQlen(), 3);
    ws.rQskipBytes(3);
    assert.throws(function () { ws.rQpeek8(); }, RangeError);
    assert.throws(function () { ws.rQshift8(); }, RangeError);
    assert.throws(function () { ws.rQskip8(); }, RangeError);
    assert.throws(function () { ws.rQshift16(); }, RangeError);
});

test('rQunshift8 before anything was read moves the data up', function () {
    var c = openWs('binary'), ws = c.ws;
    c.sock.deliverBytes([5, 6]);
    ws.rQunshift8(4);
    ws.rQunshift8(0x103);   // only the low byte goes in
    assert.deepStrictEqual(Array.from(ws.rQshiftBytes()), [3, 4, 5, 6]);
});

test('rQunshift8 on a full queue grows it', function () {
    var c = openWs('binary'), ws = c.ws, n = Websock.RQ_INITIAL;
    c.sock.deliverBytes(pattern(n));
    assert.strictEqual(ws._rQ.length, n);
    ws.rQunshift8(42);
    assert.strictEqual(ws.rQshift8(), 42);
    assert.ok(pattern(n).equals(Buffer.from(ws.rQshiftBytes())));
});

test('rQshiftBytes and rQslice return copies, not views', function () {
    var c = openWs('binary'), ws = c.ws;
    c.sock.deliverBytes([1, 2, 3, 4]);
    var slice = ws.rQslice(0, 2), bytes = ws.rQshiftBytes(2);
    // Enough data to make the queue compact over the bytes just read.
    c.sock.deliverBytes(pattern(Websock.RQ_INITIAL - 2));
    assert.deepStrictEqual(Array.from(slice), [1, 2]);
    assert.deepStrictEqual(Array.from(bytes), [1, 2]);
});

test('rQshiftStr handles strings longer than an argument list', function () {
    var c = openWs('binary'), ws = c.ws, data = pattern(300000);
    c.sock.deliverBytes(data);
    assert.strictEqual(ws.rQshiftStr(), data.toString('latin1'));
});

// A protocol reader in the seed's style: a 2-byte length, then that many
// bytes; rQwait with goback restarts the message when it is incomplete.
function readMessages(ws, out) {
    for (;;) {
        if (ws.rQwait('length', 2)) { return; }
        var len = ws.rQshift16();
        if (ws.rQwait('body', len, 2)) { return; }
        out.push(ws.rQshiftStr(len));
    }
}

test('rQwait: partial messages wait, goback restores the header', function () {
    ['binary', 'base64'].forEach(function (protocol) {
        var c = openWs(protocol), ws = c.ws, out = [], wire = [], i;
        ws.on('message', function () { readMessages(ws, out); });
        ['hello', '', 'a longer message', 'x'].forEach(function (m) {
            wire.push(m.length >> 8, m.length & 255);
            for (i = 0; i < m.length; i++) { wire.push(m.charCodeAt(i)); }
        });
        // One byte per message: every split point of every header and body.
        for (i = 0; i < wire.length; i++) { c.sock.deliverBytes([wire[i]]); }
        assert.deepStrictEqual(out, ['hello', '', 'a longer message', 'x'], protocol);
        assert.strictEqual(ws.rQlen(), 0);
    });
});

test('rQwait semantics', function () {
    var c = openWs('binary'), ws = c.ws;
    c.sock.deliverBytes([1, 2, 3]);
    assert.strictEqual(ws.rQwait('three', 3), false);
    assert.strictEqual(ws.rQwait('four', 4), true);
    ws.rQshift8();
    assert.strictEqual(ws.rQwait('three', 3, 1), true);
    assert.strictEqual(ws.rQlen(), 3, 'went back one byte');
    assert.throws(function () { ws.rQwait('x', 9, 1); }, RangeError, 'nothing read to go back over');
});

test('binary mode: ArrayBuffer frames both ways', function () {
    var ws = new Websock(), sock = new FakeSocket('binary'), got = [];
    ws.attach(sock);
    assert.strictEqual(sock.binaryType, 'arraybuffer');
    assert.strictEqual(ws.mode, null);
    ws.on('open', function () { got.push('open'); });
    ws.on('message', function () { got.push(Array.from(ws.rQshiftBytes())); });
    sock.fakeOpen();
    assert.strictEqual(ws.mode, 'binary');
    sock.deliverBytes([0, 255, 128]);
    // A view with an offset: only its own bytes count.
    sock.deliver(new Uint8Array([9, 8, 7, 6]).subarray(1, 3));
    assert.deepStrictEqual(got, ['open', [0, 255, 128], [8, 7]]);

    assert.strictEqual(ws.send([1, 2, 0x1ff]), true);
    ws.send(new Uint8Array([3, 4]));
    ws.send(new Uint8Array([5, 6]).buffer);
    ws.send_string('A\u00ff\u0141');
    assert.strictEqual(sock.sent.length, 4);
    sock.sent.forEach(function (m) { assert.ok(m instanceof ArrayBuffer); });
    assert.deepStrictEqual(Array.from(sock.sentBytes()), [1, 2, 255, 3, 4, 5, 6, 0x41, 0xff, 0x41]);
});

test('any protocol but base64 is binary', function () {
    ['', 'some-protocol', undefined].forEach(function (protocol) {
        var c = openWs(protocol);
        assert.strictEqual(c.ws.mode, 'binary');
    });
});

test('binary mode: text frames are taken as UTF-8', function () {
    var c = openWs('binary'), ws = c.ws;
    c.sock.deliver('A\u00e9\u20ac\ud83d\ude00');
    assert.deepStrictEqual(Array.from(ws.rQshiftBytes()),
                           [0x41, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80]);
});

test('base64 mode: text frames both ways', function () {
    var c = openWs('base64'), ws = c.ws, data = pattern(1000);
    assert.strictEqual(ws.mode, 'base64');
    c.sock.deliver(data.toString('base64'));
    c.sock.deliver('');
    c.sock.deliver('/w==');
    c.sock.deliver('/+8=');
    assert.ok(data.equals(Buffer.from(ws.rQshiftBytes(1000))));
    assert.deepStrictEqual(Array.from(ws.rQshiftBytes()), [0xff, 0xff, 0xef]);

    ws.send(data);
    ws.send_string('\u00ff\u0000x');
    assert.strictEqual(c.sock.sent.length, 2);
    assert.strictEqual(typeof c.sock.sent[0], 'string');
    assert.strictEqual(c.sock.sent[0], data.toString('base64'));
    assert.strictEqual(c.sock.sent[1], Buffer.from([0xff, 0, 0x78]).toString('base64'));
});

test('base64 mode: a Hixie-era socket (no binaryType) whatever the protocol', function () {
    var c = openWs('', true);
    assert.strictEqual(c.ws.mode, 'base64');
    c.sock.deliver('AAEC');
    assert.deepStrictEqual(Array.from(c.ws.rQshiftBytes()), [0, 1, 2]);
    c.ws.send([3]);
    assert.strictEqual(c.sock.sent[0], 'Aw==');
});

test('base64 mode: bad base64 fails the connection', function () {
    ['abc', 'ab=c', 'a===', '=AAA', 'AA==AAAA', 'AAA\u0141', 'AA A'].forEach(function (bad) {
        var c = openWs('base64'), errors = [], closes = 0, messages = 0;
        c.ws.on('error', function (e) { errors.push(e); });
        c.ws.on('close', function () { closes++; });
        c.ws.on('message', function () { messages++; });
        c.sock.deliver(bad);
        assert.strictEqual(errors.length, 1, bad);
        assert.match(errors[0].message, /base64/);
        assert.strictEqual(c.sock.closed, 1);
        assert.strictEqual(closes, 1);
        assert.strictEqual(messages, 0);
        assert.strictEqual(c.ws.rQlen(), 0);
    });
});

test('base64 codec matches Buffer for every length and padding', function () {
    var n, data, enc;
    for (n = 0; n < 70; n++) {
        data = pattern(n, n);
        enc = Websock.base64Encode(data);
        assert.strictEqual(enc, data.toString('base64'));
        assert.deepStrictEqual(Array.from(Websock.base64Decode(enc)), Array.from(data));
        assert.strictEqual(Websock.base64Encode(data, 1, Math.max(1, n)),
                           data.subarray(1, Math.max(1, n)).toString('base64'));
    }
    assert.strictEqual(Websock.base64Encode([0xfb, 0xff]), '+/8=');
});

test('utf8Encode', function () {
    assert.deepStrictEqual(Websock.utf8Encode('\u0000\u007f\u0080\u07ff\u0800\uffff\ud800'),
                           Array.from(Buffer.from('\u0000\u007f\u0080\u07ff\u0800\uffff\ufffd')));
    assert.deepStrictEqual(Websock.utf8Encode('\udbff\udfff'), [0xf4, 0x8f, 0xbf, 0xbf]);
});

test('send before open is queued and flushed on open', function () {
    var ws = new Websock(), sock = new FakeSocket('base64');
    assert.strictEqual(ws.send_string('early'), false, 'no socket yet');
    ws.attach(sock);
    assert.strictEqual(ws.send([33]), false, 'still connecting');
    assert.strictEqual(ws.flush(), false);
    assert.strictEqual(sock.sent.length, 0);
    sock.fakeOpen();
    assert.deepStrictEqual(sock.sent, [Buffer.from('early!').toString('base64')]);
    assert.strictEqual(ws.bufferedAmount(), 0);
});

test('attach to an already open socket', function () {
    var ws = new Websock(), sock = new FakeSocket('binary'), opens = 0;
    sock.readyState = 1;
    ws.on('open', function () { opens++; });
    ws.attach(sock);
    assert.strictEqual(ws.mode, 'binary');
    ws.send([1]);
    assert.strictEqual(sock.sent.length, 1);
    assert.strictEqual(opens, 0, 'the open event has already happened');
});

test('attach again drops the old socket and the old data', function () {
    var ws = new Websock(), a = new FakeSocket('binary'), b = new FakeSocket('binary');
    ws.attach(a);
    a.fakeOpen();
    a.deliverBytes([1, 2, 3]);
    ws.attach(b);
    assert.strictEqual(a.onmessage, null);
    assert.strictEqual(ws.rQlen(), 0);
    assert.strictEqual(ws.mode, null);
});

test('a full socket buffer holds data in the send queue until it drains', async function () {
    var c = openWs('binary'), ws = c.ws, flushed;
    c.sock.bufferedAmount = Websock.SEND_HIGH_WATER + 1;
    assert.strictEqual(ws.send([1, 2]), false);
    assert.strictEqual(ws.send([3]), false);
    assert.strictEqual(c.sock.sent.length, 0);
    assert.strictEqual(ws.bufferedAmount(), Websock.SEND_HIGH_WATER + 4);
    flushed = new Promise(function (resolve) {
        var send = c.sock.send;
        c.sock.send = function (d) { send.call(this, d); resolve(); };
    });
    c.sock.bufferedAmount = 0;   // the retry timer picks it up
    await flushed;
    assert.deepStrictEqual(Array.from(c.sock.sentBytes()), [1, 2, 3]);
});

test('close stops the flush retry timer', function () {
    var c = openWs('binary'), ws = c.ws, closes = [];
    ws.on('close', function (e) { closes.push(e.code); });
    c.sock.bufferedAmount = Websock.SEND_HIGH_WATER + 1;
    ws.send([1]);
    assert.ok(ws._flushTimer);
    ws.close();
    assert.strictEqual(ws._flushTimer, null);
    assert.deepStrictEqual(closes, [1005]);
    ws.close();   // already closed: nothing happens
    assert.strictEqual(c.sock.closed, 1);
});

test('on/off and events', function () {
    var c = openWs('binary'), ws = c.ws, log = [];
    function a() { log.push('a'); ws.off('message', a); }
    function b() { log.push('b'); }
    ws.on('message', a).on('message', b);
    ws.on('error', function (e) { log.push('error:' + e.type); });
    c.sock.deliverBytes([1]);
    c.sock.deliverBytes([2]);
    c.sock.onerror({ type: 'error' });
    assert.deepStrictEqual(log, ['a', 'b', 'b', 'error:error']);
    assert.throws(function () { ws.on('nonsense', b); }, /unknown Websock event/);
    ws.off('message', a);   // not registered: no-op
});

test('open() without WebSocket throws', function () {
    assert.throws(function () { new Websock().open('ws://localhost:1/'); }, /not available/);
});

// Run websock.js as a classic browser script in a fresh context.
function loadInContext(setup) {
    var ctx = vm.createContext({ setTimeout: setTimeout, clearTimeout: clearTimeout });
    if (setup) { vm.runInContext(setup, ctx); }
    vm.runInContext(SOURCE, ctx);
    return ctx;
}

test('browser global and the protocols open() offers', function () {
    var setup = 'var made = [];' +
        'function WebSocket(uri, protocols) { made.push([uri, protocols]); this.readyState = 0; }' +
        'WebSocket.prototype.binaryType = "blob";';
    var ctx = loadInContext(setup);
    assert.strictEqual(typeof ctx.Websock, 'function');
    vm.runInContext('new Websock().open("ws://h:1/"); new Websock().open("ws://h:2/", "x")', ctx);
    assert.strictEqual(JSON.stringify(ctx.made),
                       '[["ws://h:1/",["binary","base64"]],["ws://h:2/","x"]]');

    // A Hixie-era browser: no binaryType, one protocol string.
    ctx = loadInContext(setup.replace('WebSocket.prototype.binaryType = "blob";', ''));
    vm.runInContext('new Websock().open("ws://h:1/")', ctx);
    assert.strictEqual(JSON.stringify(ctx.made), '[["ws://h:1/","base64"]]');
});

test('without typed arrays: plain arrays and base64', function () {
    var ctx = loadInContext('Uint8Array = undefined; ArrayBuffer = undefined;');
    var Ws = ctx.Websock, ws = new Ws(), sock = new FakeSocket('binary'), data = pattern(60000),
        got = [], i, chunk;
    assert.strictEqual(Ws.hasTypedArrays, false);
    ws.attach(sock);
    sock.fakeOpen();
    assert.strictEqual(ws.mode, 'base64', 'binary frames need typed arrays');
    function reader() {
        var b = ws.rQshiftBytes(Math.min(ws.rQlen(), 1200));
        assert.ok(Array.isArray(b));
        got = got.concat(b);
    }
    ws.on('message', reader);
    for (i = 0; i < data.length; i += 999) {
        chunk = data.subarray(i, i + 999);
        sock.deliver(chunk.toString('base64'));
    }
    got = got.concat(Array.from(ws.rQshiftBytes()));
    assert.deepStrictEqual(got, Array.from(data));
    assert.ok(ws._rQ.length < 10000, 'consumed bytes are dropped');
    ws.off('message', reader);

    sock.deliver('AQID');
    assert.strictEqual(ws.rQshift16(), 0x0102);
    ws.rQunshift8(7);
    ws.rQunshift8(8);   // read index at 0 now: spliced in
    assert.deepStrictEqual(Array.from(ws.rQslice(0)), [8, 7, 3]);
    assert.strictEqual(ws.rQshiftStr(), '\u0008\u0007\u0003');
    ws.send([1, 2, 300]);
    ws.send_string('\u00ff');
    assert.deepStrictEqual(sock.sent, ['AQIs', '/w==']);
});

// Count the bytes the queue moves inside itself while it compacts.
function countCopies(fn) {
    var proto = Uint8Array.prototype, orig = proto.copyWithin, copied = { n: 0 };
    proto.copyWithin = function (target, start, end) {
        copied.n += end - start;
        return orig.apply(this, arguments);
    };
    try { fn(); } finally { proto.copyWithin = orig; }
    return copied.n;
}

test('streaming: integrity, bounded size, linear compaction', function () {
    // pattern(n, seed) at offset k of the stream, with seed = the offset
    // where its chunk started: recomputed from the chunk boundaries.
    var starts = [];
    function expectedAt(offset) {
        var lo = 0, hi = starts.length - 1, mid, k;
        while (lo < hi) {
            mid = (lo + hi + 1) >> 1;
            if (starts[mid] <= offset) { lo = mid; } else { hi = mid - 1; }
        }
        k = offset - starts[lo];
        return (k * 7 + starts[lo] + (k >> 9)) & 255;
    }
    var c = openWs('binary'), ws = c.ws, total = 0, read = 0, sizes = [1, 4095, 1500, 65536, 7, 30000],
        copied, i = 0, data, got, readSizes = [1000, 1, 50000, 3, 20000];
    copied = countCopies(function () {
        while (total < 20 * 1024 * 1024) {
            data = pattern(sizes[i % sizes.length], total);
            starts.push(total);
            c.sock.deliverBytes(data);
            total += data.length;
            // Read a little less than arrives, so unread data piles up a bit
            // and the read index moves through the buffer unevenly.
            var want = Math.min(ws.rQlen(), readSizes[i % readSizes.length]);
            got = ws.rQshiftBytes(want);
            assert.ok(got.length === 0 || got[0] === expectedAt(read), 'byte at ' + read);
            read += want;
            i++;
        }
    });
    assert.ok(ws.rQlen() > 0);
    assert.ok(ws._rQ.length <= 8 * 1024 * 1024, 'size bounded: ' + ws._rQ.length);
    assert.ok(copied > 0, 'the queue compacted');
    assert.ok(copied <= total, 'copied ' + copied + ' for ' + total + ' received');
});

test('streaming: every byte arrives in order', function () {
    var c = openWs('binary'), ws = c.ws, data = pattern(3 * 1024 * 1024 + 17), out = [], i, n = 0;
    ws.on('message', function () {
        // Leave a few bytes behind each time, and take bigger bites now and then.
        var take = ws.rQlen() > 100 ? ws.rQlen() - (n++ % 50) : 0;
        if (take) { out.push(Buffer.from(ws.rQshiftBytes(take))); }
    });
    for (i = 0; i < data.length; i += 9973) { c.sock.deliverBytes(data.subarray(i, i + 9973)); }
    out.push(Buffer.from(ws.rQshiftBytes()));
    assert.ok(Buffer.concat(out).equals(data));
});

test('a large message grows the queue geometrically', function () {
    var c = openWs('binary'), ws = c.ws, data = pattern(5 * 1024 * 1024);
    c.sock.deliverBytes([1, 2, 3]);
    c.sock.deliverBytes(data);
    assert.strictEqual(ws._rQ.length, 8 * 1024 * 1024);
    ws.rQskipBytes(3);
    assert.ok(data.equals(Buffer.from(ws.rQshiftBytes())));
});

test('unread data past RQ_MAX fails the connection', function () {
    var c = openWs('binary'), ws = c.ws, errors = [], chunk = Buffer.alloc(16 * 1024 * 1024), i;
    ws.on('error', function (e) { errors.push(e.message); });
    for (i = 0; i < 4; i++) { c.sock.deliverBytes(chunk); }
    assert.deepStrictEqual(errors, []);
    assert.strictEqual(ws.rQlen(), Websock.RQ_MAX);
    c.sock.deliverBytes([1]);
    assert.strictEqual(errors.length, 1);
    assert.match(errors[0], /receive queue over/);
    assert.strictEqual(c.sock.closed, 1);
    assert.strictEqual(ws.rQlen(), Websock.RQ_MAX, 'nothing was added');
});

test('at the cap the queue compacts instead of growing', function () {
    var c = openWs('binary'), ws = c.ws, chunk = pattern(16 * 1024 * 1024), i;
    for (i = 0; i < 4; i++) { c.sock.deliverBytes(chunk); }
    ws.rQskipBytes(1000);
    c.sock.deliverBytes([1, 2, 3]);
    assert.strictEqual(ws._rQ.length, Websock.RQ_MAX);
    assert.strictEqual(ws.rQlen(), Websock.RQ_MAX - 997);
    assert.strictEqual(ws.rQpeek8(), chunk[1000]);
});
