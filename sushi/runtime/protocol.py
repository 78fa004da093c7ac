"""The SUSHI host-link frame format (docs/boards.md): CRC-16, frame encoding and a reply parser."""
from __future__ import annotations

import enum
import struct

__all__ = ["SYNC_REQ", "SYNC_REP", "PROTO_VERSION", "MAX_PAYLOAD", "MAX_DATA", "Cmd", "Code",
           "crc16", "encode_request", "encode_reply", "ReplyParser", "Reply", "ProtocolError",
           "STATUS_FIELDS", "COUNTER_CSRS"]

SYNC_REQ = 0xA5          # first byte of a host -> device frame
SYNC_REP = 0x5A          # first byte of a device -> host frame
PROTO_VERSION = 1
MAX_DATA = 256           # data bytes of one WRITE_MEM / READ_MEM (the device's staging buffer)
MAX_PAYLOAD = 4 + MAX_DATA   # request payloads longer than this are rejected (Code.OVERSIZED)


class Cmd(enum.IntEnum):
    STATUS = 0x01        # -> 16 bytes: STATUS, HW_ID, mem bytes, proto | max_payload << 16
    WRITE_MEM = 0x02     # addr u32, data[n] (n % V == 0, n <= MAX_DATA) -> empty
    READ_MEM = 0x03      # addr u32, n u16 -> data[n]
    LOAD_SG = 0x04       # prog_base u32, weight_base u32: run a LOADSG program -> STATUS, CYCLES
    RUN = 0x05           # prog_base u32, weight_base u32: run a SubNet program -> STATUS, CYCLES
    READ_COUNTERS = 0x06  # -> 11 x u32: STATUS, CSR 4..12 (counters), HW_ID


class Code(enum.IntEnum):
    OK = 0
    BAD_CRC = 1          # CRC mismatch: the frame was ignored
    TIMEOUT = 2          # truncated frame: no byte for `timeout` cycles inside a frame
    OVERSIZED = 3        # length field > MAX_PAYLOAD: the rest of the frame is discarded
    UNKNOWN_CMD = 4      # command byte not in Cmd
    BAD_LENGTH = 5       # payload length wrong for the command
    BAD_ADDRESS = 6      # unaligned, or outside the device memory


#: STATUS reply: 4 little-endian u32
STATUS_FIELDS = ("status", "hw_id", "mem_bytes", "proto")
#: READ_COUNTERS reply: CSR index of each u32 (docs/isa.md)
COUNTER_CSRS = (1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)


class ProtocolError(RuntimeError):
    """A reply that cannot be parsed (bad CRC, bad sync) or that reports an error code."""


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def encode_request(cmd: int, payload: bytes = b"") -> bytes:
    """SYNC_REQ, cmd, len u16 LE, payload, crc16(cmd .. payload) u16 LE."""
    body = bytes([cmd & 0xFF]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([SYNC_REQ]) + body + struct.pack("<H", crc16(body))


def encode_reply(cmd: int, code: int, payload: bytes = b"") -> bytes:
    """SYNC_REP, cmd echo, code, len u16 LE, payload, crc16(cmd .. payload) u16 LE."""
    body = bytes([cmd & 0xFF, code & 0xFF]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([SYNC_REP]) + body + struct.pack("<H", crc16(body))


class Reply:
    __slots__ = ("cmd", "code", "payload")

    def __init__(self, cmd: int, code: int, payload: bytes):
        self.cmd, self.code, self.payload = cmd, code, payload

    @property
    def code_name(self) -> str:
        try:
            return Code(self.code).name
        except ValueError:
            return f"code {self.code}"

    def __repr__(self):
        return f"Reply(cmd={self.cmd:#04x}, code={self.code_name}, {len(self.payload)} bytes)"


class ReplyParser:
    """Incremental parser of device -> host frames: ``feed(bytes)`` returns the complete replies.

    Bytes before a SYNC_REP are skipped (counted in ``skipped``); a reply with a bad CRC raises
    :class:`ProtocolError`."""

    def __init__(self):
        self.buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list:
        self.buf += data
        out = []
        while True:
            i = self.buf.find(bytes([SYNC_REP]))
            if i < 0:
                self.skipped += len(self.buf)
                self.buf.clear()
                return out
            if i:
                self.skipped += i
                del self.buf[:i]
            if len(self.buf) < 5:
                return out
            n = self.buf[3] | self.buf[4] << 8
            if len(self.buf) < 7 + n:
                return out
            body = bytes(self.buf[1:5 + n])
            crc = self.buf[5 + n] | self.buf[6 + n] << 8
            del self.buf[:7 + n]
            if crc16(body) != crc:
                raise ProtocolError(f"reply with a bad CRC ({crc:#06x}, expected {crc16(body):#06x})")
            out.append(Reply(body[0], body[1], body[4:]))
