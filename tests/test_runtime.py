"""Host runtime without hardware: the frame format, the reply parser, timeouts, absent ports."""
import struct
import time

import pytest

from sushi.runtime import Device, LinkError, LinkTimeout, Transport
from sushi.runtime.protocol import (Cmd, Code, ProtocolError, ReplyParser, crc16, encode_reply,
                                    encode_request)


def test_crc16_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1


def test_request_frame_layout():
    f = encode_request(Cmd.READ_MEM, struct.pack("<IH", 0x40, 16))
    assert f[0] == 0xA5 and f[1] == Cmd.READ_MEM and f[2:4] == b"\x06\x00"
    assert struct.unpack("<H", f[-2:])[0] == crc16(f[1:-2])


def test_parser_skips_noise_and_splits_replies():
    p = ReplyParser()
    a, b = encode_reply(1, Code.OK, b"abcd"), encode_reply(3, Code.BAD_ADDRESS)
    got = p.feed(b"\x00\x11" + a[:3])
    assert got == [] and p.skipped == 2
    got = p.feed(a[3:] + b)
    assert [(r.cmd, r.code, r.payload) for r in got] == [(1, 0, b"abcd"), (3, Code.BAD_ADDRESS, b"")]


def test_parser_rejects_a_bad_crc():
    f = bytearray(encode_reply(1, 0, b"xy"))
    f[-1] ^= 0xFF
    with pytest.raises(ProtocolError, match="bad CRC"):
        ReplyParser().feed(bytes(f))


class Silent(Transport):
    name = "silent test transport"

    def send(self, data):
        pass

    def recv(self, timeout):
        time.sleep(min(timeout, 0.01))
        return b""


def test_host_timeout_has_a_clear_message():
    d = Device(Silent(), timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(LinkTimeout, match=r"no reply from the device on silent test transport "
                                          r"within 0.2 s to STATUS"):
        d.status()
    assert time.monotonic() - t0 < 2


def test_absent_serial_port_is_a_clear_error():
    with pytest.raises(LinkError, match=r"cannot open serial port '/dev/does-not-exist'"):
        Device.open_serial("/dev/does-not-exist")
