/*
 * websock.js - the browser end of websockify: a WebSocket that carries a
 * byte stream, with a receive queue to read it and a send queue to write it.
 *
 * An ES5 classic script (no modules, no build step) so that it loads in every
 * browser websockify serves, Hixie-era ones included. Under Node it is a
 * CommonJS module, so tests can drive it through a fake socket (attach()).
 *
 * Data modes: we offer the subprotocols 'binary' and 'base64' and the server
 * picks one. 'base64' (or a browser that cannot receive binary frames) means
 * text frames carrying base64; 'binary' or anything else means binary frames
 * carrying raw bytes.
 *
 * Receive queue: a Uint8Array with a read index (_rQi) and a write index
 * (_rQend). Readers only move _rQi; arriving data is appended at _rQend.
 * Space is made only when data arrives: the array doubles when it is mostly
 * unread and unread bytes slide to the front once the read index has passed
 * half of it, so each byte is copied a bounded number of times.
 */
(function (root, factory) {
    if (typeof module === 'object' && module.exports) {
        module.exports = factory();
    } else {
        root.Websock = factory();
    }
}(this, function () {
    'use strict';

    // Sizes: small enough for an idle page, and growth doubles from there.
    var RQ_INITIAL = 64 * 1024;
    // Unread data past this means the reader is stuck or the peer runs away;
    // we fail the connection rather than eat the browser's memory.
    var RQ_MAX = 64 * 1024 * 1024;
    var SQ_INITIAL = 16 * 1024;
    // Past this much data in the socket's own buffer, new bytes wait in the
    // send queue, so a fast sender cannot queue without bound in the browser.
    var SEND_HIGH_WATER = 1024 * 1024;
    var FLUSH_RETRY_MS = 10;
    var OPEN = 1;

    var hasTypedArrays = typeof Uint8Array !== 'undefined' &&
        typeof ArrayBuffer !== 'undefined';

    function newBytes(n) {
        return hasTypedArrays ? new Uint8Array(n) : new Array(n);
    }

    // Copy buf[start:end] into a new array (a view would be overwritten when
    // the queue compacts).
    function copyBytes(buf, start, end) {
        if (hasTypedArrays && buf instanceof Uint8Array) {
            return new Uint8Array(buf.subarray(start, end));
        }
        return buf.slice(start, end);
    }

    // ---- base64 (RFC 4648 §4), our own codec so that it decodes straight
    // into the receive queue and works where atob/btoa are missing.
    var B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    var B64_VALUE = [];
    (function () {
        var i;
        for (i = 0; i < 128; i++) { B64_VALUE[i] = -1; }
        for (i = 0; i < 64; i++) { B64_VALUE[B64.charCodeAt(i)] = i; }
    }());

    function base64Encode(bytes, start, end) {
        var out = [], i = start, n, rest;
        if (start === undefined) { i = 0; end = bytes.length; }
        for (; i + 2 < end; i += 3) {
            n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
            out.push(B64.charAt(n >> 18), B64.charAt((n >> 12) & 63),
                     B64.charAt((n >> 6) & 63), B64.charAt(n & 63));
        }
        rest = end - i;
        if (rest === 1) {
            n = bytes[i] << 16;
            out.push(B64.charAt(n >> 18), B64.charAt((n >> 12) & 63), '==');
        } else if (rest === 2) {
            n = (bytes[i] << 16) | (bytes[i + 1] << 8);
            out.push(B64.charAt(n >> 18), B64.charAt((n >> 12) & 63),
                     B64.charAt((n >> 6) & 63), '=');
        }
        return out.join('');
    }

    function base64Value(str, i) {
        var c = str.charCodeAt(i);
        return c < 128 ? B64_VALUE[c] : -1;
    }

    // Number of '=' at the end of a whole base64 string (0, 1 or 2).
    function base64Padding(str) {
        var len = str.length;
        if (len < 4 || str.charAt(len - 1) !== '=') { return 0; }
        return str.charAt(len - 2) === '=' ? 2 : 1;
    }

    function base64Length(str) {
        if (str.length % 4 !== 0) {
            throw new Error('base64 length ' + str.length + ' is not a multiple of 4');
        }
        return str.length / 4 * 3 - base64Padding(str);
    }

    // Decode str into out[pos...]; out must have room for base64Length(str).
    // Only the last quantum may be padded; anything else invalid throws.
    function base64DecodeInto(str, out, pos) {
        var len = str.length, pad = base64Padding(str), i, a, b, c, d;
        for (i = 0; i < len; i += 4) {
            a = base64Value(str, i);
            b = base64Value(str, i + 1);
            c = base64Value(str, i + 2);
            d = base64Value(str, i + 3);
            if (i + 4 === len && pad) {
                d = 0;
                if (pad === 2) { c = 0; }
            }
            if ((a | b | c | d) < 0) { throw new Error('invalid base64 at offset ' + i); }
            out[pos++] = (a << 2) | (b >> 4);
            if (i + 4 === len && pad === 2) { break; }
            out[pos++] = ((b & 15) << 4) | (c >> 2);
            if (i + 4 === len && pad === 1) { break; }
            out[pos++] = ((c & 3) << 6) | d;
        }
        return pos;
    }

    function base64Decode(str) {
        var out = newBytes(base64Length(str));
        base64DecodeInto(str, out, 0);
        return out;
    }

    // UTF-8 bytes of a JS string: text frames in binary mode carry the
    // target's bytes as UTF-8 (websockify --text-frames).
    function utf8Encode(str) {
        var out = [], i, c, c2;
        for (i = 0; i < str.length; i++) {
            c = str.charCodeAt(i);
            if (c >= 0xd800 && c < 0xdc00 && i + 1 < str.length) {
                c2 = str.charCodeAt(i + 1);
                if (c2 >= 0xdc00 && c2 < 0xe000) {
                    c = 0x10000 + ((c - 0xd800) << 10) + (c2 - 0xdc00);
                    i++;
                }
            }
            if (c >= 0xd800 && c < 0xe000) { c = 0xfffd; }  // lone surrogate
            if (c < 0x80) {
                out.push(c);
            } else if (c < 0x800) {
                out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
            } else if (c < 0x10000) {
                out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
            } else {
                out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63),
                         0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
            }
        }
        return out;
    }

    // Whether this browser's WebSocket can receive ArrayBuffers: looked up on
    // the prototype, so no connection is made to find out.
    function browserHasBinary() {
        return hasTypedArrays && typeof WebSocket !== 'undefined' &&
            !!WebSocket.prototype && 'binaryType' in WebSocket.prototype;
    }

    function Websock() {
        this._ws = null;
        // 'binary' or 'base64' once open, null before.
        this.mode = null;
        this._handlers = { open: [], message: [], close: [], error: [] };
        this._rQ = newBytes(hasTypedArrays ? RQ_INITIAL : 0);
        this._rQi = 0;
        this._rQend = 0;
        this._sQ = newBytes(hasTypedArrays ? SQ_INITIAL : 0);
        this._sQlen = 0;
        this._flushTimer = null;
    }

    Websock.RQ_INITIAL = RQ_INITIAL;
    Websock.RQ_MAX = RQ_MAX;
    Websock.SEND_HIGH_WATER = SEND_HIGH_WATER;
    Websock.hasTypedArrays = hasTypedArrays;
    Websock.base64Encode = base64Encode;
    Websock.base64Decode = base64Decode;
    Websock.utf8Encode = utf8Encode;

    // ---- events

    Websock.prototype.on = function (evt, handler) {
        this._handlerList(evt).push(handler);
        return this;
    };

    Websock.prototype.off = function (evt, handler) {
        var list = this._handlerList(evt), i = list.indexOf(handler);
        if (i >= 0) { list.splice(i, 1); }
        return this;
    };

    Websock.prototype._handlerList = function (evt) {
        var list = this._handlers[evt];
        if (!list) { throw new Error('unknown Websock event: ' + evt); }
        return list;
    };

    Websock.prototype._emit = function (evt, arg) {
        // A copy, so a handler may call off() without skipping the next one.
        var list = this._handlers[evt].slice(), i;
        for (i = 0; i < list.length; i++) { list[i].call(this, arg); }
    };

    // ---- connection

    Websock.prototype.open = function (uri, protocols) {
        if (typeof WebSocket === 'undefined') {
            throw new Error('WebSocket is not available here');
        }
        if (protocols === undefined) {
            // Hixie-era WebSocket constructors take a single protocol string.
            protocols = browserHasBinary() ? ['binary', 'base64'] : 'base64';
        }
        return this.attach(new WebSocket(uri, protocols));
    };

    // Wrap a WebSocket (or anything shaped like one: readyState, protocol,
    // send, close and on* handlers). Bytes queued by send() stay queued.
    Websock.prototype.attach = function (sock) {
        var self = this;
        this._detach();
        this._ws = sock;
        this.mode = null;
        this._rQi = this._rQend = 0;
        if ('binaryType' in sock) { sock.binaryType = 'arraybuffer'; }
        sock.onopen = function (e) {
            self._opened();
            self._emit('open', e);
        };
        sock.onmessage = function (e) { self._received(e.data); };
        sock.onclose = function (e) {
            self._stopFlushTimer();
            self._emit('close', e);
        };
        sock.onerror = function (e) { self._emit('error', e); };
        if (sock.readyState === OPEN) { this._opened(); }
        return this;
    };

    Websock.prototype._detach = function () {
        var old = this._ws;
        this._stopFlushTimer();
        if (old) {
            old.onopen = old.onmessage = old.onclose = old.onerror = null;
            this._ws = null;
        }
    };

    Websock.prototype.close = function () {
        var ws = this._ws;
        if (ws && (ws.readyState === 0 || ws.readyState === OPEN)) { ws.close(); }
    };

    // The server's choice of subprotocol decides the mode; a socket without
    // binaryType (Hixie era) can only do text, so base64.
    Websock.prototype._opened = function () {
        var ws = this._ws;
        if (ws.protocol === 'base64' || !hasTypedArrays || !('binaryType' in ws)) {
            this.mode = 'base64';
        } else {
            this.mode = 'binary';
        }
        this.flush();
    };

    // Fail the connection from our side: tell the handlers, then close.
    Websock.prototype._fail = function (message) {
        this._emit('error', new Error(message));
        this.close();
    };

    // ---- receiving

    Websock.prototype._received = function (data) {
        var bytes, n;
        if (!this.mode) { this._opened(); }
        if (typeof data === 'string') {
            if (this.mode === 'base64') {
                try {
                    n = base64Length(data);
                    if (!this._rQreserve(n)) { return; }
                    base64DecodeInto(data, this._rQ, this._rQend);
                } catch (e) {
                    this._fail('bad base64 from server: ' + e.message);
                    return;
                }
                this._rQend += n;
            } else {
                bytes = utf8Encode(data);
                if (!this._rQpush(bytes)) { return; }
            }
        } else if (data && typeof data.byteLength === 'number' && hasTypedArrays) {
            if (!this._rQpush(new Uint8Array(data))) { return; }
        } else {
            this._fail('unexpected message type ' + Object.prototype.toString.call(data));
            return;
        }
        this._emit('message');
    };

    Websock.prototype._rQpush = function (bytes) {
        var n = bytes.length, i, buf, end;
        if (!this._rQreserve(n)) { return false; }
        buf = this._rQ;
        end = this._rQend;
        if (hasTypedArrays && buf.set) {
            buf.set(bytes, end);
        } else {
            for (i = 0; i < n; i++) { buf[end + i] = bytes[i]; }
        }
        this._rQend = end + n;
        return true;
    };

    // Make room for n more bytes at _rQend; false (and the connection
    // failed) when the unread data would pass RQ_MAX.
    Websock.prototype._rQreserve = function (n) {
        var buf = this._rQ, unread = this._rQend - this._rQi, size;
        if (unread + n > RQ_MAX) {
            this._fail('receive queue over ' + RQ_MAX + ' bytes');
            return false;
        }
        if (unread === 0) { this._rQi = this._rQend = 0; }
        if (!hasTypedArrays) {
            // Plain arrays grow by themselves; drop consumed bytes once
            // they are the larger part.
            if (this._rQi > 4096 && this._rQi * 2 > this._rQend) {
                this._rQ = buf.slice(this._rQi, this._rQend);
                this._rQi = 0;
                this._rQend = unread;
            }
            return true;
        }
        if (this._rQend + n <= buf.length) { return true; }
        if (this._rQi * 2 >= buf.length && unread + n <= buf.length) {
            this._rQcompact(buf);
            return true;
        }
        // Mostly unread (or too small): double until it fits.
        size = buf.length * 2;
        while (size < unread + n) { size *= 2; }
        size = Math.min(size, RQ_MAX);
        if (size <= buf.length) {
            this._rQcompact(buf);   // at the cap: nowhere to grow
            return true;
        }
        this._rQ = new Uint8Array(size);
        this._rQ.set(buf.subarray(this._rQi, this._rQend));
        this._rQend = unread;
        this._rQi = 0;
        return true;
    };

    Websock.prototype._rQcompact = function (buf) {
        if (buf.copyWithin) {
            buf.copyWithin(0, this._rQi, this._rQend);
        } else {
            buf.set(buf.subarray(this._rQi, this._rQend));  // set() handles overlap
        }
        this._rQend -= this._rQi;
        this._rQi = 0;
    };

    // ---- receive queue readers. Reading past the queued data throws a
    // RangeError: check rQlen() or rQwait() first.

    Websock.prototype._rQneed = function (n) {
        if (this._rQend - this._rQi < n) {
            throw new RangeError('receive queue has ' + (this._rQend - this._rQi) +
                                 ' bytes, ' + n + ' needed');
        }
    };

    Websock.prototype.rQlen = function () {
        return this._rQend - this._rQi;
    };

    Websock.prototype.rQpeek8 = function () {
        this._rQneed(1);
        return this._rQ[this._rQi];
    };

    Websock.prototype.rQshift8 = function () {
        this._rQneed(1);
        return this._rQ[this._rQi++];
    };

    Websock.prototype.rQskip8 = function () {
        this._rQneed(1);
        this._rQi++;
    };

    Websock.prototype.rQskipBytes = function (n) {
        this._rQneed(n);
        this._rQi += n;
    };

    // Put a byte back in front of the queue.
    Websock.prototype.rQunshift8 = function (b) {
        var buf = this._rQ, i;
        if (this._rQi > 0) {
            buf[--this._rQi] = b & 255;
            return;
        }
        // Nothing consumed yet: move the data up one place (rare).
        if (!hasTypedArrays) {
            buf.splice(0, 0, b & 255);
        } else {
            if (this._rQend + 1 > buf.length) {
                this._rQ = new Uint8Array(buf.length * 2);
                this._rQ.set(buf.subarray(0, this._rQend), 1);
            } else if (buf.copyWithin) {
                buf.copyWithin(1, 0, this._rQend);
            } else {
                for (i = this._rQend; i > 0; i--) { buf[i] = buf[i - 1]; }
            }
            this._rQ[0] = b & 255;
        }
        this._rQend++;
    };

    // Big-endian, as network protocols (RFB, telnet's NAWS) use.
    Websock.prototype.rQshift16 = function () {
        var buf = this._rQ, i = this._rQi;
        this._rQneed(2);
        this._rQi += 2;
        return (buf[i] << 8) | buf[i + 1];
    };

    Websock.prototype.rQshift32 = function () {
        var buf = this._rQ, i = this._rQi;
        this._rQneed(4);
        this._rQi += 4;
        // >>> 0 keeps the top bit from making the result negative.
        return ((buf[i] << 24) | (buf[i + 1] << 16) | (buf[i + 2] << 8) | buf[i + 3]) >>> 0;
    };

    // len bytes (default: all queued) as a string of char codes 0-255.
    Websock.prototype.rQshiftStr = function (len) {
        var buf = this._rQ, start = this._rQi, parts = [], i, end;
        if (len === undefined) { len = this.rQlen(); }
        this._rQneed(len);
        end = start + len;
        // In chunks: apply() with a huge argument list overflows the stack.
        for (i = start; i < end; i += 4096) {
            parts.push(String.fromCharCode.apply(null,
                hasTypedArrays ? buf.subarray(i, Math.min(end, i + 4096))
                               : buf.slice(i, Math.min(end, i + 4096))));
        }
        this._rQi = end;
        return parts.join('');
    };

    // len bytes (default: all queued) as a new Uint8Array (an Array where
    // typed arrays are missing).
    Websock.prototype.rQshiftBytes = function (len) {
        var start = this._rQi;
        if (len === undefined) { len = this.rQlen(); }
        this._rQneed(len);
        this._rQi += len;
        return copyBytes(this._rQ, start, start + len);
    };

    // A copy of queued bytes [start, end) counted from the read position,
    // without consuming them; end defaults to all queued.
    Websock.prototype.rQslice = function (start, end) {
        var len = this.rQlen();
        if (end === undefined) { end = len; }
        if (start < 0 || start > end || end > len) {
            throw new RangeError('rQslice(' + start + ', ' + end + ') of ' + len + ' bytes');
        }
        return copyBytes(this._rQ, this._rQi + start, this._rQi + end);
    };

    // True when fewer than num bytes are queued, meaning "wait for more";
    // goback bytes already read by the caller are then put back, so that
    // the caller restarts its message from the top when more data arrives.
    // msg names what is awaited, for the caller's own readability.
    Websock.prototype.rQwait = function (msg, num, goback) {
        if (this._rQend - this._rQi >= num) { return false; }
        if (goback) {
            if (this._rQi < goback) {
                throw new RangeError('rQwait(' + msg + '): cannot go back ' + goback + ' bytes');
            }
            this._rQi -= goback;
        }
        return true;
    };

    // ---- sending

    // Queue bytes (Array of numbers, Uint8Array or ArrayBuffer) and flush.
    Websock.prototype.send = function (bytes) {
        var n, buf, i;
        if (hasTypedArrays && bytes instanceof ArrayBuffer) { bytes = new Uint8Array(bytes); }
        n = bytes.length;
        this._sQreserve(n);
        buf = this._sQ;
        if (hasTypedArrays && bytes instanceof Uint8Array) {
            buf.set(bytes, this._sQlen);
        } else {
            for (i = 0; i < n; i++) { buf[this._sQlen + i] = bytes[i] & 255; }
        }
        this._sQlen += n;
        return this.flush();
    };

    // Queue a string as bytes, one per character (code & 0xff), and flush.
    Websock.prototype.send_string = function (str) {
        var n = str.length, buf, i, pos;
        this._sQreserve(n);
        buf = this._sQ;
        pos = this._sQlen;
        for (i = 0; i < n; i++) { buf[pos + i] = str.charCodeAt(i) & 255; }
        this._sQlen += n;
        return this.flush();
    };

    Websock.prototype._sQreserve = function (n) {
        var size, buf;
        if (!hasTypedArrays || this._sQlen + n <= this._sQ.length) { return; }
        size = this._sQ.length * 2;
        while (size < this._sQlen + n) { size *= 2; }
        buf = new Uint8Array(size);
        buf.set(this._sQ.subarray(0, this._sQlen));
        this._sQ = buf;
    };

    // Send everything queued as one message. True when the queue is empty
    // afterwards; false while the socket is not open yet (open sends it) or
    // its buffer is over SEND_HIGH_WATER (a timer retries).
    Websock.prototype.flush = function () {
        var ws = this._ws, data, self = this;
        if (this._sQlen === 0) { return true; }
        if (!ws || ws.readyState !== OPEN || !this.mode) { return false; }
        if (ws.bufferedAmount > SEND_HIGH_WATER) {
            // Browsers fire no event when the buffer drains, so poll.
            if (!this._flushTimer) {
                this._flushTimer = setTimeout(function () {
                    self._flushTimer = null;
                    self.flush();
                }, FLUSH_RETRY_MS);
            }
            return false;
        }
        if (this.mode === 'base64') {
            data = base64Encode(this._sQ, 0, this._sQlen);
        } else {
            // A copy of just the queued bytes; older browsers only send
            // whole ArrayBuffers, not views.
            data = new Uint8Array(this._sQ.subarray(0, this._sQlen)).buffer;
        }
        this._sQlen = 0;
        if (this._sQ.length > 64 * SQ_INITIAL) { this._sQ = newBytes(SQ_INITIAL); }
        ws.send(data);
        return true;
    };

    // Bytes not yet on the wire: our queue plus the socket's own buffer.
    // Bulk senders compare it with a limit of their own to pace themselves.
    Websock.prototype.bufferedAmount = function () {
        return this._sQlen + (this._ws ? this._ws.bufferedAmount || 0 : 0);
    };

    Websock.prototype._stopFlushTimer = function () {
        if (this._flushTimer) {
            clearTimeout(this._flushTimer);
            this._flushTimer = null;
        }
    };

    return Websock;
}));
