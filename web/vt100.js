/*
 * vt100.js - a small terminal emulator: a VT100/xterm subset, enough for a
 * shell, less, top and vi over telnet.
 *
 *   var term = new VT100(preElement, {rows: 24, cols: 80});
 *   term.ondata = function (bytes) { ... };   // keys, as a byte string
 *   term.write(bytesFromHost);                // Array/Uint8Array, UTF-8
 *
 * ES5 classic script; under Node it is a CommonJS module and runs without
 * a DOM (element null) so the parser can be tested alone.
 *
 * Model: `lines` holds one {chars, attrs} pair of arrays per screen row. A
 * cell's attr packs foreground (bits 0-8), background (bits 9-17) and flags
 * into one integer, so comparing and copying cells stays cheap. Colours are
 * palette indices 0-255; DEFAULT_FG/DEFAULT_BG stand for the theme colours.
 * The DOM is redrawn a row at a time, only for rows marked dirty, at most
 * once per animation frame.
 *
 * Not done: scrollback, mouse reporting, double-width lines, tab stops other
 * than every 8 columns, resizing.
 */
(function (root, factory) {
    if (typeof module === 'object' && module.exports) {
        module.exports = factory();
    } else {
        root.VT100 = factory();
    }
}(this, function () {
    'use strict';

    var DEFAULT_FG = 256, DEFAULT_BG = 257;
    var BOLD = 1 << 18, UNDERLINE = 1 << 19, REVERSE = 1 << 20;
    var DEFAULT_ATTR = DEFAULT_FG | (DEFAULT_BG << 9);
    var MAX_PARAMS = 16, MAX_PARAM = 9999;

    // Parser states.
    var GROUND = 0, ESC = 1, CSI = 2, OSC = 3, STRING = 4, STRING_ESC = 5,
        CHARSET = 6, ESC_HASH = 7;

    // DEC Special Graphics (ESC ( 0): what ncurses draws boxes with.
    var DEC_GRAPHICS = {
        0x60: '\u25c6', 0x61: '\u2592', 0x66: '\u00b0', 0x67: '\u00b1', 0x6a: '\u2518',
        0x6b: '\u2510', 0x6c: '\u250c', 0x6d: '\u2514', 0x6e: '\u253c', 0x6f: '\u23ba',
        0x70: '\u23bb', 0x71: '\u2500', 0x72: '\u23bc', 0x73: '\u23bd', 0x74: '\u251c',
        0x75: '\u2524', 0x76: '\u2534', 0x77: '\u252c', 0x78: '\u2502', 0x79: '\u2264',
        0x7a: '\u2265', 0x7b: '\u03c0', 0x7c: '\u2260', 0x7d: '\u00a3', 0x7e: '\u00b7'
    };

    // The xterm palette: 16 named colours, a 6x6x6 cube, 24 greys.
    var THEME_FG = '#d0d0d0', THEME_BG = '#000000';
    var PALETTE = ['#000000', '#cd0000', '#00cd00', '#cdcd00', '#0000ee', '#cd00cd',
                   '#00cdcd', '#e5e5e5', '#7f7f7f', '#ff0000', '#00ff00', '#ffff00',
                   '#5c5cff', '#ff00ff', '#00ffff', '#ffffff'];
    (function () {
        var levels = [0, 95, 135, 175, 215, 255], i;
        function hex(v) { return (v < 16 ? '0' : '') + v.toString(16); }
        for (i = 0; i < 216; i++) {
            PALETTE.push('#' + hex(levels[Math.floor(i / 36)]) +
                         hex(levels[Math.floor(i / 6) % 6]) + hex(levels[i % 6]));
        }
        for (i = 0; i < 24; i++) { PALETTE.push('#' + hex(8 + i * 10) + hex(8 + i * 10) + hex(8 + i * 10)); }
    }());

    // 24-bit colour degraded to the nearest entry of the 6x6x6 cube.
    function rgbTo256(r, g, b) {
        function q(v) { return v < 48 ? 0 : v < 115 ? 1 : Math.min(5, Math.floor((v - 35) / 40)); }
        return 16 + 36 * q(r) + 6 * q(g) + q(b);
    }

    // Characters that take two cells (East Asian wide, emoji), roughly as
    // wcwidth() sees them; the cell after one holds '' as a placeholder.
    function isWide(cp) {
        return cp >= 0x1100 && (cp <= 0x115f || cp === 0x2329 || cp === 0x232a ||
            (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) || (cp >= 0xac00 && cp <= 0xd7a3) ||
            (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xfe30 && cp <= 0xfe4f) ||
            (cp >= 0xff00 && cp <= 0xff60) || (cp >= 0xffe0 && cp <= 0xffe6) ||
            (cp >= 0x1f300 && cp <= 0x1f64f) || (cp >= 0x1f900 && cp <= 0x1f9ff) ||
            (cp >= 0x20000 && cp <= 0x3fffd));
    }

    function isCombining(cp) {
        return (cp >= 0x300 && cp <= 0x36f) || (cp >= 0x1ab0 && cp <= 0x1aff) ||
            (cp >= 0x20d0 && cp <= 0x20ff) || (cp >= 0xfe20 && cp <= 0xfe2f) || cp === 0x200d;
    }

    function fromCodePoint(cp) {
        if (cp < 0x10000) { return String.fromCharCode(cp); }
        cp -= 0x10000;
        return String.fromCharCode(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
    }

    // A JS string as UTF-8 bytes in a byte string (one char per byte).
    function utf8Bytes(str) {
        return unescape(encodeURIComponent(str));
    }

    function escapeHtml(s) {
        return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    }

    var cssInstalled = false;
    function installCss(doc) {
        var css = [], i, style;
        if (cssInstalled || doc.getElementById('vt100-css')) { return; }
        cssInstalled = true;
        css.push('.vt100 { background: ' + THEME_BG + '; color: ' + THEME_FG + ';' +
                 ' font: 15px/1.2 monospace; margin: 0; padding: 4px; display: inline-block;' +
                 ' white-space: pre; position: relative; }',
                 '.vt100.focused { outline: 1px solid #888; }',
                 '.vt100 .vt100-input { position: absolute; left: 0; top: 0; width: 1px; height: 1px;' +
                 ' opacity: 0; border: 0; padding: 0; margin: 0; resize: none; overflow: hidden; }',
                 '.vt100 .row { display: block; height: 1.2em; }',
                 '.vt100 .bold { font-weight: bold; }',
                 '.vt100 .underline { text-decoration: underline; }',
                 // Reverse video of the theme colours (see _attrClass).
                 '.vt100 .fg' + DEFAULT_BG + ' { color: ' + THEME_BG + '; }',
                 '.vt100 .bg' + DEFAULT_FG + ' { background: ' + THEME_FG + '; }');
        for (i = 0; i < 256; i++) {
            css.push('.vt100 .fg' + i + ' { color: ' + PALETTE[i] + '; }',
                     '.vt100 .bg' + i + ' { background: ' + PALETTE[i] + '; }');
        }
        // Last, so the cursor wins over colour classes of the same weight.
        css.push('.vt100 .cursor { outline: 1px solid ' + THEME_FG + '; outline-offset: -1px; }',
                 '.vt100.focused .cursor { background: ' + THEME_FG + '; color: ' + THEME_BG + '; }');
        style = doc.createElement('style');
        style.id = 'vt100-css';
        style.appendChild(doc.createTextNode(css.join('\n')));
        // First in <head>, so that a page's own rules can override ours.
        doc.head.insertBefore(style, doc.head.firstChild);
    }

    function VT100(element, options) {
        options = options || {};
        this.rows = options.rows || 24;
        this.cols = options.cols || 80;
        // Called with a byte string for the host: keys, paste, replies.
        this.ondata = null;
        // Called on BEL.
        this.onbell = null;
        this.element = element || null;
        this._rowEls = [];
        this._inputEl = null;
        this._renderPending = false;
        this._cssCache = {};
        this.reset();
        if (this.element) { this._setupDom(); }
    }

    VT100.DEFAULT_FG = DEFAULT_FG;
    VT100.DEFAULT_BG = DEFAULT_BG;
    VT100.PALETTE = PALETTE;

    // Power-on state (also ESC c).
    VT100.prototype.reset = function () {
        this.x = 0;
        this.y = 0;
        this.attr = DEFAULT_ATTR;
        this.wrapPending = false;   // last column written: wrap before the next char
        this.top = 0;               // scroll region, inclusive
        this.bottom = this.rows - 1;
        this.appCursor = false;     // DECCKM: cursor keys send ESC O x
        this.autowrap = true;       // DECAWM
        this.originMode = false;    // DECOM: row numbers count from the region top
        this.insertMode = false;    // IRM
        this.cursorVisible = true;  // DECTCEM
        this.bracketedPaste = false;
        this.charsets = ['B', 'B'];
        this.charsetIndex = 0;
        this.saved = null;
        this.altLines = null;       // the main screen while the alternate one shows
        this.lines = [];
        for (var i = 0; i < this.rows; i++) { this.lines.push(this._blankLine(DEFAULT_ATTR)); }
        this._state = GROUND;
        this._params = '';
        this._private = '';
        this._intermediate = '';
        this._utf8Need = 0;
        this._utf8Code = 0;
        this._utf8Min = 0;
        this._dirty = [];
        this._markAll();
    };

    // ---- input from the host

    // Bytes (Array, Uint8Array or a byte string) decoded as UTF-8; a
    // character split across calls is completed by the next call.
    VT100.prototype.write = function (data) {
        var isStr = typeof data === 'string', n = data.length, i, b;
        for (i = 0; i < n; i++) {
            b = isStr ? data.charCodeAt(i) & 255 : data[i];
            this._utf8(b);
        }
        this._scheduleRender();
    };

    // Text already decoded (a JS string): no UTF-8 step.
    VT100.prototype.writeText = function (str) {
        var i, c, c2;
        for (i = 0; i < str.length; i++) {
            c = str.charCodeAt(i);
            if (c >= 0xd800 && c < 0xdc00 && i + 1 < str.length) {
                c2 = str.charCodeAt(i + 1);
                if (c2 >= 0xdc00 && c2 < 0xe000) {
                    c = 0x10000 + ((c - 0xd800) << 10) + (c2 - 0xdc00);
                    i++;
                }
            }
            this._input(c);
        }
        this._scheduleRender();
    };

    // UTF-8 (RFC 3629): overlong forms, surrogates and stray bytes become
    // U+FFFD, one per bad sequence.
    VT100.prototype._utf8 = function (b) {
        if (this._utf8Need) {
            if ((b & 0xc0) === 0x80) {
                this._utf8Code = (this._utf8Code << 6) | (b & 0x3f);
                if (--this._utf8Need === 0) {
                    var c = this._utf8Code;
                    this._input(c < this._utf8Min || c > 0x10ffff || (c >= 0xd800 && c < 0xe000)
                                ? 0xfffd : c);
                }
                return;
            }
            this._utf8Need = 0;
            this._input(0xfffd);   // truncated sequence; b starts afresh
        }
        if (b < 0x80) {
            this._input(b);
        } else if (b >= 0xc2 && b <= 0xdf) {
            this._utf8Need = 1; this._utf8Code = b & 0x1f; this._utf8Min = 0x80;
        } else if (b >= 0xe0 && b <= 0xef) {
            this._utf8Need = 2; this._utf8Code = b & 0x0f; this._utf8Min = 0x800;
        } else if (b >= 0xf0 && b <= 0xf4) {
            this._utf8Need = 3; this._utf8Code = b & 0x07; this._utf8Min = 0x10000;
        } else {
            this._input(0xfffd);
        }
    };

    // One code point through the escape-sequence parser (after the VT500
    // state diagram, much reduced).
    VT100.prototype._input = function (c) {
        switch (this._state) {
        case GROUND:
            if (c < 0x20 || c === 0x7f) { this._control(c); } else { this._print(c); }
            break;
        case ESC:
            if (c < 0x20 && c !== 0x1b) {
                this._control(c);   // controls act in the middle of a sequence
            } else {
                this._state = GROUND;
                this._escape(c);
            }
            break;
        case CSI:
            this._csiByte(c);
            break;
        case OSC:
        case STRING:
            // Titles and device strings: skipped up to BEL or ST (ESC \).
            if (c === 0x07) {
                this._state = GROUND;
            } else if (c === 0x1b) {
                this._state = STRING_ESC;
            } else if (c === 0x18 || c === 0x1a) {
                this._state = GROUND;
            }
            break;
        case STRING_ESC:
            this._state = GROUND;
            if (c !== 0x5c) { this._escape(c); }
            break;
        case CHARSET:
            this._state = GROUND;
            if (this._charsetSlot >= 0) { this.charsets[this._charsetSlot] = String.fromCharCode(c); }
            break;
        case ESC_HASH:
            this._state = GROUND;
            if (c === 0x38) { this._alignmentTest(); }
            break;
        }
    };

    VT100.prototype._control = function (c) {
        switch (c) {
        case 0x07:
            if (this.onbell) { this.onbell(); }
            break;
        case 0x08:
            if (this.x > 0) { this.x--; }
            this.wrapPending = false;
            break;
        case 0x09:
            this.x = Math.min(this.cols - 1, (Math.floor(this.x / 8) + 1) * 8);
            this.wrapPending = false;
            break;
        case 0x0a: case 0x0b: case 0x0c:
            this._index();
            break;
        case 0x0d:
            this.x = 0;
            this.wrapPending = false;
            break;
        case 0x0e:
            this.charsetIndex = 1;
            break;
        case 0x0f:
            this.charsetIndex = 0;
            break;
        case 0x18: case 0x1a:
            this._state = GROUND;
            break;
        case 0x1b:
            this._state = ESC;
            break;
        }
    };

    VT100.prototype._print = function (c) {
        var line, ch, wide, px;
        if (isCombining(c)) {
            // Joins the character before the cursor, taking no cell.
            px = this.wrapPending ? this.x : this.x - 1;
            line = this.lines[this.y];
            if (px >= 0 && line.chars[px] === '' && px > 0) { px--; }
            if (px >= 0) { line.chars[px] += fromCodePoint(c); this._dirty[this.y] = true; }
            return;
        }
        if (this.charsets[this.charsetIndex] === '0' && DEC_GRAPHICS[c]) {
            ch = DEC_GRAPHICS[c];
        } else {
            ch = fromCodePoint(c);
        }
        wide = isWide(c) && this.cols > 1;
        if (this.wrapPending || (wide && this.x === this.cols - 1)) {
            if (this.autowrap) {
                this.x = 0;
                this._index();
            }
            this.wrapPending = false;
            if (wide && this.x === this.cols - 1) { wide = false; }   // no wrap: squeeze it
        }
        line = this.lines[this.y];
        if (this.insertMode) { this._insertCells(line, this.x, wide ? 2 : 1); }
        this._clearWide(line, this.x);
        line.chars[this.x] = ch;
        line.attrs[this.x] = this.attr;
        if (wide) {
            this._clearWide(line, this.x + 1);
            line.chars[this.x + 1] = '';
            line.attrs[this.x + 1] = this.attr;
        }
        this._dirty[this.y] = true;
        this.x += wide ? 2 : 1;
        if (this.x >= this.cols) {
            this.x = this.cols - 1;
            this.wrapPending = this.autowrap;
        }
    };

    // Overwriting half of a wide character blanks the other half.
    VT100.prototype._clearWide = function (line, x) {
        if (line.chars[x] === '' && x > 0) {
            line.chars[x - 1] = ' ';
        } else if (x + 1 < this.cols && line.chars[x + 1] === '') {
            line.chars[x + 1] = ' ';
        }
    };

    VT100.prototype._escape = function (c) {
        switch (String.fromCharCode(c)) {
        case '[':
            this._state = CSI;
            this._params = '';
            this._private = '';
            this._intermediate = '';
            break;
        case ']':
            this._state = OSC;
            break;
        case 'P': case '^': case '_': case 'X':
            this._state = STRING;
            break;
        case '(': case ')': case '*': case '+':
            this._state = CHARSET;
            this._charsetSlot = c === 0x28 ? 0 : c === 0x29 ? 1 : -1;
            break;
        case '#':
            this._state = ESC_HASH;
            break;
        case '7':
            this._saveCursor();
            break;
        case '8':
            this._restoreCursor();
            break;
        case 'D':
            this._index();
            break;
        case 'E':
            this.x = 0;
            this._index();
            break;
        case 'M':
            this._reverseIndex();
            break;
        case 'c':
            this.reset();
            break;
        case '\x1b':
            this._state = ESC;
            break;
        }
        // ESC = / ESC > (keypad modes), ESC H (tab set) and the rest: ignored.
    };

    VT100.prototype._csiByte = function (c) {
        if (c >= 0x30 && c <= 0x3b) {
            // ':' separates sub-parameters (38:5:n); treated like ';'.
            if (this._params.length < 64) { this._params += c === 0x3a ? ';' : String.fromCharCode(c); }
        } else if (c >= 0x3c && c <= 0x3f) {
            this._private += String.fromCharCode(c);
        } else if (c >= 0x20 && c <= 0x2f) {
            this._intermediate += String.fromCharCode(c);
        } else if (c >= 0x40 && c <= 0x7e) {
            this._state = GROUND;
            this._csi(String.fromCharCode(c), this._parseParams());
        } else if (c === 0x1b) {
            this._state = ESC;
        } else if (c === 0x18 || c === 0x1a) {
            this._state = GROUND;
        } else if (c < 0x20) {
            this._control(c);   // controls act in the middle of a sequence
        } else {
            this._state = GROUND;   // not a CSI byte: drop the sequence
        }
    };

    // "1;;5" -> [1, 0, 5]: an empty parameter is 0, meaning "default".
    VT100.prototype._parseParams = function () {
        var parts = this._params ? this._params.split(';') : [], out = [], i;
        for (i = 0; i < parts.length && i < MAX_PARAMS; i++) {
            out.push(Math.min(parseInt(parts[i], 10) || 0, MAX_PARAM));
        }
        return out;
    };

    // ---- CSI dispatch (ECMA-48 §8.3, xterm ctlseqs for the private ones)

    VT100.prototype._csi = function (f, p) {
        var n = p[0] || 1, priv = this._private;
        if (this._intermediate) { return; }   // DECSTR, DECSCUSR...: not done
        if (priv && f !== 'h' && f !== 'l' && f !== 'c' && f !== 'n' && f !== 'J' && f !== 'K') { return; }
        switch (f) {
        case 'A': this._moveTo(this.x, this.y - n, true); break;
        case 'B': case 'e': this._moveTo(this.x, this.y + n, true); break;
        case 'C': case 'a': this._moveTo(this.x + n, this.y); break;
        case 'D': this._moveTo(this.x - n, this.y); break;
        case 'E': this._moveTo(0, this.y + n, true); break;
        case 'F': this._moveTo(0, this.y - n, true); break;
        case 'G': case '`': this._moveTo(n - 1, this.y); break;
        case 'H': case 'f': this._moveToOrigin((p[1] || 1) - 1, n - 1); break;
        case 'd': this._moveToOrigin(this.x, n - 1); break;
        case 'J': this._eraseDisplay(p[0] || 0); break;
        case 'K': this._eraseLine(p[0] || 0); break;
        case 'L': this._insertLines(n); break;
        case 'M': this._deleteLines(n); break;
        case 'P': this._deleteChars(n); break;
        case '@': this._insertChars(n); break;
        case 'X': this._eraseChars(n); break;
        case 'S': this._scrollUp(this.top, this.bottom, n); break;
        case 'T': this._scrollDown(this.top, this.bottom, n); break;
        case 'm': this._sgr(p); break;
        case 'r': this._setRegion(p); break;
        case 's': this._saveCursor(); break;
        case 'u': this._restoreCursor(); break;
        case 'h': this._setModes(p, priv, true); break;
        case 'l': this._setModes(p, priv, false); break;
        case 'n': this._statusReport(p[0] || 0, priv); break;
        case 'c':
            // Device attributes: a VT100 with advanced video.
            if (!priv && !p[0]) { this._reply('\x1b[?1;2c'); }
            break;
        }
    };

    // Relative moves stop at the scroll region's edges when they start inside it.
    VT100.prototype._moveTo = function (x, y, vertical) {
        var minY = 0, maxY = this.rows - 1;
        if (vertical && this.y >= this.top && this.y <= this.bottom) {
            minY = this.top;
            maxY = this.bottom;
        }
        this.x = Math.max(0, Math.min(this.cols - 1, x));
        this.y = Math.max(minY, Math.min(maxY, y));
        this.wrapPending = false;
    };

    // Absolute positions: relative to the scroll region in origin mode.
    VT100.prototype._moveToOrigin = function (x, y) {
        if (this.originMode) {
            this.y = Math.max(this.top, Math.min(this.bottom, y + this.top));
        } else {
            this.y = Math.max(0, Math.min(this.rows - 1, y));
        }
        this.x = Math.max(0, Math.min(this.cols - 1, x));
        this.wrapPending = false;
    };

    // Erased cells take the current background (xterm's "bce").
    VT100.prototype._eraseAttr = function () {
        return DEFAULT_FG | (this.attr & (0x1ff << 9));
    };

    VT100.prototype._blankLine = function (attr) {
        var chars = [], attrs = [], i;
        for (i = 0; i < this.cols; i++) {
            chars.push(' ');
            attrs.push(attr);
        }
        return { chars: chars, attrs: attrs };
    };

    VT100.prototype._fill = function (y, from, to, attr) {
        var line = this.lines[y], i;
        for (i = from; i < to; i++) {
            line.chars[i] = ' ';
            line.attrs[i] = attr;
        }
        this._dirty[y] = true;
    };

    VT100.prototype._eraseDisplay = function (mode) {
        var a = this._eraseAttr(), y;
        if (mode === 0) {
            this._fill(this.y, this.x, this.cols, a);
            for (y = this.y + 1; y < this.rows; y++) { this._fill(y, 0, this.cols, a); }
        } else if (mode === 1) {
            for (y = 0; y < this.y; y++) { this._fill(y, 0, this.cols, a); }
            this._fill(this.y, 0, this.x + 1, a);
        } else if (mode === 2) {
            for (y = 0; y < this.rows; y++) { this._fill(y, 0, this.cols, a); }
        }
        // 3 erases scrollback, which we do not keep.
        this.wrapPending = false;
    };

    VT100.prototype._eraseLine = function (mode) {
        var a = this._eraseAttr();
        if (mode === 0) {
            this._fill(this.y, this.x, this.cols, a);
        } else if (mode === 1) {
            this._fill(this.y, 0, this.x + 1, a);
        } else if (mode === 2) {
            this._fill(this.y, 0, this.cols, a);
        }
        this.wrapPending = false;
    };

    VT100.prototype._eraseChars = function (n) {
        this._fill(this.y, this.x, Math.min(this.cols, this.x + n), this._eraseAttr());
        this.wrapPending = false;
    };

    VT100.prototype._insertCells = function (line, x, n) {
        var blank = [], attrs = [], i, a = this._eraseAttr();
        n = Math.min(n, this.cols - x);
        for (i = 0; i < n; i++) {
            blank.push(' ');
            attrs.push(a);
        }
        line.chars.splice.apply(line.chars, [x, 0].concat(blank));
        line.attrs.splice.apply(line.attrs, [x, 0].concat(attrs));
        line.chars.length = line.attrs.length = this.cols;
    };

    VT100.prototype._insertChars = function (n) {
        this._insertCells(this.lines[this.y], this.x, n);
        this._dirty[this.y] = true;
        this.wrapPending = false;
    };

    VT100.prototype._deleteChars = function (n) {
        var line = this.lines[this.y], a = this._eraseAttr(), i;
        n = Math.min(n, this.cols - this.x);
        line.chars.splice(this.x, n);
        line.attrs.splice(this.x, n);
        for (i = 0; i < n; i++) {
            line.chars.push(' ');
            line.attrs.push(a);
        }
        this._dirty[this.y] = true;
        this.wrapPending = false;
    };

    // Lines scroll only inside the region [top, bottom].
    VT100.prototype._scrollUp = function (top, bottom, n) {
        var a = this._eraseAttr(), i;
        n = Math.min(n, bottom - top + 1);
        this.lines.splice(top, n);
        for (i = 0; i < n; i++) { this.lines.splice(bottom - n + 1 + i, 0, this._blankLine(a)); }
        this._markRows(top, bottom);
    };

    VT100.prototype._scrollDown = function (top, bottom, n) {
        var a = this._eraseAttr(), i;
        n = Math.min(n, bottom - top + 1);
        this.lines.splice(bottom - n + 1, n);
        for (i = 0; i < n; i++) { this.lines.splice(top, 0, this._blankLine(a)); }
        this._markRows(top, bottom);
    };

    VT100.prototype._insertLines = function (n) {
        if (this.y < this.top || this.y > this.bottom) { return; }
        this._scrollDown(this.y, this.bottom, n);
        this.x = 0;
        this.wrapPending = false;
    };

    VT100.prototype._deleteLines = function (n) {
        if (this.y < this.top || this.y > this.bottom) { return; }
        this._scrollUp(this.y, this.bottom, n);
        this.x = 0;
        this.wrapPending = false;
    };

    // LF: down one row, scrolling the region when at its bottom.
    VT100.prototype._index = function () {
        if (this.y === this.bottom) {
            this._scrollUp(this.top, this.bottom, 1);
        } else if (this.y < this.rows - 1) {
            this.y++;
        }
        this.wrapPending = false;
    };

    VT100.prototype._reverseIndex = function () {
        if (this.y === this.top) {
            this._scrollDown(this.top, this.bottom, 1);
        } else if (this.y > 0) {
            this.y--;
        }
        this.wrapPending = false;
    };

    VT100.prototype._setRegion = function (p) {
        var top = (p[0] || 1) - 1, bottom = (p[1] || this.rows) - 1;
        bottom = Math.min(bottom, this.rows - 1);
        if (top >= bottom) { return; }
        this.top = top;
        this.bottom = bottom;
        this._moveToOrigin(0, 0);
    };

    VT100.prototype._saveCursor = function () {
        this.saved = {
            x: this.x, y: this.y, attr: this.attr, wrapPending: this.wrapPending,
            originMode: this.originMode, charsets: this.charsets.slice(),
            charsetIndex: this.charsetIndex
        };
    };

    VT100.prototype._restoreCursor = function () {
        var s = this.saved;
        if (!s) {
            this.x = this.y = 0;
            this.attr = DEFAULT_ATTR;
            this.wrapPending = false;
            return;
        }
        this.x = Math.min(s.x, this.cols - 1);
        this.y = Math.min(s.y, this.rows - 1);
        this.attr = s.attr;
        this.wrapPending = s.wrapPending;
        this.originMode = s.originMode;
        this.charsets = s.charsets.slice();
        this.charsetIndex = s.charsetIndex;
    };

    VT100.prototype._setModes = function (p, priv, on) {
        var i;
        for (i = 0; i < p.length; i++) {
            if (priv === '?') {
                switch (p[i]) {
                case 1: this.appCursor = on; break;
                case 6: this.originMode = on; this._moveToOrigin(0, 0); break;
                case 7: this.autowrap = on; break;
                case 25: this.cursorVisible = on; break;
                case 47: case 1047: this._altScreen(on); break;
                case 1048: if (on) { this._saveCursor(); } else { this._restoreCursor(); } break;
                case 1049:
                    // Save the cursor and switch to a clear alternate screen;
                    // leaving restores both.
                    if (on) { this._saveCursor(); this._altScreen(true); } else {
                        this._altScreen(false);
                        this._restoreCursor();
                    }
                    break;
                case 2004: this.bracketedPaste = on; break;
                }
            } else if (!priv && p[i] === 4) {
                this.insertMode = on;
            }
        }
    };

    // The alternate screen starts blank and is thrown away on leaving.
    VT100.prototype._altScreen = function (on) {
        var i;
        if (on && !this.altLines) {
            this.altLines = this.lines;
            this.lines = [];
            for (i = 0; i < this.rows; i++) { this.lines.push(this._blankLine(DEFAULT_ATTR)); }
        } else if (!on && this.altLines) {
            this.lines = this.altLines;
            this.altLines = null;
        }
        this._markAll();
    };

    VT100.prototype._statusReport = function (what, priv) {
        if (priv) { return; }
        if (what === 5) {
            this._reply('\x1b[0n');
        } else if (what === 6) {
            this._reply('\x1b[' + (this.y + 1 - (this.originMode ? this.top : 0)) + ';' +
                        (this.x + 1) + 'R');
        }
    };

    // DECALN (ESC # 8): the screen full of E, used by vttest.
    VT100.prototype._alignmentTest = function () {
        var y, x;
        for (y = 0; y < this.rows; y++) {
            for (x = 0; x < this.cols; x++) {
                this.lines[y].chars[x] = 'E';
                this.lines[y].attrs[x] = DEFAULT_ATTR;
            }
        }
        this._markAll();
    };

    // SGR (ECMA-48 §8.3.117 and the xterm colour extensions).
    VT100.prototype._sgr = function (p) {
        var a = this.attr, i, v, fg = a & 0x1ff, bg = (a >> 9) & 0x1ff, flags = a & ~0x3ffff, color;
        if (!p.length) { p = [0]; }
        for (i = 0; i < p.length; i++) {
            v = p[i];
            if (v === 0) {
                fg = DEFAULT_FG; bg = DEFAULT_BG; flags = 0;
            } else if (v === 1) {
                flags |= BOLD;
            } else if (v === 22) {
                flags &= ~BOLD;
            } else if (v === 4) {
                flags |= UNDERLINE;
            } else if (v === 24) {
                flags &= ~UNDERLINE;
            } else if (v === 7) {
                flags |= REVERSE;
            } else if (v === 27) {
                flags &= ~REVERSE;
            } else if (v >= 30 && v <= 37) {
                fg = v - 30;
            } else if (v === 39) {
                fg = DEFAULT_FG;
            } else if (v >= 40 && v <= 47) {
                bg = v - 40;
            } else if (v === 49) {
                bg = DEFAULT_BG;
            } else if (v >= 90 && v <= 97) {
                fg = v - 90 + 8;
            } else if (v >= 100 && v <= 107) {
                bg = v - 100 + 8;
            } else if (v === 38 || v === 48) {
                color = -1;
                if (p[i + 1] === 5 && i + 2 < p.length) {
                    color = p[i + 2] & 255;
                    i += 2;
                } else if (p[i + 1] === 2 && i + 4 < p.length) {
                    color = rgbTo256(p[i + 2], p[i + 3], p[i + 4]);
                    i += 4;
                } else {
                    break;   // malformed: ignore the rest
                }
                if (v === 38) { fg = color; } else { bg = color; }
            }
            // 2 (faint), 3 (italic), 5 (blink), 8 (hidden)...: ignored.
        }
        this.attr = fg | (bg << 9) | flags;
    };

    VT100.prototype._reply = function (s) {
        if (this.ondata) { this.ondata(s); }
    };

    // ---- queries (for pages and tests)

    // The screen as text: rows joined by '\n', trailing blanks trimmed.
    VT100.prototype.getText = function () {
        var out = [], y;
        for (y = 0; y < this.rows; y++) { out.push(this.getRow(y).replace(/ +$/, '')); }
        return out.join('\n');
    };

    VT100.prototype.getRow = function (y) {
        return this.lines[y].chars.join('');
    };

    // What the cell at (row, col) shows; fg/bg are palette indices 0-255
    // or null for the theme colour; className is what the DOM span gets.
    VT100.prototype.cellAttr = function (row, col) {
        var a = this.lines[row].attrs[col], fg = a & 0x1ff, bg = (a >> 9) & 0x1ff;
        return {
            ch: this.lines[row].chars[col],
            fg: fg === DEFAULT_FG ? null : fg,
            bg: bg === DEFAULT_BG ? null : bg,
            bold: !!(a & BOLD),
            underline: !!(a & UNDERLINE),
            reverse: !!(a & REVERSE),
            className: this._attrClass(a)
        };
    };

    VT100.prototype.getCursor = function () {
        return { row: this.y, col: this.x, visible: this.cursorVisible };
    };

    // Class names from the colours a cell shows: reverse video swaps them,
    // and a swapped theme colour gets its own class (fg257 / bg256).
    VT100.prototype._attrClass = function (a) {
        var cached = this._cssCache[a], fg, bg, t, c = [];
        if (cached !== undefined) { return cached; }
        fg = a & 0x1ff;
        bg = (a >> 9) & 0x1ff;
        if (a & REVERSE) {
            t = fg; fg = bg; bg = t;
            c.push('reverse');
        }
        if (fg !== DEFAULT_FG) { c.push('fg' + fg); }
        if (bg !== DEFAULT_BG) { c.push('bg' + bg); }
        if (a & BOLD) { c.push('bold'); }
        if (a & UNDERLINE) { c.push('underline'); }
        this._cssCache[a] = c.join(' ');
        return this._cssCache[a];
    };

    // ---- rendering

    VT100.prototype._markRows = function (from, to) {
        for (var y = from; y <= to; y++) { this._dirty[y] = true; }
    };

    VT100.prototype._markAll = function () {
        this._markRows(0, this.rows - 1);
    };

    VT100.prototype._scheduleRender = function () {
        var self = this, raf;
        if (!this.element || this._renderPending) { return; }
        this._renderPending = true;
        raf = typeof requestAnimationFrame === 'function' ? requestAnimationFrame
            : function (f) { setTimeout(f, 16); };
        raf(function () { self.render(); });
    };

    // Bring the DOM up to date now (normally done once per frame).
    VT100.prototype.render = function () {
        var y, cur = this.cursorVisible ? this.y : -1;
        this._renderPending = false;
        if (!this.element) { return; }
        // The rows the cursor left and entered need redrawing too.
        if (this._cursorRow !== cur || this._cursorCol !== this.x) {
            if (this._cursorRow >= 0) { this._dirty[this._cursorRow] = true; }
            if (cur >= 0) { this._dirty[cur] = true; }
            this._cursorRow = cur;
            this._cursorCol = this.x;
        }
        for (y = 0; y < this.rows; y++) {
            if (this._dirty[y]) {
                this._rowEls[y].innerHTML = this._rowHtml(y, y === cur ? this.x : -1);
                this._dirty[y] = false;
            }
        }
    };

    // One row as runs of same-class text.
    VT100.prototype._rowHtml = function (y, cursorX) {
        var line = this.lines[y], html = [], run = '', runClass = null, x, cls;
        for (x = 0; x <= this.cols; x++) {
            cls = x < this.cols ? this._attrClass(line.attrs[x]) : null;
            if (x === cursorX) { cls = cls ? cls + ' cursor' : 'cursor'; }
            if (cls !== runClass || x === this.cols) {
                if (run) {
                    html.push(runClass ? '<span class="' + runClass + '">' + escapeHtml(run) + '</span>'
                                       : escapeHtml(run));
                }
                run = '';
                runClass = cls;
            }
            if (x < this.cols) { run += line.chars[x]; }
        }
        return html.join('');
    };

    // Keys arrive in a hidden textarea rather than on the <pre>: text that
    // comes without key events (input methods, dictation, on-screen
    // keyboards) only ever reaches an editable element.
    VT100.prototype._setupDom = function () {
        var el = this.element, doc = el.ownerDocument, self = this, y, row, input;
        installCss(doc);
        el.className += (el.className ? ' ' : '') + 'vt100';
        el.innerHTML = '';
        for (y = 0; y < this.rows; y++) {
            row = doc.createElement('span');
            row.className = 'row';
            el.appendChild(row);
            this._rowEls.push(row);
        }
        this._cursorRow = -1;
        this._cursorCol = -1;
        input = this._inputEl = doc.createElement('textarea');
        input.className = 'vt100-input';
        input.setAttribute('autocomplete', 'off');
        input.setAttribute('autocapitalize', 'off');
        input.setAttribute('spellcheck', 'false');
        input.setAttribute('aria-label', 'terminal input');
        el.appendChild(input);
        this._composing = false;
        input.addEventListener('keydown', function (e) { self._keydown(e); }, false);
        input.addEventListener('keypress', function (e) { self._keypress(e); }, false);
        input.addEventListener('paste', function (e) { self._paste(e); }, false);
        input.addEventListener('compositionstart', function () { self._composing = true; }, false);
        input.addEventListener('compositionend', function () {
            self._composing = false;
            self._takeInput();
        }, false);
        input.addEventListener('input', function () {
            if (!self._composing) { self._takeInput(); }
        }, false);
        input.addEventListener('focus', function () { self._setFocused(true); }, false);
        input.addEventListener('blur', function () { self._setFocused(false); }, false);
        // A click focuses the input, unless it selected text to copy.
        el.addEventListener('mouseup', function () {
            var sel = doc.defaultView && doc.defaultView.getSelection && doc.defaultView.getSelection();
            if (!sel || sel.isCollapsed) { self.focus(); }
        }, false);
        this.render();
    };

    VT100.prototype._setFocused = function (on) {
        var el = this.element;
        el.className = el.className.replace(/(^| )focused\b/g, '') + (on ? ' focused' : '');
    };

    // Text that reached the textarea without a key event we handled.
    VT100.prototype._takeInput = function () {
        var text = this._inputEl.value;
        this._inputEl.value = '';
        if (text) { this._reply(utf8Bytes(text.replace(/\r?\n/g, '\r'))); }
    };

    VT100.prototype.focus = function () {
        if (this._inputEl) { this._inputEl.focus(); }
    };

    // ---- keyboard

    // Browsers without e.key: the special keys by keyCode.
    var KEYCODE_NAMES = {
        8: 'Backspace', 9: 'Tab', 13: 'Enter', 27: 'Escape', 33: 'PageUp', 34: 'PageDown',
        35: 'End', 36: 'Home', 37: 'ArrowLeft', 38: 'ArrowUp', 39: 'ArrowRight',
        40: 'ArrowDown', 45: 'Insert', 46: 'Delete', 112: 'F1', 113: 'F2', 114: 'F3',
        115: 'F4', 116: 'F5', 117: 'F6', 118: 'F7', 119: 'F8', 120: 'F9', 121: 'F10',
        122: 'F11', 123: 'F12'
    };
    // Names older browsers used for e.key.
    var OLD_KEY_NAMES = {
        Up: 'ArrowUp', Down: 'ArrowDown', Left: 'ArrowLeft', Right: 'ArrowRight',
        Esc: 'Escape', Del: 'Delete'
    };
    // Keys whose sequence takes the form ESC [ n ~.
    var TILDE_KEYS = {
        Insert: 2, Delete: 3, PageUp: 5, PageDown: 6, F5: 15, F6: 17, F7: 18, F8: 19,
        F9: 20, F10: 21, F11: 23, F12: 24
    };
    // Keys sending ESC [ x, or ESC O x in application cursor mode.
    var CURSOR_KEYS = { ArrowUp: 'A', ArrowDown: 'B', ArrowRight: 'C', ArrowLeft: 'D', Home: 'H', End: 'F' };
    var SS3_KEYS = { F1: 'P', F2: 'Q', F3: 'R', F4: 'S' };
    // Ctrl + these send the C0 controls beyond the letters.
    var CTRL_SYMBOLS = { '@': 0, ' ': 0, '2': 0, '[': 27, '\\': 28, ']': 29, '^': 30, '6': 30, '_': 31, '-': 31 };

    // The bytes a key event sends (a byte string), or null to leave the
    // event to the browser. e needs key (or keyCode) and the modifier flags.
    VT100.keyToBytes = function (e, appCursor) {
        var key = e.key, mod, c, code;
        if (key === undefined || key === 'Unidentified') { key = KEYCODE_NAMES[e.keyCode] || null; }
        if (key && OLD_KEY_NAMES.hasOwnProperty(key)) { key = OLD_KEY_NAMES[key]; }
        if (!key || e.metaKey) { return null; }
        // xterm's modifier parameter: 1 + shift + 2*alt + 4*ctrl.
        mod = 1 + (e.shiftKey ? 1 : 0) + (e.altKey ? 2 : 0) + (e.ctrlKey ? 4 : 0);
        if (CURSOR_KEYS[key]) {
            if (mod > 1) { return '\x1b[1;' + mod + CURSOR_KEYS[key]; }
            return (appCursor ? '\x1bO' : '\x1b[') + CURSOR_KEYS[key];
        }
        if (SS3_KEYS[key]) { return mod > 1 ? '\x1b[1;' + mod + SS3_KEYS[key] : '\x1bO' + SS3_KEYS[key]; }
        if (TILDE_KEYS[key]) { return '\x1b[' + TILDE_KEYS[key] + (mod > 1 ? ';' + mod : '') + '~'; }
        switch (key) {
        case 'Enter': return e.altKey ? '\x1b\r' : '\r';
        case 'Backspace': return e.ctrlKey ? '\x08' : e.altKey ? '\x1b\x7f' : '\x7f';
        case 'Tab': return e.shiftKey ? '\x1b[Z' : '\t';
        case 'Escape': return '\x1b';
        }
        if (key.length !== 1 && !(key.length === 2 && /^[\ud800-\udbff]/.test(key))) {
            return null;   // Shift, Control, Dead, ...
        }
        if (e.ctrlKey && !e.altKey) {
            if (e.shiftKey && /^[a-zA-Z]$/.test(key)) { return null; }   // Ctrl+Shift+C/V: the browser's
            c = key.toUpperCase();
            code = c.charCodeAt(0);
            if (code >= 65 && code <= 90) { return String.fromCharCode(code - 64); }
            if (CTRL_SYMBOLS.hasOwnProperty(key)) { return String.fromCharCode(CTRL_SYMBOLS[key]); }
            return null;
        }
        // Alt (Meta in xterm's sense) prefixes ESC.
        return (e.altKey && !e.ctrlKey ? '\x1b' : '') + utf8Bytes(key);
    };

    VT100.prototype._keydown = function (e) {
        var s = VT100.keyToBytes(e, this.appCursor);
        if (s === null) { return; }
        e.preventDefault();   // also stops the keypress event
        this._reply(s);
    };

    // For browsers without e.key: printable characters come as keypress.
    VT100.prototype._keypress = function (e) {
        var code = e.charCode || e.which;
        if (!code || code < 32 || e.ctrlKey || e.metaKey) { return; }
        e.preventDefault();
        this._reply(utf8Bytes(String.fromCharCode(code)));
    };

    VT100.prototype._paste = function (e) {
        var text = e.clipboardData && e.clipboardData.getData('text/plain');
        if (!text) { return; }
        e.preventDefault();
        this.paste(text);
    };

    // Send text as typed: newlines become CR, as the Enter key sends.
    VT100.prototype.paste = function (text) {
        text = text.replace(/\r?\n/g, '\r');
        if (this.bracketedPaste) { text = '\x1b[200~' + text + '\x1b[201~'; }
        this._reply(utf8Bytes(text));
    };

    return VT100;
}));
