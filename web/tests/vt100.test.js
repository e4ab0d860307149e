// Unit tests for vt100.js (the parser and screen model, without a DOM).
'use strict';

var test = require('node:test');
var assert = require('node:assert');
var VT100 = require('../vt100.js');

function term(rows, cols) {
    var t = new VT100(null, { rows: rows || 5, cols: cols || 10 });
    t.replies = [];
    t.ondata = function (s) { t.replies.push(s); };
    return t;
}

function rows(t) {
    return t.getText().split('\n');
}

function cursor(t) {
    var c = t.getCursor();
    return [c.row, c.col];
}

test('printable text, CR, LF, BS, TAB, BEL', function () {
    var t = term(), bells = 0;
    t.onbell = function () { bells++; };
    t.write('ab\rc\r\nxy\x08z\n\tT\x07');
    assert.deepStrictEqual(rows(t), ['cb', 'xz', '   \tT'.replace('   \t', '        '), '', '']);
    assert.deepStrictEqual(cursor(t), [2, 9]);
    assert.strictEqual(bells, 1);
    t.write('\t\t');   // tabs stop at the last column
    assert.deepStrictEqual(cursor(t), [2, 9]);
});

test('autowrap waits for the next character; scrolling at the bottom', function () {
    var t = term(3, 4);
    t.write('abcd');
    assert.deepStrictEqual(cursor(t), [0, 3], 'still on the last column');
    t.write('e');
    assert.deepStrictEqual(rows(t), ['abcd', 'e', '']);
    t.write('\r\n1\r\n2\r\n3');
    assert.deepStrictEqual(rows(t), ['1', '2', '3']);
    t.write('\x1b[?7l\x1b[1;1Hwxyz!');
    assert.deepStrictEqual(rows(t), ['wxy!', '2', '3'], 'no wrap: the last column is overwritten');
});

test('UTF-8 decoding, split across writes, and bad bytes', function () {
    var t = term(3, 20), bytes = Buffer.from('h\u00e9\u20ac\ud83d\ude00!'), i;
    for (i = 0; i < bytes.length; i++) { t.write([bytes[i]]); }
    assert.strictEqual(rows(t)[0], 'h\u00e9\u20ac\ud83d\ude00!');
    t.write(new Uint8Array([13, 10, 0xff, 0x41, 0xe2, 0x82, 0x41, 0xc0, 0x80, 0xed, 0xa0, 0x80]));
    assert.strictEqual(rows(t)[1], '\ufffdA\ufffdA\ufffd\ufffd\ufffd');
    t.writeText('\r\n\u00e9\ud83d\ude00');
    assert.strictEqual(rows(t)[2], '\u00e9\ud83d\ude00');
});

test('wide characters take two cells; combining marks none', function () {
    var t = term(2, 5);
    t.writeText('\u4e2d\u6587x');
    assert.deepStrictEqual(cursor(t), [0, 4]);
    assert.strictEqual(t.cellAttr(0, 1).ch, '');
    t.writeText('\u4e2d');   // no room on this row: wraps whole
    assert.deepStrictEqual(rows(t), ['\u4e2d\u6587x', '\u4e2d']);
    t.writeText('\x1b[1;2Hy');   // overwriting half of one blanks the other half
    assert.strictEqual(rows(t)[0], ' y\u6587x');
    t.writeText('\x1b[2;3He\u0301');
    assert.strictEqual(rows(t)[1], '\u4e2de\u0301');
    assert.deepStrictEqual(cursor(t), [1, 3]);
});

test('cursor movement: A B C D E F G H f d, clamped to the screen', function () {
    var t = term(5, 10);
    t.write('\x1b[3;4H');
    assert.deepStrictEqual(cursor(t), [2, 3]);
    t.write('\x1b[A'); assert.deepStrictEqual(cursor(t), [1, 3]);
    t.write('\x1b[2B'); assert.deepStrictEqual(cursor(t), [3, 3]);
    t.write('\x1b[3C'); assert.deepStrictEqual(cursor(t), [3, 6]);
    t.write('\x1b[10D'); assert.deepStrictEqual(cursor(t), [3, 0]);
    t.write('\x1b[5C\x1b[E'); assert.deepStrictEqual(cursor(t), [4, 0]);
    t.write('\x1b[5C\x1b[2F'); assert.deepStrictEqual(cursor(t), [2, 0]);
    t.write('\x1b[7G'); assert.deepStrictEqual(cursor(t), [2, 6]);
    t.write('\x1b[2d'); assert.deepStrictEqual(cursor(t), [1, 6]);
    t.write('\x1b[H'); assert.deepStrictEqual(cursor(t), [0, 0]);
    t.write('\x1b[99;99f'); assert.deepStrictEqual(cursor(t), [4, 9]);
    t.write('\x1b[99A\x1b[0;0H'); assert.deepStrictEqual(cursor(t), [0, 0]);
    t.write('\x1b[;5H'); assert.deepStrictEqual(cursor(t), [0, 4], 'empty parameter = default');
});

