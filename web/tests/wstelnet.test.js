// Unit tests for the telnet layer of wstelnet.js and the helpers in page.js.
'use strict';

var test = require('node:test');
var assert = require('node:assert');
var Telnet = require('../wstelnet.js');
var WsPage = require('../page.js');

var IAC = 255, DONT = 254, DO = 253, WONT = 252, WILL = 251, SB = 250, SE = 240,
    NOP = 241, GA = 249, ECHO = 1, SGA = 3, TTYPE = 24, NAWS = 31, LINEMODE = 34;

function client(type) {
    var t = new Telnet(function (s) {
        t.sent.push(Array.from(s, function (c) { return c.charCodeAt(0); }));
    }, type);
    t.sent = [];
    return t;
}

function bytes(s) {
    return Array.from(Buffer.from(s, 'latin1'));
}

test('terminal type: WILL on DO, the type on SEND', function () {
    var t = client();
    assert.deepStrictEqual(t.receive([IAC, DO, TTYPE]), []);
    assert.deepStrictEqual(t.sent, [[IAC, WILL, TTYPE]]);
    t.receive([IAC, SB, TTYPE, 1, IAC, SE]);
    assert.deepStrictEqual(t.sent[1], [IAC, SB, TTYPE, 0].concat(bytes('xterm'), [IAC, SE]));
    t.receive([IAC, SB, TTYPE, 1, IAC, SE]);
    assert.strictEqual(t.sent.length, 3, 'every SEND is answered');
    t.receive([IAC, DO, TTYPE]);
    assert.strictEqual(t.sent.length, 3, 'already enabled: no answer');
    t.receive([IAC, DONT, TTYPE]);
    assert.deepStrictEqual(t.sent[3], [IAC, WONT, TTYPE]);
    t.receive([IAC, DONT, TTYPE, IAC, SB, TTYPE, 1, IAC, SE]);
    assert.strictEqual(t.sent.length, 4, 'disabled: no answer to DONT or SEND');
});

test('terminal type is configurable', function () {
    var t = client('VT100');
    t.receive([IAC, DO, TTYPE, IAC, SB, TTYPE, 1, IAC, SE]);
    assert.deepStrictEqual(t.sent[1], [IAC, SB, TTYPE, 0].concat(bytes('VT100'), [IAC, SE]));
});

test('ECHO and SUPPRESS-GO-AHEAD accepted, each once', function () {
    var t = client();
    t.receive([IAC, WILL, ECHO, IAC, WILL, SGA, IAC, WILL, ECHO]);
    assert.deepStrictEqual(t.sent, [[IAC, DO, ECHO], [IAC, DO, SGA]]);
    t.receive([IAC, WONT, ECHO, IAC, WONT, ECHO]);
    assert.deepStrictEqual(t.sent[2], [IAC, DONT, ECHO]);
    assert.strictEqual(t.sent.length, 3);
    t.receive([IAC, WILL, ECHO]);
    assert.deepStrictEqual(t.sent[3], [IAC, DO, ECHO], 'may be enabled again');
});

test('everything else refused once', function () {
    var t = client();
    t.receive([IAC, DO, NAWS, IAC, DO, ECHO, IAC, WILL, LINEMODE, IAC, DO, NAWS, IAC, WILL, LINEMODE]);
    assert.deepStrictEqual(t.sent, [[IAC, WONT, NAWS], [IAC, WONT, ECHO], [IAC, DONT, LINEMODE]]);
    t.receive([IAC, WONT, NAWS, IAC, DONT, NAWS, IAC, WONT, LINEMODE]);
    assert.strictEqual(t.sent.length, 3, 'already off: no answer');
});

test('data, IAC IAC, two-byte commands and skipped subnegotiations', function () {
    var t = client();
    var data = t.receive([0x41, IAC, IAC, 0x42, IAC, NOP, IAC, GA, 0x43,
                          IAC, SB, NAWS, 0, 80, IAC, IAC, 24, IAC, SE, 0x44]);
    assert.deepStrictEqual(data, [0x41, 255, 0x42, 0x43, 0x44]);
    assert.deepStrictEqual(t.sent, []);
});

test('a command split at every point across messages', function () {
    var wire = [0x61, IAC, DO, TTYPE, 0x62, IAC, IAC, IAC, SB, TTYPE, 1, IAC, SE,
                IAC, WILL, ECHO, IAC, SB, 39, 1, 2, IAC, SE, 0x63], cut, t, data, i;
    for (cut = 0; cut <= wire.length; cut++) {
        t = client();
        data = t.receive(wire.slice(0, cut)).concat(t.receive(wire.slice(cut)));
        assert.deepStrictEqual(data, [0x61, 0x62, 255, 0x63], 'cut at ' + cut);
        assert.strictEqual(t.sent.length, 3, 'cut at ' + cut);
    }
    t = client();
    data = [];
    for (i = 0; i < wire.length; i++) { data = data.concat(t.receive(new Uint8Array([wire[i]]))); }
    assert.deepStrictEqual(data, [0x61, 0x62, 255, 0x63]);
    assert.deepStrictEqual(t.sent[0], [IAC, WILL, TTYPE]);
    assert.deepStrictEqual(t.sent[2], [IAC, DO, ECHO]);
});

test('a broken subnegotiation ends without effect', function () {
    var t = client();
    t.receive([IAC, DO, TTYPE]);
    assert.deepStrictEqual(t.receive([IAC, SB, TTYPE, 1, IAC, NOP, 0x41]), [0x41]);
    assert.strictEqual(t.sent.length, 1);
    var long = [IAC, SB, 39];
    for (var i = 0; i < 10000; i++) { long.push(7); }
    assert.deepStrictEqual(t.receive(long.concat([IAC, SE, 0x42])), [0x42]);
    assert.ok(t._sb.length <= 256, 'bounded');
});

test('encode: IAC doubled, bare CR as CR NUL', function () {
    var t = client();
    assert.strictEqual(t.encode('a\xffb'), 'a\xff\xffb');
    assert.strictEqual(t.encode('ls\r'), 'ls\r\x00');
    assert.strictEqual(t.encode('a\rb\r\nc'), 'a\r\x00b\r\nc');
    assert.strictEqual(t.encode('\x1b[A\x7f\x03'), '\x1b[A\x7f\x03');
});

test('page helpers: query parameters and WebSocket URIs', function () {
    assert.deepStrictEqual(WsPage.queryParams('?host=a.b&port=6080&encrypt=1&autoconnect=1&x=a%20b+c&y=1=2&&z'),
                           { host: 'a.b', port: '6080', encrypt: '1', autoconnect: '1', x: 'a b c', y: '1=2', z: '' });
    assert.deepStrictEqual(WsPage.queryParams(''), {});
    assert.strictEqual(WsPage.wsUri('localhost', '6080', false), 'ws://localhost:6080/');
    assert.strictEqual(WsPage.wsUri('example.org', '443', true, 'websockify?token=x'),
                       'wss://example.org:443/websockify?token=x');
    assert.strictEqual(WsPage.wsUri('::1', '80', false, '/p'), 'ws://[::1]:80/p');
    assert.strictEqual(WsPage.wsUri('[::1]', '', false), 'ws://[::1]/');
    assert.strictEqual(WsPage.utf8Bytes('\u00e9\u20ac'), '\xc3\xa9\xe2\x82\xac');
});
