"""Byte transports under :class:`~sushi.runtime.device.Device`: a serial port (pyserial)."""
from __future__ import annotations

import abc
import time

__all__ = ["Transport", "SerialTransport", "LinkError", "LinkTimeout"]


class LinkError(RuntimeError):
    """The link to the device cannot be used (absent port, closed simulation, bad reply)."""


class LinkTimeout(LinkError):
    """No (complete) reply within the timeout."""


class Transport(abc.ABC):
    """A byte pipe: ``send(data)``, ``recv(timeout) -> bytes`` (b"" when nothing came), ``close()``."""
    name = "transport"

    @abc.abstractmethod
    def send(self, data: bytes) -> None:
        """Write ``data`` to the device."""

    @abc.abstractmethod
    def recv(self, timeout: float) -> bytes:
        """Bytes that arrived within ``timeout`` seconds (b"" when none)."""

    def drain(self, quiet: float = 0.05, limit: float = 2.0) -> bytes:
        """Read and drop input until the line is quiet for ``quiet`` seconds."""
        out = bytearray()
        t_end = time.monotonic() + limit
        while time.monotonic() < t_end:
            b = self.recv(quiet)
            if not b:
                break
            out += b
        return bytes(out)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A serial port (the boards' USB UART), 8N1 at ``baud``."""

    def __init__(self, port: str, baud: int = 115200):
        try:
            import serial
        except ImportError:
            raise LinkError("pyserial is not installed (pip install pyserial)") from None
        self.name = f"serial port {port}"
        try:
            self.ser = serial.Serial(port, baud, timeout=0.05, write_timeout=5.0)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open serial port {port!r}: {e}. Is the board plugged in? "
                            f"Available ports: {', '.join(available_ports()) or 'none'}") from None

    def send(self, data: bytes) -> None:
        import serial
        try:
            self.ser.write(data)
            self.ser.flush()
        except serial.SerialTimeoutException:
            raise LinkTimeout(f"{self.name}: write timed out") from None
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.name}: {e}") from None

    def recv(self, timeout: float) -> bytes:
        import serial
        try:
            self.ser.timeout = timeout
            first = self.ser.read(1)
            if not first:
                return b""
            return first + self.ser.read(self.ser.in_waiting)
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.name}: {e}") from None

    def close(self) -> None:
        self.ser.close()


def available_ports() -> list:
    try:
        from serial.tools import list_ports
        return [p.device for p in list_ports.comports()]
    except Exception:
        return []