function filled(t) {
    t.write('\x1b[H0123456789\x1b[2;1Habcdefghij\x1b[3;1HABCDEFGHIJ');
}

test('erase in display and line (J K with 0/1/2)', function () {
    var t = term(3, 10);
    filled(t); t.write('\x1b[2;4H\x1b[J');
    assert.deepStrictEqual(rows(t), ['0123456789', 'abc', '']);
    filled(t); t.write('\x1b[2;4H\x1b[1J');
    assert.deepStrictEqual(rows(t), ['', '    efghij', 'ABCDEFGHIJ']);
    filled(t); t.write('\x1b[2J');
    assert.deepStrictEqual(rows(t), ['', '', '']);
    filled(t); t.write('\x1b[2;4H\x1b[K');
    assert.deepStrictEqual(rows(t)[1], 'abc');
    filled(t); t.write('\x1b[2;4H\x1b[1K');
    assert.deepStrictEqual(rows(t)[1], '    efghij');
    filled(t); t.write('\x1b[2;4H\x1b[2K');
    assert.deepStrictEqual(rows(t), ['0123456789', '', 'ABCDEFGHIJ']);
});

test('erase uses the current background', function () {
    var t = term(2, 4);
    t.write('\x1b[44m\x1b[2J\x1b[0m');
    assert.strictEqual(t.cellAttr(1, 3).bg, 4);
    assert.strictEqual(t.cellAttr(1, 3).fg, null);
});

test('insert/delete characters and lines (@ P X L M)', function () {
    var t = term(3, 10);
    filled(t); t.write('\x1b[1;3H\x1b[2@');
    assert.strictEqual(rows(t)[0], '01  234567');
    filled(t); t.write('\x1b[1;3H\x1b[3P');
    assert.strictEqual(rows(t)[0], '0156789');
    filled(t); t.write('\x1b[1;3H\x1b[3X');
    assert.strictEqual(rows(t)[0], '01   56789');
    filled(t); t.write('\x1b[1;3H\x1b[99P');
    assert.strictEqual(rows(t)[0], '01');
    filled(t); t.write('\x1b[2;5H\x1b[L');
    assert.deepStrictEqual(rows(t), ['0123456789', '', 'abcdefghij']);
    assert.deepStrictEqual(cursor(t), [1, 0]);
    filled(t); t.write('\x1b[1;1H\x1b[2M');
    assert.deepStrictEqual(rows(t), ['ABCDEFGHIJ', '', '']);
    filled(t); t.write('\x1b[4h\x1b[1;2Hxy\x1b[4l');
    assert.strictEqual(rows(t)[0], '0xy1234567', 'insert mode');
});

test('scroll region: LF, reverse index, IL/DL, S/T stay inside it', function () {
    var t = term(5, 4), i;
    t.write('\x1b[H');
    for (i = 0; i < 5; i++) { t.write('r' + i + (i < 4 ? '\r\n' : '')); }
    t.write('\x1b[2;4r');
    assert.deepStrictEqual(cursor(t), [0, 0], 'DECSTBM homes the cursor');
    t.write('\x1b[4;1H\nX');
    assert.deepStrictEqual(rows(t), ['r0', 'r2', 'r3', 'X', 'r4']);
    t.write('\x1b[2;1H\x1bMY');
    assert.deepStrictEqual(rows(t), ['r0', 'Y', 'r2', 'r3', 'r4']);
    t.write('\x1b[3;1H\x1b[L');
    assert.deepStrictEqual(rows(t), ['r0', 'Y', '', 'r2', 'r4']);
    t.write('\x1b[2;1H\x1b[M');
    assert.deepStrictEqual(rows(t), ['r0', '', 'r2', '', 'r4']);
    t.write('\x1b[S');
    assert.deepStrictEqual(rows(t), ['r0', 'r2', '', '', 'r4']);
    t.write('\x1b[2T');
    assert.deepStrictEqual(rows(t), ['r0', '', '', 'r2', 'r4']);
    t.write('\x1b[5;1H\x1b[10A');
    assert.deepStrictEqual(cursor(t), [0, 0], 'outside the region: up to the top');
    t.write('\x1b[3;1H\x1b[10A');
    assert.deepStrictEqual(cursor(t), [1, 0], 'inside: stops at its top');
    t.write('\x1b[?6h\x1b[1;1H');
    assert.deepStrictEqual(cursor(t), [1, 0], 'origin mode');
    t.write('\x1b[6n');
    assert.deepStrictEqual(t.replies, ['\x1b[1;1R']);
    t.write('\x1b[?6l\x1b[r\x1b[5;1H\nZ');
    assert.deepStrictEqual(rows(t), ['', '', 'r2', 'r4', 'Z']);
});

