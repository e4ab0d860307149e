/*
 * wstelnet.js - a telnet client in the browser: websock.js carries the
 * bytes through websockify to a telnet server, vt100.js shows them.
 *
 * Telnet (RFC 854) interleaves commands with the data: IAC (255) starts
 * one. We agree to exactly three options: TERMINAL-TYPE for the server
 * (RFC 1091, so that programs know how to draw), and ECHO (RFC 857) and
 * SUPPRESS-GO-AHEAD (RFC 858) for it, which make a character-at-a-time
 * session with remote echo. Everything else is refused once; an option
 * already in the state asked for gets no answer, so negotiation cannot loop
 * (the rule of RFC 854, "Discussion of the Telnet Option Negotiation").
 *
 * Under Node this file only exports Telnet (for the tests); in a page it
 * also wires up wstelnet.html and exposes window.wstelnet.
 */
(function (root, factory) {
    var Telnet = factory();
    if (typeof module === 'object' && module.exports) {
        module.exports = Telnet;
    } else {
        root.Telnet = Telnet;
        root.wstelnet = Telnet.startPage(root);
    }
}(this, function () {
    'use strict';

    var IAC = 255, DONT = 254, DO = 253, WONT = 252, WILL = 251, SB = 250, SE = 240;
    var ECHO = 1, SUPPRESS_GO_AHEAD = 3, TERMINAL_TYPE = 24;
    var TTYPE_IS = 0, TTYPE_SEND = 1;
    // A subnegotiation longer than this is not one we would act on.
    var MAX_SB = 256;

    // Receive states: a command may end in a later message, so where we
    // are in one carries over between receive() calls.
    var DATA = 0, COMMAND = 1, OPTION = 2, SB_OPTION = 3, SB_DATA = 4, SB_IAC = 5;

    // send(byteString) writes to the server; termType answers TERMINAL-TYPE.
    function Telnet(send, termType) {
        this.send = send;
        this.termType = termType || 'xterm';
        this._state = DATA;
        this._verb = 0;
        this._sbOption = 0;
        this._sb = [];
        this._us = {};        // options enabled on our side (we said WILL)
        this._him = {};       // options enabled on the server's side (we said DO)
        this._refused = {};   // 'DO 31' etc. already answered with a refusal
    }

    // Bytes from the server (Array or Uint8Array) -> the data bytes among
    // them (an Array) for the terminal; commands are answered on the way.
    Telnet.prototype.receive = function (bytes) {
        var out = [], n = bytes.length, i, b;
        for (i = 0; i < n; i++) {
            b = bytes[i];
            switch (this._state) {
            case DATA:
                if (b === IAC) { this._state = COMMAND; } else { out.push(b); }
                break;
            case COMMAND:
                if (b === IAC) {
                    out.push(IAC);   // IAC IAC: a literal 255
                    this._state = DATA;
                } else if (b >= WILL && b <= DONT) {
                    this._verb = b;
                    this._state = OPTION;
                } else if (b === SB) {
                    this._state = SB_OPTION;
                } else {
                    this._state = DATA;   // NOP, GA, DM, AYT...: nothing to do
                }
                break;
            case OPTION:
                this._negotiate(this._verb, b);
                this._state = DATA;
                break;
            case SB_OPTION:
                this._sbOption = b;
                this._sb = [];
                this._state = SB_DATA;
                break;
            case SB_DATA:
                if (b === IAC) {
                    this._state = SB_IAC;
                } else if (this._sb.length < MAX_SB) {
                    this._sb.push(b);
                }
                break;
            case SB_IAC:
                if (b === IAC) {
                    if (this._sb.length < MAX_SB) { this._sb.push(IAC); }
                    this._state = SB_DATA;
                } else {
                    // IAC SE ends it; anything else is a broken one: drop it.
                    this._state = DATA;
                    if (b === SE) { this._subnegotiation(this._sbOption, this._sb); }
                }
                break;
            }
        }
        return out;
    };

    Telnet.prototype._reply = function (verb, option) {
        this.send(String.fromCharCode(IAC, verb, option));
    };

    Telnet.prototype._negotiate = function (verb, option) {
        var key = verb + ' ' + option;
        if (verb === DO) {
            if (option === TERMINAL_TYPE) {
                if (!this._us[option]) {
                    this._us[option] = true;
                    this._reply(WILL, option);
                }
            } else if (!this._refused[key]) {
                this._refused[key] = true;
                this._reply(WONT, option);
            }
        } else if (verb === DONT) {
            if (this._us[option]) {
                this._us[option] = false;
                this._reply(WONT, option);
            }
        } else if (verb === WILL) {
            if (option === ECHO || option === SUPPRESS_GO_AHEAD) {
                if (!this._him[option]) {
                    this._him[option] = true;
                    this._reply(DO, option);
                }
            } else if (!this._refused[key]) {
                this._refused[key] = true;
                this._reply(DONT, option);
            }
        } else if (verb === WONT) {
            if (this._him[option]) {
                this._him[option] = false;
                this._reply(DONT, option);
            }
        }
    };

    // RFC 1091: IAC SB TERMINAL-TYPE SEND IAC SE asks for our type; the
    // answer is IAC SB TERMINAL-TYPE IS <type> IAC SE. Others are skipped.
    Telnet.prototype._subnegotiation = function (option, data) {
        if (option === TERMINAL_TYPE && data[0] === TTYPE_SEND && this._us[TERMINAL_TYPE]) {
            this.send(String.fromCharCode(IAC, SB, TERMINAL_TYPE, TTYPE_IS) + this.termType +
                      String.fromCharCode(IAC, SE));
        }
    };

    // Keyboard bytes (a byte string) -> what goes on the wire: IAC doubled,
    // and a CR not followed by LF sent as CR NUL, the NVT's bare carriage
    // return (RFC 854), since we never agree to BINARY.
    Telnet.prototype.encode = function (s) {
        return s.replace(/\xff/g, '\xff\xff').replace(/\r(?!\n)/g, '\r\x00');
    };

    Telnet.IAC = IAC;

    // ---- the page (wstelnet.html)

    Telnet.startPage = function (win) {
        var doc = win.document, ws = null, telnet = null, form, term, api, params;

        term = new VT100(doc.getElementById('terminal'), { rows: 24, cols: 80 });
        form = new WsPage.ConnectionForm(win, { connect: connect, disconnect: disconnect });
        params = form.params;

        // What tests and the console can reach: window.wstelnet.
        api = {
            term: term,
            // 'disconnected', 'connecting' or 'connected'.
            status: form.state,
            // The status line's detail: the URI, or why it closed.
            detail: '',
            connect: function () { form.connect(); },
            disconnect: disconnect,
            getText: function () { return term.getText(); },
            // Show data as if the server had sent it: a byte string or an
            // array of bytes, through the telnet and UTF-8 decoding.
            feed: function (data) {
                var bytes = [], i;
                if (typeof data === 'string') {
                    for (i = 0; i < data.length; i++) { bytes.push(data.charCodeAt(i) & 255); }
                } else {
                    bytes = data;
                }
                term.write((telnet || new Telnet(function () {}, params.term)).receive(bytes));
                term.render();
            }
        };
        form.onstate = function (state, detail) {
            api.status = state;
            api.detail = detail || '';
        };

        function connect(uri) {
            var sock = new Websock();
            ws = sock;
            telnet = new Telnet(function (s) { sock.send_string(s); }, params.term);
            sock.on('open', function () {
                form.setState('connected', uri + ' (' + sock.mode + ')');
                term.focus();
            });
            sock.on('message', function () {
                term.write(telnet.receive(sock.rQshiftBytes()));
            });
            sock.on('close', function (e) {
                if (ws !== sock) { return; }
                ws = null;
                form.setState('disconnected', 'closed (code ' + e.code +
                              (e.reason ? ', ' + e.reason : '') + ')');
            });
            sock.on('error', function (e) {
                // The browser tells no more than that; close follows.
                api.detail = (e && e.message) || 'connection error';
            });
            sock.open(uri);
        }

        function disconnect() {
            if (ws) { ws.close(); }
        }

        term.ondata = function (s) {
            if (ws && form.state === 'connected') { ws.send_string(telnet.encode(s)); }
        };
        form.autoconnect();
        return api;
    };

    return Telnet;
}));
