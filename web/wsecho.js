/*
 * wsecho.js - the line echo page: lines typed go to the target with "\n",
 * and what comes back is shown as UTF-8 text. Exposes window.wsecho.
 */
(function (win) {
    'use strict';

    var doc = win.document, ws = null, received = '', decoder = null, form, api;
    // Keep the page light when a target floods it.
    var MAX_SHOWN = 64 * 1024, MAX_KEPT = 1024 * 1024;
    var output = doc.getElementById('output'), line = doc.getElementById('line');

    // Bytes -> text. TextDecoder keeps a character split between messages;
    // without it, each message is decoded alone.
    function decode(bytes) {
        var s = '', i;
        if (decoder) { return decoder.decode(bytes, { stream: true }); }
        for (i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
        try {
            return decodeURIComponent(escape(s));
        } catch (e) {
            return s;   // not UTF-8: show the bytes as Latin-1
        }
    }

    function show(text) {
        received += text;
        if (received.length > MAX_KEPT) { received = received.slice(-MAX_KEPT); }
        output.textContent = received.slice(-MAX_SHOWN);
        output.scrollTop = output.scrollHeight;
    }

    function connect(uri) {
        var sock = new Websock();
        ws = sock;
        decoder = typeof TextDecoder !== 'undefined' ? new TextDecoder('utf-8') : null;
        sock.on('open', function () { form.setState('connected', uri + ' (' + sock.mode + ')'); });
        sock.on('message', function () { show(decode(sock.rQshiftBytes())); });
        sock.on('close', function (e) {
            if (ws !== sock) { return; }
            ws = null;
            form.setState('disconnected', 'closed (code ' + e.code + (e.reason ? ', ' + e.reason : '') + ')');
        });
        sock.open(uri);
    }

    function disconnect() {
        if (ws) { ws.close(); }
    }

    // False when not connected (the line is not queued for later).
    function sendLine(text) {
        if (!ws || form.state !== 'connected') { return false; }
        ws.send_string(WsPage.utf8Bytes(text + '\n'));
        return true;
    }

    form = new WsPage.ConnectionForm(win, { connect: connect, disconnect: disconnect });

    // What tests and the console can reach: window.wsecho.
    api = win.wsecho = {
        // 'disconnected', 'connecting' or 'connected'.
        status: form.state,
        detail: '',
        connect: function () { form.connect(); },
        disconnect: disconnect,
        sendLine: sendLine,
        // All text received so far (the last MiB).
        output: function () { return received; },
        clear: function () { received = ''; output.textContent = ''; }
    };
    form.onstate = function (state, detail) {
        api.status = state;
        api.detail = detail || '';
    };

    doc.getElementById('lineForm').addEventListener('submit', function (e) {
        e.preventDefault();
        if (sendLine(line.value)) { line.value = ''; }
    }, false);

    form.autoconnect();
}(this));