test('reverse index at the top scrolls down', function () {
    var t = term(3, 4);
    t.write('a\r\nb\x1b[H\x1bMc');
    assert.deepStrictEqual(rows(t), ['c', 'a', 'b']);
});

test('save/restore cursor: ESC 7/8 and CSI s/u keep position and attributes', function () {
    var t = term(5, 10);
    t.write('\x1b[2;3H\x1b[31m\x1b7\x1b[0m\x1b[5;5H\x1b8x');
    assert.strictEqual(rows(t)[1], '  x');
    assert.strictEqual(t.cellAttr(1, 2).fg, 1);
    t.write('\x1b[4;4H\x1b[s\x1b[H\x1b[uy');
    assert.strictEqual(rows(t)[3], '   y');
});

test('SGR: colours, bright colours, bold, reverse, reset, 256 and 24-bit', function () {
    var t = term(2, 20), a;
    t.write('\x1b[31mR\x1b[1;42mG\x1b[0mN\x1b[94;103mB\x1b[7mV\x1b[27;39;49m_' +
            '\x1b[38;5;196mX\x1b[48;5;21mY\x1b[38;2;0;255;0mZ\x1b[4mU\x1b[m.');
    a = t.cellAttr(0, 0);
    assert.deepStrictEqual([a.ch, a.fg, a.bg, a.bold, a.className], ['R', 1, null, false, 'fg1']);
    a = t.cellAttr(0, 1);
    assert.deepStrictEqual([a.fg, a.bg, a.bold, a.className], [1, 2, true, 'fg1 bg2 bold']);
    a = t.cellAttr(0, 2);
    assert.deepStrictEqual([a.fg, a.bg, a.bold, a.className], [null, null, false, '']);
    a = t.cellAttr(0, 3);
    assert.deepStrictEqual([a.fg, a.bg], [12, 11]);
    a = t.cellAttr(0, 4);
    assert.deepStrictEqual([a.reverse, a.className], [true, 'reverse fg11 bg12'], 'colours swapped');
    assert.strictEqual(t.cellAttr(0, 5).className, '');
    assert.strictEqual(t.cellAttr(0, 6).fg, 196);
    assert.deepStrictEqual([t.cellAttr(0, 7).fg, t.cellAttr(0, 7).bg], [196, 21]);
    assert.strictEqual(t.cellAttr(0, 8).fg, 46, '24-bit degraded to the cube');
    assert.strictEqual(t.cellAttr(0, 9).underline, true);
    assert.strictEqual(t.cellAttr(0, 10).className, '');
    t.write('\r\n\x1b[7mI\x1b[38:5:3mJ');
    assert.strictEqual(t.cellAttr(1, 0).className, 'reverse fg257 bg256', 'reverse of the theme');
    assert.strictEqual(t.cellAttr(1, 1).fg, 3, 'colon sub-parameters');
});

test('modes: cursor visibility, application cursor keys', function () {
    var t = term();
    t.write('\x1b[?25l');
    assert.strictEqual(t.getCursor().visible, false);
    t.write('\x1b[?25h\x1b[?1h');
    assert.strictEqual(t.getCursor().visible, true);
    assert.strictEqual(t.appCursor, true);
    t.write('\x1b[?1l');
    assert.strictEqual(t.appCursor, false);
});

test('alternate screen: ?1049 saves and restores screen and cursor; ?47 too', function () {
    var t = term(3, 10);
    t.write('main\r\nscreen');
    t.write('\x1b[?1049h');
    assert.deepStrictEqual(rows(t), ['', '', '']);
    t.write('\x1b[Halt');
    assert.deepStrictEqual(rows(t), ['alt', '', '']);
    t.write('\x1b[?1049l');
    assert.deepStrictEqual(rows(t), ['main', 'screen', '']);
    assert.deepStrictEqual(cursor(t), [1, 6]);
    t.write('\x1b[?47hX\x1b[?47l');
    assert.deepStrictEqual(rows(t), ['main', 'screen', '']);
});

test('escape sequences split anywhere, controls inside them, junk skipped', function () {
    var t = term(3, 10), s = '\x1b[1;31mA\x1b]0;title\x07B\x1b]2;t\x1b\\C\x1bP1$r\x1b\\D', i;
    for (i = 0; i < s.length; i++) { t.write(s.charAt(i)); }
    assert.strictEqual(rows(t)[0], 'ABCD');
    assert.strictEqual(t.cellAttr(0, 3).fg, 1);
    t.write('\x1b[2\r\nC');   // CR LF act, then the sequence ends: cursor forward 2
    t.write('x\x1b[3\x18y');  // CAN cancels
    assert.strictEqual(rows(t)[1], '  xy');
    t.write('\x1b[?1000;1006h\x1b[>1m\x1b[!p\x1b[2 qz');
    assert.strictEqual(rows(t)[1], '  xyz');
});

