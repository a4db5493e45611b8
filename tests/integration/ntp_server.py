"""An SNTP server on loopback for tests, answering with our clock plus `skew_s` (a time server that
disagrees with us), or with a kiss-of-death."""

from __future__ import annotations

import socket
import struct
import threading
import time

NTP_EPOCH = 2_208_988_800


def _ntp(unix: float) -> tuple[int, int]:
    seconds = unix + NTP_EPOCH
    return int(seconds) & 0xFFFFFFFF, int((seconds % 1) * 2**32) & 0xFFFFFFFF


class NtpServer:
    def __init__(self, skew_s: float = 0.0) -> None:
        self.skew_s = skew_s
        self.kiss = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.asked = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            self.asked += 1
            received = time.time() + self.skew_s
            stratum = 0 if self.kiss else 2
            reference = b"RATE" if self.kiss else b"\x7f\x00\x00\x01"
            # LI 0, version 4, mode 4 (server); origin = the client's transmit time, as RFC 4330 asks.
            head = struct.pack("!BBbb", 0b00_100_100, stratum, 4, -20) + struct.pack("!II", 0, 0) + reference
            sent = time.time() + self.skew_s
            packet = head + struct.pack("!II", *_ntp(received)) + data[40:48] + struct.pack("!II", *_ntp(received)) \
                + struct.pack("!II", *_ntp(sent))
            self.sock.sendto(packet, peer)

    def close(self) -> None:
        self.sock.close()
