"""Host runtime: talk to a SUSHI SoC (board over a serial port, or the Verilator simulation)."""
from .device import Device, DeviceError, LinkError, LinkTimeout, Program, RunResult
from .protocol import Cmd, Code, ProtocolError
from .transport import SerialTransport, Transport

__all__ = ["Device", "DeviceError", "LinkError", "LinkTimeout", "Program", "RunResult", "Cmd", "Code",
           "ProtocolError", "SerialTransport", "Transport"]