test('DEC special graphics and SO/SI', function () {
    var t = term(2, 10);
    t.write('\x1b(0lqk\x1b(Bq\x1b)0\x0eq\x0fq');
    assert.strictEqual(rows(t)[0], '\u250c\u2500\u2510q\u2500q');
});

test('device status and attributes replies', function () {
    var t = term(5, 10);
    t.write('\x1b[3;7H\x1b[6n\x1b[5n\x1b[c\x1b[>c');
    assert.deepStrictEqual(t.replies, ['\x1b[3;7R', '\x1b[0n', '\x1b[?1;2c']);
});

test('full reset and DECALN', function () {
    var t = term(2, 3);
    t.write('\x1b#8');
    assert.deepStrictEqual(rows(t), ['EEE', 'EEE']);
    t.write('\x1b[31m\x1b[?1h\x1bc');
    assert.deepStrictEqual(rows(t), ['', '']);
    assert.strictEqual(t.appCursor, false);
    t.write('x');
    assert.strictEqual(t.cellAttr(0, 0).fg, null);
});

test('huge parameters are clamped', function () {
    var t = term(3, 5);
    t.write('abc\x1b[99999999999@\x1b[999999999L\x1b[99999;99999H');
    assert.deepStrictEqual(cursor(t), [2, 4]);
});

function key(k, mods) {
    var e = { key: k, shiftKey: false, ctrlKey: false, altKey: false, metaKey: false };
    Object.keys(mods || {}).forEach(function (m) { e[m] = mods[m]; });
    return e;
}

test('keys to bytes', function () {
    var k = VT100.keyToBytes;
    assert.strictEqual(k(key('a')), 'a');
    assert.strictEqual(k(key('8')), '8');
    assert.strictEqual(k(key('A', { shiftKey: true })), 'A');
    assert.strictEqual(k(key('\u00e9')), '\xc3\xa9', 'UTF-8 bytes');
    assert.strictEqual(k(key('Enter')), '\r');
    assert.strictEqual(k(key('Backspace')), '\x7f');
    assert.strictEqual(k(key('Tab')), '\t');
    assert.strictEqual(k(key('Tab', { shiftKey: true })), '\x1b[Z');
    assert.strictEqual(k(key('Escape')), '\x1b');
    assert.strictEqual(k(key('ArrowUp')), '\x1b[A');
    assert.strictEqual(k(key('ArrowDown'), true), '\x1bOB', 'application cursor mode');
    assert.strictEqual(k(key('ArrowRight')), '\x1b[C');
    assert.strictEqual(k(key('Left')), '\x1b[D', 'old key name');
    assert.strictEqual(k(key('ArrowLeft', { ctrlKey: true })), '\x1b[1;5D');
    assert.strictEqual(k(key('Home')), '\x1b[H');
    assert.strictEqual(k(key('End'), true), '\x1bOF');
    assert.strictEqual(k(key('Delete')), '\x1b[3~');
    assert.strictEqual(k(key('Insert')), '\x1b[2~');
    assert.strictEqual(k(key('PageUp')), '\x1b[5~');
    assert.strictEqual(k(key('PageDown')), '\x1b[6~');
    assert.strictEqual(k(key('F1')), '\x1bOP');
    assert.strictEqual(k(key('F12')), '\x1b[24~');
    assert.strictEqual(k(key('c', { ctrlKey: true })), '\x03');
    assert.strictEqual(k(key('D', { ctrlKey: true })), '\x04');
    assert.strictEqual(k(key('[', { ctrlKey: true })), '\x1b');
    assert.strictEqual(k(key(' ', { ctrlKey: true })), '\x00');
    assert.strictEqual(k(key('x', { altKey: true })), '\x1bx');
    assert.strictEqual(k(key('v', { ctrlKey: true, shiftKey: true })), null, 'browser shortcut');
    assert.strictEqual(k(key('r', { metaKey: true })), null);
    assert.strictEqual(k(key('Shift', { shiftKey: true })), null);
    assert.strictEqual(k(key('Dead')), null);
    assert.strictEqual(k({ keyCode: 38 }), '\x1b[A', 'keyCode without e.key');
    assert.strictEqual(k({ keyCode: 65 }), null, 'printable keys come as keypress then');
});

test('paste: newlines become CR; bracketed paste when asked', function () {
    var t = term();
    t.paste('a\nb\r\nc\u00e9');
    t.write('\x1b[?2004h');
    t.paste('x');
    assert.deepStrictEqual(t.replies, ['a\rb\rc\xc3\xa9', '\x1b[200~x\x1b[201~']);
});
