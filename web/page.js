/*
 * page.js - what the demo pages share: settings from the page URL, the
 * WebSocket URI, and the host/port/encrypt form with its Connect button.
 *
 * The defaults point back at the server that served the page, because
 * websockify --web serves the pages and proxies the WebSocket on one port.
 * Query parameters ?host=&port=&encrypt=1&path=&autoconnect=1 override them,
 * so a link (or a test) can open a page already connecting somewhere.
 */
(function (root) {
    'use strict';

    // location.search -> {name: value}; URLSearchParams is too new for
    // the browsers we still load in.
    function queryParams(search) {
        var out = {}, parts = (search || '').replace(/^\?/, '').split('&'), i, kv;
        for (i = 0; i < parts.length; i++) {
            if (!parts[i]) { continue; }
            kv = parts[i].split('=');
            out[decodeURIComponent(kv[0].replace(/\+/g, ' '))] =
                decodeURIComponent((kv.slice(1).join('=')).replace(/\+/g, ' '));
        }
        return out;
    }

    function wsUri(host, port, encrypt, path) {
        // A bare IPv6 address needs brackets in a URI (RFC 3986 §3.2.2).
        if (host.indexOf(':') >= 0 && host.charAt(0) !== '[') { host = '[' + host + ']'; }
        return (encrypt ? 'wss://' : 'ws://') + host + (port ? ':' + port : '') + '/' +
            (path || '').replace(/^\//, '');
    }

    // A JS string as UTF-8 in a byte string (one char per byte), the form
    // Websock.send_string() takes.
    function utf8Bytes(str) {
        return unescape(encodeURIComponent(str));
    }

    // The connection form: #host, #port, #encrypt, #connectButton, #status
    // inside form#connection. handlers.connect(uri) and handlers.disconnect()
    // do the work; the page reports progress back with setState().
    function ConnectionForm(win, handlers, labels) {
        var doc = win.document, loc = win.location, self = this;
        this.params = queryParams(loc.search);
        this.handlers = handlers;
        this.labels = labels || { connect: 'Connect', disconnect: 'Disconnect' };
        this.form = doc.getElementById('connection');
        this.host = doc.getElementById('host');
        this.port = doc.getElementById('port');
        this.encrypt = doc.getElementById('encrypt');
        this.button = doc.getElementById('connectButton');
        this.statusEl = doc.getElementById('status');
        // 'disconnected', 'connecting' or 'connected'.
        this.state = 'disconnected';
        // Called with the state after every change.
        this.onstate = null;

        var https = loc.protocol === 'https:';
        this.host.value = this.params.host || loc.hostname || 'localhost';
        this.port.value = this.params.port || loc.port || (https ? '443' : '80');
        this.encrypt.checked = this.params.encrypt !== undefined ? this.params.encrypt === '1' : https;
        this.form.addEventListener('submit', function (e) {
            e.preventDefault();
            if (self.state === 'disconnected') { self.connect(); } else { self.handlers.disconnect(); }
        }, false);
        this.setState('disconnected', '');
    }

    ConnectionForm.prototype.uri = function () {
        return wsUri(this.host.value.replace(/^\s+|\s+$/g, ''), this.port.value.replace(/\s+/g, ''),
                     this.encrypt.checked, this.params.path);
    };

    ConnectionForm.prototype.connect = function () {
        var uri = this.uri();
        this.setState('connecting', uri);
        try {
            this.handlers.connect(uri);
        } catch (e) {
            this.setState('disconnected', String(e.message || e));
        }
    };

    ConnectionForm.prototype.setState = function (state, detail) {
        var busy = state !== 'disconnected';
        this.state = state;
        this.statusEl.textContent = state + (detail ? ': ' + detail : '');
        this.statusEl.className = 'status ' + state;
        this.button.textContent = busy ? this.labels.disconnect : this.labels.connect;
        this.host.disabled = this.port.disabled = this.encrypt.disabled = busy;
        if (this.onstate) { this.onstate(state, detail); }
    };

    // Connect at load when the URL asks for it.
    ConnectionForm.prototype.autoconnect = function () {
        if (this.params.autoconnect === '1') { this.connect(); }
    };

    var api = {
        queryParams: queryParams,
        wsUri: wsUri,
        utf8Bytes: utf8Bytes,
        ConnectionForm: ConnectionForm
    };
    if (typeof module === 'object' && module.exports) {
        module.exports = api;   // for the unit tests
    } else {
        root.WsPage = api;
    }
}(this));
