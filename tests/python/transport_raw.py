"""Raw bytes for the bad-input transport tests: an MQTT 3.1.1 CONNECT, WebSocket handshakes and frames, and
reading a socket until the peer closes it.
"""

import base64
import os
import socket
import struct
import time

from test_paho import EVENT_TIMEOUT_SECS


def mqtt_connect_packet(client_id):
    """CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s."""
    ident = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(ident)) + ident
    assert len(body) < 128, "one-byte remaining length"
    return bytes([0x10, len(body)]) + body


def websocket_upgrade_request(port, path, upgrade=True):
    """A client handshake [RFC 6455 4.1] asking for the `mqtt` subprotocol; without `upgrade`, the same
    request less its `Upgrade: websocket` header."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: mqtt"]
    if upgrade:
        lines.insert(2, "Upgrade: websocket")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def websocket_frame(payload, masked=True, opcode=0x2):
    """One final frame [RFC 6455 5.2]; clients must mask theirs [RFC 6455 5.1]."""
    header = bytes([0x80 | opcode])
    length = len(payload)
    if length < 126:
        header += bytes([(0x80 if masked else 0) | length])
    else:
        header += bytes([(0x80 if masked else 0) | 126]) + struct.pack("!H", length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_http_head(sock, timeout=EVENT_TIMEOUT_SECS):
    """Bytes up to and including the blank line ending an HTTP response head, plus whatever came with it;
    b"" if the peer closed first."""
    data = b""
    sock.settimeout(timeout)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_until_closed(sock, timeout=EVENT_TIMEOUT_SECS):
    """Everything the peer sends until it closes: (bytes, "eof" | "reset" | "open"), "open" meaning it was
    still open after `timeout`."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, "open"
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return data, "open"
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk
